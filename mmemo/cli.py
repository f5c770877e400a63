"""The `mmemo` command line: parse options, build a config, call one pipeline function, print a summary.

Exit codes: 0 when everything asked for was done; 1 when a command could not run at all (bad directory,
unreadable label table, ...) *or* when `extract` finished but at least one clip failed (the good clips are
extracted all the same; the failures are listed in FEATURES_DIR/errors.csv); 2 for a usage error.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from mmemo import __version__
from mmemo.config import (
    ASPECT_POLICIES,
    BACKENDS,
    ENGINES,
    EXPORT_FORMATS,
    GOLD_METHODS,
    LABEL_FORMATS,
    LOSSES,
    PREVIEW_MODES,
    PROGRESS_MODES,
    QUANTIZE_MODES,
    SKIP_LOOP_FILTER,
    TARGETS,
    VISUAL_INPUTS,
    ExtractConfig,
    TrainConfig,
)
from mmemo.errors import ConfigError, MmemoError

# Option defaults are the configuration's own, so the CLI and the Python API cannot drift apart.
EXTRACT = ExtractConfig()
TRAIN = TrainConfig()


class MmemoGroup(click.Group):
    """The command group: every MmemoError a command lets through becomes one line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MmemoError as e:
            raise click.ClickException(str(e)) from None


def _parse_features(value: str | None) -> tuple[str, ...] | None:
    """``--features``: ``a,b`` exactly these, ``+a`` the defaults and ``a``, ``-a`` the defaults without ``a``."""
    if value is None:
        return None
    from mmemo.features.registry import resolve_features

    try:
        return resolve_features(value)
    except ConfigError as e:
        raise click.BadParameter(str(e).replace("; known: ", "; choose from "), param_hint="--features") from None


# ------------------------------------------------------------------------------------------- shared options
def _parse_imports(value: str | None) -> tuple[str, ...] | None:
    """``--imports``: None (every import), "none" (none) or comma-separated names."""
    if value is None:
        return None
    if value.strip().lower() == "none":
        return ()
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    if not names:
        raise click.BadParameter(f"{value!r}: give NAME,NAME or none", param_hint="--imports")
    return names


def _quiet(help_text: str):
    return click.option("--quiet", "-q", is_flag=True, help=help_text)


def _progress(what: str):
    return click.option(
        "--progress",
        type=click.Choice(PROGRESS_MODES),
        default=PROGRESS_MODES[0],
        show_default=True,
        help=f"{what}; auto picks by whether stderr is a terminal.",
    )


def _jobs(help_text: str | None):
    return click.option("--jobs", "-j", type=click.IntRange(1, None), default=None, help=help_text)


