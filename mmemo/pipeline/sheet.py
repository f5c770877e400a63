"""`mmemo inspect --sheet`: a contact sheet (PNG) to see at a glance whether the faces were found and aligned.

Layout, with S the frame size of the directory (224 by default) and ``n`` the clips drawn (``min(clips, clips with
video and faces)``)::

    width  = GAP + samples * (2 * S + GAP)
    height = GAP + n * (LABEL + S + GAP)

One band per clip, top to bottom in the manifest's order: a LABEL-px line (clip id, its face share, the source's
size and the aspect policy), then ``samples`` cells left to right. A cell is the S x S whole frame of one sampled row
with the face box (BOX_COLOUR, BOX_WIDTH px) and the 5 landmarks drawn on it, and to its right the aligned crop
scaled up to S x S; "no face" is written over the crop of a row without one. The rows are sampled evenly over the
clip's video rows (those with a picture on screen): row ``video_rows[floor((i + 0.5) * n_video / samples)]`` for
sample ``i``; a clip with fewer video rows than samples leaves the last cells black.

The box and landmarks are stored in display pixels of the source (pixel centres at integers); they are mapped to the
S-px frame the way ``mmemo.media.grid`` scaled it (``display_to_frame``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mmemo import atomic
from mmemo.data import schema as S
from mmemo.data.features_dir import read_manifest
from mmemo.data.shards import face_rows, open_shard, read_faces, read_frames
from mmemo.errors import MmemoError
from mmemo.media.grid import target_size

GAP = 4  # px between cells and bands, and around the sheet
LABEL = 18  # px of the label line above each clip's cells
BOX_COLOUR = (0, 255, 0)  # pure green: rare in real footage, so the box stands out (and a test can find it)
BOX_WIDTH = 2
# eyes, nose tip, mouth corners: one colour each, none of them the box's
LANDMARK_COLOURS = ((255, 0, 0), (255, 0, 0), (255, 255, 0), (255, 0, 255), (255, 0, 255))
LANDMARK_RADIUS = 2
NO_FACE_COLOUR = (255, 64, 64)
TEXT_COLOUR = (230, 230, 230)
BACKGROUND = (48, 48, 48)  # dark grey: the black letterbox bars of neighbouring cells stay apart


@dataclass
class SheetClip:
    """One clip chosen for the sheet (what is read from its shard to draw it)."""

    clip: str
    shard: Path
    share: float  # share of its video rows with a face (NaN: no picture on screen)


def display_to_frame(xy: np.ndarray, native: tuple[int, int], size: int, aspect: str) -> np.ndarray:
    """Map points ``xy`` (..., 2) in display pixels of a ``native`` = (width, height) source to the ``size`` px frame
    that ``mmemo.media.grid`` made of it with the ``aspect`` policy (letterbox, crop or stretch).

    The picture is scaled to ``target_size`` (w, h) (its edges to the scaled edges; pixel centres at integers on both
    sides), then centred on the square: padded with black where smaller (letterbox), cut where larger (crop).
    """
    width, height = native
    w, h = target_size(float(width), float(height), size, aspect)
    # _square: the offset of the scaled picture's corner in the square (negative where it was cut).
    ox = (size - w) // 2 if w <= size else -((w - size) // 2)
    oy = (size - h) // 2 if h <= size else -((h - size) // 2)
    xy = np.asarray(xy, np.float64)
    out = np.empty_like(xy)
    out[..., 0] = (xy[..., 0] + 0.5) * (w / width) - 0.5 + ox
    out[..., 1] = (xy[..., 1] + 0.5) * (h / height) - 0.5 + oy
    return out


def sample_rows(video_mask: np.ndarray, samples: int) -> np.ndarray:
    """Up to ``samples`` row indices spread evenly over the rows where ``video_mask`` (T,) is True: the middle of
    each of ``samples`` equal stretches of those rows (fewer when the clip has fewer video rows)."""
    rows = np.flatnonzero(video_mask)
    if len(rows) <= samples:
        return rows
    return rows[((np.arange(samples) + 0.5) * len(rows) / samples).astype(int)]


def _candidates(features_dir: str | os.PathLike) -> tuple[list[SheetClip], int]:
    """The extracted clips with video and faces, in manifest order, with their face share; and how many clips have
    video at all."""
    manifest = read_manifest(features_dir)
    found, n_video = [], 0
    for row in manifest.extracted.itertuples():
        path = manifest.shard_path(row)
        with open_shard(path) as h5:
            if S.VIDEO not in h5:
                continue
            n_video += 1
            counts = face_rows(h5)
            if counts is None:
                continue
            share = counts[0] / counts[1] if counts[1] else float("nan")
        found.append(SheetClip(str(row.clip), path, share))
    return found, n_video


def choose_clips(candidates: list[SheetClip], clips: int) -> list[SheetClip]:
    """Up to ``clips`` of ``candidates`` (manifest order), deterministically: always the one with the lowest face
    share (the first such; so that failures show), the rest spread evenly over the manifest, clips with a face
    first. Returned in manifest order."""
    if len(candidates) <= clips:
        return list(candidates)
    key = [-1.0 if np.isnan(c.share) else c.share for c in candidates]
    lowest = int(np.argmin(key))
    chosen = {lowest}
    for pool in ([i for i, k in enumerate(key) if k > 0], list(range(len(candidates)))):
        pool = [i for i in pool if i not in chosen]
        need = clips - len(chosen)
        if need <= 0 or not pool:
            continue
        picks = np.linspace(0, len(pool) - 1, min(need, len(pool))).round().astype(int)
        chosen.update(pool[p] for p in picks)  # linspace over distinct positions: no repeats
    return [candidates[i] for i in sorted(chosen)]


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # scalable, Pillow >= 10.1
    except TypeError:  # pragma: no cover - older Pillow: the fixed bitmap font
        return ImageFont.load_default()


def _draw_clip(sheet: Image.Image, top: int, clip: SheetClip, samples: int, size: int, fonts: tuple) -> None:
    """Draw one clip's band (label line and cells) with its upper edge at ``top``."""
    draw = ImageDraw.Draw(sheet)
    label_font, cell_font, no_face_font = fonts
    with open_shard(clip.shard) as h5:
        try:
            attrs = h5.attrs
            native = (int(attrs["native_width"]), int(attrs["native_height"]))
            fps = float(attrs["fps"])
            aspect = json.loads(h5[S.META].attrs["feature_config"]).get("aspect", "letterbox")
            rows = sample_rows(h5[S.VIDEO_MASK][()], samples)
            # Reading row by row keeps memory to the sampled rows (a chunk each), not the whole clip.
            frames = [read_frames(h5, r, r + 1)[0] for r in rows]
            faces = [read_faces(h5, r, r + 1) for r in rows]
            boxes, landmarks = h5[S.FACE_BOXES][()][rows], h5[S.FACE_LANDMARKS][()][rows]
        except (KeyError, OSError, ValueError) as e:  # a damaged shard: one line, as everywhere else
            raise MmemoError(f"{clip.shard}: unreadable for the contact sheet ({e}); run `mmemo validate`") from None
    share = "n/a" if np.isnan(clip.share) else f"{100 * clip.share:.1f}%"
    draw.text(
        (GAP, top + 1),
        f"{clip.clip}   face in {share} of video rows   {native[0]}x{native[1]} {aspect}",
        fill=TEXT_COLOUR,
        font=label_font,
    )
    y = top + LABEL
    for i, row in enumerate(rows):
        x = GAP + i * (2 * size + GAP)
        # Drawn on the frame before it is pasted, so a box that reaches past the frame (aspect "crop") is cut at
        # its edge instead of running into the crop beside it.
        frame = Image.fromarray(frames[i])
        crop, has = faces[i][0][0], bool(faces[i][1][0]) and bool(np.isfinite(boxes[i]).all())
        if has:
            pen = ImageDraw.Draw(frame)
            corners = display_to_frame(boxes[i].reshape(2, 2), native, size, aspect)
            # min / max: Pillow refuses a rectangle whose corners come in the other order
            (x0, y0), (x1, y1) = corners.min(axis=0), corners.max(axis=0)
            pen.rectangle([x0, y0, x1, y1], outline=BOX_COLOUR, width=BOX_WIDTH)
            points = display_to_frame(landmarks[i], native, size, aspect)
            r = LANDMARK_RADIUS
            for (px, py), colour in zip(points, LANDMARK_COLOURS, strict=True):
                pen.ellipse([px - r, py - r, px + r, py + r], fill=colour)
        sheet.paste(frame, (x, y))
        # The crop is small (112 px by default): scaled up to the frame's size so a misalignment is visible.
        sheet.paste(Image.fromarray(crop).resize((size, size), Image.Resampling.BILINEAR), (x + size, y))
        if not has:
            draw.text((x + size + size / 2, y + size / 2), "no face", fill=NO_FACE_COLOUR, font=no_face_font,
                      anchor="mm", stroke_width=1, stroke_fill=(0, 0, 0))  # fmt: skip
        draw.text((x + 3, y + size - 3), f"row {row}  {row / fps:.2f} s", fill=TEXT_COLOUR, font=cell_font,
                  anchor="ld", stroke_width=1, stroke_fill=(0, 0, 0))  # fmt: skip


