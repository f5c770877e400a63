"""What skipping H.264 / HEVC deblocking (``skip_loop_filter``) saves in decoding and costs in fidelity.

    python benchmarks/deblock.py [--work DIR] [CLIP ...]

For each video (default: every video of ../shared/realdata and the 720p copies that ``benchmarks/extract.py``
builds in its ``--work`` directory, when they are there) and each mode of FFmpeg's ``skip_loop_filter`` (``none``:
every frame deblocked, as the ffmpeg command line does; ``noref``: frames no other frame refers to are not;
``bidir``: no B-frame is; ``all``: none is), the CPU seconds of decoding on one thread, and how far the 224-px grid
frames and a 112-px crop of the picture's centre (the face crop's sampling: bilinear from the full-size planes)
lie from the ``none`` decode: mean absolute difference, 99th percentile and maximum, in grey levels. Prints figures
only; ``../shared/tools/check_extract.py`` judges an extraction against the ffmpeg command line.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from mmemo.features.faces import similarity_transform, template
from mmemo.media.picture import FramePicture

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
VIDEO = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"}
MODES = ("none", "noref", "bidir", "all")


def decode(path: Path, mode: str) -> tuple[float, np.ndarray, np.ndarray]:
    """(CPU s of decoding, grid frames (n, 224, 224, 3), centre crops (n, 112, 112, 3)) of ``path``."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_count = 1
        if mode != "none":
            s.codec_context.options = {"skip_loop_filter": mode}
        grid, crop, spent = VideoReformatter(), VideoReformatter(), 0.0
        frames, crops = [], []
        it = c.decode(s)
        while True:
            t = time.process_time()
            frame = next(it, None)
            spent += time.process_time() - t
            if frame is None:
                break
            w, h = frame.width, frame.height
            scale = 224 / max(w, h)
            img = grid.reformat(frame, width=max(1, round(w * scale)), height=max(1, round(h * scale)),
                                format="rgb24", interpolation="AREA").to_ndarray()  # fmt: skip
            frames.append(img)
            # the template's landmarks spread over the middle third of the picture: a face's scale in a talking head
            side = min(w, h) / 3
            lm = template(112) / 112 * side + np.array([w / 2 - side / 2, h / 2 - side / 2])
            pic = FramePicture(frame, 0, (w, h), crop)
            crops.append(pic.warp(similarity_transform(lm, template(112)), 112))
    return spent, np.stack(frames), np.stack(crops)


def diff(a: np.ndarray, b: np.ndarray) -> tuple[float, float, int]:
    n = min(len(a), len(b))
    d = np.abs(a[:n].astype(np.int16) - b[:n].astype(np.int16))
    return float(d.mean()), float(np.percentile(d, 99)), int(d.max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="*", type=Path)
    ap.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp/mmemo-bench-extract"),
        help="benchmarks/extract.py's work directory (its hd/ copies are used when present)",
    )
    args = ap.parse_args()
    clips = args.clips or sorted(p for p in REALDATA.rglob("*") if p.suffix.lower() in VIDEO)
    if not args.clips:
        clips += sorted((args.work / "hd").glob("*.mp4"))
    print(
        "clip                                codec  mode   decode CPU s  vs none | grid: mean  p99  max "
        "| crop: mean  p99  max"
    )
    totals = {m: [0.0, 0.0, 0.0] for m in MODES}
    for path in clips:
        with av.open(str(path)) as c:
            codec = c.streams.video[0].codec_context.name
        ref_t, ref_f, ref_c = decode(path, "none")
        for mode in MODES:
            t, f, cr = (ref_t, ref_f, ref_c) if mode == "none" else decode(path, mode)
            g, k = diff(f, ref_f), diff(cr, ref_c)
            totals[mode][0] += t
            totals[mode][1] += g[0] * len(f)
            totals[mode][2] += len(f)
            print(
                f"{path.name[:35]:35s} {codec:6s} {mode:6s} {t:12.2f} {t / ref_t:8.2f} | {g[0]:10.3f} {g[1]:4.0f} "
                f"{g[2]:4d} | {k[0]:10.3f} {k[1]:4.0f} {k[2]:4d}"
            )
    print()
    for mode in MODES:
        t, g, n = totals[mode]
        print(
            f"all clips, {mode:6s}: decode CPU {t:.2f} s ({t / totals['none'][0]:.2f} of none), grid mean "
            f"difference {g / max(n, 1):.3f} grey levels"
        )


if __name__ == "__main__":
    main()