_checkpoint = click.option("--checkpoint", default="best.pt", show_default=True, help="Checkpoint file inside the run.")
_postprocess = click.option(
    "--postprocess", type=click.Choice(["on", "off"]), default="on", show_default=True,
    help="Apply the run's post-processing (smoothing, delay, bias and scale fitted on its validation clips, "
    "postprocess.json; a run without one predicts as it is); off: the model's raw outputs.",
)  # fmt: skip
_run_dir = click.option(
    "--run",
    "run_dir",
    required=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Run directory of `mmemo train` (its best.pt holds the model and the feature configuration).",
)
_features_dir = click.argument("features_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))


def _cores(jobs: int | None) -> int:
    return jobs or os.cpu_count() or 1


@click.group(cls=MmemoGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mmemo")
def main() -> None:
    """mmemo: valence and arousal from audio + video. extract -> train -> predict."""


@main.command()
@click.argument("corpus_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--out",
    "-o",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Features directory to write (shards/, manifest.csv, errors.csv, extract_config.json).",
)
@click.option(
    "--labels",
    "labels_path",
    type=click.Path(exists=True, path_type=Path),
    help="A label CSV, or a directory holding the corpus's annotations (default: look in CORPUS_DIR).",
)
@click.option(
    "--label-format",
    type=click.Choice(LABEL_FORMATS),
    default="auto",
    show_default=True,
    help="Annotation layout (docs/labels.md): detected (files of two layouts: an error), or forced: generic CSV, "
    "arousal.csv + valence.csv tables, RECOLA/AVEC rater files, Aff-Wild2 per-frame files, AVEC 2019 CES (SEWA) "
    "label files, MuSe label_segments, CREMA-D or RAVDESS file names.",
)
@click.option(
    "--gold",
    type=click.Choice(GOLD_METHODS),
    default=GOLD_METHODS[0],
    show_default=True,
    help="Multi-rater annotations: the raters' mean, or the evaluator-weighted estimator.",
)
@click.option(
    "--annotation-delay",
    type=click.FloatRange(0, None),
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    help="Shift time-continuous labels back: the label at t + SECONDS is given to media time t.",
)
@click.option(
    "--emotion-map",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="CSV emotion,valence,arousal replacing the built-in emotion table (CREMA-D, RAVDESS).",
)
@click.option(
    "--features",
    "features",
    metavar="NAMES",
    help="Audio features to compute, comma-separated: NAMES exactly these, +NAME the defaults and NAME (+egemaps, "
    "+compare: openSMILE's, with mmemo[smile]), -NAME the defaults without it (default: the librosa set; see "
    "`mmemo features`).",
)
@click.option(
    "--aspect",
    type=click.Choice(ASPECT_POLICIES),
    default=EXTRACT.aspect,
    show_default=True,
    help="How frames become square: pad, centre-crop, or distort.",
)
@click.option("--frame-size", type=click.IntRange(16, 1024), default=EXTRACT.frame_size, show_default=True)
@click.option(
    "--frame-codec",
    default=EXTRACT.frame_codec,
    show_default=True,
    help="Frame storage: lzf, gzip, zstd (lossless; zstd needs mmemo[zstd]) or jpeg / jpeg75..jpeg95 (lossy).",
)
@click.option("--n-mels", type=click.IntRange(8, 256), default=EXTRACT.n_mels, show_default=True)
@click.option("--n-mfcc", type=click.IntRange(1, 128), default=EXTRACT.n_mfcc, show_default=True)
@click.option(
    "--faces",
    type=click.Choice(["on", "off"]),
    default="on" if EXTRACT.faces else "off",
    show_default=True,
    help="Find, track and align the face in every clip with video (a crop per row beside the whole frames).",
)
@click.option(
    "--face-size", type=click.IntRange(16, 1024), default=EXTRACT.face_size, show_default=True,
    help="Side of the aligned face crop in pixels.",
)  # fmt: skip
@click.option(
    "--face-every", type=click.IntRange(1, 250), default=EXTRACT.face_every, show_default=True,
    help="Run the face detector on every k-th row (and on every row while the face is lost).",
)  # fmt: skip
@click.option(
    "--skip-loop-filter",
    type=click.Choice(SKIP_LOOP_FILTER),
    default=EXTRACT.skip_loop_filter,
    show_default=True,
    help="H.264 / HEVC frames decoded without deblocking: none (as the ffmpeg command line), noref (frames nothing "
    "is predicted from: 10 % faster, 0.01 grey levels off on average), bidir, all (20 % faster, 0.8 off).",
)
@click.option(
    "--import",
    "imports",
    metavar="NAME[:SIDE]=DIR",
    multiple=True,
    help="Per-frame features you already have, one file per clip in DIR (OpenFace 2.0 CSV, or CSV / NPY with a "
    "timestamp column), put on the grid and fed to the video (default) or audio branch. Repeatable.",
)
@_jobs("Clips extracted in parallel (default: all cores).")
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default=BACKENDS[0],
    show_default=True,
    help="loky: processes on this machine; dask: the workers of a Dask cluster (needs --scheduler, mmemo[dask]).",
)
@click.option("--scheduler", metavar="ADDRESS", help="Dask scheduler address for --backend dask (tcp://host:8786).")
@_progress("A live bar (terminals) or a plain line every 10 s (logs)")
@click.option(
    "--strict",
    is_flag=True,
    help="A truncated file (it holds less than it declares) fails instead of being extracted as far as it decodes "
    "with a warning.",
)
@_quiet("No progress or notes; errors and the summary only.")
def extract(
    corpus_dir: Path,
    out_dir: Path,
    labels_path: Path | None,
    label_format: str,
    gold: str,
    annotation_delay: float,
    emotion_map: Path | None,
    features: str | None,
    aspect: str,
    frame_size: int,
    frame_codec: str,
    n_mels: int,
    n_mfcc: int,
    faces: str,
    face_size: int,
    face_every: int,
    skip_loop_filter: str,
    imports: tuple[str, ...],
    jobs: int | None,
    backend: str,
    scheduler: str | None,
    progress: str,
    strict: bool,
    quiet: bool,
) -> None:
    """Decode every clip of CORPUS_DIR into HDF5 shards of frames and audio features.

    Interrupted (even by kill -9)? Run the same command again: finished clips are kept, half-written ones are
    redone. Exit code 1 when any clip failed (the others are extracted; see FEATURES_DIR/errors.csv). A truncated
    file is extracted as far as it decodes, with a warning (exit 0); --strict makes it a failure.
    """
    from mmemo.features.imports import ImportSpec
    from mmemo.pipeline.extract import extract_corpus

    names = _parse_features(features)
    specs = [ImportSpec.parse(x) for x in imports]
    cfg = ExtractConfig(
        aspect=aspect,
        frame_size=frame_size,
        frame_codec=frame_codec,
        n_mels=n_mels,
        n_mfcc=n_mfcc,
        faces=faces == "on",
        face_size=face_size,
        face_every=face_every,
        skip_loop_filter=skip_loop_filter,
        imports=tuple((i.name, i.side) for i in specs),
        **({"features": names} if names else {}),
    )
    summary = extract_corpus(
        corpus_dir,
        out_dir,
        cfg,
        labels_path=labels_path,
        label_format=label_format,
        gold=gold,
        annotation_delay=annotation_delay,
        emotion_map=emotion_map,
        jobs=_cores(jobs),
        backend=backend,
        scheduler=scheduler,
        progress="quiet" if quiet else progress,
        strict=strict,
        imports=specs,
        log=(lambda s: None) if quiet else _err,
    )
    _print_summary(summary)
    if summary.failed:
        raise click.ClickException(f"{len(summary.failed)} clip(s) failed; see {summary.out_dir / 'errors.csv'}")


def _err(msg: str) -> None:
    click.echo(msg, err=True)


def _print_summary(summary) -> None:
    done, kept, failed = summary.count("ok"), summary.count("up-to-date"), len(summary.failed)
    warned = sum(bool(r.issues) for r in summary.results if r.status != "failed")
    minutes = summary.media_seconds / 60
    with_warnings = f", {warned} with warnings (see errors.csv)" if warned else ""
    click.echo(
        f"{done} extracted, {kept} up to date, {failed} failed{with_warnings}; {minutes:.2f} media minutes in "
        f"{summary.wall_s:.1f} s -> {summary.out_dir}"
    )
    if done == 0 and failed == 0:
        click.echo("nothing to extract: every clip is up to date")
    else:
        new = [r for r in summary.results if r.status == "ok"]
        media = sum(r.duration for r in new)
        written = sum(r.bytes for r in new) / 1024**2
        click.echo(
            f"this run: {len(new)} clips, {media / 3600:.3f} media hours in {summary.wall_s:.1f} s wall "
            f"({media / max(summary.wall_s, 1e-9):.1f}x real time), {written:.1f} MiB written, {failed} failed"
        )


@main.command()
@_features_dir
@click.option(
    "--out",
    "-o",
    "run_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory: checkpoints, metrics.csv, plots, config.json.",
)
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Continue the run in this directory from its last.pt (a killed run picks up where it stopped).",
)
@click.option("--epochs", type=click.IntRange(1, None), help="[30; 60 for small corpora: under an hour of media]")
@click.option("--batch-size", type=click.IntRange(1, None), default=TRAIN.batch_size, show_default=True)
@click.option("--lr", type=click.FloatRange(0, None), default=TRAIN.lr, show_default=True, help="OneCycle peak rate.")
@click.option(
    "--loss",
    type=click.Choice(LOSSES),
    default=TRAIN.loss,
    show_default=True,
    help="1 - CCC, MSE, or 0.7 (1 - CCC) + 0.3 MSE.",
)
@click.option("--patience", type=click.IntRange(1, None), help="Epochs without a better validation CCC [8; 15 small].")
@click.option("--group-by", metavar="COLUMN", help="Labels-table column kept whole on one side of the split.")
@click.option(
    "--val-fraction", type=click.FloatRange(0, 1, max_open=True),
    help="Share of groups held out for early stopping [0.2; 0.1 for small corpora; with --folds, 0 for small "
    "corpora labelled per clip]; 0: none, train on every clip and keep the last epoch.",
)  # fmt: skip
@click.option("--seed", type=int, default=TRAIN.seed, show_default=True)
@click.option(
    "--workers", type=click.IntRange(0, None), default=TRAIN.workers, show_default=True, help="DataLoader workers."
)
@click.option("--no-augment", is_flag=True, help="Train without on-the-fly augmentation.")
@click.option(
    "--no-frame-cache", is_flag=True,
    help="Pool the stored frames on every read instead of caching them at the model's size in FEATURES_DIR/cache.",
)  # fmt: skip
@click.option("--max-seq-len", type=click.IntRange(8, None), default=TRAIN.max_seq_len, show_default=True)
@click.option(
    "--visual", type=click.Choice(VISUAL_INPUTS), default=TRAIN.visual, show_default=True,
    help="What the video branch sees: the aligned face (the whole frame in rows without one), the whole frame, or "
    "auto: faces when a face was found in at least half of the training video rows.",
)  # fmt: skip
@click.option("--hidden", type=click.IntRange(8, None), help="Model width [256; 64 for small corpora].")
@click.option("--layers", type=click.IntRange(1, None), help="Encoder layers per modality [4; 2 for small corpora].")
@click.option("--heads", type=click.IntRange(1, None), help="Attention heads [8; 4 for small corpora].")
@click.option(
    "--dropout", type=click.FloatRange(0, 1, max_open=True),
    help="Dropout [0.1; 0.3 for small corpora: under an hour of labelled training media].",
)  # fmt: skip
@click.option(
    "--ema-decay", type=click.FloatRange(0, 1, max_open=True),
    help="Decay per step of the moving average of the weights that is validated and saved [0.99 for small corpora: "
    "under an hour of labelled training media; 0 otherwise]; 0: save the last weights as they are.",
)  # fmt: skip
@click.option(
    "--mixup", type=click.FloatRange(0, None), default=TRAIN.mixup, show_default=True, metavar="ALPHA",
    help="Mix pairs of training windows, inputs and labels, with weights drawn from Beta(ALPHA, ALPHA); 0: off.",
)  # fmt: skip
@_quiet("No progress bars.")
@_progress("A live bar per epoch (terminals) or only the epoch lines (logs)")
@click.option(
    "--folds", type=click.IntRange(2, None),
    help="K-fold cross-validation with groups kept whole (--group-by, or the labels' speaker column); "
    "RUN_DIR gets every fold's run, folds.csv, results.json and results.md.",
)  # fmt: skip
@click.option("--seeds", type=click.IntRange(1, None), default=1, show_default=True, help="--folds: repetitions.")
@click.option(
    "--ensemble", type=click.IntRange(1, None), default=1, show_default=True,
    help="--folds: transformers trained per fold (seeds seed + 1000 j), their predictions averaged.",
)  # fmt: skip
@click.option(
    "--target", type=click.Choice(TARGETS), default=TRAIN.target, show_default=True,
    help="Loss on every labelled frame, or on each clip's mean (auto: clip when every clip is labelled per clip).",
)  # fmt: skip
@click.option(
    "--imports", "imports", metavar="NAME,NAME|none",
    help="Which --import streams of FEATURES_DIR the model reads (video side: beside the frame; audio side: in the "
    "audio features) [every one it holds]; none: none.",
)  # fmt: skip
@click.option(
    "--postprocess", type=click.Choice(["on", "off"]), default="on", show_default=True,
    help="At the end, fit the AVEC post-processing (smoothing, delay, bias and scale) on the validation clips "
    "(RUN_DIR/postprocess.json; predict, evaluate and --stream apply it). Time-continuous labels only.",
)  # fmt: skip
def train(features_dir: Path, run_dir: Path | None, resume_dir: Path | None, epochs: int | None, batch_size: int,
          lr: float, loss: str, patience: int | None, group_by: str | None, val_fraction: float | None, seed: int,
          workers: int, no_augment: bool, max_seq_len: int, hidden: int | None, layers: int | None, heads: int | None,
          dropout: float | None, ema_decay: float | None, mixup: float, quiet: bool, progress: str,
          folds: int | None, seeds: int, ensemble: int, target: str, no_frame_cache: bool, visual: str,
          imports: str | None, postprocess: str) -> None:  # fmt: skip
    """Train the valence/arousal model on the shards of FEATURES_DIR (written by `mmemo extract`).

    With --folds K: grouped K-fold cross-validation, repeated over --seeds, scored beside two baselines (the
    training mean, ridge regression on clip statistics) on the same folds.
    """
    if (run_dir is None) == (resume_dir is None):
        raise click.UsageError("give --out RUN_DIR for a new run, or --resume RUN_DIR to continue one")
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, loss=loss, patience=patience,
                      group_by=group_by, val_fraction=val_fraction, seed=seed, workers=workers,
                      augment=not no_augment, max_seq_len=max_seq_len, target=target,
                      frame_cache=not no_frame_cache, visual=visual, imports=_parse_imports(imports),
                      ema_decay=ema_decay, mixup=mixup)  # fmt: skip
    sizes = {"hidden": hidden, "layers": layers, "heads": heads, "dropout": dropout}
    model = {k: v for k, v in sizes.items() if v is not None}  # the rest: the Trainer's size rule
    from mmemo.pipeline.progress import resolve_mode

    bars = not quiet and resolve_mode(progress) == "bar"
    if folds is not None:
        from mmemo.pipeline.crossval import cross_validate, format_markdown

        summary = cross_validate(features_dir, run_dir or resume_dir, cfg, model, folds=folds, seeds=seeds,
                                 log=click.echo, progress=bars, ensemble=ensemble)  # fmt: skip
        click.echo(format_markdown(summary))
        return
    from mmemo.pipeline.train import Trainer

    # What the user typed, as TrainConfig fields: on --resume those are applied or refused, never ignored.
    ctx = click.get_current_context()
    option_field = {"no_augment": "augment", "no_frame_cache": "frame_cache"}
    given = [option_field.get(p, p) for p in ctx.params if p in option_field or p in TrainConfig.__dataclass_fields__
             if ctx.get_parameter_source(p) is click.core.ParameterSource.COMMANDLINE]  # fmt: skip
    with Trainer(features_dir, run_dir or resume_dir, cfg, model, resume=resume_dir is not None, log=click.echo,
                 progress=bars, given=given) as trainer:  # fmt: skip
        trainer.fit()
    if trainer.is_main:
        click.echo(f"{trainer.best_text()}; checkpoints in {trainer.run_dir}")
        if postprocess == "on":
            from mmemo.pipeline.evaluate import fit_run_postprocess

            val = [c.clip_id for c in trainer.val_clips]
            fit_run_postprocess(trainer.run_dir, features_dir, val, trainer.target, log=click.echo)


