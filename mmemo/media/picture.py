"""A decoded video frame as the face tracker sees it (``mmemo.features.faces.Picture``), without converting it.

The whole-frame path scales every frame to 224 px; faces need more pixels than that, but converting each full-size
frame to RGB would cost as much as decoding it. So a frame stays as the decoder gave it (YUV planes):

- ``small``: one swscale call to the detector's size (about 320 px on the long side), only on detection rows;
- ``warp``: the aligned crop is sampled straight from the Y, U and V planes (Pillow's affine transform, bilinear,
  in C, on the decoder's buffers without a copy) and converted to RGB there. Where a crop pixel spans k >= 2
  plane pixels (a face larger than its crop), the part of the plane the crop covers is first averaged over k x k
  blocks (``Image.reduce``): bilinear sampling alone reads 4 of those k^2 pixels, and the crop aliases and
  shimmers from row to row. So the crop costs more for a large face (k^2 pixels read per crop pixel), never the
  whole frame's conversion.

Coordinates are *display* pixels: the picture after the stream's rotation and sample aspect ratio, as a player
shows it (``native_width x native_height`` of the shard), pixel centres at integers.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image

from mmemo.media.sampling import box_factors

# (chroma subsampling x, y) of the 8-bit planar formats read as they are; anything else is converted to yuv420p.
_PLANAR = {"yuv420p": (2, 2), "yuvj420p": (2, 2), "yuv422p": (2, 1), "yuvj422p": (2, 1), "yuv444p": (1, 1),
           "yuvj444p": (1, 1)}  # fmt: skip
# Y'CbCr -> R'G'B' (Kr, Kb): swscale's default for the whole-frame path is BT.601, used unless a stream says 709.
_KR_KB = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}


@lru_cache(maxsize=8)
def _rgb_matrix(matrix: str, full: bool) -> tuple[float, ...]:
    """Pillow's 12-number colour matrix (R, G, B rows of: Y, Cb, Cr weights and an offset) for Y'CbCr -> R'G'B'."""
    kr, kb = _KR_KB[matrix]
    kg = 1.0 - kr - kb
    y0, ys, cs = (0.0, 1.0, 1.0) if full else (16.0, 255.0 / 219.0, 255.0 / 224.0)  # limited range: Y 16..235
    r_cr, b_cb = 2.0 * (1.0 - kr) * cs, 2.0 * (1.0 - kb) * cs
    g_cb, g_cr = -2.0 * kb * (1.0 - kb) / kg * cs, -2.0 * kr * (1.0 - kr) / kg * cs
    return (ys, 0.0, r_cr, -ys * y0 - 128.0 * r_cr,
            ys, g_cb, g_cr, -ys * y0 - 128.0 * (g_cb + g_cr),
            ys, b_cb, 0.0, -ys * y0 - 128.0 * b_cb)  # fmt: skip