def sheet_size(n_clips: int, samples: int, size: int) -> tuple[int, int]:
    """(width, height) in pixels of a sheet of ``n_clips`` clips x ``samples`` cells of ``size``-px frames."""
    return GAP + samples * (2 * size + GAP), GAP + n_clips * (LABEL + size + GAP)


def contact_sheet(
    features_dir: str | os.PathLike, out_png: str | os.PathLike, *, clips: int = 6, samples: int = 6
) -> Path:
    """Draw the contact sheet of ``features_dir`` (layout: this module's docstring) to ``out_png``; return its path.

    Up to ``clips`` clips with video and faces (``choose_clips``), ``samples`` rows each. Refuses, with one line, a
    directory without a clip with video or without faces. The PNG is written atomically, its folder created.
    """
    if clips < 1 or samples < 1:
        raise MmemoError(f"contact sheet: clips ({clips}) and samples ({samples}) must be at least 1")
    root = Path(features_dir)
    candidates, n_video = _candidates(root)
    if not n_video:
        raise MmemoError(f"{root}: no clip with video, so no contact sheet to draw")
    if not candidates:
        raise MmemoError(
            f"{root}: holds no faces (extracted with --faces off or before faces existed); "
            "re-extract with --faces on for a contact sheet"
        )
    chosen = choose_clips(candidates, clips)
    with open_shard(chosen[0].shard) as h5:
        size = int(json.loads(h5[S.META].attrs["feature_config"])["frame_size"])
    sheet = Image.new("RGB", sheet_size(len(chosen), samples, size), BACKGROUND)
    fonts = (_font(13), _font(11), _font(max(12, size // 8)))
    for k, clip in enumerate(chosen):
        _draw_clip(sheet, GAP + k * (LABEL + size + GAP), clip, samples, size, fonts)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")  # the name ends in .partial: say the format
    return out