@main.command()
@click.argument("clips", nargs=-1, type=click.Path(exists=True, path_type=Path))
@_run_dir
@_checkpoint
@click.option(
    "--out",
    "-o",
    "out",
    type=click.Path(path_type=Path),
    help="Output file (one clip) or directory (one file per clip). Default: standard output.",
)
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--plot", type=click.Path(path_type=Path), help="PNG of valence and arousal over time (one clip).")
@click.option(
    "--html", "html_out", type=click.Path(path_type=Path),
    help="Clip viewer page (player, traces, valence-arousal plane) that works opened from disk; its media go in "
    "PAGE_files/ beside it. A directory for several clips.",
)  # fmt: skip
@click.option(
    "--stream",
    "source",
    metavar="SOURCE",
    help="Predict a live source instead of clips: a file, an RTSP/HTTP URL, a capture device, or - for stdin.",
)
@click.option("--realtime", is_flag=True, help="--stream: read a file at its natural pace, as a camera would.")
@click.option(
    "--every-hop", is_flag=True,
    help="--stream: never drop a hop; the source waits (a recording piped in, not a camera).",
)  # fmt: skip
@click.option(
    "--hop", type=click.FloatRange(0.04, None), default=0.5, show_default=True,
    help="--stream: seconds of media between predictions.",
)  # fmt: skip
@click.option(
    "--context", type=click.FloatRange(0.04, None), default=10.0, show_default=True,
    help="--stream: seconds of media each prediction looks at (at most the model's max_seq_len rows).",
)  # fmt: skip
@click.option("--input-format", help="--stream: FFmpeg input format (v4l2, avfoundation, dshow, mpegts, ...).")
@click.option("--input-option", multiple=True, metavar="KEY=VALUE", help="--stream: FFmpeg input option (repeatable).")
@click.option(
    "--engine", type=click.Choice(ENGINES), default="torch", show_default=True,
    help="torch: the checkpoint's PyTorch model; pt2, onnx, onnx-int8, torchscript: the run's file of `mmemo export` "
    "(best.pt2, best.onnx, best.int8.onnx, best.torchscript.pt, read with its sidecar JSON, no checkpoint).",
)  # fmt: skip
@click.option(
    "--import", "imports", multiple=True, metavar="NAME=PATH",
    help="An --import stream the model reads (repeatable): the directory given to `mmemo extract` (each clip's "
    "file found as extraction finds it), or one clip's .csv / .npy file.",
)  # fmt: skip
@_postprocess
def predict(clips: tuple[Path, ...], run_dir: Path, checkpoint: str, out: Path | None, fmt: str,
            plot: Path | None, html_out: Path | None, source: str | None, realtime: bool, every_hop: bool, hop: float,
            context: float, input_format: str | None, input_option: tuple[str, ...], engine: str,
            imports: tuple[str, ...], postprocess: str) -> None:  # fmt: skip
    """Valence and arousal, 25 rows per second, for each CLIP (a media file or a directory of them).

    With --stream SOURCE: one line per hop (CSV or JSON lines) on standard output, as the source plays: media
    time, valence, arousal and latency. When the machine cannot keep up, hops are dropped (and counted), so the
    output never falls further and further behind. Exit code 1 when any clip failed (the others are still
    predicted and written) or the stream broke.
    """
    from mmemo.features.imports import ImportSpec
    from mmemo.pipeline.predict import (
        check_import_specs,
        format_prediction,
        open_run,
        output_names,
        plot_prediction,
        predict_clip,
    )

    if source is not None:
        if clips:
            raise click.UsageError("give CLIP... or --stream SOURCE, not both")
        if imports:
            raise click.UsageError("--import is for recorded clips: a live source has no imported features")
        options = {}
        for kv in input_option:
            if "=" not in kv:
                raise click.UsageError(f"--input-option {kv!r}: expected KEY=VALUE")
            k, v = kv.split("=", 1)
            options[k] = v
        _predict_stream(run_dir, checkpoint, source, fmt, realtime, every_hop, hop, context, input_format, options,
                        engine, postprocess == "on")  # fmt: skip
        return
    if not clips:
        raise click.UsageError("give at least one CLIP, or --stream SOURCE")

    sources = output_names(list(clips))
    if len(sources) > 1 and (out is None or out.suffix):
        raise click.UsageError(f"{len(sources)} clips: give --out DIRECTORY for their {fmt.upper()} files")
    if plot is not None and len(sources) > 1 and plot.suffix:
        raise click.UsageError("--plot FILE.png is for one clip; give a directory to get one PNG per clip")
    if html_out is not None and len(sources) > 1 and html_out.suffix:
        raise click.UsageError("--html FILE.html is for one clip; give a directory to get one page per clip")
    specs = [ImportSpec.parse(x, files=True) for x in imports]
    if len(sources) > 1 and any(s.is_file for s in specs):
        raise click.UsageError(f"{len(sources)} clips: give --import NAME=DIRECTORY (a file is one clip's)")
    run = open_run(run_dir, checkpoint, engine, postprocess == "on")
    check_import_specs(run, specs)
    failed = 0
    for path, audio_path, name in sources:
        try:
            pred = predict_clip(run, path, audio_path, specs, clip_id=name)
        except MmemoError as e:  # one clip's failure: said, counted, and the other clips go on
            click.echo(f"error: {e}", err=True)
            failed += 1
            continue
        for w in pred.warnings:
            click.echo(f"warning: {w}", err=True)
        text = format_prediction(pred, fmt)
        if out is None:
            click.echo(text, nl=False)
        else:
            target = out if len(sources) == 1 and out.suffix else out / f"{name}.{fmt}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        if plot is not None:
            png = plot if plot.suffix else plot / f"{name}.png"
            png.parent.mkdir(parents=True, exist_ok=True)
            plot_prediction(pred, png)
        if html_out is not None:
            from mmemo.pipeline.report import write_clip_page

            page = html_out if html_out.suffix else html_out / f"{name}.html"
            _err(f"viewer: {write_clip_page(pred, run_dir, page, audio_path=audio_path).text()}")
        s = pred.summary()
        click.echo(
            f"{path}: {s['frames']} frames; valence {s['valence_mean']:+.3f} +- {s['valence_std']:.3f}, "
            f"arousal {s['arousal_mean']:+.3f} +- {s['arousal_std']:.3f}",
            err=True,
        )
    if failed:
        raise click.ClickException(f"{failed} of {len(sources)} clip(s) failed")


