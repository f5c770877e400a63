"""`mmemo extract`: corpus scan -> one job per clip (joblib) -> one shard per clip + manifest + errors.

A clip that fails (corrupt, empty, not media, nothing decodable) is reported in one line naming the file and the
reason, recorded in ``errors.csv`` and the manifest, and never written as a shard; the other clips go on.
A clip whose shard already exists and was made from the same source file (size, mtime), the same feature
configuration, the same labels and the same schema is not extracted again.

A truncated file (it holds less than its container or header declares: a download cut short) is extracted as far
as it decodes, with one warning line, a manifest note and an ``errors.csv`` row of level "warning"; ``strict``
fails it instead. The shard records the truncation (root attribute ``truncation``), so a clip kept from an
earlier run reports its warning again, and fails under ``strict``: strictness is not part of ``clip_key``, since
it never changes a shard that is written.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import BrokenExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mmemo import __version__
from mmemo.atomic import PARTIAL_SUFFIX, writer_pid
from mmemo.config import BACKENDS, ExtractConfig
from mmemo.data import schema as S
from mmemo.data.features_dir import (
    LOCK_FILE,
    SHARD_DIR,
    SHARD_SUFFIX,
    ClipRecord,
    shard_relpath,
    write_manifest,
)
from mmemo.data.labels import LABELS_FILE, LabelTable, align
from mmemo.data.layouts import load_labels
from mmemo.data.shards import ShardWriter, read_attrs
from mmemo.errors import ConfigError, MediaError, MmemoError, SchemaError
from mmemo.features.clip import featurise
from mmemo.features.detector import DETECTOR_NAME, check_detector
from mmemo.features.faces import CROP_SAMPLING
from mmemo.features.imports import ImportSpec, import_stream
from mmemo.features.registry import check_features
from mmemo.media.decode import Truncation
from mmemo.media.files import MEDIA_SUFFIXES, ClipSource, discover
from mmemo.pipeline.progress import Progress
from mmemo.provenance import package_versions


@dataclass
class ExtractSummary:
    out_dir: Path
    results: list[ClipRecord]
    wall_s: float
    notes: list[str]  # duplicates, label mismatches: reported, not fatal

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def failed(self) -> list[ClipRecord]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def media_seconds(self) -> float:
        return sum(r.duration for r in self.results if r.status != "failed")


def _file_stamp(p: Path | None) -> tuple[int, float]:
    if p is None:
        return 0, 0.0
    st = p.stat()
    return st.st_size, st.st_mtime


def clip_key(src: ClipSource, cfg: ExtractConfig, label_rows: pd.DataFrame | None,
             imports: Sequence[ImportSpec] = ()) -> str:  # fmt: skip
    """What a shard is made from; equal keys mean the shard is up to date."""
    parts = {
        "schema": S.SCHEMA_VERSION,
        "source": _file_stamp(src.path),
        "audio_source": _file_stamp(src.audio_path),
        "config": cfg.config_hash(),
        "labels": "" if label_rows is None else pd.util.hash_pandas_object(label_rows, index=False).sum().item(),
    }
    if cfg.faces:  # how crops are sampled from the picture (they changed once: bilinear alone aliased)
        parts["crops"] = CROP_SAMPLING
    if imports:  # each import's file (or its absence): a file added, changed or removed extracts the clip again
        files = [(i.name, _import_file(i, src)) for i in imports]
        parts["imports"] = [(name, str(f), _file_stamp(f)) for name, f in files]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _import_file(spec: ImportSpec, src: ClipSource) -> Path | None:
    return spec.file_for(src.clip_id, src.path.stem)


def extract_clip(
    src: ClipSource,
    corpus: Path,
    out_dir: Path,
    cfg: ExtractConfig,
    labels: tuple[pd.DataFrame, str, str] | None,  # (this clip's label rows, their kind, where they came from)
    key: str,
    threads: int = 0,
    parent: int | None = None,
    strict: bool = False,
    imports: Sequence[ImportSpec] = (),
) -> ClipRecord:
    """Decode, featurise and write one clip (runs in a worker process). Never raises for bad media.

    ``parent``: the pid of the `mmemo extract` that holds the directory's lock. A worker process whose parent has
    died (killed, out of memory, a lost SSH session) stops at once instead of writing into a directory that a new
    run may own by now. ``strict``: a truncated source fails the clip (no shard is put in place). ``imports``: the
    user's per-frame feature files (``--import``), put on the grid and stored under ``/imports/<name>``.
    """
    if parent is not None and parent != os.getpid():
        _exit_with_parent(parent)
    rel = src.rel(corpus)
    shard = shard_relpath(src.clip_id)
    path = out_dir / shard
    try:
        with ShardWriter(path, frame_size=cfg.frame_size, codec=cfg.frame_codec) as w:
            dec = featurise(
                src.path,
                cfg,
                audio_path=src.audio_path,
                on_frames=w.append_frames,
                on_features=lambda name, row, x: w.append_rows(S.feature_path(name), row, x),
                on_faces=w.append_faces,
                chunk_frames=S.FRAME_WRITE_ROWS,
                threads=threads,
            )
            if strict and dec.truncations:
                raise MediaError("; ".join(t.message for t in dec.truncations))
            T = dec.n_frames
            w.write(S.TIMESTAMPS, np.arange(T) / cfg.fps, np.float64)
            if dec.has_video:
                if w.n_frames != T:
                    raise AssertionError(f"{w.n_frames} frames written for {T} rows")
                w.write(S.VIDEO_MASK, dec.video_mask, np.bool_)
                w.write(S.SOURCE_TIME, dec.source_time, np.float64)
                if cfg.faces:
                    if w.n_faces != T:
                        raise AssertionError(f"{w.n_faces} face rows written for {T} rows")
                    stats = dec.face_stats
                    w.set_group_attrs(S.FACES, {"size": cfg.face_size, "detector": DETECTOR_NAME,
                                                "every": cfg.face_every, "detections": stats["detections"],
                                                "multi": stats["multi"], "follows": stats["follows"]})  # fmt: skip
            if dec.has_audio:
                w.truncate_rows(S.AUDIO_FEATURES, T)
                w.write(S.AUDIO_MASK, dec.audio_mask, np.bool_)
            for spec in imports:
                stream = import_stream(_import_file(spec, src), T, cfg.fps, spec.name)
                if stream is None:  # no file: the stream is there, masked, and the clip says so
                    names = " and ".join(f"{b}.csv|.npy" for b in dict.fromkeys((src.clip_id, src.path.stem)))
                    dec.warnings.append(f"{src.clip_id}: no file for import {spec.name} in {spec.directory} "
                                        f"(looked for {names}): its rows are masked")  # fmt: skip
                    w.write_import(spec.name, spec.side, None, np.zeros(T, bool), [], "", "")
                    continue
                dec.warnings.extend(f"{src.clip_id}: {n}" for n in stream.notes)
                w.write_import(spec.name, spec.side, stream.values, stream.mask, stream.columns, stream.kind,
                               str(stream.file))  # fmt: skip
            label_kind = ""
            if labels is not None:
                rows, kind, origin = labels
                n_native = round(dec.native_fps * dec.duration) if dec.has_video else None
                aligned = align(rows, kind, T, cfg.fps, source_index=dec.source_index, n_source_frames=n_native)
                dec.warnings.extend(f"{origin}: {src.clip_id}: {n}" for n in aligned.notes)
                w.write(S.VALENCE, aligned.valence, np.float32)
                w.write(S.AROUSAL, aligned.arousal, np.float32)
                w.write(S.LABEL_MASK, aligned.mask, np.bool_)
                label_kind = aligned.kind
            size, mtime = _file_stamp(src.path)
            asize, amtime = _file_stamp(src.audio_path)
            w.set_attrs(
                {
                    "schema_version": S.SCHEMA_VERSION,
                    "clip_id": src.clip_id,
                    "source": rel,
                    "audio_source": src.audio_path.relative_to(corpus).as_posix() if src.audio_path else "",
                    "source_size": size,
                    "source_mtime": mtime,
                    "audio_source_size": asize,
                    "audio_source_mtime": amtime,
                    "n_frames": T,
                    "fps": cfg.fps,
                    "duration": dec.duration,
                    "modalities": ",".join(dec.modalities),
                    "frame_codec": cfg.frame_codec,
                    "native_fps": dec.native_fps,
                    "native_width": dec.native_width,
                    "native_height": dec.native_height,
                    "rotation": dec.rotation,
                    "sample_rate": cfg.sample_rate,
                    "native_sample_rate": dec.native_sample_rate,
                    "native_channels": dec.native_channels,
                    "label_kind": label_kind,
                    "key": key,
                },
                {
                    "feature_config": cfg.to_json(),
                    "config_hash": cfg.config_hash(),
                    "mmemo_version": __version__,
                    "versions": json.dumps(package_versions()),
                },
            )
            if dec.truncations:
                # Optional, only on a truncated clip's shard: what `_up_to_date` reports again on a later run.
                w.set_attrs({TRUNCATION_ATTR: _truncation_attr(dec.truncations, src)}, {})
            if parent is not None and not _alive(parent):
                raise _Orphaned()  # never put a shard in place for a run that is gone
    except (MediaError, MmemoError) as e:
        return ClipRecord(src.clip_id, rel, "failed", error=str(e))
    except Exception as e:  # a bug or an unforeseen library error: still one line, still only this clip
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return ClipRecord(src.clip_id, rel, "failed", error=f"{src.path}: {type(e).__name__}: {msg}")
    return ClipRecord(
        src.clip_id,
        rel,
        "ok",
        shard=shard,
        frames=T,
        duration=round(dec.duration, 4),
        modalities=",".join(dec.modalities),
        labels=label_kind,
        bytes=path.stat().st_size,
        notes=_notes(dec.truncations),
        warnings=dec.warnings,
        issues=[t.message for t in dec.truncations],
    )


# Root attribute of a truncated clip's shard: JSON [{"file": "source" | "audio_source", **Truncation.to_dict()}].
TRUNCATION_ATTR = "truncation"


def _truncation_attr(truncations: list[Truncation], src: ClipSource) -> str:
    return json.dumps(
        [{"file": "source" if t.path == src.path else "audio_source", **t.to_dict()} for t in truncations]
    )


def _read_truncations(value, src: ClipSource) -> list[Truncation]:
    """The truncations a shard records, with the clip's current paths (the corpus may have moved)."""
    if value is None:
        return []
    try:
        return [
            Truncation.from_dict(src.audio_path if d["file"] == "audio_source" else src.path, d)
            for d in json.loads(value)
        ]
    except (ValueError, TypeError, KeyError) as e:
        raise SchemaError(f"attribute {TRUNCATION_ATTR} unreadable ({e})") from None


