"""`mmemo export`: torch.export programs (pt2, the default), ONNX and TorchScript files that match the PyTorch model
(max abs difference < 1e-4) for audio-only, video-only and audio+video models, at several batch sizes and lengths
(one row included), with padding and masked rows, loaded without mmemo; the sidecar JSON; one-line errors. The
int8 model and the engines of `mmemo predict` are in test_engines.py."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch

from mmemo.config import ExtractConfig, TrainConfig
from mmemo.errors import MmemoError
from mmemo.model.config import ModelConfig
from mmemo.model.multimodal import MultiModalTransformer
from mmemo.pipeline import export as E
from mmemo.pipeline.export import export_run, sidecar_path
from mmemo.pipeline.predict import load_run

TOL = 1e-4
KINDS = {"audio+video": (True, True), "audio": (True, False), "video": (False, True)}
ECFG = ExtractConfig(features=("rms", "zcr", "mfcc"), n_mfcc=4)  # 1 + 1 + 4 = 6 audio columns
SIZES = [(2, 23), (3, 50), (1, 1)]  # (batch, time): one past the model's max_seq_len of 40, and a single row


def make_run(run_dir, audio: bool, video: bool, seed: int = 0):
    """A run directory holding a best.pt with the keys `mmemo train` writes (untrained weights, but batch-norm
    statistics and feature statistics that are not the identity, so that a lost one would show). The audio-only
    model is the small-corpus kind (statistics-pooling head, no audio LayerNorm, no fusion batch norm), so that
    exports cover it too."""
    torch.manual_seed(seed)
    small = audio and not video
    cfg = ModelConfig(audio_dim=6 if audio else 0, video=video, hidden=16, heads=2, layers=1, video_size=8,
                      cnn_channels=(4, 8), max_seq_len=40, stats_head=small, audio_norm=not small,
                      fusion_norm="none" if small else "batch")  # fmt: skip
    model = MultiModalTransformer(cfg)
    for m in model.modules():
        if hasattr(m, "running_mean"):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    run_dir.mkdir(parents=True)
    torch.save(
        {"version": 1, "mmemo_version": "0.1.0", "model": model.state_dict(), "epoch": 3, "step": 30, "best": 0.5,
         "model_config": cfg.to_dict(), "train_config": TrainConfig().to_dict(), "extract_config": ECFG.to_dict(),
         "feature_names": list(ECFG.features), "feature_mean": torch.randn(6) * 3,
         "feature_std": torch.rand(6) * 4 + 0.5},
        run_dir / "best.pt",
    )  # fmt: skip
    return run_dir


def inputs(audio: bool, video: bool, B: int, T: int, seed: int) -> dict[str, np.ndarray]:
    """Raw features, uint8 frames; sample 0 padded at the end, rows without audio or video, and (B > 2) a sample
    with no video at all."""
    rng = np.random.default_rng(seed)
    pad = np.ones((B, T), bool)
    pad[0, T - T // 3 :] = False
    am, vm = rng.random((B, T)) > 0.25, rng.random((B, T)) > 0.25
    if B > 2:
        vm[2] = False
    x = {"audio": rng.normal(2.0, 5.0, (B, T, 6)).astype(np.float32),
         "frames": rng.integers(0, 256, (B, T, 8, 8, 3), dtype=np.uint8),
         "pad_mask": pad, "audio_mask": am, "video_mask": vm}  # fmt: skip
    return {k: x[k] for k in E.input_names(audio, video)}


def pytorch(run_dir, x: dict[str, np.ndarray]) -> np.ndarray:
    """The model as `mmemo predict` runs it: standardised features, frames / 255."""
    run = load_run(run_dir)
    a = torch.from_numpy(((x["audio"] - run.mean) / run.std).astype(np.float32)) if "audio" in x else None
    f = torch.from_numpy(x["frames"]).float().div_(255.0) if "frames" in x else None
    masks = {k: torch.from_numpy(x[k]) if k in x else None for k in ("audio_mask", "video_mask")}
    with torch.no_grad():
        return run.model.cpu()(a, f, torch.from_numpy(x["pad_mask"]), masks["audio_mask"], masks["video_mask"]).numpy()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    return {kind: make_run(root / kind.replace("+", "_"), *mods) for kind, mods in KINDS.items()}


@pytest.fixture(scope="module")
def pt2(runs):
    """Each run exported in the default format (torch.export) at the default place."""
    return {kind: export_run(run_dir) for kind, run_dir in runs.items()}


@pytest.fixture(scope="module")
def torchscript(runs):
    """Each run exported to TorchScript (still offered, for deployments that load TorchScript)."""
    return {kind: export_run(run_dir, fmt="torchscript") for kind, run_dir in runs.items()}


# A fresh interpreter that cannot import mmemo (sys.modules entry None) and runs every file on every input set,
# loading it the way the sidecar's "load" says. (torch.jit.load warns that TorchScript is deprecated: -I ignores
# nothing, so the warning is filtered here, as a user of an old deployment would.)
STANDALONE = textwrap.dedent("""
    import sys, warnings
    sys.modules["mmemo"] = None  # any `import mmemo` now fails
    import json, numpy as np, torch
    warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit")
    jobs = json.loads(sys.argv[1])
    for model_file, in_file, out_file in jobs:
        if model_file.endswith(".pt2"):
            m = torch.export.load(model_file).module()
        else:
            m = torch.jit.load(model_file).eval()
        x = np.load(in_file)
        with torch.no_grad():
            y = m(*[torch.from_numpy(x[k]) for k in x.files])
        np.save(out_file, y.numpy())
    assert not [k for k in sys.modules if k.startswith("mmemo.")]
