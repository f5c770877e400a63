"""`mmemo export`: a trained run -> one standalone model file (TorchScript or ONNX) + a sidecar JSON.

The file runs without mmemo: ``torch.jit.load(path)`` for TorchScript, ``onnxruntime.InferenceSession(path)`` for
ONNX. None inputs do not export, so the exported module takes only the modalities the model has, in this order::

    audio (B, T, D) float32   raw audio features (NOT standardised: the run's mean/std are applied inside),
                              columns = the features of the sidecar's "features", in that order
    frames (B, T, s, s, 3) uint8   RGB frames on the 25 fps grid, area-pooled to s = video_size (divided by 255
                              inside, as `mmemo predict` does)
    pad_mask (B, T) bool      True = a real row (False = padding of a shorter clip in the batch)
    audio_mask (B, T) bool    True = the row has audio     (only with audio)
    video_mask (B, T) bool    True = the row has a frame   (only with video)
    -> valence_arousal (B, T, 2) float32

Any batch size and any T work; the model was trained on windows of up to ``max_seq_len`` rows, so longer clips
should be cut into windows as `mmemo predict` does. Rows with a False mask must still hold finite values (zeros).

TorchScript is ``torch.jit.script`` of the model's own forward (the same branches as PyTorch: the frame CNN runs
on present frames only). ONNX comes from ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript), which
cannot follow data-dependent branches; its wrapper embeds every row and zeroes the absent ones
(``MultiModalTransformer.encode`` does the rest), which is the same function. Before the file is put in place it
is loaded back and compared with the PyTorch model on random inputs; the largest difference is in the sidecar.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mmemo import __version__, atomic
from mmemo.config import EXPORT_FORMATS
from mmemo.errors import MmemoError
from mmemo.features.registry import feature_dims
from mmemo.model.multimodal import MultiModalTransformer
from mmemo.pipeline.predict import load_run

TOLERANCE = 1e-4  # largest absolute difference from the PyTorch model an export may show
OUTPUT_NAME = "valence_arousal"
CHECK_SIZES = ((2, 37), (1, 8))  # (batch, time) of the inputs an export is checked on
ONNX_PACKAGES = ("onnx", "onnxscript")  # what torch.onnx.export(dynamo=True) needs; onnxruntime runs the file


# ------------------------------------------------------------------------------------------------- the modules
class _Exported(nn.Module):
    """The model with its input preparation baked in: feature standardisation and uint8 frames -> [0, 1]."""

    def __init__(self, model: MultiModalTransformer, mean: np.ndarray, std: np.ndarray, dense: bool) -> None:
        super().__init__()
        self.model = model
        self.dense = dense
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, np.float32)))
        self.register_buffer("std", torch.as_tensor(np.asarray(std, np.float32)))

    def run(
        self,
        audio: torch.Tensor | None,
        frames: torch.Tensor | None,
        pad_mask: torch.Tensor,
        audio_mask: torch.Tensor | None,
        video_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        x: torch.Tensor | None = None
        if audio is not None:
            x = (audio - self.mean) / self.std  # (B, T, D), as mmemo.pipeline.predict.model_inputs
        f: torch.Tensor | None = None
        if frames is not None:
            f = frames.to(torch.float32) / 255.0  # (B, T, s, s, 3)
        if not self.dense:
            return self.model(x, f, pad_mask, audio_mask, video_mask)
        return self._dense(x, f, pad_mask, audio_mask, video_mask)

    def _dense(
        self,
        x: torch.Tensor | None,
        f: torch.Tensor | None,
        pad_mask: torch.Tensor,
        audio_mask: torch.Tensor | None,
        video_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """MultiModalTransformer.forward in eval mode without data-dependent branches (for torch.export)."""
        B, T = pad_mask.shape
        H = self.model.hidden
        a = torch.zeros(B, T, H)
        v = torch.zeros(B, T, H)
        audio_ok = torch.zeros_like(pad_mask)
        video_ok = torch.zeros_like(pad_mask)
        if x is not None and audio_mask is not None and self.model.audio_in is not None:
            audio_ok = pad_mask & audio_mask
            a = self.model.audio_in(x) * audio_ok[..., None]  # (B, T, H)
        if f is not None and video_mask is not None and self.model.frame_encoder is not None:
            video_ok = pad_mask & video_mask
            s = f.shape[2]
            v = self.model.frame_encoder(f.reshape(B * T, s, s, 3)).reshape(B, T, H) * video_ok[..., None]
        return self.model.encode(a, v, audio_ok, video_ok, pad_mask)


class AudioVideoModel(_Exported):
    def forward(
        self,
        audio: torch.Tensor,
        frames: torch.Tensor,
        pad_mask: torch.Tensor,
        audio_mask: torch.Tensor,
        video_mask: torch.Tensor,
    ) -> torch.Tensor:
        return self.run(audio, frames, pad_mask, audio_mask, video_mask)


class AudioModel(_Exported):
    def forward(self, audio: torch.Tensor, pad_mask: torch.Tensor, audio_mask: torch.Tensor) -> torch.Tensor:
        return self.run(audio, None, pad_mask, audio_mask, None)


class VideoModel(_Exported):
    def forward(self, frames: torch.Tensor, pad_mask: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
        return self.run(None, frames, pad_mask, None, video_mask)


def input_names(has_audio: bool, has_video: bool) -> list[str]:
    """The exported forward's arguments, in order."""
    names = (["audio"] if has_audio else []) + (["frames"] if has_video else []) + ["pad_mask"]
    return names + (["audio_mask"] if has_audio else []) + (["video_mask"] if has_video else [])