def _predict_stream(run_dir: Path, checkpoint: str, source: str, fmt: str, realtime: bool, every_hop: bool, hop: float,
                    context: float, input_format: str | None, options: dict, engine: str,
                    postprocess: bool = True) -> None:  # fmt: skip
    from mmemo.pipeline.predict import open_run
    from mmemo.pipeline.stream import stream_predict

    def emit(p) -> None:
        if fmt == "json":
            click.echo(json.dumps(p.as_dict()))
        else:
            click.echo(f"{p.time:.2f},{p.valence:.5f},{p.arousal:.5f},{p.latency_s:.4f}")
        if p.dropped:
            _err(f"note: the machine is behind; dropped {p.dropped} prediction(s) before {p.time:.2f} s")
        sys.stdout.flush()

    run = open_run(run_dir, checkpoint, engine, postprocess)
    if fmt == "csv":
        click.echo("time,valence,arousal,latency_s")
    try:
        stats = stream_predict(run, source, emit, hop_s=hop, context_s=context, realtime=realtime,
                               every_hop=every_hop, input_format=input_format, options=options)  # fmt: skip
    except KeyboardInterrupt:
        _err("stopped")
        return
    _err(f"{source}: {stats.summary(run.extract_cfg.fps)}")


@main.command()
@_features_dir
@_run_dir
@_checkpoint
@click.option(
    "--out",
    "-o",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where metrics.json, clips.csv and the plots go. Default: RUN_DIR/eval-<FEATURES_DIR name>.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON instead of a table.")
@_postprocess
def evaluate(features_dir: Path, run_dir: Path, checkpoint: str, out_dir: Path | None, as_json: bool,
             postprocess: str) -> None:  # fmt: skip
    """Score a trained run on the labelled clips of FEATURES_DIR: CCC (pooled and per clip), PCC, RMSE, MAE."""
    from mmemo.pipeline.evaluate import evaluate_features, format_table, write_evaluation
    from mmemo.pipeline.predict import open_run

    run = open_run(run_dir, checkpoint, postprocess=postprocess == "on")
    ev = evaluate_features(run, features_dir)
    out = write_evaluation(ev, out_dir or run_dir / f"eval-{features_dir.resolve().name}", run_dir, features_dir)
    if as_json:
        click.echo((out / "metrics.json").read_text(), nl=False)
    else:
        n = int(sum(r.mask.sum() for r in ev.results))
        click.echo(f"{len(ev.results)} clips, {n} labelled frames ({n / ev.fps:.1f} s)")
        click.echo(format_table(ev.metrics))
        if ev.metrics_raw is not None:
            chains = zip(("valence", "arousal"), run.post.chains(), strict=True)
            steps = "; ".join(f"{d}: {c.describe()}" for d, c in chains)
            click.echo(f"\nbefore the run's post-processing ({steps}; --postprocess off scores the raw model):")
            click.echo(format_table(ev.metrics_raw))
    _err(f"metrics.json, clips.csv, scatter.png, traces.png in {out}")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--features", "features_dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Also evaluate the run on the labelled clips of this features directory, with a viewer per clip.",
)  # fmt: skip
@_checkpoint
@click.option(
    "--out", "-o", "out_dir", type=click.Path(file_okay=False, path_type=Path),
    help="Report directory (index.html, clips/, media/). Default: RUN_DIR/report.",
)  # fmt: skip
@click.option(
    "--media", "media_root", type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Where the clips' media are, if the corpus moved since `mmemo extract` (default: the recorded corpus).",
)  # fmt: skip
@click.option(
    "--previews", type=click.Choice(PREVIEW_MODES), default=PREVIEW_MODES[0], show_default=True,
    help="auto: copy the media browsers play and make a small MP4 of the rest; all: a small MP4 for every clip.",
)  # fmt: skip
@click.option(
    "--preview-height", type=click.IntRange(32, 2160), default=360, show_default=True,
    help="Height in pixels of the previews (never upscaled).",
)  # fmt: skip
def report(run_dir: Path, features_dir: Path | None, checkpoint: str, out_dir: Path | None, media_root: Path | None,
           previews: str, preview_height: int) -> None:  # fmt: skip
    """Write a report page of a run that works opened from disk: the run at a glance, learning curves, the
    per-epoch table and, with --features, the evaluation with a clip viewer (player, valence and arousal traces
    predicted and gold, a valence-arousal plane)."""
    from mmemo.pipeline.report import build_report

    summary = build_report(run_dir, features_dir, out_dir=out_dir, checkpoint=checkpoint, media_root=media_root,
                           previews=previews, preview_height=preview_height, log=_err)  # fmt: skip
    click.echo(summary.text())