""")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["pt2", "torchscript"])
def test_export_matches_pytorch_without_mmemo(runs, fmt, request, tmp_path):
    """Each kind of model, exported as a torch.export program (and as TorchScript), gives PyTorch's numbers in a
    process without mmemo, at three lengths (one row) and batch sizes, with padding and masked rows."""
    files = request.getfixturevalue(fmt)
    jobs, expected = [], []
    for kind, run_dir in runs.items():
        path = files[kind]
        assert path == run_dir / ("best.pt2" if fmt == "pt2" else "best.torchscript.pt")
        for k, (B, T) in enumerate(SIZES):
            x = inputs(*KINDS[kind], B, T, seed=k)
            np.savez(tmp_path / f"{kind}{k}.npz", **x)  # keeps the argument order
            jobs.append([str(path), str(tmp_path / f"{kind}{k}.npz"), str(tmp_path / f"{kind}{k}.npy")])
            expected.append((kind, T, pytorch(run_dir, x)))
    r = subprocess.run([sys.executable, "-I", "-c", STANDALONE, json.dumps(jobs)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    for (kind, T, want), (_, _, out_file) in zip(expected, jobs, strict=True):
        got = np.load(out_file)
        assert got.shape == want.shape == (want.shape[0], T, 2) and np.isfinite(got).all()
        assert np.abs(got - want).max() < TOL, kind


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_onnx_matches_pytorch(runs, kind, tmp_path):
    """ONNX (dynamic batch and time axes) in onnxruntime gives PyTorch's numbers at three lengths."""
    ort = pytest.importorskip("onnxruntime")
    if E.missing_onnx_packages():
        pytest.skip(f"ONNX export needs {E.missing_onnx_packages()}")
    path = export_run(runs[kind], tmp_path / "model.onnx", fmt="onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = json.loads(sidecar_path(path).read_text())
    assert [i.name for i in sess.get_inputs()] == [i["name"] for i in meta["inputs"]]
    assert [i.type for i in sess.get_inputs()] == [f"tensor({_ort_type(i['dtype'])})" for i in meta["inputs"]]
    assert meta["check"]["max_abs_diff"] < TOL
    for k, (B, T) in enumerate(SIZES):
        x = inputs(*KINDS[kind], B, T, seed=k)
        (got,) = sess.run(["valence_arousal"], x)
        assert got.shape == (B, T, 2)
        assert np.abs(got - pytorch(runs[kind], x)).max() < TOL


def _ort_type(dtype: str) -> str:
    return {"float32": "float", "uint8": "uint8", "bool": "bool"}[dtype]


def test_sidecar_tells_how_to_feed_the_file(runs, pt2):
    """Input names, shapes and dtypes follow the exported signature; features, statistics, grid and configs."""
    run_dir, path = runs["audio+video"], pt2["audio+video"]
    meta = json.loads(sidecar_path(path).read_text())
    assert sidecar_path(path).name == "best.pt2.json"
    assert (meta["format"], meta["quantize"], meta["visual"]) == ("pt2", None, "frames")
    assert meta["file"] == path.name and meta["mmemo_version"] == "0.1.0"
    assert [(i["name"], i["dtype"], i["shape"]) for i in meta["inputs"]] == [
        ("audio", "float32", ["batch", "time", 6]), ("frames", "uint8", ["batch", "time", 8, 8, 3]),
        ("pad_mask", "bool", ["batch", "time"]), ("audio_mask", "bool", ["batch", "time"]),
        ("video_mask", "bool", ["batch", "time"])]  # fmt: skip
    assert meta["outputs"][0]["columns"] == ["valence", "arousal"]
    assert [(f["name"], f["columns"]) for f in meta["features"]] == [("rms", [0, 1]), ("zcr", [1, 2]), ("mfcc", [2, 6])]
    run = load_run(run_dir)
    np.testing.assert_array_equal(np.float32(meta["feature_mean"]), run.mean)
    np.testing.assert_array_equal(np.float32(meta["feature_std"]), run.std)
    assert (meta["fps"], meta["video_size"], meta["frame_size"], meta["max_seq_len"]) == (25, 8, 224, 40)
    assert ExtractConfig.from_dict(meta["extract_config"]) == ECFG
    assert ModelConfig.from_dict(meta["model_config"]) == run.model_cfg
    assert meta["checkpoint"] == {"file": "best.pt", "epoch": 3, "run_best_val_mean_ccc": 0.5}
    assert meta["check"]["max_abs_diff"] < TOL
    # the same record travels inside the file, and the program takes the documented arguments
    extra = {"mmemo.json": ""}
    program = torch.export.load(str(path), extra_files=extra)
    assert json.loads(extra["mmemo.json"])["inputs"] == meta["inputs"]
    assert [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"] == [
        i["name"] for i in meta["inputs"]
    ]
    for kind in ("audio", "video"):
        names = [i["name"] for i in json.loads(sidecar_path(pt2[kind]).read_text())["inputs"]]
        assert names == (["audio", "pad_mask", "audio_mask"] if kind == "audio" else ["frames", "pad_mask",
                                                                                       "video_mask"])  # fmt: skip


def test_torchscript_sidecar_and_record(runs, torchscript):
    """TorchScript still carries its record and the documented argument names (old deployments)."""
    path = torchscript["audio+video"]
    meta = json.loads(sidecar_path(path).read_text())
    assert (sidecar_path(path).name, meta["format"]) == ("best.torchscript.pt.json", "torchscript")
    extra = {"mmemo.json": ""}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit")
        m = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["mmemo.json"])["inputs"] == meta["inputs"]
    assert [a.name for a in m.forward.schema.arguments][1:] == [i["name"] for i in meta["inputs"]]


