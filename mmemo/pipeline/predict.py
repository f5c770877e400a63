"""`mmemo predict`: a trained run + a clip -> valence and arousal for every frame (25 per second).

The clip goes through ``featurise``, the very code ``mmemo extract`` runs, with the feature configuration stored in
the run's checkpoint, so nothing differs between training data and serving data (frames and face crops are pooled
to the model's size as they come: the bytes of pooling the stored ones, ``featurise_for_model``). A model trained
with ``--import`` streams gets each clip's files found and put on the grid by the code of extraction
(``ImportSpec.file_for``, ``import_stream``; ``--import NAME=DIR``) and standardised with the run's statistics.

Clips longer than the model's ``max_seq_len`` are cut into windows of that length overlapping by half; each
window's predictions are weighted by a triangular ramp (highest in its middle, where the model saw most context)
and the overlapping parts are averaged with those weights, so there is no step at window borders. Each row's
input embedding (the frame CNN, the audio projection) is computed once for the clip and the windows encode slices
of it (``infer``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mmemo.config import ENGINES, ExtractConfig
from mmemo.data.dataset import (
    POOL_BLOCK,
    VISUALS,
    ImportInput,
    import_block,
    import_stats,
    import_width,
    pool_frames,
    side_imports,
    visual_rows,
)
from mmemo.data.labels import DIMENSIONS
from mmemo.errors import MmemoError
from mmemo.features.audio import FeatureCollector
from mmemo.features.clip import ClipArrays, FaceChunk, featurise, featurise_in_memory, join_faces
from mmemo.features.imports import ImportSpec, import_stream
from mmemo.media.files import discover
from mmemo.model.checkpoint import build_model, load_checkpoint
from mmemo.model.config import ModelConfig
from mmemo.model.multimodal import MultiModalTransformer
from mmemo.pipeline.plots import pyplot
from mmemo.pipeline.postprocess import PostProcess


@dataclass
class Run:
    """What prediction needs, all from one checkpoint: the model and how its inputs were made."""

    model: MultiModalTransformer | None  # None when an exported file runs instead (``engine``)
    model_cfg: ModelConfig
    extract_cfg: ExtractConfig
    feature_names: list[str]
    mean: np.ndarray  # (D,)
    std: np.ndarray  # (D,)
    device: torch.device
    path: Path
    epoch: int | None = None  # the epoch the checkpoint was saved at
    best: float | None = None  # the run's best validation score then
    visual: str = "frames"  # what the video branch was trained on: "faces" (aligned crops) or "frames"
    # An exported model file that runs instead of ``model`` (``load_exported_run``): takes the numpy inputs of its
    # sidecar by name, raw features and uint8 frames, and returns (B, T, 2). None: the PyTorch model.
    engine: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None
    engine_name: str = "torch"
    # The AVEC-style chain fitted on the run's validation clips (mmemo.pipeline.postprocess), applied to every
    # prediction; None: a run from before post-processing, or switched off (`--postprocess off`).
    post: PostProcess | None = None
    # The --import streams the model reads (mmemo.data.dataset.ImportInput), in the order of their columns; empty
    # for a model without imports (and every run from before them).
    imports: list[ImportInput] = field(default_factory=list)

    @property
    def input_cfg(self) -> ExtractConfig:
        """How to make this model's inputs from a clip: the training features' configuration, without the face
        stage when the model never looks at faces (it is the costly part of decoding)."""
        if self.visual == "faces" or not self.extract_cfg.faces:
            return self.extract_cfg
        return dataclasses.replace(self.extract_cfg, faces=False)


def load_run(run_dir: str | os.PathLike, checkpoint: str = "best.pt") -> Run:
    """Rebuild the model of ``run_dir/checkpoint`` (weights only, nothing executed)."""
    path = Path(run_dir) / checkpoint
    if not path.exists():
        raise MmemoError(f"{path}: no such checkpoint; is {run_dir} a run directory of `mmemo train`?")
    ckpt = load_checkpoint(path)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(ckpt, path).to(device).eval()
    try:
        extract_cfg = ExtractConfig.from_dict(dict(ckpt["extract_config"]))
        names = [str(n) for n in ckpt["feature_names"]]
        mean, std = ckpt["feature_mean"].numpy(), ckpt["feature_std"].numpy()
    except (MmemoError, TypeError, ValueError, AttributeError) as e:
        raise MmemoError(f"{path}: malformed feature configuration ({e})") from None
    dim = model.cfg.audio_dim
    if dim and not (mean.shape == std.shape == (dim,)):
        raise MmemoError(f"{path}: feature statistics of shape {mean.shape} for a model reading {dim} audio columns")
    best = ckpt.get("best")
    visual = str(ckpt.get("visual", "frames"))  # checkpoints from before faces: frames
    if visual not in VISUALS:
        raise MmemoError(f"{path}: visual {visual!r} is not one of {', '.join(VISUALS)}")
    imports = _imports(ckpt.get("imports", []), model.cfg, path)
    return Run(model, model.cfg, extract_cfg, names, mean, std, device, path, ckpt.get("epoch"),
               float(best) if best is not None else None, visual, post=PostProcess.load(path.parent),
               imports=imports)  # fmt: skip


def _imports(records: list, cfg: ModelConfig, where: str | os.PathLike) -> list[ImportInput]:
    """The recorded imports, checked against the model's input widths (one line naming ``where`` if not)."""
    try:
        imports = [ImportInput.from_dict(dict(d)) for d in records]
    except (KeyError, TypeError, ValueError) as e:
        raise MmemoError(f"{where}: malformed imports record ({type(e).__name__}: {e})") from None
    width, streams = import_width(imports, "video"), len(side_imports(imports, "video"))
    if (width, streams) != (cfg.video_import_dim, cfg.video_import_streams):
        raise MmemoError(f"{where}: the recorded video-side imports make {width} columns ({streams} streams), the "
                         f"model reads {cfg.video_import_dim} ({cfg.video_import_streams})")  # fmt: skip
    return imports


