"""Do the stored face crops hold a face by an independent detector's judgement? OpenCV's Haar cascade, a detector
that shares nothing with mmemo's RetinaFace, on every row that ``/faces/mask`` marks as a face.

    python benchmarks/check_crops_haar.py FEATURES_DIR

Needs OpenCV 4 (``pip install 'opencv-python-headless<5'``; OpenCV 5 moved the cascades out of the main
package), best in a virtual environment of its own: mmemo does not depend on OpenCV. Prints, per clip, the rows
with a face and the share of their crops in which the cascade finds one; the last line is the share over all.
"""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np


def main(features_dir: str) -> None:
    try:
        import cv2

        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    except (ImportError, AttributeError):
        sys.exit("needs OpenCV 4 with its Haar cascades: pip install 'opencv-python-headless<5'")
    total = found = 0
    for path in sorted(Path(features_dir, "shards").rglob("*.h5")):
        with h5py.File(path, "r") as h5:
            if "faces/crops" not in h5:
                continue
            rows = np.flatnonzero(h5["faces/mask"][()])
            hits = 0
            for i in rows:
                grey = cv2.cvtColor(h5["faces/crops"][i], cv2.COLOR_RGB2GRAY)
                hits += len(cascade.detectMultiScale(grey, scaleFactor=1.05, minNeighbors=3, minSize=(40, 40))) > 0
        total, found = total + len(rows), found + hits
        share = f"{hits / len(rows):.3f}" if len(rows) else "-"
        print(f"{path.relative_to(features_dir)}: {len(rows)} rows with a face; Haar finds one in {share}")
    print(f"all: {found} of {total} crops ({found / max(total, 1):.1%}) hold a face by OpenCV's Haar cascade")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