@main.command(name="export")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(EXPORT_FORMATS), default=EXPORT_FORMATS[0], show_default=True,
    help="pt2: torch.export (torch.export.load); onnx: onnxruntime, and int8; torchscript: for old deployments.",
)  # fmt: skip
@click.option(
    "--quantize", type=click.Choice(QUANTIZE_MODES),
    help="onnx: int8 weights for the linear and attention layers (onnxruntime dynamic quantisation), measured "
    "against the float model on the run's validation clips (needs --features).",
)  # fmt: skip
@click.option(
    "--features", "features_dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="--quantize: the features directory the run was trained on (its validation clips measure the int8 model).",
)  # fmt: skip
@click.option(
    "--force", is_flag=True,
    help="--quantize: write the int8 model even if it loses more than 0.02 of validation mean CCC.",
)  # fmt: skip
@_checkpoint
@click.option(
    "--out", "-o", "out_path", type=click.Path(dir_okay=False, path_type=Path),
    help="File to write (default RUN_DIR/best.pt2, best.onnx, best.int8.onnx or best.torchscript.pt); a sidecar "
    "JSON goes beside it.",
)  # fmt: skip
def export_cmd(run_dir: Path, fmt: str, quantize: str | None, features_dir: Path | None, force: bool,
               checkpoint: str, out_path: Path | None) -> None:  # fmt: skip
    """Write the run's model as a standalone file that runs without mmemo: a torch.export program (pt2, the
    default), ONNX (float or --quantize int8) or TorchScript.

    The file takes raw features and uint8 frames (standardisation is inside); the sidecar JSON lists its inputs,
    the feature order and the extraction settings. A float export is loaded back and checked against PyTorch
    (max abs difference < 1e-4) before it is put in place; an int8 model is measured against the float one on the
    run's validation clips and refused if it loses more than 0.02 of validation mean CCC (unless --force).
    `mmemo predict --engine` runs the file.
    """
    from mmemo.pipeline.export import export_run, sidecar_path

    path = export_run(run_dir, out_path, fmt, checkpoint, quantize=quantize, features_dir=features_dir, force=force,
                      log=_err)  # fmt: skip
    meta = json.loads(sidecar_path(path).read_text())
    diff = (meta.get("check") or {}).get("max_abs_diff")
    of = " (float model)" if quantize else ""
    checked = f"; max abs difference from PyTorch{of} {diff:.2e}" if diff is not None else "; not checked"
    click.echo(f"{path} ({path.stat().st_size / 2**20:.1f} MiB){checked}")
    if (meta.get("agreement") or {}).get("forced"):
        _err(f"warning: written with --force although it loses {-meta['agreement']['val_ccc_change']:.4f} of "
             "validation mean CCC")  # fmt: skip
    click.echo(f"inputs and settings: {sidecar_path(path)}")