def _notes(truncations: list[Truncation]) -> str:
    return "; ".join(t.note for t in truncations)


def _strict_failure(r: ClipRecord) -> ClipRecord:
    """Under ``strict``: a clip kept with warnings about its source fails with them (its shard is then removed)."""
    if not r.issues or r.status == "failed":
        return r
    return ClipRecord(r.clip, r.source, "failed", error="; ".join(r.issues))


class _Orphaned(Exception):
    """The run that asked for this clip is gone."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


_WATCHED: list[int] = []


def _exit_with_parent(parent: int, interval_s: float = 0.1) -> None:
    """In a worker process: a daemon thread that ends the process as soon as ``parent`` is no longer its parent.

    A worker outliving its `mmemo extract` would go on writing without the lock (workers are re-parented when
    their parent dies, which ``os.getppid`` shows). Its half-written file keeps its pid in the name; the next run
    removes it. Started once per process.
    """
    if _WATCHED:
        return
    _WATCHED.append(parent)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(70)

    threading.Thread(target=watch, name="mmemo-parent-watch", daemon=True).start()


def _up_to_date(src: ClipSource, corpus: Path, out_dir: Path, key: str, strict: bool = False) -> ClipRecord | None:
    """The record of a clip whose shard is already there and made from the same inputs (None: extract it);
    under ``strict``, a kept clip whose source is truncated comes back failed."""
    path = out_dir / shard_relpath(src.clip_id)
    if not path.exists():
        return None
    try:
        a = read_attrs(path)
    except SchemaError:
        return None
    if a.get("key") != key:
        return None
    try:
        truncations = _read_truncations(a.get(TRUNCATION_ATTR), src)
    except SchemaError:
        return None  # extracted again
    issues = [t.message for t in truncations]
    record = ClipRecord(
        src.clip_id,
        src.rel(corpus),
        "up-to-date",
        shard=shard_relpath(src.clip_id),
        frames=int(a["n_frames"]),
        duration=round(float(a["duration"]), 4),
        modalities=a["modalities"],
        labels=a["label_kind"],
        bytes=path.stat().st_size,
        notes=_notes(truncations),
        warnings=list(issues),
        issues=issues,
    )
    return _strict_failure(record) if strict else record


def _run_jobs(tasks: list[tuple], jobs: int, backend: str, scheduler: str | None):
    """Yield ClipRecords as clips finish: in this process (jobs 1), loky worker processes, or a Dask cluster."""
    if backend == "loky" and jobs <= 1:
        for t in tasks:
            yield extract_clip(*t)
        return
    from joblib import Parallel, delayed, parallel_config

    calls = (delayed(extract_clip)(*t) for t in tasks)
    if backend == "dask":
        client = _dask_client(scheduler)
        try:
            with parallel_config(backend="dask"):
                yield from Parallel(n_jobs=-1, return_as="generator_unordered")(calls)
        finally:
            client.close()
        return
    # One BLAS/numba thread per worker: `jobs` processes must not each start a pool as large as the machine.
    with parallel_config(backend="loky", inner_max_num_threads=1):
        yield from Parallel(n_jobs=jobs, return_as="generator_unordered")(calls)


def _dask_client(scheduler: str | None):
    try:
        from dask.distributed import Client
    except ImportError:
        raise MmemoError("--backend dask needs dask.distributed: pip install 'mmemo[dask]'") from None
    if not scheduler:
        raise MmemoError("--backend dask needs --scheduler ADDRESS (e.g. tcp://10.0.0.5:8786)")
    try:
        return Client(scheduler, timeout="30s")
    except (OSError, TimeoutError) as e:
        raise MmemoError(f"cannot reach the Dask scheduler at {scheduler} ({e})") from None


@contextlib.contextmanager
def _exclusive(out: Path):
    """Hold FEATURES_DIR/.extract.lock: two extractions writing one directory would redo and race each other."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK_FILE, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            raise MmemoError(f"{out}: another `mmemo extract` is writing here ({f.read().strip()})") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _discard_partials(out: Path, wait_s: float = 5.0) -> int:
    """Delete the half-written shards of interrupted runs (we hold the lock: no other run writes here).

    A partial's name carries its writer's pid. One whose writer is still alive belongs to an orphaned worker of a
    killed run, which stops by itself within a moment (``_exit_with_parent``) and removes its own file: wait for
    it (at most ``wait_s`` in all, in case the pid has been reused by another program), then delete.
    """
    shards = out / SHARD_DIR
    if not shards.exists():
        return 0
    deadline = time.monotonic() + wait_s
    partials = sorted(shards.rglob("*" + PARTIAL_SUFFIX))
    for p in partials:
        pid = writer_pid(p)
        while pid not in (None, os.getpid()) and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        p.unlink(missing_ok=True)
    return len(partials)


