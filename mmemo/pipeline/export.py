"""`mmemo export`: a trained run -> one standalone model file + a sidecar JSON (``<file>.json``).

Formats, and what loads each without mmemo:

- ``pt2`` (default): a ``torch.export`` ExportedProgram, ``torch.export.load(path).module()(*inputs)``; the
  format PyTorch keeps loading (TorchScript is deprecated upstream).
- ``onnx``: ``onnxruntime.InferenceSession(path).run(None, inputs)``; with ``quantize="int8"`` the linear layers
  get int8 weights (onnxruntime's dynamic quantisation, ``quantize_int8``).
- ``torchscript``: ``torch.jit.load(path)``, for deployments that still load TorchScript.

None inputs do not export, so the exported module takes only the modalities the model has, in this order::

    audio (B, T, D) float32   raw audio features (NOT standardised: the run's mean/std are applied inside),
                              columns = the features of the sidecar's "features", in that order
    frames (B, T, s, s, 3) uint8   RGB frames on the 25 fps grid, area-pooled to s = video_size (divided by 255
                              inside, as `mmemo predict` does)
    pad_mask (B, T) bool      True = a real row (False = padding of a shorter clip in the batch)
    audio_mask (B, T) bool    True = the row has audio     (only with audio)
    video_mask (B, T) bool    True = the row has a frame   (only with video)
    -> valence_arousal (B, T, 2) float32

A model trained with ``--import`` streams (``Run.imports``) takes them raw as well: the audio side's columns, then
one 0/1 presence column per import, are the last columns of ``audio``; the video side's are one more input,
``video_import (B, T, Dvi) float32``, right after ``frames`` (or first, without audio and frames), laid out the
same way. Both are standardised inside, and a row whose presence column is 0 has that import's values zeroed
inside, so a caller may leave any finite number there. The sidecar's ``imports`` says where each one sits.

Any batch size and any T >= 1 work; the model was trained on windows of up to ``max_seq_len`` rows, so longer
clips should be cut into windows as `mmemo predict` does. Rows with a False mask must still hold finite values.

TorchScript is ``torch.jit.script`` of the model's own forward (the frame CNN on present frames only). pt2 and ONNX
go through ``torch.export``, which cannot follow data-dependent branches: their wrapper embeds every row and zeroes
the absent ones (``MultiModalTransformer.encode`` does the rest), which is the same function. Every float export
is loaded back and compared with the PyTorch model on random inputs (padding, masked rows, a one-row window)
before it is put in place: the largest difference must stay below 1e-4 and is in the sidecar. An int8 model is
measured against the float one on the run's validation clips (``agreement``) and refused when its validation mean
CCC drops by more than ``MAX_CCC_DROP`` (unless forced); the figures are in its sidecar.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
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
from mmemo.config import EXPORT_FORMATS, QUANTIZE_MODES
from mmemo.data.dataset import ImportInput, import_gates, import_stats, import_width
from mmemo.data.features_dir import load_corpus
from mmemo.data.labels import DIMENSIONS
from mmemo.errors import MmemoError
from mmemo.features.registry import feature_dims
from mmemo.model.attention import MultiHeadAttention
from mmemo.model.multimodal import FrameEncoder, MultiModalTransformer
from mmemo.pipeline.evaluate import check_compatible, predict_shard
from mmemo.pipeline.metrics import ccc, evaluate
from mmemo.pipeline.predict import OUTPUT_NAME, Run, exported_path, load_exported, load_run, sidecar_path

TOLERANCE = 1e-4  # largest absolute difference from the PyTorch model a float export may show
MAX_CCC_DROP = 0.02  # largest loss of validation mean CCC an int8 model may show (unless --force)
CHECK_SIZES = ((2, 37), (1, 8), (3, 1))  # (batch, time) of the inputs an export is checked on (one-row windows too)
# What dynamic int8 quantisation rewrites: MatMul covers every linear layer (the attention projections, the
# feed-forward layers, the fusion and the head; the exporter writes a linear layer on (B, T, D) as MatMul + Add)
# and Gemm the 2-D ones (the frame CNN's projection). Both operands of the attention products themselves are
# activations: quantising them too (MatMulConstBOnly off) was measured (benchmarks/export.py) and is not done.
INT8_OPS = ("MatMul", "Gemm")
ONNX_PACKAGES = ("onnx", "onnxscript")  # what torch.onnx.export(dynamo=True) needs; onnxruntime runs the file


# ------------------------------------------------------------------------------------------------- the modules
class _FlatFrames(nn.Module):
    """The frame CNN on every row: (B, T, s, s, 3) -> (B*T, s, s, 3) -> CNN -> (B, T, H). For TorchScript and
    ONNX, whose runtimes take any shape at a reshape."""

    def __init__(self, encoder: FrameEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        B, T, s = f.shape[0], f.shape[1], f.shape[2]
        return self.encoder(f.reshape(B * T, s, s, 3)).reshape(B, T, -1)  # (B, T, H)


class _Depth1Frames(nn.Module):
    """The frame CNN on every row as depth-1 3-D convolutions over (B, 3, T, s, s), with the same weights.

    Why: ``torch.export`` reasons about a (B, T) -> (B*T) reshape symbolically and guards on T != 1 (it cannot
    tell B*T from B otherwise), so the program would refuse a one-row window. A (1, 3, 3) kernel with stride
    (1, 2, 2) over time is the 2-D CNN applied to each row (equal to 1e-7), and no reshape mixes B and T.
    """

    def __init__(self, encoder: FrameEncoder) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for m in encoder.convs:
            if isinstance(m, nn.Conv2d):
                conv = nn.Conv3d(m.in_channels, m.out_channels, (1, *m.kernel_size), (1, *m.stride), (0, *m.padding))
                conv.weight.data.copy_(m.weight.data[:, :, None])  # (out, in, 1, k, k)
                conv.bias.data.copy_(m.bias.data)
                layers.append(conv)
            elif isinstance(m, nn.BatchNorm2d):
                bn = nn.BatchNorm3d(m.num_features, eps=m.eps)
                bn.load_state_dict(m.state_dict())
                layers.append(bn)
            else:
                layers.append(m)  # the activation
        self.convs = nn.Sequential(*layers)
        # a copy, not the shared module: torch.export.save (2.13) fails on a parameter held under two names
        self.proj = copy.deepcopy(encoder.proj)
        self.register_buffer("mean", encoder.mean.clone().view(1, 3, 1, 1, 1))
        self.register_buffer("std", encoder.std.clone().view(1, 3, 1, 1, 1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        x = f.permute(0, 4, 1, 2, 3)  # (B, 3, T, s, s)
        x = self.convs((x - self.mean) / self.std).mean(dim=(3, 4))  # (B, C, T)
        return self.proj(x.transpose(1, 2))  # (B, T, H)


class _Exported(nn.Module):
    """The model with its input preparation baked in: feature standardisation and uint8 frames -> [0, 1].

    ``graph``: "branches" runs the model's own forward (the frame CNN on present frames only: TorchScript);
    "dense" embeds every row and zeroes the absent ones, without data-dependent branches (ONNX); "depth1" is dense
    with the frame CNN as depth-1 3-D convolutions (torch.export, see ``_Depth1Frames``). All are the same function.

    ``imports``: the run's ``--import`` streams. Their raw columns are standardised inside as the audio features are
    (the audio side's are the last columns of ``audio``; the video side's are ``video_import``), and the values of
    a row whose presence column is 0 are zeroed, so a caller may leave any finite number in a masked row.
    """

    def __init__(self, model: MultiModalTransformer, mean: np.ndarray, std: np.ndarray, graph: str,
                 imports: list[ImportInput] = ()) -> None:  # fmt: skip
        super().__init__()
        self.model = model
        self.dense = graph != "branches"
        enc = model.frame_encoder
        self.frames_fn = None if enc is None else _Depth1Frames(enc) if graph == "depth1" else _FlatFrames(enc)
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, np.float32)))
        self.register_buffer("std", torch.as_tensor(np.asarray(std, np.float32)))
        imports = list(imports)
        # one-element placeholders where there is nothing to gate: torch.export.save (2.13) fails on empty buffers
        a_idx, a_gated = _gates(imports, "audio", len(mean) - import_width(imports, "audio"))
        v_idx, v_gated = _gates(imports, "video", 0)
        vi_mean, vi_std = import_stats(imports, "video")
        self.gate_audio, self.has_video_import = bool(a_gated.any()), model.video_import_in is not None
        self.audio_streams = sum(i.side == "audio" for i in imports)  # the last columns of audio: presence
        if not self.gate_audio:
            a_idx, a_gated = np.zeros(1, np.int64), np.zeros(1, bool)
        if not self.has_video_import:
            v_idx, v_gated, vi_mean, vi_std = np.zeros(1, np.int64), np.zeros(1, bool), np.zeros(1), np.ones(1)
        self.register_buffer("audio_gate", torch.as_tensor(a_idx))
        self.register_buffer("audio_gated", torch.as_tensor(a_gated))
        self.register_buffer("vi_gate", torch.as_tensor(v_idx))
        self.register_buffer("vi_gated", torch.as_tensor(v_gated))
        self.register_buffer("vi_mean", torch.as_tensor(np.asarray(vi_mean, np.float32)))
        self.register_buffer("vi_std", torch.as_tensor(np.asarray(vi_std, np.float32)))

    def prepare(
        self, audio: torch.Tensor | None, frames: torch.Tensor | None, video_import: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Raw inputs -> the model's: standardised audio (B, T, D) and video imports (B, T, Dvi) (a masked
        import's values zeroed), frames as float in [0, 1]."""
        x: torch.Tensor | None = None
        if audio is not None:
            x = (audio - self.mean) / self.std  # (B, T, D), as mmemo.pipeline.predict.prepare_inputs
            if self.gate_audio:
                x = x.masked_fill(self.audio_gated & (audio.index_select(-1, self.audio_gate) <= 0.5), 0.0)
        f: torch.Tensor | None = None
        if frames is not None:
            f = frames.to(torch.float32) / 255.0  # (B, T, s, s, 3)
        vi: torch.Tensor | None = None
        if video_import is not None and self.has_video_import:
            vi = (video_import - self.vi_mean) / self.vi_std
            vi = vi.masked_fill(self.vi_gated & (video_import.index_select(-1, self.vi_gate) <= 0.5), 0.0)
        return x, f, vi

    def run(
        self,
        audio: torch.Tensor | None,
        frames: torch.Tensor | None,
        pad_mask: torch.Tensor,
        audio_mask: torch.Tensor | None,
        video_mask: torch.Tensor | None,
        video_import: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x, f, vi = self.prepare(audio, frames, video_import)
        if not self.dense:
            return self.model(x, f, pad_mask, audio_mask, video_mask, vi)
        return self._dense(x, f, pad_mask, audio_mask, video_mask, vi)

    def _dense(
        self,
        x: torch.Tensor | None,
        f: torch.Tensor | None,
        pad_mask: torch.Tensor,
        audio_mask: torch.Tensor | None,
        video_mask: torch.Tensor | None,
        vi: torch.Tensor | None,
    ) -> torch.Tensor:
        """MultiModalTransformer.forward in eval mode without data-dependent branches (for torch.export)."""
        B, T = pad_mask.shape
        H = self.model.hidden
        a = torch.zeros(B, T, H)
        v = torch.zeros(B, T, H)
        audio_ok = torch.zeros_like(pad_mask)
        frame_ok = torch.zeros_like(pad_mask)
        import_ok = torch.zeros_like(pad_mask)
        if x is not None and audio_mask is not None and self.model.audio_in is not None:
            audio_ok = pad_mask & audio_mask
            a = self.model.audio_in(x) * audio_ok[..., None]  # (B, T, H)
        if f is not None and video_mask is not None and self.frames_fn is not None:
            frame_ok = pad_mask & video_mask
            v = self.frames_fn(f) * frame_ok[..., None]  # (B, T, H)
        if vi is not None and self.model.video_import_in is not None:
            k = self.model.import_streams  # the presence columns are the last k
            import_ok = pad_mask & (vi[..., vi.shape[-1] - k :] > 0.5).any(-1)
            v = v + self.model.video_import_in(vi) * import_ok[..., None]
        return self.model.encode(a, v, audio_ok, frame_ok | import_ok, pad_mask)


def _gates(imports: list[ImportInput], side: str, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """(index (D,), gated (D,)) over the whole input of ``side``: each gated column's presence column (``offset``
    columns of audio features come first); ungated columns point at themselves (index_select needs an index)."""
    g = import_gates(imports, side)
    idx = np.arange(offset + len(g), dtype=np.int64)
    gated = np.zeros(offset + len(g), bool)
    gated[offset:] = g >= 0
    idx[offset:][g >= 0] = g[g >= 0] + offset
    return idx, gated


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


# With video-side imports: the same, plus ``video_import`` after the frames (input_names gives the order).
class AudioVideoImportModel(_Exported):
    def forward(
        self,
        audio: torch.Tensor,
        frames: torch.Tensor,
        video_import: torch.Tensor,
        pad_mask: torch.Tensor,
        audio_mask: torch.Tensor,
        video_mask: torch.Tensor,
    ) -> torch.Tensor:
        return self.run(audio, frames, pad_mask, audio_mask, video_mask, video_import)


class AudioImportModel(_Exported):
    def forward(
        self, audio: torch.Tensor, video_import: torch.Tensor, pad_mask: torch.Tensor, audio_mask: torch.Tensor
    ) -> torch.Tensor:
        return self.run(audio, None, pad_mask, audio_mask, None, video_import)


class VideoImportModel(_Exported):
    def forward(
        self, frames: torch.Tensor, video_import: torch.Tensor, pad_mask: torch.Tensor, video_mask: torch.Tensor
    ) -> torch.Tensor:
        return self.run(None, frames, pad_mask, None, video_mask, video_import)


class ImportModel(_Exported):
    def forward(self, video_import: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        return self.run(None, None, pad_mask, None, None, video_import)


def input_names(has_audio: bool, has_video: bool, has_video_import: bool = False) -> list[str]:
    """The exported forward's arguments, in order."""
    names = (["audio"] if has_audio else []) + (["frames"] if has_video else [])
    names += (["video_import"] if has_video_import else []) + ["pad_mask"]
    return names + (["audio_mask"] if has_audio else []) + (["video_mask"] if has_video else [])


# (audio, frames, video imports) -> the module whose forward takes those inputs
_CLASSES = {(True, True, False): AudioVideoModel, (True, False, False): AudioModel, (False, True, False): VideoModel,
            (True, True, True): AudioVideoImportModel, (True, False, True): AudioImportModel,
            (False, True, True): VideoImportModel, (False, False, True): ImportModel}  # fmt: skip


GRAPHS = {"torchscript": "branches", "onnx": "dense", "pt2": "depth1"}  # export format -> _Exported's graph


def wrap(model: MultiModalTransformer, mean: np.ndarray, std: np.ndarray, graph: str = "branches",
         imports: list[ImportInput] = ()) -> _Exported:  # fmt: skip
    """The exportable module for ``model`` (eval mode, float32, CPU): its signature follows its modalities;
    ``graph`` as in ``_Exported`` (``GRAPHS`` gives each format's); ``imports``: the run's (``Run.imports``)."""
    has_audio, has_video = model.audio_in is not None, model.frame_encoder is not None
    has_vi = model.video_import_in is not None
    if graph == "dense":  # ONNX: attention masks as additive 0 / -inf (MultiHeadAttention.additive_mask), on a copy
        model = copy.deepcopy(model)
        for m in model.modules():
            if isinstance(m, MultiHeadAttention):
                m.additive_mask = True
    cls = _CLASSES[(has_audio, has_video, has_vi)]
    if not has_audio:  # unused; one element, as torch.export.save (2.13) fails on empty buffers
        mean, std = np.zeros(1, np.float32), np.ones(1, np.float32)
    return cls(model, mean, std, graph, imports).float().cpu().eval()


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
    if module.audio_streams:  # 0/1 presence columns: some import rows masked (their values must not matter)
        k = module.audio_streams
        out["audio"][..., -k:] = (torch.rand(B, T, k, generator=g) > 0.3).float()
    if module.has_video_import:
        k = module.model.import_streams
        vi = torch.randn(B, T, len(module.vi_mean), generator=g) * module.vi_std + module.vi_mean
        vi[..., -k:] = (torch.rand(B, T, k, generator=g) > 0.3).float()
        out["video_import"] = vi
    names = input_names(module.model.audio_in is not None, module.model.frame_encoder is not None,
                        module.has_video_import)  # fmt: skip
    return {k: out[k] for k in names}


# ------------------------------------------------------------------------------------------------ the exporters
def missing_onnx_packages() -> list[str]:
    """Which of the packages ONNX export needs are not installed."""
    return [p for p in ONNX_PACKAGES if importlib.util.find_spec(p) is None]


def _pt2(module: _Exported, path: Path, meta: str) -> None:
    """``torch.export`` with dynamic batch and time axes, saved with the sidecar record inside."""
    example = example_inputs(module, 2, 16)
    # A one-row window must work (a short live context, a 40-ms clip): min=1; the upper bounds are only what
    # torch.export needs to reason about sizes, far above a window (max_seq_len rows) or a batch of them.
    batch, time_ = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("time", min=1, max=2**20)
    shapes = {name: {0: batch, 1: time_} for name in example}
    with torch.no_grad():
        program = torch.export.export(module, tuple(example.values()), dynamic_shapes=shapes, strict=False)
    with open(path, "wb") as f:  # a file object: torch.export warns about a name not ending in .pt2 (.partial)
        torch.export.save(program, f, extra_files={"mmemo.json": meta})


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


EXPORTERS = {"pt2": _pt2, "onnx": _onnx, "torchscript": _torchscript}


def quantize_int8(float_path: Path, out_path: Path, meta: str) -> dict:
    """onnxruntime's dynamic quantisation of a float ONNX file: int8 weights (per output channel) for the linear
    layers (``INT8_OPS``), activations quantised per call from their own range, so no calibration data is needed.
    Returns how it was made (for the sidecar)."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    options = {"MatMulConstBOnly": True}
    # The tool logs a suggestion to run its pre-processing (shape inference and graph optimisation) on the root
    # logger; on these models it changed no node that gets quantised and no timing (measured), so it is not run.
    before = logging.root.manager.disable
    logging.disable(max(before, logging.WARNING))
    try:  # per-channel weights keep small output channels from being flattened by a large one
        quantize_dynamic(float_path, out_path, op_types_to_quantize=list(INT8_OPS), per_channel=True,
                         reduce_range=False, weight_type=QuantType.QInt8, extra_options=options)  # fmt: skip
    finally:
        logging.disable(before)
    model = onnx.load(str(out_path))
    del model.metadata_props[:]
    model.metadata_props.add(key="mmemo", value=meta)
    onnx.save(model, str(out_path))
    ops = [n.op_type for n in model.graph.node]
    return {
        "tool": "onnxruntime.quantization.quantize_dynamic", "onnxruntime_version": onnxruntime.__version__,
        "op_types_to_quantize": list(INT8_OPS), "weight_type": "QInt8", "per_channel": True, "reduce_range": False,
        "extra_options": options, "activations": "uint8, quantised per call from their own range (dynamic)",
        "integer_ops": sorted({o for o in ops if "Integer" in o or o.startswith("Dynamic")}),
        "float_ops_left": sorted({o for o in ops if o in ("Conv", "MatMul", "Gemm")}),
    }  # fmt: skip


def reference(model: MultiModalTransformer, mean, std, inputs: dict[str, torch.Tensor],
              module: _Exported | None = None) -> np.ndarray:  # fmt: skip
    """The PyTorch model on the same inputs, prepared as `mmemo predict` prepares them (imports standardised and
    gated by ``module.prepare``, the one place that knows their layout; needed for a model with imports)."""
    audio = inputs.get("audio")
    frames = inputs.get("frames")
    x = None if audio is None else torch.from_numpy(((audio.numpy() - mean) / std).astype(np.float32))
    f = None if frames is None else frames.float().div_(255.0)
    vi = None
    if module is not None:
        x, f, vi = module.prepare(audio, frames, inputs.get("video_import"))
    with torch.no_grad():
        y = model.eval()(x, f, inputs["pad_mask"], inputs.get("audio_mask"), inputs.get("video_mask"), vi)
    return y.numpy()


def check_export(
    path: Path, fmt: str, module: _Exported, mean, std, sizes=CHECK_SIZES, model: MultiModalTransformer | None = None
) -> float | None:
    """Largest |exported - PyTorch| over random inputs of the given (B, T); None when onnxruntime is missing.
    ``model``: the PyTorch model to compare with (default: the one ``module`` wraps)."""
    if fmt == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        return None
    exported, worst = load_exported(path, fmt), 0.0
    for k, (B, T) in enumerate(sizes):
        inputs = example_inputs(module, B, T, seed=k)
        diff = np.abs(exported(inputs) - reference(model or module.model, mean, std, inputs, module))
        worst = max(worst, float(diff.max()))
    return worst


def validation_clips(run_dir: Path, features_dir: str | os.PathLike, run: Run) -> tuple[list, str]:
    """The labelled clips of ``features_dir`` the run validated on (its config.json's ``val_clips``), and where
    that list came from; every labelled clip when the run recorded none (a run of another tool)."""
    corpus = load_corpus(features_dir, min_clips=1)
    check_compatible(run, corpus.extract_cfg, str(features_dir))
    record = run_dir / "config.json"
    ids = json.loads(record.read_text()).get("val_clips") if record.is_file() else None
    if not ids:
        return corpus.clips, f"every labelled clip of {features_dir} ({record} lists no validation clips)"
    clips = [c for c in corpus.clips if c.clip_id in set(ids)]
    if not clips:
        raise MmemoError(f"{features_dir}: holds none of the {len(ids)} validation clips of {record}; give the "
                         "features directory the run was trained on")  # fmt: skip
    return clips, f"the run's validation clips ({record}), {len(clips)} of {len(ids)} found in {features_dir}"


def agreement(run: Run, quantized: Run, clips: list) -> dict:
    """How the int8 model compares with the float one on ``clips`` (windows cut as `mmemo predict` cuts them):
    CCC between their outputs over every row, per dimension; validation CCC against the labels (pooled over the
    labelled rows) of each, per dimension and their mean; the change of that mean; the largest difference."""
    floats = [predict_shard(run, c.path) for c in clips]
    ints = [predict_shard(quantized, c.path) for c in clips]
    pf, pq = np.concatenate([r.pred for r in floats]), np.concatenate([r.pred for r in ints])
    out: dict = {"clips": len(clips), "rows": int(len(pf)), "labelled_rows": int(sum(r.mask.sum() for r in floats))}
    out["output_ccc"] = {d: ccc(pq[:, k], pf[:, k]) for k, d in enumerate(DIMENSIONS)}
    out["max_abs_diff"] = float(np.abs(pq - pf).max()) if len(pf) else 0.0
    for name, res in (("float", floats), ("int8", ints)):
        m = {d: evaluate([r.pred[r.mask, k] for r in res], [r.truth[r.mask, k] for r in res])["ccc"]
             for k, d in enumerate(DIMENSIONS)}  # fmt: skip
        out[f"val_ccc_{name}"] = {**m, "mean": float(np.mean(list(m.values())))}
    out["val_ccc_change"] = out["val_ccc_int8"]["mean"] - out["val_ccc_float"]["mean"]
    if not np.isfinite(out["val_ccc_change"]):
        raise MmemoError(f"{clips[0].path}: the validation clips have no usable labels (CCC undefined): the int8 "
                         "model cannot be measured against them")  # fmt: skip
    return out


def agreement_text(a: dict) -> str:
    """One line: the int8 model against the float one."""
    oc, f, q = a["output_ccc"], a["val_ccc_float"]["mean"], a["val_ccc_int8"]["mean"]
    return (
        f"int8 vs float on {a['clips']} validation clip(s), {a['rows']} rows: output CCC valence "
        f"{oc['valence']:.4f}, arousal {oc['arousal']:.4f} (max abs diff {a['max_abs_diff']:.3g}); validation "
        f"mean CCC {q:.4f} int8 vs {f:.4f} float ({a['val_ccc_change']:+.4f})"
    )


# -------------------------------------------------------------------------------------------------- the sidecar
def sidecar(run, fmt: str, file_name: str, provenance: dict, quantize: str | None = None) -> dict:
    """Everything needed to feed the exported file (see the module docstring for the signature)."""
    mc, ec = run.model_cfg, run.extract_cfg
    has_audio, has_video = mc.audio_dim > 0, mc.video
    dims = feature_dims(ec)
    imports = list(getattr(run, "imports", []))
    if has_audio and sum(dims.values()) + import_width(imports, "audio") != mc.audio_dim:
        raise MmemoError(f"{run.path}: features {dims} and audio-side imports do not add up to the model's "
                         f"audio_dim {mc.audio_dim}")  # fmt: skip
    columns, c = [], 0
    for name in run.feature_names:
        columns.append({"name": name, "dim": dims[name], "columns": [c, c + dims[name]]})
        c += dims[name]
    import_records = []
    for side, start in (("audio", c), ("video", 0)):  # values of each import, then a presence column each
        mine = [i for i in imports if i.side == side]
        presence = start + sum(len(i.columns) for i in mine)
        for j, imp in enumerate(mine):
            import_records.append(
                {
                    **imp.to_dict(),
                    "input": "audio" if side == "audio" else "video_import",
                    "columns_at": [start, start + len(imp.columns)],
                    "presence_column": presence + j,
                }
            )
            start += len(imp.columns)
    shapes = {
        "audio": (["batch", "time", mc.audio_dim], "float32",
                  "raw audio features, columns as in 'features' (standardised inside with feature_mean/std)"),
        "frames": (["batch", "time", mc.video_size, mc.video_size, 3], "uint8",
                   f"RGB {'face crops' if run.visual == 'faces' else 'frames'} ({ec.frame_size}x{ec.frame_size} "
                   "from the extractor, area-pooled to video_size)"),
        "pad_mask": (["batch", "time"], "bool", "True = real row, False = padding"),
        "audio_mask": (["batch", "time"], "bool", "True = the row has audio"),
        "video_mask": (["batch", "time"], "bool", "True = the row has a frame"),
        "video_import": (["batch", "time", mc.video_import_dim], "float32",
                         "raw video-side --import columns, then one 0/1 presence column per import, as in 'imports' "
                         "(standardised inside; a masked row: presence 0, any finite values)"),
    }  # fmt: skip
    output = {"name": OUTPUT_NAME, "shape": ["batch", "time", 2], "dtype": "float32", "columns": ["valence", "arousal"]}
    loaders = {"pt2": "torch.export.load(path).module()(*inputs)", "torchscript": "torch.jit.load(path)(*inputs)",
               "onnx": "onnxruntime.InferenceSession(path).run(None, inputs)"}  # fmt: skip
    return {
        "mmemo_version": __version__,
        "torch_version": torch.__version__,
        "format": fmt,
        "quantize": quantize,
        "file": file_name,
        "load": loaders[fmt],
        "checkpoint": provenance,
        "inputs": [
            {"name": n, "shape": shapes[n][0], "dtype": shapes[n][1], "description": shapes[n][2]}
            for n in input_names(has_audio, has_video, mc.video_import_dim > 0)
        ],
        "outputs": [output],
        "standardisation": "inside the model: feed raw features; feature_mean/feature_std are for reference",
        "features": columns if has_audio else [],
        "feature_mean": [float(x) for x in run.mean] if has_audio else [],
        "feature_std": [float(x) for x in run.std] if has_audio else [],
        # the --import streams: name, side, columns, statistics, where they sit in the input (audio-side ones after
        # the audio features, with a 0/1 presence column each after all of them; video-side ones in video_import)
        "imports": import_records,
        "visual": run.visual,
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
def default_out_path(run_dir: Path, fmt: str, checkpoint: str = "best.pt", quantize: str | None = None) -> Path:
    """``RUN_DIR/best.pt2``, ``best.onnx``, ``best.int8.onnx`` or ``best.torchscript.pt`` (after the checkpoint)."""
    return exported_path(run_dir, fmt, quantize, checkpoint)


def export_run(
    run_dir: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    fmt: str = "pt2",
    checkpoint: str = "best.pt",
    *,
    quantize: str | None = None,
    features_dir: str | os.PathLike | None = None,
    force: bool = False,
    check: bool = True,
    log=lambda s: None,
) -> Path:
    """Write the model of ``run_dir/checkpoint`` as a standalone ``fmt`` file and its sidecar JSON.

    Args:
        run_dir: a run directory of ``mmemo train``.
        out_path: the file to write (default ``default_out_path``); the sidecar goes to ``out_path + ".json"``.
        fmt: ``"pt2"`` (torch.export), ``"onnx"`` (needs ``pip install 'mmemo[onnx]'``) or ``"torchscript"``.
        checkpoint: which checkpoint of the run (``best.pt`` or ``last.pt``).
        quantize: ``"int8"`` (ONNX only): the float ONNX model, checked, then quantised (``quantize_int8``) and
            measured against it on the run's validation clips of ``features_dir`` (``agreement``).
        features_dir: the features directory the run was trained on (required with ``quantize``).
        force: write an int8 model whose validation mean CCC drops by more than ``MAX_CCC_DROP``.
        check: load the written file back and compare it with the PyTorch model (max abs difference must be
            below 1e-4; ONNX is checked only where onnxruntime is installed).
        log: called with a line of progress (the int8 agreement figure).

    Returns:
        The path of the exported file.
    """
    if fmt not in EXPORT_FORMATS:
        raise MmemoError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if quantize is not None:
        if quantize not in QUANTIZE_MODES:
            raise MmemoError(f"unknown quantisation {quantize!r}; choose one of {', '.join(QUANTIZE_MODES)}")
        if fmt != "onnx":
            raise MmemoError(f"--quantize {quantize} is for --format onnx (onnxruntime's integer kernels), not {fmt}")
        if features_dir is None:
            raise MmemoError(f"--quantize {quantize} measures the model on the run's validation clips: give "
                             "--features FEATURES_DIR, the features directory the run was trained on")  # fmt: skip
        if importlib.util.find_spec("onnxruntime") is None:
            raise MmemoError("int8 quantisation needs onnxruntime: pip install 'mmemo[onnx]'")
    if fmt == "onnx":
        missing = missing_onnx_packages()
        if missing:
            raise MmemoError(f"ONNX export needs {' and '.join(missing)}: pip install 'mmemo[onnx]'")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MmemoError(f"{run_dir}: no such run directory (make one with `mmemo train`)")
    run = load_run(run_dir, checkpoint)
    clips = where = None
    if quantize is not None:  # before the slow part: a wrong features directory fails at once
        clips, where = validation_clips(run_dir, features_dir, run)
    best = run.best
    provenance = {"file": run.path.name, "epoch": run.epoch,
                  "run_best_val_mean_ccc": float(best) if best is not None and np.isfinite(best) else None}  # fmt: skip
    out = Path(out_path) if out_path is not None else default_out_path(run_dir, fmt, checkpoint, quantize)
    out.parent.mkdir(parents=True, exist_ok=True)

    run.model = run.model.float().cpu().eval()
    run.device = torch.device("cpu")
    module = wrap(run.model, run.mean, run.std, GRAPHS[fmt], run.imports)
    meta = sidecar(run, fmt, out.name, provenance, quantize)
    t0 = time.perf_counter()
    with atomic.atomic_path(out) as partial:  # only a checked export is put in place
        # the float model an int8 one is made from: a temporary file beside it (``<out>.float.partial``)
        float_file = atomic.partial_path(out.with_name(out.name + ".float")) if quantize else partial
        try:
            EXPORTERS[fmt](module, float_file, json.dumps(meta))
            meta["export_seconds"] = round(time.perf_counter() - t0, 3)
            if check or quantize:  # an int8 model is only made from a float one that is right
                diff = check_export(float_file, fmt, module, run.mean, run.std, model=run.model)
                meta["check"] = {"max_abs_diff": diff, "tolerance": TOLERANCE,
                                 "of": "the float export" if quantize else "the file",
                                 "note": "onnxruntime not installed: not checked" if diff is None else
                                 f"random inputs with padding and masked rows, (B, T) in {CHECK_SIZES}"}  # fmt: skip
                if diff is not None and not diff < TOLERANCE:
                    raise MmemoError(f"{out}: the export differs from the PyTorch model by {diff:.3g} (> {TOLERANCE})")
            if quantize:
                meta["quantization"] = quantize_int8(float_file, partial, json.dumps(meta))
                qrun = dataclasses.replace(run, engine=load_exported(partial, "onnx"), engine_name="onnx-int8")
                a = agreement(run, qrun, clips)
                meta["agreement"] = {"on": where, "max_val_ccc_drop": MAX_CCC_DROP, "forced": False, **a}
                log(agreement_text(a))
                if a["val_ccc_change"] < -MAX_CCC_DROP:
                    if not force:
                        raise MmemoError(
                            f"{out}: the int8 model loses {-a['val_ccc_change']:.4f} of validation mean CCC (more "
                            f"than {MAX_CCC_DROP}): not written; --force writes it anyway"
                        )
                    meta["agreement"]["forced"] = True
        finally:
            if quantize:
                float_file.unlink(missing_ok=True)
    atomic.write_json(sidecar_path(out), meta)
    return out