def test_errors_are_one_line(runs, tmp_path, monkeypatch):
    """Missing run directory or checkpoint, unknown format, ONNX packages missing: one line that says what to do."""
    cases = [
        (lambda: export_run(tmp_path / "nope"), "no such run directory"),
        (lambda: export_run(runs["audio"], checkpoint="last.pt"), "last.pt: no such checkpoint"),
        (lambda: export_run(runs["audio"], fmt="tflite"), "unknown export format 'tflite'"),
        (lambda: export_run(runs["audio"], fmt="pt2", quantize="int8"), "--quantize int8 is for --format onnx"),
        (lambda: export_run(runs["audio"], fmt="onnx", quantize="int8"), "give --features FEATURES_DIR"),
        (lambda: export_run(runs["audio"], fmt="onnx", quantize="int4"), "unknown quantisation 'int4'"),
    ]
    for call, message in cases:
        with pytest.raises(MmemoError, match=message) as e:
            call()
        assert "\n" not in str(e.value)
    monkeypatch.setattr(E, "missing_onnx_packages", lambda: ["onnxscript"])
    with pytest.raises(MmemoError, match=r"needs onnxscript: pip install 'mmemo\[onnx\]'"):
        export_run(runs["audio"], fmt="onnx")


def test_a_failed_check_leaves_no_file(runs, tmp_path, monkeypatch):
    """An export that does not match PyTorch is refused, and neither it nor its partial file is left behind."""
    monkeypatch.setattr(E, "load_exported", lambda path, fmt: lambda x: np.full((*x["pad_mask"].shape, 2), 9.0))
    with pytest.raises(MmemoError, match="differs from the PyTorch model"):
        export_run(runs["audio"], tmp_path / "m.pt2")
    assert list(tmp_path.iterdir()) == []