def extract_corpus(
    corpus_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: ExtractConfig,
    *,
    labels_path: str | os.PathLike | None = None,
    label_format: str = "auto",
    gold: str = "mean",
    annotation_delay: float = 0.0,
    emotion_map: str | os.PathLike | None = None,
    jobs: int = 1,
    backend: str = "loky",
    scheduler: str | None = None,
    progress: str | bool = "auto",
    strict: bool = False,
    imports: Sequence[ImportSpec] = (),
    log: Callable[[str], None] = print,
) -> ExtractSummary:
    """Extract every clip of ``corpus_dir`` into ``out_dir``; see the module docstring.

    Args:
        labels_path: a label file or a directory of annotations (default: look in ``corpus_dir``).
        label_format: ``auto`` or a layout of ``mmemo.config.LABEL_FORMATS`` (see docs/labels.md).
        gold: ``mean`` or ``ewe``: how several raters' traces become one gold standard.
        annotation_delay: seconds; time-continuous labels are shifted back by it (label at t + d -> media time t).
        emotion_map: CSV ``emotion,valence,arousal`` replacing the built-in table for CREMA-D / RAVDESS.
        jobs: clips extracted at once on this machine (backend "loky"); 1 runs in this process.
        backend: "loky" (processes on this machine) or "dask" (the workers of the cluster at ``scheduler``, each
            writing its own shards into ``out_dir``, which must then be a directory they all see).
        progress: "auto", "bar", "lines" or "quiet" (True / False mean "auto" / "quiet").
        strict: a clip whose source is truncated fails (no shard, an older one removed) instead of being kept
            with a warning; this holds for clips kept from an earlier run too.
        imports: per-frame feature files brought by the user (``--import NAME[:SIDE]=DIR``, mmemo.features.imports);
            ``cfg.imports`` must list the same (name, side) pairs, in order.

    Raises:
        MmemoError: only when nothing can be done (no corpus, no media, unreadable label table, locked output).
    """
    t0 = time.perf_counter()
    corpus_path = Path(corpus_dir)
    if not corpus_path.is_dir():
        raise MmemoError(f"{corpus_path}: not a directory")
    if backend not in BACKENDS:
        raise MmemoError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    check_features(cfg.features)
    if tuple((i.name, i.side) for i in imports) != tuple(cfg.imports):
        raise ConfigError(f"imports {[(i.name, i.side) for i in imports]} do not match the configuration's "
                          f"{list(cfg.imports)}")  # fmt: skip
    if cfg.faces:
        check_detector()  # a missing detector is one line before any work, not one failure per clip
    corpus = discover(corpus_path)
    if not corpus.clips:
        raise MmemoError(f"{corpus_path}: no audio or video files found (looked for {', '.join(MEDIA_SUFFIXES)})")
    out = Path(out_dir).absolute()
    label_options = {"label_format": label_format, "gold": gold, "annotation_delay": annotation_delay,
                     "emotion_map": emotion_map}  # fmt: skip
    clip_ids = [c.clip_id for c in corpus.clips]
    # The corpus's labels in whatever layout they come, resolved to one gold standard (mmemo.data.layouts).
    table = load_labels(corpus.root, clip_ids, path=Path(labels_path) if labels_path else None, **label_options)
    label_rows = {c.clip_id: table.for_clip(c.clip_id) if table else None for c in corpus.clips}
    notes = list(corpus.duplicates) + _label_notes(table, label_rows)
    for n in notes:
        log(f"note: {n}")

    with _exclusive(out):
        discarded = _discard_partials(out)
        if discarded:
            log(f"note: discarded {discarded} half-written shard(s) of an interrupted run")
        results, tasks, kept = [], [], []
        for src in corpus.clips:
            rows = label_rows[src.clip_id]
            key = clip_key(src, cfg, rows, imports)
            done = _up_to_date(src, corpus.root, out, key, strict)
            if done is not None:
                kept.append(done)
            else:
                labels = (rows, table.kind, str(table.path)) if rows is not None else None
                tasks.append((src, corpus.root, out, cfg, labels, key))
        # Largest files first: the long clips start early instead of keeping one worker busy at the end.
        tasks.sort(key=lambda t: -t[0].path.stat().st_size)
        # FFmpeg's decoder threads share the cores with the other workers (0 = FFmpeg picks, one per core).
        local_pool = backend == "loky" and jobs > 1
        threads = 0 if not local_pool else max(1, (os.cpu_count() or 1) // jobs)
        tasks = [(*t, threads, os.getpid() if local_pool else None, strict, tuple(imports)) for t in tasks]

        bar = Progress(len(tasks), {True: "auto", False: "quiet"}.get(progress, progress))
        pending = {t[0].clip_id: t for t in tasks}

        def say(r: ClipRecord) -> None:
            results.append(r)
            if r.status == "failed":
                bar.write(f"error: {r.error}")
            for w in r.warnings:
                bar.write(f"warning: {w}")

        def report(r: ClipRecord) -> None:
            say(r)
            bar.update(r.duration, r.status == "failed")

        for r in kept:  # up to date: their warnings are said again (a truncated source is still truncated)
            say(r)

        try:
            for r in _run_jobs(tasks, jobs, backend, scheduler):
                pending.pop(r.clip, None)
                report(r)
        except BrokenExecutor as e:  # a worker process died (killed, out of memory): the pool is gone
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            for src, *_, key, _threads, _parent, _strict, _imports in pending.values():
                # A clip whose worker finished its shard before the pool broke is done; the others failed.
                done = _up_to_date(src, corpus.root, out, key, strict)
                report(done or ClipRecord(src.clip_id, src.rel(corpus.root), "failed",
                                          error=f"{src.path}: a worker process died while extracting it ({reason}); "
                                          "run `mmemo extract` again"))  # fmt: skip
        finally:
            bar.close()
        for r in results:  # a failed clip keeps no shard: an older one no longer matches its source
            if r.status == "failed":
                (out / shard_relpath(r.clip)).unlink(missing_ok=True)

        results.sort(key=lambda r: r.clip)
        orphans = _orphans(out, {c.clip_id for c in corpus.clips})
        if orphans:
            notes.append(
                f"{len(orphans)} shard(s) in {out / SHARD_DIR} belong to no clip of the corpus (kept, not listed): "
                + ", ".join(orphans[:3])
                + (" ..." if len(orphans) > 3 else "")
            )
            log(f"note: {notes[-1]}")
        summary = ExtractSummary(out, results, time.perf_counter() - t0, notes)
        _write_outputs(summary, cfg, corpus.root, table, label_options)
    return summary


def _orphans(out: Path, clip_ids: set[str]) -> list[str]:
    """Shards whose clip is not in the corpus any more (a file removed or renamed since an earlier run)."""
    shards = out / SHARD_DIR
    found = sorted(p.relative_to(shards).as_posix()[: -len(SHARD_SUFFIX)] for p in shards.rglob("*" + SHARD_SUFFIX))
    return [c for c in found if c not in clip_ids]


def _label_notes(table: LabelTable | None, label_rows: dict) -> list[str]:
    if table is None:
        return []
    notes = list(table.notes)  # what the layout's reader could not match
    unknown = sorted(set(table.clip_ids) - set(label_rows))
    unlabelled = [c for c, rows in label_rows.items() if rows is None]
    for what, ids in (("labelled clip id(s) not in the corpus", unknown), ("clip(s) have no labels", unlabelled)):
        if ids:
            more = " ..." if len(ids) > 5 else ""
            notes.append(f"{table.path}: {len(ids)} {what}: " + ", ".join(ids[:5]) + more)
    return notes


def _label_source(table: LabelTable | None, options: dict) -> dict | None:
    if table is None:
        return None
    emotion_map = options.get("emotion_map")
    return {
        "layout": table.layout,
        "path": str(Path(table.path).absolute()),
        "kind": table.kind,
        "gold": options.get("gold", "mean") if table.layout == "multirater" else None,
        "annotation_delay": float(options.get("annotation_delay") or 0.0),
        "emotion_map": str(Path(emotion_map).absolute()) if emotion_map else None,
    }


def _write_outputs(
    summary: ExtractSummary, cfg: ExtractConfig, corpus: Path, table: LabelTable | None, label_options: dict
) -> None:
    out = summary.out_dir
    record = {
        "config": cfg.to_dict(),
        "config_hash": cfg.config_hash(),
        "schema_version": S.SCHEMA_VERSION,
        "corpus": str(corpus),
        # The resolved gold standard in the generic layout, with its group columns (speaker, ...): what
        # `mmemo train --group-by` reads, whatever layout the corpus came in.
        "labels": LABELS_FILE if table else None,  # relative: the directory can move
        "label_source": _label_source(table, label_options),
        "versions": package_versions(),
    }
    write_manifest(out, summary.results, record, table.rows if table is not None else None)