def window_starts(T: int, L: int) -> list[int]:
    """Starts of windows of length L overlapping by half that cover [0, T); the last one ends at T."""
    if T <= L:
        return [0]
    hop = max(1, L // 2)
    starts = list(range(0, T - L, hop))
    return starts + [T - L]


def _ramp(n: int) -> np.ndarray:
    """Triangular weights (n,), highest in the middle, never 0 (the clip's first and last rows need a weight)."""
    x = np.arange(n, dtype=np.float64)
    return np.minimum(x + 1, n - x)


# Rows embedded at a time (``embed_rows``): bounds the frame CNN's activations (about 60 MB for 500 rows at 56 px)
# and the float copy of the frames, whatever the clip's length.
EMBED_ROWS = 500


@torch.no_grad()
def infer(
    run: Run,
    audio: np.ndarray | None,
    frames: np.ndarray | None,
    audio_mask: np.ndarray,
    video_mask: np.ndarray,
    video_import: np.ndarray | None = None,
    *,
    embed_once: bool = True,
) -> np.ndarray:
    """Per-frame predictions (T, 2) for one clip's model inputs, stitched over overlapping windows.

    With the PyTorch model each row's input embedding (``MultiModalTransformer.embed``: the frame CNN above all)
    is computed once for the clip (``embed_rows``), and each window runs ``MultiModalTransformer.encode`` on its
    slice of the embeddings. ``embed_once=False`` runs the whole model on every window instead (the CNN then
    sees each row of a long clip about 1.7 times): the same numbers to float rounding, kept as the reference
    that tests and benchmarks compare with. An exported engine (``Run.engine``) always runs per window: its file
    holds the whole model.

    Args:
        audio: (T, D) standardised features or None; frames: (T, s, s, 3) uint8 at the model's video size or None;
        video_import: (T, Dvi) standardised video-side imports with their presence columns (``prepare_inputs``),
            for a model that reads them.
    """
    T, L = len(audio_mask), run.model_cfg.max_seq_len
    emb = (
        embed_rows(run, audio, frames, audio_mask, video_mask, video_import)
        if run.engine is None and embed_once
        else None
    )
    acc, wsum = np.zeros((T, 2)), np.zeros(T)
    for s0 in window_starts(T, L):
        s1 = min(T, s0 + L)
        n = s1 - s0
        if run.engine is not None:
            y = run.engine(_engine_inputs(run, audio, frames, audio_mask, video_mask, s0, s1, video_import))[0]
        elif emb is not None:
            y = encode_rows(run, emb, s0, s1)
        else:
            with _autocast(run):
                y = run.model(*_tensors(run, audio, frames, audio_mask, video_mask, video_import, s0, s1))
            y = y[0].float().cpu().numpy()  # (n, 2)
        w = _ramp(n)
        acc[s0:s1] += y * w[:, None]
        wsum[s0:s1] += w
    return (acc / wsum[:, None]).astype(np.float32)


def _autocast(run: Run) -> torch.autocast:
    """bf16 autocast on a GPU (the model's speed there), nothing on the CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=run.device.type == "cuda")


def _tensors(run: Run, audio, frames, audio_mask, video_mask, video_import, s0: int, s1: int) -> tuple:
    """Rows [s0, s1) as ``MultiModalTransformer.forward``'s arguments (batch of 1, on the run's device)."""
    dev = run.device
    pad = torch.ones(1, s1 - s0, dtype=torch.bool, device=dev)
    a = torch.from_numpy(audio[s0:s1])[None].to(dev) if audio is not None else None
    f = torch.from_numpy(frames[s0:s1])[None].to(dev).float().div_(255.0) if frames is not None else None
    am = torch.from_numpy(audio_mask[s0:s1])[None].to(dev)
    vm = torch.from_numpy(video_mask[s0:s1])[None].to(dev)
    vi = torch.from_numpy(video_import[s0:s1])[None].to(dev) if video_import is not None else None
    return a, f, pad, am, vm, vi


Embedding = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # a, v (1, T, H); audio_ok, video_ok (1, T)


@torch.no_grad()
def embed_rows(
    run: Run,
    audio: np.ndarray | None,
    frames: np.ndarray | None,
    audio_mask: np.ndarray,
    video_mask: np.ndarray,
    video_import: np.ndarray | None = None,
    *,
    chunk: int = EMBED_ROWS,
) -> Embedding:
    """Each row's input embedding (``MultiModalTransformer.embed``, eval mode) for ``infer``'s arguments, computed
    ``chunk`` rows at a time (a row's embedding does not depend on its neighbours, so the chunks are free).

    Returns:
        (a, v, audio_ok, video_ok): a, v (1, T, H) zero where absent, audio_ok, video_ok (1, T) bool, on the run's
        device: ``encode_rows`` reads any window of them.
    """
    T = len(audio_mask)
    parts = []
    for r0 in range(0, T, chunk) if T else [0]:
        with _autocast(run):
            parts.append(run.model.embed(*_tensors(run, audio, frames, audio_mask, video_mask, video_import, r0,
                                                   min(T, r0 + chunk))))  # fmt: skip
    a, v, audio_ok, video_ok = (torch.cat(x, dim=1) for x in zip(*parts, strict=True))
    return a, v, audio_ok, video_ok


@torch.no_grad()
def encode_rows(run: Run, emb: Embedding, s0: int, s1: int) -> np.ndarray:
    """The model's predictions (s1 - s0, 2) for the window of rows [s0, s1) of embedded rows (``embed_rows``):
    ``MultiModalTransformer.encode`` on their slice, the rest of ``forward``."""
    a, v, audio_ok, video_ok = (x[:, s0:s1] for x in emb)
    pad = torch.ones(1, s1 - s0, dtype=torch.bool, device=a.device)
    with _autocast(run):
        return run.model.encode(a, v, audio_ok, video_ok, pad)[0].float().cpu().numpy()


def _engine_inputs(run: Run, audio, frames, audio_mask, video_mask, s0: int, s1: int,
                   video_import=None) -> dict[str, np.ndarray]:  # fmt: skip
    """Rows [s0, s1) as the inputs of an exported file (batch of 1): every input it declares, an absent modality
    as zeros with its mask False (the PyTorch model treats a None input the same way)."""
    n, cfg = s1 - s0, run.model_cfg
    x: dict[str, np.ndarray] = {}
    if cfg.audio_dim > 0:
        # exported files standardise inside: undo the standardisation of prepare_inputs (a rounding error of
        # about 1e-7 of the feature's magnitude, far below the 1e-4 exports are checked to)
        raw = audio[s0:s1] * run.std + run.mean if audio is not None else np.zeros((n, cfg.audio_dim))
        x["audio"] = raw.astype(np.float32)[None]
    if cfg.video:
        s = cfg.video_size
        x["frames"] = (frames[s0:s1] if frames is not None else np.zeros((n, s, s, 3), np.uint8))[None]
    if cfg.video_import_dim > 0:  # raw, as the audio: standardised inside the exported file
        mean, std = import_stats(run.imports, "video")
        x["video_import"] = (video_import[s0:s1] * std + mean).astype(np.float32)[None]
    x["pad_mask"] = np.ones((1, n), bool)  # the exported signature's order (mmemo.pipeline.export.input_names)
    if cfg.audio_dim > 0:
        x["audio_mask"] = (audio_mask[s0:s1] if audio is not None else np.zeros(n, bool))[None]
    if cfg.video:
        x["video_mask"] = (video_mask[s0:s1] if frames is not None else np.zeros(n, bool))[None]
    return x


# ----------------------------------------------------------------------------------------- exported engines
# engine -> (export format, quantisation): the file `mmemo export` writes for each (``exported_path``).
ENGINE_FILES = {"pt2": ("pt2", None), "onnx": ("onnx", None), "onnx-int8": ("onnx", "int8"),
                "torchscript": ("torchscript", None)}  # fmt: skip
OUTPUT_NAME = "valence_arousal"


def exported_path(
    run_dir: str | os.PathLike, fmt: str, quantize: str | None = None, checkpoint: str = "best.pt"
) -> Path:
    """Where `mmemo export` writes a format by default, named after the checkpoint: ``best.pt2``, ``best.onnx``,
    ``best.int8.onnx``, ``best.torchscript.pt``."""
    stem = Path(checkpoint).stem
    names = {"pt2": f"{stem}.pt2", "torchscript": f"{stem}.torchscript.pt",
             "onnx": f"{stem}.{quantize}.onnx" if quantize else f"{stem}.onnx"}  # fmt: skip
    return Path(run_dir) / names[fmt]


def sidecar_path(out_path: str | os.PathLike) -> Path:
    """The JSON beside an exported file: its name + ``.json`` (``best.onnx`` -> ``best.onnx.json``)."""
    p = Path(out_path)
    return p.with_name(p.name + ".json")


def load_exported(path: str | os.PathLike, fmt: str, *, threads: int = 0) -> Callable[[dict], np.ndarray]:
    """An exported file loaded the way a user without mmemo would (``torch.export.load``, ``onnxruntime``,
    ``torch.jit.load``): a function of the input dict (numpy or torch, in the file's order) -> (B, T, 2) numpy.

    ``threads``: intra-op threads (0: the library's default). Raises MmemoError, one line naming the file, when
    it is missing or does not load."""
    path = Path(path)
    if not path.is_file():
        raise MmemoError(f"{path}: no such exported model")
    try:
        if fmt == "onnx":
            if importlib.util.find_spec("onnxruntime") is None:
                raise MmemoError(f"{path}: running ONNX needs onnxruntime: pip install 'mmemo[onnx]'")
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            return lambda x: sess.run([OUTPUT_NAME], {k: np.asarray(v) for k, v in x.items()})[0]
        if fmt == "pt2":
            with open(path, "rb") as f:  # a file object: any name (torch.export warns unless it ends in .pt2)
                module = torch.export.load(f).module()
        elif fmt == "torchscript":
            with warnings.catch_warnings():  # torch 2.13 marks torch.jit deprecated; old runs' files still load
                warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit")
                module = torch.jit.load(str(path), map_location="cpu").eval()
        else:
            raise MmemoError(f"{path}: unknown export format {fmt!r}")
    except MmemoError:
        raise
    except Exception as e:  # a damaged or cut-short file: whatever the loader raises, said in one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise MmemoError(f"{path}: not a loadable {fmt} model ({type(e).__name__}: {first})") from None

    def run(x: dict) -> np.ndarray:
        with torch.inference_mode():
            y = module(*[torch.as_tensor(v) for v in x.values()])
        return y.numpy()

    return run


def load_exported_run(
    run_dir: str | os.PathLike, engine: str, checkpoint: str = "best.pt", *, path: str | os.PathLike | None = None
) -> Run:
    """A Run that predicts with an exported file instead of the PyTorch model, built from the file's sidecar
    JSON alone (no checkpoint is read: a deployment directory needs only the file and its JSON).

    Args:
        run_dir: where the export lies (a run directory, or any directory holding the exported file).
        engine: ``pt2``, ``onnx``, ``onnx-int8`` or ``torchscript`` (``ENGINE_FILES``).
        checkpoint: names the default file (``best.pt`` -> ``best.pt2``, ``best.onnx``, ``best.int8.onnx``).
        path: the exported file, when not at its default place.
    """
    if engine not in ENGINE_FILES:
        raise MmemoError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    fmt, quantize = ENGINE_FILES[engine]
    file = Path(path) if path is not None else exported_path(run_dir, fmt, quantize, checkpoint)
    flag = f" --quantize {quantize}" if quantize else ""
    if not file.is_file():
        raise MmemoError(f"{file}: no such exported model; write it with `mmemo export {run_dir} --format {fmt}{flag}`")
    side = sidecar_path(file)
    try:
        meta = json.loads(side.read_text())
        if meta.get("format") != fmt or meta.get("quantize") != quantize:
            got = f"{meta.get('format')}{' ' + str(meta.get('quantize')) if meta.get('quantize') else ''}"
            raise MmemoError(f"{side}: describes a {got} export, not the {engine} engine's file")
        mc = ModelConfig.from_dict(dict(meta["model_config"]))
        ec = ExtractConfig.from_dict(dict(meta["extract_config"]))
        names = [str(f["name"]) for f in meta["features"]]
        mean = np.asarray(meta["feature_mean"], np.float32)
        std = np.asarray(meta["feature_std"], np.float32)
        visual = str(meta.get("visual", "frames"))
        ck = meta.get("checkpoint") or {}
        imports = _imports(meta.get("imports", []), mc, side)
    except MmemoError:
        raise
    except FileNotFoundError:
        raise MmemoError(
            f"{side}: missing; the exported file's sidecar JSON says how to feed it (export again)"
        ) from None
    except (ValueError, KeyError, TypeError) as e:
        raise MmemoError(f"{side}: not an mmemo export sidecar ({type(e).__name__}: {e})") from None
    if visual not in VISUALS:
        raise MmemoError(f"{side}: visual {visual!r} is not one of {', '.join(VISUALS)}")
    best = ck.get("run_best_val_mean_ccc")
    order = [str(i["name"]) for i in meta["inputs"]]
    run_file = load_exported(file, fmt)

    def run_in_order(x: dict[str, np.ndarray]) -> np.ndarray:  # pt2 and TorchScript take their inputs by position
        return run_file({k: x[k] for k in order})

    return Run(None, mc, ec, names, mean, std, torch.device("cpu"), file, ck.get("epoch"),
               float(best) if best is not None else None, visual, run_in_order, engine,
               PostProcess.load(file.parent), imports)  # fmt: skip


def open_run(run_dir: str | os.PathLike, checkpoint: str = "best.pt", engine: str = "torch",
             postprocess: bool = True) -> Run:  # fmt: skip
    """The run's PyTorch model (``engine="torch"``) or one of its exported files (``load_exported_run``);
    ``postprocess`` False leaves the fitted chain out (raw model outputs)."""
    run = load_run(run_dir, checkpoint) if engine == "torch" else load_exported_run(run_dir, engine, checkpoint)
    if not postprocess:
        run.post = None
    return run


def model_inputs(run: Run, arrays: ClipArrays, where: str = "input",
                 imports: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> tuple:  # fmt: skip
    """``prepare_inputs`` of a decoded clip: (audio (T, D) standardised or None, frames (T, s, s, 3) uint8 or None,
    audio_mask, video_mask[, video_import])."""
    media = arrays.media
    faces = (arrays.faces.crops, arrays.faces.mask) if arrays.faces is not None else None
    return prepare_inputs(run, arrays.features, arrays.frames, media.audio_mask, media.video_mask, where, faces,
                          imports)  # fmt: skip


def prepare_inputs(
    run: Run,
    features: dict[str, np.ndarray] | None,
    frames: np.ndarray | None,
    audio_mask: np.ndarray,
    video_mask: np.ndarray | None,
    where: str = "input",
    faces: tuple[np.ndarray, np.ndarray] | None = None,
    imports: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple:
    """The model's inputs from a clip's arrays, wherever they come from (a decoded file, a shard, a live window).

    Args:
        features: name -> (T, D_k) raw feature rows (None or empty without audio); frames: (T, S, S, 3) uint8 or
            None; audio_mask, video_mask: (T,) bool (video_mask None without video); faces: (crops (T, F, F, 3)
            uint8, mask (T,) bool) or None: read by a model trained on faces (``Run.visual``), where it is required
            for a clip with video; imports: name -> (values (T, D) NaN where masked, or (T, 0) without a file;
            mask (T,)) of each ``--import`` stream the model reads (``Run.imports``).

    Returns:
        (audio (T, D) standardised float32 or None, frames (T, s, s, 3) uint8 pooled to the model's video size or
        None, audio_mask (T,), video_mask (T,) all False when the model gets no frames), then, for a model that
        reads video-side imports, video_import (T, Dvi) standardised (0 where masked) with its presence columns:
        ``infer``'s arguments in its order. The audio-side imports are the last columns of ``audio``.

    Raises:
        MmemoError: naming ``where`` when the clip has none of the modalities the model reads (its prediction
            would be the model's bias alone, the same for any clip), or lacks an import the model reads.
    """
    T = len(audio_mask)
    streams = dict(imports or {})
    lacking = [i.name for i in run.imports if i.name not in streams]
    if lacking:
        raise MmemoError(f"{where}: no {', '.join(lacking)} import, which the model of {run.path} reads: give it "
                         f"(`mmemo predict --import {lacking[0]}=DIR`)")  # fmt: skip
    video_import = None
    if run.model_cfg.video_import_dim > 0:
        mean, std = import_stats(run.imports, "video")
        video_import = ((import_block(run.imports, "video", streams, T, where) - mean) / std).astype(np.float32)
    check_modalities(run, bool(features), frames is not None or video_import is not None, where)
    audio = None
    if features and run.model_cfg.audio_dim > 0:
        block = import_block(run.imports, "audio", streams, T, where)  # (T, 0) without audio-side imports
        x = np.concatenate([features[k] for k in run.feature_names] + [block], axis=1)
        audio = ((x - run.mean) / run.std).astype(np.float32)
    pooled = None
    if frames is not None and run.model_cfg.video:
        if run.visual == "faces":
            if faces is None:
                raise MmemoError(f"{where}: holds no faces, but the model of {run.path} was trained on faces: "
                                 "extract with --faces on (the default)")  # fmt: skip
            pooled = visual_rows(frames, faces[0], faces[1], run.model_cfg.video_size)
        else:
            pooled = pool_frames(frames, run.model_cfg.video_size)
    out = (audio, pooled, audio_mask, video_mask if pooled is not None else np.zeros(T, bool))
    return out if video_import is None else (*out, video_import)


def check_modalities(run: Run, has_audio: bool, has_video: bool, where: str) -> None:
    """A one-line MmemoError when a clip with ``has_audio`` / ``has_video`` offers nothing the model reads."""
    video = run.model_cfg.video or run.model_cfg.video_import_dim > 0
    reads = [m for m, used in (("audio", run.model_cfg.audio_dim > 0), ("video", video)) if used]
    has = [m for m, present in (("audio", has_audio), ("video", has_video)) if present]
    if not set(reads) & set(has):
        raise MmemoError(
            f"{where}: has {' and '.join(has) or 'no audio or video'}, but the model of {run.path} reads "
            f"{' and '.join(reads)} only; nothing to predict from"
        )


def output_names(paths: list[Path]) -> list[tuple[Path, Path | None, str]]:
    """(media file, separate audio file or None, output name) for each clip of ``paths``: files, and directories
    searched for clips as `mmemo extract` does.

    A name is the clip's path without its suffix, relative to the deepest directory holding every input (a single
    file: its stem; a directory: its clip ids), so clips from different directories never share an output file.
    Two clips that still would (``a.wav`` and ``a.mp4`` given side by side) are refused in one line.
    """
    found: list[tuple[Path, Path | None, Path]] = []  # (file, audio, base directory)
    for p in paths:
        if p.is_dir():
            found += [(c.path, c.audio_path, p.absolute()) for c in discover(p).clips]
        else:
            found.append((p, None, p.absolute().parent))
    found = list(dict.fromkeys(found))  # the same file given twice is one clip
    if not found:
        return []
    root = Path(os.path.commonpath([str(base) for _, _, base in found]))
    out, seen = [], {}
    for path, audio, _ in found:
        name = path.absolute().with_suffix("").relative_to(root).as_posix()
        if name in seen:
            raise MmemoError(f"{seen[name]} and {path} would both be written as {name}; predict them separately")
        seen[name] = path
        out.append((path, audio, name))
    return out


@dataclass
class Prediction:
    clip: str
    table: pd.DataFrame  # time, valence, arousal (one row per frame)
    fps: int = 25
    warnings: list[str] = field(default_factory=list)  # e.g. a file cut short: predicted on what decodes

    def summary(self) -> dict:
        t = self.table
        return {
            "clip": self.clip,
            "frames": len(t),
            "duration_s": round(len(t) / self.fps, 3),
            **{f"{d}_{k}": round(float(getattr(t[d], k)()), 4) for d in DIMENSIONS for k in ("mean", "std")},
        }


def check_import_specs(run: Run, specs: list[ImportSpec]) -> None:
    """One line when ``specs`` (``--import``) miss an import the model reads, or name one it does not."""
    given = {s.name for s in specs}
    for imp in run.imports:
        if imp.name not in given:
            raise MmemoError(f"the model of {run.path} reads the {imp.side}-side import {imp.name}: pass "
                             f"--import {imp.name}=DIR (the directory of its files, as given to `mmemo extract`, "
                             "or the clip's own file)")  # fmt: skip
    reads = {i.name for i in run.imports}
    extra = sorted(given - reads)
    if extra:
        raise MmemoError(f"--import {extra[0]}: the model of {run.path} reads no such import (it reads: "
                         f"{', '.join(sorted(reads)) or 'none'})")  # fmt: skip


def clip_imports(run: Run, specs: list[ImportSpec], clip_id: str, stem: str, T: int) -> tuple[dict, list[str]]:
    """The clip's imports on its ``T`` grid rows, found and placed as `mmemo extract` does (``ImportSpec.file_for``,
    ``import_stream``), and notes: a clip without a file gets that stream masked and a note, not an error.
    Returns (name -> (values, mask), notes)."""
    by_name = {s.name: s for s in specs}
    streams, notes = {}, []
    for imp in run.imports:
        spec = by_name[imp.name]
        file = spec.file_for(clip_id, stem)
        stream = import_stream(file, T, run.extract_cfg.fps, imp.name)
        if stream is None:
            notes.append(f"{clip_id}: no file for import {imp.name} in {spec.directory}: its rows are masked")
            streams[imp.name] = (np.zeros((T, 0), np.float32), np.zeros(T, bool))
            continue
        if tuple(stream.columns) != imp.columns:
            raise MmemoError(f"{stream.file}: import {imp.name} has columns {', '.join(stream.columns[:4])}... "
                             f"({len(stream.columns)}), the model was trained on {', '.join(imp.columns[:4])}... "
                             f"({len(imp.columns)})")  # fmt: skip
        notes += stream.notes
        streams[imp.name] = (stream.values, stream.mask)
    return streams, notes


class _PooledRows:
    """Image rows (n, S, S, 3) uint8 as they come, kept pooled to ``size`` (``pool_frames``), ``POOL_BLOCK`` rows at
    a time: the clip is never held at its stored size, and pooling works row by row, so the bytes are those of
    pooling it whole."""

    def __init__(self, size: int) -> None:
        self.size, self.pending, self.n_pending, self.done = size, [], 0, []

    def __call__(self, rows: np.ndarray) -> None:
        self.pending.append(rows)
        self.n_pending += len(rows)
        if self.n_pending >= POOL_BLOCK:
            self._pool()

    def _pool(self) -> None:
        if self.pending:
            self.done.append(pool_frames(np.concatenate(self.pending), self.size))
            self.pending, self.n_pending = [], 0

    def array(self) -> np.ndarray | None:
        """(T, size, size, 3) uint8, or None when no row came."""
        self._pool()
        return np.concatenate(self.done) if self.done else None


def featurise_for_model(run: Run, path: str | os.PathLike, audio_path: str | os.PathLike | None = None) -> ClipArrays:
    """``featurise_in_memory`` with the frames and face crops pooled to the model's video size as they are decoded:
    the bytes ``prepare_inputs`` makes of the full-size ones, so its pooling hands them back unchanged, without
    holding a long clip at 224 px (120 s of video: 450 MB at 224 px, 28 MB at 56)."""
    if not run.model_cfg.video:
        return featurise_in_memory(path, run.input_cfg, audio_path=audio_path)
    frames, crops = _PooledRows(run.model_cfg.video_size), _PooledRows(run.model_cfg.video_size)
    face_chunks: list[FaceChunk] = []

    def on_faces(chunk: FaceChunk) -> None:
        crops(chunk.crops)
        face_chunks.append(dataclasses.replace(chunk, crops=chunk.crops[:0]))  # the rest of the chunk, crops apart

    sink = FeatureCollector()
    dec = featurise(path, run.input_cfg, audio_path=audio_path, on_frames=frames, on_features=sink,
                    on_faces=on_faces)  # fmt: skip
    faces = join_faces(face_chunks) if face_chunks else None
    if faces is not None:
        faces.crops = crops.array()
    features = sink.arrays(dec.n_frames) if dec.has_audio else {}
    return ClipArrays(dec, frames.array() if dec.has_video else None, features, faces)


def predict_clip(run: Run, path: str | os.PathLike, audio_path: str | os.PathLike | None = None,
                 imports: list[ImportSpec] = (), clip_id: str | None = None) -> Prediction:  # fmt: skip
    """Decode and featurise ``path`` as extraction does, then predict every frame.

    ``imports``: the ``--import`` specs of the imports the model reads (``check_import_specs``); each clip's file
    is looked up by ``clip_id`` (default: the file's stem) then the stem, as extraction looks it up."""
    arrays = featurise_for_model(run, path, audio_path)
    streams, notes = {}, []
    if run.imports:
        stem = Path(path).stem
        streams, notes = clip_imports(run, list(imports), clip_id or stem, stem, len(arrays.media.audio_mask))
    y = infer(run, *model_inputs(run, arrays, str(path), streams))
    if run.post is not None:
        y = run.post.apply(y)
    T = len(y)
    table = pd.DataFrame(
        {"time": np.round(np.arange(T) / run.extract_cfg.fps, 3), "valence": y[:, 0], "arousal": y[:, 1]}
    )
    return Prediction(str(path), table, run.extract_cfg.fps, list(arrays.media.warnings) + notes)


def format_prediction(pred: Prediction, fmt: str) -> str:
    """CSV (``time,valence,arousal``, one row per frame) or JSON (``{"summary": ..., "frames": [...]}``)."""
    table = pred.table.round({"time": 3, "valence": 5, "arousal": 5})
    if fmt == "csv":
        return table.to_csv(index=False)
    return json.dumps({"summary": pred.summary(), "frames": table.to_dict(orient="records")}) + "\n"


def plot_prediction(pred: Prediction, path: str | os.PathLike) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 3))
    t = pred.table
    ax.plot(t["time"], t["valence"], label="valence", color="tab:blue")
    ax.plot(t["time"], t["arousal"], label="arousal", color="tab:red")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(xlabel="time (s)", ylim=(-1.1, 1.1), title=Path(pred.clip).name)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