def wrap(model: MultiModalTransformer, mean: np.ndarray, std: np.ndarray, dense: bool = False) -> _Exported:
    """The exportable module for ``model`` (eval mode, float32, CPU): its signature follows its modalities."""
    has_audio, has_video = model.audio_in is not None, model.frame_encoder is not None
    cls = AudioVideoModel if has_audio and has_video else AudioModel if has_audio else VideoModel
    if not has_audio:
        mean, std = np.zeros(0, np.float32), np.ones(0, np.float32)
    return cls(model, mean, std, dense).float().cpu().eval()


def example_inputs(module: _Exported, B: int, T: int, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs of every kind the exported module takes: padding in sample 0, masked rows everywhere."""
    cfg = module.model.cfg
    g = torch.Generator().manual_seed(seed)
    pad = torch.ones(B, T, dtype=torch.bool)
    pad[0, T - max(1, T // 4) :] = False
    out = {
        "audio": torch.randn(B, T, cfg.audio_dim, generator=g) * module.std + module.mean,
        "frames": torch.randint(0, 256, (B, T, cfg.video_size, cfg.video_size, 3), generator=g, dtype=torch.uint8),
        "pad_mask": pad,
        "audio_mask": torch.rand(B, T, generator=g) > 0.2,
        "video_mask": torch.rand(B, T, generator=g) > 0.2,
    }
    names = input_names(module.model.audio_in is not None, module.model.frame_encoder is not None)
    return {k: out[k] for k in names}


# ------------------------------------------------------------------------------------------------ the exporters
def missing_onnx_packages() -> list[str]:
    """Which of the packages ONNX export needs are not installed."""
    return [p for p in ONNX_PACKAGES if importlib.util.find_spec(p) is None]


def _torchscript(module: _Exported, path: Path, meta: str) -> None:
    with warnings.catch_warnings():
        # torch 2.13 marks torch.jit deprecated (in favour of torch.export) but still supports it fully
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit")
        scripted = torch.jit.script(module)
        torch.jit.save(scripted, str(path), _extra_files={"mmemo.json": meta})


def _onnx(module: _Exported, path: Path, meta: str) -> None:
    example = example_inputs(module, 2, 16)
    batch, time_ = torch.export.Dim("batch"), torch.export.Dim("time")
    shapes = {name: {0: batch, 1: time_} for name in example}
    # the exporter reports progress by print() and warns about things that do not concern this model
    # (torchvision ops it cannot register, axis names it merges)
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module, tuple(example.values()), dynamo=True, dynamic_shapes=shapes, input_names=list(example),
                output_names=[OUTPUT_NAME], external_data=False, verbose=False,
            )  # fmt: skip
    finally:
        logger.setLevel(level)
    program.model.metadata_props["mmemo"] = meta
    program.save(str(path), external_data=False)


def load_exported(path: Path, fmt: str):
    """The exported file loaded the way a user would: a function of the input dict -> (B, T, 2) numpy."""
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit")
            module = torch.jit.load(str(path)).eval()

        def run(inputs: dict[str, torch.Tensor]) -> np.ndarray:
            with torch.no_grad():
                return module(*inputs.values()).numpy()

        return run
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda inputs: sess.run([OUTPUT_NAME], {k: v.numpy() for k, v in inputs.items()})[0]


def reference(model: MultiModalTransformer, mean, std, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    """The PyTorch model on the same inputs, prepared as `mmemo predict` prepares them."""
    audio = inputs.get("audio")
    frames = inputs.get("frames")
    x = None if audio is None else torch.from_numpy(((audio.numpy() - mean) / std).astype(np.float32))
    f = None if frames is None else frames.float().div_(255.0)
    with torch.no_grad():
        y = model.eval()(x, f, inputs["pad_mask"], inputs.get("audio_mask"), inputs.get("video_mask"))
    return y.numpy()


def check_export(path: Path, fmt: str, module: _Exported, mean, std, sizes=CHECK_SIZES) -> float | None:
    """Largest |exported - PyTorch| over random inputs of the given (B, T); None when onnxruntime is missing."""
    if fmt == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        return None
    exported, worst = load_exported(path, fmt), 0.0
    for k, (B, T) in enumerate(sizes):
        inputs = example_inputs(module, B, T, seed=k)
        diff = np.abs(exported(inputs) - reference(module.model, mean, std, inputs))
        worst = max(worst, float(diff.max()))
    return worst


# -------------------------------------------------------------------------------------------------- the sidecar
def sidecar(run, fmt: str, file_name: str, provenance: dict) -> dict:
    """Everything needed to feed the exported file (see the module docstring for the signature)."""
    mc, ec = run.model_cfg, run.extract_cfg
    has_audio, has_video = mc.audio_dim > 0, mc.video
    dims = feature_dims(ec)
    if has_audio and sum(dims.values()) != mc.audio_dim:
        raise MmemoError(f"{run.path}: features {dims} do not add up to the model's audio_dim {mc.audio_dim}")
    columns, c = [], 0
    for name in run.feature_names:
        columns.append({"name": name, "dim": dims[name], "columns": [c, c + dims[name]]})
        c += dims[name]
    shapes = {
        "audio": (["batch", "time", mc.audio_dim], "float32",
                  "raw audio features, columns as in 'features' (standardised inside with feature_mean/std)"),
        "frames": (["batch", "time", mc.video_size, mc.video_size, 3], "uint8",
                   f"RGB frames ({ec.frame_size}x{ec.frame_size} from the extractor, area-pooled to video_size)"),
        "pad_mask": (["batch", "time"], "bool", "True = real row, False = padding"),
        "audio_mask": (["batch", "time"], "bool", "True = the row has audio"),
        "video_mask": (["batch", "time"], "bool", "True = the row has a frame"),
    }  # fmt: skip
    output = {"name": OUTPUT_NAME, "shape": ["batch", "time", 2], "dtype": "float32", "columns": ["valence", "arousal"]}
    return {
        "mmemo_version": __version__,
        "torch_version": torch.__version__,
        "format": fmt,
        "file": file_name,
        "checkpoint": provenance,
        "inputs": [
            {"name": n, "shape": shapes[n][0], "dtype": shapes[n][1], "description": shapes[n][2]}
            for n in input_names(has_audio, has_video)
        ],
        "outputs": [output],
        "standardisation": "inside the model: feed raw features; feature_mean/feature_std are for reference",
        "features": columns if has_audio else [],
        "feature_mean": [float(x) for x in run.mean] if has_audio else [],
        "feature_std": [float(x) for x in run.std] if has_audio else [],
        "fps": ec.fps,
        "time_grid": f"row t covers [t/{ec.fps}, (t+1)/{ec.fps}) s, for the frame and the audio features alike",
        "long_clips": "windows of max_seq_len rows overlapping by half, outputs cross-faded with a triangular "
        "ramp (as `mmemo predict` does)",
        "video_size": mc.video_size,
        "frame_size": ec.frame_size,
        "max_seq_len": mc.max_seq_len,
        "extract_config": ec.to_dict(),
        "model_config": mc.to_dict(),
    }


# ------------------------------------------------------------------------------------------------------ the API
def default_out_path(run_dir: Path, fmt: str, checkpoint: str = "best.pt") -> Path:
    """``RUN_DIR/best.torchscript.pt`` or ``RUN_DIR/best.onnx`` (named after the checkpoint)."""
    stem = Path(checkpoint).stem
    return run_dir / (f"{stem}.torchscript.pt" if fmt == "torchscript" else f"{stem}.onnx")


def sidecar_path(out_path: str | os.PathLike) -> Path:
    """The JSON beside an exported file: its name + ``.json`` (``best.onnx`` -> ``best.onnx.json``)."""
    p = Path(out_path)
    return p.with_name(p.name + ".json")


def export_run(
    run_dir: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    fmt: str = "torchscript",
    checkpoint: str = "best.pt",
    *,
    check: bool = True,
) -> Path:
    """Write the model of ``run_dir/checkpoint`` as a standalone ``fmt`` file and its sidecar JSON.

    Args:
        run_dir: a run directory of ``mmemo train``.
        out_path: the file to write (default ``RUN_DIR/best.torchscript.pt`` / ``RUN_DIR/best.onnx``); the
            sidecar goes to ``out_path + ".json"``.
        fmt: ``"torchscript"`` or ``"onnx"`` (needs ``pip install 'mmemo[onnx]'``).
        checkpoint: which checkpoint of the run (``best.pt`` or ``last.pt``).
        check: load the written file back and compare it with the PyTorch model (max abs difference must be
            below 1e-4; ONNX is checked only where onnxruntime is installed).

    Returns:
        The path of the exported file.
    """
    if fmt not in EXPORT_FORMATS:
        raise MmemoError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if fmt == "onnx":
        missing = missing_onnx_packages()
        if missing:
            raise MmemoError(f"ONNX export needs {' and '.join(missing)}: pip install 'mmemo[onnx]'")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MmemoError(f"{run_dir}: no such run directory (make one with `mmemo train`)")
    run = load_run(run_dir, checkpoint)
    best = run.best
    provenance = {"file": run.path.name, "epoch": run.epoch,
                  "run_best_val_mean_ccc": float(best) if best is not None and np.isfinite(best) else None}  # fmt: skip
    out = Path(out_path) if out_path is not None else default_out_path(run_dir, fmt, checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)

    model = run.model.float().cpu().eval()
    module = wrap(model, run.mean, run.std, dense=fmt == "onnx")
    meta = sidecar(run, fmt, out.name, provenance)
    t0 = time.perf_counter()
    with atomic.atomic_path(out) as partial:  # only a checked export is put in place
        (_torchscript if fmt == "torchscript" else _onnx)(module, partial, json.dumps(meta))
        meta["export_seconds"] = round(time.perf_counter() - t0, 3)
        if check:
            diff = check_export(partial, fmt, module, run.mean, run.std)
            meta["check"] = {"max_abs_diff": diff, "tolerance": TOLERANCE,
                             "note": "onnxruntime not installed: not checked" if diff is None else
                             f"random inputs with padding and masked rows, (B, T) in {CHECK_SIZES}"}  # fmt: skip
            if diff is not None and not diff < TOLERANCE:
                raise MmemoError(f"{out}: the export differs from the PyTorch model by {diff:.3g} (> {TOLERANCE})")
    atomic.write_json(sidecar_path(out), meta)
    return out