def _sample(plane: Image.Image, a: np.ndarray, size: int, fill: int) -> Image.Image:
    """The ``size x size`` picture whose pixel edges map to ``plane``'s edge coordinates by ``a`` (3, 3): bilinear
    (Pillow's affine transform, in C), ``fill`` outside; where a crop pixel spans k >= 2 plane pixels, only the part
    of the plane the crop covers is first averaged over k x k blocks (``Image.reduce``; the blocks on the lattice of
    the whole plane, as ``warp_affine`` of ``mmemo.features.faces`` does for an RGB picture), so it does not alias."""
    kx, ky = box_factors(a)
    if kx > 1 or ky > 1:
        corners = a[:2] @ np.array([[0, size, 0, size], [0, 0, size, size], [1, 1, 1, 1]], np.float64)
        w, h = plane.size
        x0 = max(0, (math.floor(corners[0].min()) // kx - 2) * kx)
        y0 = max(0, (math.floor(corners[1].min()) // ky - 2) * ky)
        x1 = min(w, (math.ceil(corners[0].max()) // kx + 3) * kx)
        y1 = min(h, (math.ceil(corners[1].max()) // ky + 3) * ky)
        if x1 > x0 and y1 > y0:  # else the crop shows none of the picture: fill only, from the plane as it is
            plane = plane.reduce((kx, ky), box=(x0, y0, x1, y1))
            a = np.array([[1 / kx, 0, -x0 / kx], [0, 1 / ky, -y0 / ky], [0, 0, 1.0]]) @ a
    return plane.transform((size, size), Image.AFFINE, tuple(a[:2].ravel()), Image.BILINEAR, fillcolor=fill)


class FramePicture:
    """One decoded ``av.VideoFrame`` with its stream's rotation (degrees clockwise) and display size.

    ``reformatter``: a VideoReformatter kept for the stream (one swscale context, not one per call).
    """

    def __init__(self, frame, rotation: int, display: tuple[int, int], reformatter: VideoReformatter) -> None:
        self.frame, self.rotation, self.display = frame, rotation, display
        self.reformatter = reformatter
        self._planes: tuple[Image.Image, Image.Image, Image.Image, int, int, bool, str] | None = None

    # -- detection input
    def small(self, max_side: int, max_area: int | None = None) -> tuple[np.ndarray, float, float]:
        dw, dh = self.display
        scale = min(1.0, max_side / max(dw, dh), (max_area / (dw * dh)) ** 0.5 if max_area else 1.0)
        w, h = max(1, round(dw * scale)), max(1, round(dh * scale))
        cw, ch = (h, w) if self.rotation in (90, 270) else (w, h)
        img = self.reformatter.reformat(self.frame, width=cw, height=ch, format="rgb24",
                                        interpolation="AREA").to_ndarray()  # fmt: skip
        if self.rotation:
            img = np.ascontiguousarray(np.rot90(img, k=-self.rotation // 90))
        return img, dw / w, dh / h

    # -- the aligned crop
    def _yuv(self):
        if self._planes is None:
            frame = self.frame
            if frame.format.name not in _PLANAR:  # 10-bit, NV12, RGB, palette...: one conversion, then as usual
                frame = self.reformatter.reformat(frame, format="yuv420p")
            sx, sy = _PLANAR[frame.format.name]
            w, h = frame.width, frame.height
            planes = []
            for i, (pw, ph) in enumerate(((w, h), (-(-w // sx), -(-h // sy)), (-(-w // sx), -(-h // sy)))):
                p = frame.planes[i]  # a view of the decoder's buffer, rows padded to line_size: no copy
                planes.append(Image.frombuffer("L", (pw, ph), p, "raw", "L", p.line_size, 1))
            full = frame.format.name.startswith("yuvj") or str(getattr(frame, "color_range", "")) in ("2", "JPEG")
            matrix = "bt709" if int(getattr(frame, "colorspace", 0) or 0) == 1 else "bt601"
            self._planes = (*planes, sx, sy, full, matrix)
        return self._planes

    def _display_to_coded(self) -> np.ndarray:
        """(3, 3) affine map from display pixel centres to coded luma pixel centres (rotation and aspect undone)."""
        dw, dh = self.display
        r = self.rotation
        # display edge coordinates (centre + 0.5) -> unrotated edge coordinates
        rot = {0: [[1, 0, 0], [0, 1, 0]], 90: [[0, 1, 0], [-1, 0, dw]], 180: [[-1, 0, dw], [0, -1, dh]],
               270: [[0, -1, dh], [1, 0, 0]]}[r]  # fmt: skip
        unrotated_w = dh if r in (90, 270) else dw
        sar = unrotated_w / self.frame.width  # display width per coded pixel
        to_edge = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
        unrotate = np.vstack([rot, [0, 0, 1]]).astype(np.float64)
        to_coded = np.array([[1 / sar, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])
        return to_coded @ unrotate @ to_edge

    def warp(self, m: np.ndarray, size: int) -> np.ndarray:
        y, u, v, sx, sy, full, matrix = self._yuv()
        # Pillow's affine transform (C, bilinear) on each plane, in edge coordinates (pixel centres at +0.5):
        # crop edge -> crop centre -> display centre (m undone) -> coded luma centre -> coded luma edge.
        shift = np.array([[1.0, 0, 0.5], [0, 1.0, 0.5], [0, 0, 1.0]])
        back = np.array([[1.0, 0, -0.5], [0, 1.0, -0.5], [0, 0, 1.0]])
        luma = shift @ self._display_to_coded() @ np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]])) @ back
        black = 0 if full else 16  # outside the picture: black once converted
        yy = _sample(y, luma, size, black)
        # Chroma sampled at every crop pixel too (from its subsampled plane): a face large in the frame keeps its
        # colour detail (lips, cheeks), within about a grey level of converting the whole frame first.
        chroma = np.diag([1.0 / sx, 1.0 / sy, 1.0]) @ luma
        cb, cr = _sample(u, chroma, size, 128), _sample(v, chroma, size, 128)
        # Y'CbCr -> R'G'B' in one affine colour matrix applied by Pillow in C (rounded, clipped to 0..255): a
        # third of the per-row cost of the same arithmetic in NumPy floats.
        return np.asarray(Image.merge("RGB", (yy, cb, cr)).convert("RGB", _rgb_matrix(matrix, full)))
