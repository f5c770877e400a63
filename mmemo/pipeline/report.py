"""`mmemo report` and `mmemo predict --html`: a run's page and a clip viewer that work opened from disk.

``RUN_DIR/report/`` holds everything the page reads, by relative path, so the folder can be copied anywhere and
opened without a network::

    report/
      index.html           the run at a glance, learning curves, the per-epoch table; with --features the
                           evaluation (pooled metrics, a sortable, paginated per-clip table) and the clip viewer.
                           The viewer's script and style sheet (mmemo/report_assets) are inlined.
      clips/<name>.js      one clip's traces, loaded (a <script> tag: file:// pages may not fetch) when opened
      media/<name>.<ext>   the clip's media: the original where browsers play it, else a small preview

Browsers play MP4 (H.264/AV1/VP9 with AAC/MP3/Opus/FLAC), WebM and the common audio files, and nothing else
(FLV, AVI, MKV, MOV, MPEG-4 Part 2, HEVC, VP6, ...): such clips get a preview, H.264 + AAC in MP4 written with
PyAV (libx264 is in its wheel), ``preview_height`` pixels high (never upscaled), on mmemo's time origin (t = 0 is
the first video frame: ``mmemo.media.decode``), so the player's time is the rows' time.

The numbers are those of ``mmemo evaluate`` (``evaluate_features``: the functions of ``mmemo predict``); the
page draws them with a small hand-written SVG script instead of a plotting library (a few kB, nothing to load).
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from importlib import resources
from pathlib import Path

import av
import numpy as np
import pandas as pd

from mmemo import __version__, atomic
from mmemo.config import PREVIEW_MODES
from mmemo.data.features_dir import RECORD, check_relative, read_manifest
from mmemo.data.labels import DIMENSIONS
from mmemo.errors import MediaError, MmemoError
from mmemo.media.grid import best_stream, ffmpeg_reason, stream_start

PREVIEW_HEIGHT = 360
# What Chromium and Firefox both play, by container family (PyAV's format name) and codec (canonical name).
_MP4 = "mov,mp4,m4a,3gp,3g2,mj2"
_PLAYABLE = {
    # suffix: (format name, video codecs, audio codecs)
    ".mp4": (_MP4, {"h264", "av1", "vp9"}, {"aac", "mp3", "opus", "flac"}),
    ".m4v": (_MP4, {"h264", "av1", "vp9"}, {"aac", "mp3", "opus", "flac"}),
    ".m4a": (_MP4, set(), {"aac", "mp3", "opus", "flac"}),
    ".webm": ("matroska,webm", {"vp8", "vp9", "av1"}, {"opus", "vorbis"}),
    ".wav": ("wav", set(), {"pcm_s16le", "pcm_u8", "pcm_f32le", "pcm_s24le", "pcm_s32le"}),
    ".mp3": ("mp3", set(), {"mp3"}),
    ".flac": ("flac", set(), {"flac"}),
    ".ogg": ("ogg", set(), {"vorbis", "opus", "flac"}),
    ".opus": ("ogg", set(), {"opus"}),
}
# H.264 in 4:2:0 8-bit only: High 4:4:4 and 10-bit streams do not decode in browsers.
_PLAYABLE_PIX = {"yuv420p", "yuvj420p"}
_ASSETS = "report_assets"
_CLIP_ROWS_PER_PAGE = 25


# ------------------------------------------------------------------------------------------------------- media
@dataclass(frozen=True)
class MediaInfo:
    """What a media file holds, as far as a browser cares."""

    path: Path
    has_video: bool
    has_audio: bool
    playable: bool
    why: str  # why a preview is needed ("" when playable): "FLV container", "mpeg4 video", ...


def probe_media(path: str | os.PathLike) -> MediaInfo:
    """Open ``path`` with PyAV and say whether browsers play it as it is.

    Raises:
        MediaError: naming the file when FFmpeg cannot open it or it holds neither audio nor video.
    """
    path = Path(path)
    try:
        with av.open(str(path)) as c:
            v, a = best_stream(c, "video"), best_stream(c, "audio")
            fmt = c.format.name
            vcodec = v.codec_context.codec.canonical_name if v is not None else None
            acodec = a.codec_context.codec.canonical_name if a is not None else None
            pix = v.codec_context.pix_fmt if v is not None else None
            start = float(stream_start(v if v is not None else a)) if (v or a) is not None else 0.0
    except (av.error.FFmpegError, OSError) as e:
        raise MediaError(f"{path}: cannot be opened for the report ({ffmpeg_reason(e)})") from None
    if v is None and a is None:
        raise MediaError(f"{path}: holds neither audio nor video")
    why = _why_not_playable(path.suffix.lower(), fmt, vcodec, acodec, pix, start)
    return MediaInfo(path, v is not None, a is not None, not why, why)


def _why_not_playable(suffix: str, fmt: str, vcodec, acodec, pix, start: float) -> str:
    rule = _PLAYABLE.get(suffix)
    if rule is None or rule[0] != fmt:
        return f"{suffix or 'no suffix'} ({fmt.split(',')[0]} container)"
    _, videos, audios = rule
    if vcodec is not None and vcodec not in videos:
        return f"{vcodec} video"
    if vcodec is not None and pix not in _PLAYABLE_PIX:
        return f"{vcodec} video in {pix}"
    if acodec is not None and acodec not in audios:
        return f"{acodec} audio"
    # A stream that starts late would put the player's 0 elsewhere than the rows' 0 (mmemo.media.decode).
    if abs(start) > 0.001:
        return f"first {'video frame' if vcodec else 'audio sample'} at {start:.3f} s"
    return ""


def write_preview(
    path: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    audio_path: str | os.PathLike | None = None,
    height: int = PREVIEW_HEIGHT,
    end: float | None = None,
) -> Path:
    """Transcode ``path`` (and a separate ``audio_path``) to an MP4 browsers play: H.264 (libx264, 4:2:0,
    ``height`` px high or less, the source's frame times) + AAC, timed from mmemo's origin (the first video frame;
    the first audio sample for audio-only clips); what lies before the origin or from ``end`` (s) on (mmemo's
    clip ends with its last frame: audio past it is not in the rows) is dropped. Written atomically.

    Raises:
        MediaError: naming the file when it cannot be decoded.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic.atomic_path(dst) as tmp:
            _transcode(Path(path), Path(audio_path) if audio_path else None, tmp, height, end)
    except av.error.FFmpegError as e:
        raise MediaError(f"{path}: cannot be made into a preview ({ffmpeg_reason(e)})") from None
    return dst


def _transcode(path: Path, audio_path: Path | None, tmp: Path, height: int, end: float | None) -> None:
    with av.open(str(path)) as src, av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        asrc = av.open(str(audio_path)) if audio_path else None
        try:
            vin = best_stream(src, "video")
            ain = best_stream(asrc if asrc is not None else src, "audio")
            if vin is None and ain is None:
                raise MediaError(f"{path}: holds neither audio nor video")
            origin = stream_start(vin if vin is not None else ain)
            vout = _video_out(out, vin, height, path) if vin is not None else None
            aout = _audio_out(out, ain) if ain is not None else None
            last: dict = {}  # the last video time written (ms)
            stop = Fraction(end).limit_denominator(10**6) if end is not None else None
            if asrc is None:  # one demux pass over both streams keeps them interleaved in the file
                streams = [s for s in (vin, ain) if s is not None]
                for packet in src.demux(streams):
                    for frame in packet.decode():
                        _encode(out, frame, vout if packet.stream is vin else aout, origin, stop, last)
            else:
                for container, stream, sout in ((src, vin, vout), (asrc, ain, aout)):
                    if stream is not None:
                        for frame in container.decode(stream):
                            _encode(out, frame, sout, origin, stop, last)
            for sout in (vout, aout):
                if sout is not None:
                    out.mux(sout.encode(None))
        finally:
            if asrc is not None:
                asrc.close()


def _video_out(out, vin, height: int, path: Path):
    cc = vin.codec_context
    sar = cc.sample_aspect_ratio or Fraction(1)
    w, h = cc.width * sar, Fraction(cc.height)
    if _rotation(path, vin.index) in (90, 270):  # shown on its side: the preview is upright (mmemo.media.grid)
        w, h = h, w
    h_out = max(2, min(height, round(h)) // 2 * 2)  # never upscaled; 4:2:0 needs even sizes
    w_out = max(2, round(w / h * h_out / 2) * 2)
    vout = out.add_stream("libx264", rate=vin.average_rate or 25)
    vout.width, vout.height, vout.pix_fmt = w_out, h_out, "yuv420p"
    vout.codec_context.time_base = Fraction(1, 1000)  # frame times in ms: a variable frame rate is kept
    # veryfast + CRF 28, Main profile: small files every browser decodes.
    vout.options = {"preset": "veryfast", "crf": "28", "profile": "main"}
    return vout


def _rotation(path: Path, index: int) -> int:
    """The counter-clockwise turn (degrees) the first frame of stream ``index`` asks for (its display matrix)."""
    with av.open(str(path)) as c:
        for frame in c.decode(c.streams[index]):
            return int(getattr(frame, "rotation", 0) or 0) % 360
    return 0


def _audio_out(out, ain):
    rate = ain.codec_context.sample_rate or 16000
    layout = "mono" if (ain.codec_context.channels or 1) == 1 else "stereo"
    aout = out.add_stream("aac", rate=rate, layout=layout)
    aout.bit_rate = 64000 if layout == "mono" else 96000
    return aout


def _encode(out, frame, sout, origin: Fraction, stop: Fraction | None, last: dict) -> None:
    """Re-time ``frame`` from the origin and encode the part of it in [0, stop)."""
    if frame.pts is None or frame.time_base is None:
        return
    t = frame.pts * frame.time_base - origin
    if stop is not None and t >= stop:
        return
    if isinstance(frame, av.VideoFrame):
        if t < 0:
            return
        ccw = int(getattr(frame, "rotation", 0) or 0) % 360
        if ccw:  # the display orientation mmemo decodes to (mmemo.media.grid)
            img = np.rot90(frame.to_ndarray(format="rgb24"), k=ccw // 90)
            new = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
        else:
            new = frame
        new = new.reformat(width=sout.width, height=sout.height, format="yuv420p")
        new.pts, new.time_base = round(t * 1000), Fraction(1, 1000)
        if new.pts <= last.get("video", -1):  # two source frames in one millisecond: the muxer needs rising times
            return
        last["video"] = new.pts
        out.mux(sout.encode(new))
        return
    rate = frame.sample_rate
    start = round(t * rate)
    first, stop_at = max(0, -start), frame.samples if stop is None else min(frame.samples, round(stop * rate) - start)
    if first >= stop_at:
        return
    if (first, stop_at) != (0, frame.samples):  # the part in [0, stop) only
        data = frame.to_ndarray()[..., first:stop_at]
        new = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=frame.format.name, layout=frame.layout)
        new.sample_rate, start, frame = rate, start + first, new
    frame.pts, frame.time_base = start, Fraction(1, rate)
    out.mux(sout.encode(frame))


def place_media(
    path: Path,
    audio_path: Path | None,
    media_dir: Path,
    name: str,
    *,
    previews: str = "auto",
    height: int = PREVIEW_HEIGHT,
    end: float | None = None,
) -> tuple[Path, MediaInfo, str]:
    """The clip's media inside ``media_dir``: a copy of the original where browsers play it (and ``previews`` is
    "auto"), else a preview (``write_preview``, up to ``end`` s). A file already there from an earlier report of
    the same source is kept.

    Returns (the file written, the probe of the original, "original" or "preview").
    """
    info = probe_media(path)
    copy = info.playable and previews == "auto" and audio_path is None
    dst = media_dir / (f"{name}{path.suffix.lower()}" if copy else f"{name}.{height}p.mp4")
    how = "original" if copy else "preview"
    if dst.exists() and dst.stat().st_mtime >= max(_mtime(path), _mtime(audio_path)):
        return dst, info, how
    media_dir.mkdir(parents=True, exist_ok=True)
    if copy:
        with atomic.atomic_path(dst) as tmp:
            shutil.copyfile(path, tmp)
    else:
        write_preview(path, dst, audio_path=audio_path, height=height, end=end)
    return dst, info, how


def _mtime(p: Path | None) -> float:
    return p.stat().st_mtime if p is not None else 0.0


def safe_name(clip_id: str) -> str:
    """A file name for a clip id: its readable characters and a short hash (ids that map alike stay apart)."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", clip_id.replace("/", "__"))[:80].strip("._") or "clip"
    return f"{base}-{hashlib.sha1(clip_id.encode()).hexdigest()[:8]}"


# ------------------------------------------------------------------------------------------------- clip data
def clip_payload(
    name: str,
    pred: np.ndarray,
    truth: np.ndarray | None,
    fps: int,
    media: str | None,
    *,
    media_kind: str = "video",
    note: str = "",
) -> dict:
    """What the viewer reads for one clip: ``pred`` (T, 2) and ``truth`` (T, 2) with NaN where unlabelled (or
    None), rounded to 4 decimals, as one list per series; ``media`` relative to the page, or None."""
    out = {
        "name": name,
        "fps": fps,
        "rows": len(pred),
        "media": media,
        "media_kind": media_kind,
        "note": note,
        "pred": {d: _series(pred[:, k]) for k, d in enumerate(DIMENSIONS)},
        "gold": None,
    }
    if truth is not None and np.isfinite(truth).any():
        out["gold"] = {d: _series(truth[:, k]) for k, d in enumerate(DIMENSIONS)}
    return out


def _series(x: np.ndarray) -> list:
    return [None if not np.isfinite(v) else round(float(v), 4) for v in x]


def _script_json(obj: object) -> str:
    """JSON safe inside a <script> element (no "</script>" or "<!--" can end it early)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def _asset(name: str) -> str:
    return (resources.files("mmemo") / _ASSETS / name).read_text(encoding="utf-8")


def render_page(title: str, body: str, data: dict) -> str:
    """A whole HTML page: ``body`` (HTML), ``data`` as ``window.MMEMO`` and the viewer's script and style inlined."""
    page = _asset("page.html")
    for key, value in (("TITLE", html.escape(title)), ("STYLE", _asset("viewer.css")), ("BODY", body),
                       ("DATA", _script_json(data)), ("SCRIPT", _asset("viewer.js"))):  # fmt: skip
        page = page.replace("{{" + key + "}}", value)
    return page


# ----------------------------------------------------------------------------------------------- the run page
@dataclass
class ReportSummary:
    """What ``build_report`` wrote and how big it is."""

    index: Path
    clips: int
    previews: int
    originals: int
    missing: int
    media_seconds: float
    bytes_total: int
    bytes_media: int

    def text(self) -> str:
        per_min = f"; {self.bytes_total / 2**20 / (self.media_seconds / 60):.2f} MiB per media minute" if (
            self.media_seconds > 0) else ""  # fmt: skip
        media = (f"{self.clips} clip(s): {self.previews} preview(s), {self.originals} original(s), "
                 f"{self.missing} without media; ") if self.clips else ""  # fmt: skip
        return f"{self.index} ({media}{self.bytes_total / 2**20:.2f} MiB{per_min})"


def build_report(
    run_dir: str | os.PathLike,
    features_dir: str | os.PathLike | None = None,
    *,
    out_dir: str | os.PathLike | None = None,
    checkpoint: str = "best.pt",
    media_root: str | os.PathLike | None = None,
    previews: str = "auto",
    preview_height: int = PREVIEW_HEIGHT,
    log: Callable[[str], None] = lambda s: None,
) -> ReportSummary:
    """Write ``out_dir/index.html`` (default ``RUN_DIR/report``) for a run, and with ``features_dir`` its
    evaluation on those clips with a viewer per clip.

    ``media_root``: where the clips' media are (default: the corpus ``mmemo extract`` read, as recorded in
    FEATURES_DIR/extract_config.json). A clip whose media is missing keeps its traces and says so.
    """
    if previews not in PREVIEW_MODES:
        raise MmemoError(f"previews {previews!r} is not one of {', '.join(PREVIEW_MODES)}")
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "report"
    config, history = _read_run(run_dir)
    best_epoch = _best_epoch(run_dir / checkpoint)
    body = [_glance_html(run_dir, config, history, best_epoch, checkpoint), _curves_html(history, best_epoch)]
    data: dict = {"kind": "report", "history": _history_json(history), "best_epoch": best_epoch}
    summary = ReportSummary(out / "index.html", 0, 0, 0, 0, 0.0, 0, 0)
    out.mkdir(parents=True, exist_ok=True)
    if features_dir is not None:
        ev_body, ev_data, summary = _evaluation(run_dir, Path(features_dir), out, checkpoint, media_root, previews,
                                                preview_height, log)  # fmt: skip
        body.append(ev_body)
        data |= ev_data
    atomic.write_text(out / "index.html", render_page(f"mmemo report: {run_dir.name}", "\n".join(body), data))
    summary.bytes_total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return summary


def _read_run(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    cfg_path, hist_path = run_dir / "config.json", run_dir / "metrics.csv"
    if not cfg_path.is_file() and (run_dir / "results.json").is_file():  # `mmemo train --folds K` wrote it
        folds = sorted(run_dir.glob("seed*/fold*/config.json"))
        hint = f"; report one fold's run, e.g. `mmemo report {folds[0].parent}`" if folds else ""
        raise MmemoError(f"{run_dir}: a cross-validation directory (its results are results.md){hint}")
    for p in (cfg_path, hist_path):
        if not p.is_file():
            raise MmemoError(f"{run_dir}: no {p.name}; is this a run directory written by `mmemo train`?")
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MmemoError(f"{cfg_path}: not valid JSON ({e})") from None
    try:
        history = pd.read_csv(hist_path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise MmemoError(f"{hist_path}: not a readable CSV ({str(e).strip().splitlines()[0]})") from None
    if not isinstance(config, dict) or "epoch" not in history.columns:
        raise MmemoError(f"{run_dir}: config.json or metrics.csv is not what `mmemo train` writes")
    return config, history


def _best_epoch(path: Path) -> int | None:
    """The epoch ``best.pt`` was saved at (the trainer's own choice of best), or None without one."""
    if not path.is_file():
        return None
    from mmemo.model.checkpoint import load_checkpoint  # torch: only when there is a checkpoint to read

    epoch = load_checkpoint(path, keys=()).get("epoch")
    return int(epoch) if epoch is not None else None


def _e(x: object) -> str:
    return html.escape(str(x))


def _table(rows: list[tuple[str, object]]) -> str:
    return "<table class='kv'>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>"


def _fmt_s(s: float) -> str:
    m, s = divmod(round(s), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s"


def _glance_html(run_dir: Path, config: dict, history: pd.DataFrame, best_epoch: int | None, ckpt: str) -> str:
    train, model, extract = config.get("train", {}), config.get("model", {}), config.get("extract", {})
    seconds = float(history["seconds"].sum()) if "seconds" in history else float("nan")
    best = history[history["epoch"] == best_epoch] if best_epoch is not None else history.iloc[:0]
    scores = [(f"{d} CCC at the best epoch", f"{best[f'{d}_ccc'].iloc[0]:.3f}") for d in DIMENSIONS
              if len(best) and f"{d}_ccc" in best]  # fmt: skip
    glance = [
        ("run", run_dir.resolve()),
        (
            "clips",
            f"{len(config.get('train_clips', []))} for training, {len(config.get('val_clips', []))} for validation",
        ),  # fmt: skip
        ("epochs", f"{len(history)} (best: {best_epoch if best_epoch is not None else 'no ' + ckpt})"),
        *scores,
        ("training time", _fmt_s(seconds) if math.isfinite(seconds) else "not recorded"),
        ("device", config.get("device", "")),
        ("video input", config.get("visual", "")),
        ("audio features", ", ".join(extract.get("features", []))),
    ]
    versions = config.get("versions", {})
    details = "".join(
        f"<details><summary>{_e(title)}</summary>{_table(list(d.items()))}</details>"
        for title, d in (
            ("training configuration", train),
            ("model", model),
            ("extraction", extract),
            ("versions", versions),
        )
        if d  # fmt: skip
    )
    clips = "".join(
        f"<details><summary>{_e(k.replace('_', ' '))} ({len(config.get(k, []))})</summary>"
        f"<p class='list'>{_e(', '.join(config.get(k, [])))}</p></details>"
        for k in ("train_clips", "val_clips")
    )
    return (f"<section id='glance'><h1>mmemo report: {_e(run_dir.name)}</h1>{_table(glance)}{details}{clips}"
            f"<p class='small'>written by mmemo {_e(__version__)}</p></section>")  # fmt: skip


def _history_json(history: pd.DataFrame) -> dict:
    return {c: [None if not (isinstance(v, float) and math.isfinite(v)) and not isinstance(v, int) else v
                for v in history[c].tolist()] for c in history.columns
            if pd.api.types.is_numeric_dtype(history[c])}  # fmt: skip


def _curves_html(history: pd.DataFrame, best_epoch: int | None) -> str:
    cols = [c for c in history.columns if c not in ("gpu_mem_mib",) and history[c].notna().any()]
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    rows = []
    for _, r in history.iterrows():
        cls = " class='best'" if best_epoch is not None and int(r["epoch"]) == best_epoch else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{_cell(r[c])}</td>" for c in cols) + "</tr>")
    table = f"<table class='grid'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    epochs = f"<details><summary>per-epoch table</summary><div class='scroll'>{table}</div></details>"
    return f"<section id='training'><h2>Learning curves</h2><div id='curves' class='curves'></div>{epochs}</section>"


def _cell(v: object) -> str:
    if isinstance(v, float | np.floating):
        if not math.isfinite(v):
            return ""
        return f"{int(v)}" if float(v).is_integer() and abs(v) < 1e6 else f"{v:.4g}"
    return _e(v)


# --------------------------------------------------------------------------------------------- the evaluation
def _evaluation(run_dir: Path, features_dir: Path, out: Path, checkpoint: str, media_root, previews: str,
                height: int, log: Callable[[str], None]) -> tuple[str, dict, ReportSummary]:  # fmt: skip
    from mmemo.pipeline.evaluate import evaluate_features
    from mmemo.pipeline.predict import load_run

    run = load_run(run_dir, checkpoint)
    ev = evaluate_features(run, features_dir, log=log)
    sources = _media_sources(features_dir, media_root)
    clips_dir, media_dir = out / "clips", out / "media"
    if clips_dir.exists():
        shutil.rmtree(clips_dir)  # clip data is cheap to write again; an old clip must not linger
    clips_dir.mkdir(parents=True)
    rows, kept = [], set()
    counts = {"preview": 0, "original": 0, "missing": 0}
    seconds = 0.0
    for i, (r, row) in enumerate(zip(ev.results, ev.clips.to_dict("records"), strict=True), 1):
        name = safe_name(r.clip)
        media, kind, how, note = _clip_media(r.clip, sources, media_dir, name, previews, height, len(r.pred) / ev.fps)
        counts[how] += 1
        if media is not None:
            kept.add(media.name)
        rel = f"media/{media.name}" if media is not None else None
        payload = clip_payload(r.clip, r.pred, np.where(r.mask[:, None], r.truth, np.nan), ev.fps, rel,
                               media_kind=kind, note=note)  # fmt: skip
        atomic.write_text(clips_dir / f"{name}.js", f"mmemoClipLoaded({_script_json(payload)});\n")
        seconds += len(r.pred) / ev.fps
        rows.append({"clip": r.clip, "file": name, "seconds": round(len(r.pred) / ev.fps, 2), "media": how,
                     **{k: _num(v) for k, v in row.items() if k not in ("clip", "frames")}})  # fmt: skip
        log(f"[{i}/{len(ev.results)}] {r.clip}: {how}{' (' + note + ')' if note else ''}")
    if media_dir.exists():  # media of clips no longer in the report
        for p in media_dir.iterdir():
            if p.is_file() and p.name not in kept:
                p.unlink()
    n = int(sum(r.mask.sum() for r in ev.results))
    body = (f"<section id='evaluation'><h2>Evaluation on {_e(features_dir.resolve().name)}</h2>"
            f"<p>{len(ev.results)} clips, {n} labelled frames ({n / ev.fps:.1f} s) in {_e(features_dir.resolve())}; "
            f"checkpoint {_e(checkpoint)}</p>{_metrics_html(ev.metrics)}"
            "<div id='viewer' class='viewer' hidden></div><div id='cliptable'></div></section>")  # fmt: skip
    metrics = {d: {k: _num(v) for k, v in m.items()} for d, m in ev.metrics.items()}
    data = {"clips": rows, "rows_per_page": _CLIP_ROWS_PER_PAGE, "metrics": metrics}
    bytes_media = sum(p.stat().st_size for p in media_dir.iterdir()) if media_dir.exists() else 0
    summary = ReportSummary(out / "index.html", len(rows), counts["preview"], counts["original"], counts["missing"],
                            seconds, 0, bytes_media)  # fmt: skip
    return body, data, summary


def _num(v: object) -> object:
    if isinstance(v, float | np.floating):
        return round(float(v), 6) if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def _metrics_html(metrics: dict[str, dict[str, float]]) -> str:
    cols = [("ccc", "CCC"), ("ccc_clip", "CCC per clip"), ("pcc", "PCC"), ("rmse", "RMSE"), ("mae", "MAE")]
    head = "<tr><th></th>" + "".join(f"<th>{n}</th>" for _, n in cols) + "</tr>"
    body = "".join(f"<tr><th>{_e(d)}</th>" + "".join(f"<td>{_cell(float(m[k]))}</td>" for k, _ in cols) + "</tr>"
                   for d, m in metrics.items())  # fmt: skip
    return f"<table class='grid metrics'><thead>{head}</thead><tbody>{body}</tbody></table>"


@dataclass(frozen=True)
class _Source:
    path: Path
    audio: Path | None


def _media_sources(features_dir: Path, media_root) -> dict[str, _Source]:
    """clip id -> its media file(s), from the manifest and the shard's own record of its sources."""
    from mmemo.data.shards import read_attrs

    manifest = read_manifest(features_dir)
    root = Path(media_root) if media_root is not None else Path((manifest.record or {}).get("corpus", ""))
    if media_root is None and not (manifest.record or {}).get("corpus"):
        raise MmemoError(f"{features_dir / RECORD}: does not say where the corpus is; give --media CORPUS_DIR")
    out, where = {}, str(features_dir / "manifest.csv")
    # Paths from files on disk: plain relative paths only (no "..", not absolute). Symbolic links inside the
    # corpus are followed, as `mmemo extract` followed them.
    for row in manifest.extracted.itertuples():
        audio = str(read_attrs(manifest.shard_path(row)).get("audio_source", "") or "")
        out[row.clip] = _Source(root / check_relative(row.source, where),
                                root / check_relative(audio, where) if audio else None)  # fmt: skip
    return out


def _clip_media(clip: str, sources: dict[str, _Source], media_dir: Path, name: str, previews: str,
                height: int, end: float) -> tuple[Path | None, str, str, str]:  # fmt: skip
    """(media file or None, "video" or "audio", "preview" / "original" / "missing", a note for the page)."""
    src = sources.get(clip)
    if src is None or not src.path.is_file() or (src.audio is not None and not src.audio.is_file()):
        where = src.path if src is not None else "the manifest"
        return None, "video", "missing", f"media not found: {where} (give --media CORPUS_DIR)"
    try:
        dst, info, how = place_media(src.path, src.audio, media_dir, name, previews=previews, height=height, end=end)
    except MediaError as e:  # this clip's traces are still worth showing; the page and the log say why no media
        return None, "video", "missing", f"media unusable: {e}"
    note = f"preview: {info.why}" if how == "preview" and info.why else ""
    return dst, "video" if info.has_video else "audio", how, note


# ------------------------------------------------------------------------------------------- predict --html
def write_clip_page(
    pred,
    run_dir: str | os.PathLike,
    html_path: str | os.PathLike,
    *,
    audio_path: str | os.PathLike | None = None,
    previews: str = "auto",
    height: int = PREVIEW_HEIGHT,
) -> ReportSummary:
    """``mmemo predict CLIP --html PAGE``: the clip viewer for one prediction (``predict.Prediction``), with its
    media in ``<PAGE stem>_files/`` beside the page (the original where browsers play it, else a preview)."""
    html_path = Path(html_path)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    files = html_path.with_name(f"{html_path.stem}_files")
    src = Path(pred.clip)
    y = pred.table[list(DIMENSIONS)].to_numpy(np.float32)
    dst, info, how = place_media(src, Path(audio_path) if audio_path else None, files, safe_name(src.stem),
                                 previews=previews, height=height, end=len(y) / pred.fps)  # fmt: skip
    for p in files.iterdir():  # an earlier page's other media
        if p.is_file() and p != dst:
            p.unlink()
    payload = clip_payload(src.name, y, None, pred.fps, f"{files.name}/{dst.name}",
                           media_kind="video" if info.has_video else "audio",
                           note=f"preview: {info.why}" if how == "preview" and info.why else "")  # fmt: skip
    s = pred.summary()
    facts = [("clip", src.resolve()), ("run", Path(run_dir).resolve()), ("duration", f"{s['duration_s']:.2f} s"),
             *[(d, f"mean {s[f'{d}_mean']:+.3f}, sd {s[f'{d}_std']:.3f}") for d in DIMENSIONS],
             ("media", f"{how}{': ' + info.why if how == 'preview' else ''}")]  # fmt: skip
    body = (f"<section id='glance'><h1>{_e(src.name)}</h1>{_table(facts)}"
            f"<p class='small'>predicted by mmemo {_e(__version__)}</p></section>"
            "<section><div id='viewer' class='viewer'></div></section>")  # fmt: skip
    atomic.write_text(html_path, render_page(f"mmemo: {src.name}", body, {"kind": "clip", "clip": payload}))
    total = html_path.stat().st_size + dst.stat().st_size
    return ReportSummary(html_path, 1, int(how == "preview"), int(how == "original"), 0, len(y) / pred.fps, total,
                         dst.stat().st_size)  # fmt: skip