@main.command()
def features() -> None:
    """List the registered audio features (name, dimension, description)."""
    from mmemo.data.schema import FEATURE_DTYPE
    from mmemo.features.registry import FEATURES

    for name, f in FEATURES.items():
        click.echo(f"{name:10s} {f.dim(EXTRACT):3d}  {FEATURE_DTYPE.__name__}  {f.description}")


@main.command()
@_features_dir
@_jobs("Shards checked in parallel.")
def validate(features_dir: Path, jobs: int | None) -> None:
    """Re-read every shard against the schema and the manifest; exit 1 with the list of problems."""
    from mmemo.pipeline.validate import validate_features_dir

    checked, problems = validate_features_dir(features_dir, jobs=_cores(jobs))
    for p in problems:
        click.echo(p)
    if problems:
        raise click.ClickException(f"{len(problems)} problem(s) in {features_dir} ({checked} shards checked)")
    click.echo(f"{checked} shards valid in {features_dir}")


@main.command()
@_features_dir
@click.option(
    "--sheet",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also draw a contact sheet (PNG): sampled frames with the face box and landmarks beside the aligned crops.",
)
@click.option("--sheet-clips", type=click.IntRange(1, 50), default=6, show_default=True, help="Clips on the sheet.")
def inspect(features_dir: Path, sheet: Path | None, sheet_clips: int) -> None:
    """Summarise a features directory: clips, hours, modalities, features, faces, storage, failures."""
    from mmemo.pipeline.inventory import format_inventory, inventory

    click.echo(format_inventory(inventory(features_dir)))
    if sheet is not None:
        from mmemo.pipeline.sheet import contact_sheet

        click.echo(f"contact sheet: {contact_sheet(features_dir, sheet, clips=sheet_clips)}")


