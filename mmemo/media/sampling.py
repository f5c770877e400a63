"""How finely a picture is averaged before it is sampled into a smaller crop (NumPy only).

Used where a crop is sampled from a larger picture: ``mmemo.media.picture.FramePicture.warp`` (the decoder's planes)
and ``mmemo.features.faces.warp_affine`` (an RGB array). Here, at the bottom of the media room, so both can use it.
"""

from __future__ import annotations

import numpy as np


def box_factors(a: np.ndarray) -> tuple[int, int]:
    """(kx, ky): how many whole source pixels one crop pixel spans along the source's x and y axes, at least 1.

    ``a``: the linear part (2, 2) or more of the crop -> source map. Sampling a picture bilinearly where a crop
    pixel spans k > 1 source pixels reads 4 of its k^2 pixels and aliases (a face 3 times larger than its crop
    shimmers as the landmarks move by a fraction of a pixel), so the source is first averaged over k x k blocks."""
    kx = max(1, int(np.hypot(a[0, 0], a[0, 1]) + 1e-9))
    ky = max(1, int(np.hypot(a[1, 0], a[1, 1]) + 1e-9))
    return kx, ky