@main.command()
@click.option(
    "--out",
    "-o",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("mmemo-demo"),
    show_default=True,
    help="Where the demo corpus and features go.",
)
@click.option("--clips", type=click.IntRange(2, 200), default=12, show_default=True)
@_jobs(None)
@click.option(
    "--epochs",
    type=click.IntRange(0, None),
    default=40,
    show_default=True,
    help="Training epochs after extraction (0: extract only).",
)
@_quiet("No progress bars.")
def demo(out_dir: Path, clips: int, jobs: int | None, epochs: int, quiet: bool) -> None:
    """Make a small synthetic labelled corpus, extract it and train on it (no download needed).

    In the demo corpus valence is carried only by the picture (a face's colour and smile) and arousal only by
    the sound (a voice's loudness, pitch and pace): good validation CCC on both needs both modalities.
    """
    from mmemo.pipeline.demo import predict_unseen, run_demo, train_demo
    from mmemo.pipeline.inventory import format_inventory, inventory

    summary = run_demo(out_dir, n_clips=clips, jobs=_cores(jobs), log=_err)
    _print_summary(summary)
    click.echo(format_inventory(inventory(summary.out_dir)))
    if summary.failed:
        raise click.ClickException(f"{len(summary.failed)} demo clip(s) failed")
    if not epochs:
        return
    click.echo(f"training on {summary.out_dir} (held-out speakers for validation) ...")
    best, trainer = train_demo(out_dir, epochs=epochs, log=click.echo, progress=not quiet)
    click.echo(
        f"held-out validation CCC at the best epoch ({int(best['epoch'])}): valence {best['valence_ccc']:.3f}, "
        f"arousal {best['arousal_ccc']:.3f} (clips {', '.join(c.clip_id for c in trainer.val_clips)}); "
        f"run in {trainer.run_dir}"
    )
    u = predict_unseen(out_dir)
    click.echo(
        f"predicted an unseen {u['seconds']:.0f}-s clip {u['clip']}: {u['csv']}, plot {u['png']}; "
        f"against its labels: valence CCC {u['valence_ccc']:.3f} (mean {u['valence_mean'][0]:+.2f} predicted, "
        f"{u['valence_mean'][1]:+.2f} labelled), arousal CCC {u['arousal_ccc']:.3f} (mean "
        f"{u['arousal_mean'][0]:+.2f} predicted, {u['arousal_mean'][1]:+.2f} labelled)"
    )
    if u["valence_ccc_raw"] is not None:
        click.echo(f"  without the run's post-processing (--postprocess off): valence CCC {u['valence_ccc_raw']:.3f}, "
                   f"arousal CCC {u['arousal_ccc_raw']:.3f}")  # fmt: skip


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
