"""The exported engines of `mmemo predict`: a run trained on the demo corpus (conftest's small_run), exported as a
torch.export program, float ONNX and int8 ONNX, then run on the demo clips through the same feature path.

Float engines equal the PyTorch path (max abs difference < 1e-4) on decoded clips and in a live stream; the int8
model's agreement figures in its sidecar are recomputed here; the pt2 file runs in an interpreter that cannot
import mmemo; a damaged or missing file is one line; the int8 refusal and --force.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from mmemo.cli import main
from mmemo.data.features_dir import load_corpus
from mmemo.data.labels import DIMENSIONS
from mmemo.data.shards import read_clip
from mmemo.errors import MmemoError
from mmemo.pipeline import export as E
from mmemo.pipeline.evaluate import predict_shard
from mmemo.pipeline.export import export_run
from mmemo.pipeline.metrics import ccc
from mmemo.pipeline.predict import infer, load_exported_run, load_run, open_run, predict_clip, prepare_inputs
from mmemo.pipeline.stream import stream_predict

TOL = 1e-4
FLOAT_ENGINES = ["pt2", "onnx"]
OUTPUT_CCC_MIN = 0.99  # what the int8 model of the demo run reaches against the float one (per dimension)


@pytest.fixture(scope="module")
def exported(small_run, demo_features, tmp_path_factory):
    """A copy of the small run with best.pt2, best.onnx and best.int8.onnx beside its checkpoint."""
    run_dir = tmp_path_factory.mktemp("engines") / "run"
    shutil.copytree(small_run, run_dir)
    export_run(run_dir, fmt="pt2")
    export_run(run_dir, fmt="onnx")
    export_run(run_dir, fmt="onnx", quantize="int8", features_dir=demo_features)
    return run_dir


def _clip(demo, k: int = 1):
    return demo / "corpus" / f"speaker{k % 4}" / f"clip{k:02d}.mp4"


@pytest.mark.slow
def test_pt2_without_mmemo_equals_the_run_on_a_clip(exported, demo_features, tmp_path):
    """A clip's extracted inputs (raw features, pooled frames, masks), one window of the run's length, through the
    pt2 file in a fresh interpreter that cannot import mmemo: the run's numbers."""
    run = load_run(exported)
    clip = read_clip(load_corpus(demo_features).clips[0].path, frames=True)
    faces = (clip.faces, clip.face_mask) if clip.faces is not None else None
    audio, frames, am, vm = prepare_inputs(run, clip.features, clip.frames, clip.audio_mask, clip.video_mask,
                                           faces=faces)  # fmt: skip
    L = run.model_cfg.max_seq_len
    raw = np.concatenate([clip.features[k] for k in run.feature_names], axis=1)[:L].astype(np.float32)
    x = {"audio": raw[None], "frames": frames[:L][None], "pad_mask": np.ones((1, L), bool),
         "audio_mask": am[:L][None], "video_mask": vm[:L][None]}  # fmt: skip
    np.savez(tmp_path / "x.npz", **x)
    script = textwrap.dedent("""
        import sys
        sys.modules["mmemo"] = None  # any `import mmemo` now fails
        import numpy as np, torch
        m = torch.export.load(sys.argv[1]).module()
        x = np.load(sys.argv[2])
        with torch.no_grad():
            np.save(sys.argv[3], m(*[torch.from_numpy(x[k]) for k in x.files]).numpy())
    """)
    r = subprocess.run([sys.executable, "-I", "-c", script, str(exported / "best.pt2"), str(tmp_path / "x.npz"),
                        str(tmp_path / "y.npy")], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    got = np.load(tmp_path / "y.npy")[0]
    want = infer(run, audio[:L], frames[:L], am[:L], vm[:L])
    assert got.shape == (L, 2) and np.abs(got - want).max() < TOL


@pytest.mark.slow
@pytest.mark.parametrize("engine", [*FLOAT_ENGINES, "onnx-int8"])
def test_predict_through_each_engine(exported, demo, engine):
    """A decoded clip predicted through each engine: the float files equal PyTorch, int8 agrees with it."""
    clip = _clip(demo)
    want = predict_clip(load_run(exported), clip).table[["valence", "arousal"]].to_numpy()
    run = open_run(exported, engine=engine)
    assert run.model is None and run.engine_name == engine  # nothing but the file and its sidecar
    got = predict_clip(run, clip).table[["valence", "arousal"]].to_numpy()
    assert got.shape == want.shape == (150, 2)
    if engine in FLOAT_ENGINES:
        assert np.abs(got - want).max() < TOL
    else:
        assert min(ccc(got[:, k], want[:, k]) for k in range(2)) > OUTPUT_CCC_MIN


@pytest.mark.slow
def test_int8_sidecar_figures_are_recomputed(exported, demo_features):
    """The agreement stored with the int8 model is what its file gives on the run's validation clips, and it
    records how it was made."""
    meta = json.loads((exported / "best.int8.onnx.json").read_text())
    assert (meta["format"], meta["quantize"]) == ("onnx", "int8")
    q = meta["quantization"]
    assert q["tool"] == "onnxruntime.quantization.quantize_dynamic" and q["weight_type"] == "QInt8"
    assert "MatMulInteger" in q["integer_ops"] and meta["check"]["max_abs_diff"] < TOL
    a = meta["agreement"]
    val = json.loads((exported / "config.json").read_text())["val_clips"]
    assert a["clips"] == len(val) and not a["forced"]
    run, qrun = load_run(exported), load_exported_run(exported, "onnx-int8")
    paths = [c.path for c in load_corpus(demo_features).clips if c.clip_id in val]
    pf = np.concatenate([predict_shard(run, p).pred for p in paths])
    pq = np.concatenate([predict_shard(qrun, p).pred for p in paths])
    assert a["rows"] == len(pf)
    for k, d in enumerate(DIMENSIONS):
        assert a["output_ccc"][d] == pytest.approx(ccc(pq[:, k], pf[:, k]), abs=1e-9)
        assert a["output_ccc"][d] > OUTPUT_CCC_MIN
    assert a["val_ccc_change"] == pytest.approx(a["val_ccc_int8"]["mean"] - a["val_ccc_float"]["mean"])
    assert a["val_ccc_change"] > -E.MAX_CCC_DROP


@pytest.mark.slow
def test_stream_through_an_engine(exported, demo):
    """`--stream` with the pt2 engine: every hop's prediction equals the PyTorch model's."""
    clip = str(_clip(demo, 2))
    got: dict[str, list] = {}
    for engine in ("torch", "pt2"):
        out: list = []
        stream_predict(open_run(exported, engine=engine), clip, out.append, every_hop=True)
        got[engine] = [(p.time, p.valence, p.arousal) for p in out]
    assert len(got["torch"]) == len(got["pt2"]) == 12
    np.testing.assert_allclose(np.array(got["pt2"]), np.array(got["torch"]), atol=TOL, rtol=0)


@pytest.mark.slow
def test_cli_predict_engine(exported, demo):
    """`mmemo predict --engine onnx` writes the same CSV as the PyTorch model (to its 5 decimals), from a clip and
    from a stream."""
    clip = str(_clip(demo))
    runner = CliRunner()
    out = {e: runner.invoke(main, ["predict", clip, "--run", str(exported), "--engine", e]) for e in ("torch", "onnx")}
    for r in out.values():
        assert r.exit_code == 0, r.output
    rows = {e: np.array([ln.split(",") for ln in r.stdout.splitlines()[1:]], float) for e, r in out.items()}
    assert rows["onnx"].shape == (150, 3) and np.abs(rows["onnx"] - rows["torch"]).max() <= 2e-5
    # and --stream: the same hops (time, valence, arousal; latency is the machine's)
    out = {e: runner.invoke(main, ["predict", "--stream", clip, "--every-hop", "--run", str(exported), "--engine", e])
           for e in ("torch", "onnx")}  # fmt: skip
    for r in out.values():
        assert r.exit_code == 0, r.output
    hops = {e: np.array([ln.split(",")[:3] for ln in r.stdout.splitlines()[1:]], float) for e, r in out.items()}
    assert hops["onnx"].shape == (12, 3) and np.abs(hops["onnx"] - hops["torch"]).max() <= 2e-5


@pytest.mark.slow  # its fixture trains and exports
def test_damaged_or_missing_file_is_one_line(exported, tmp_path):
    """A cut-short exported file, a missing one and a missing sidecar: one line naming the file."""
    for name in ("best.pt2", "best.onnx"):
        shutil.copy(exported / name, tmp_path / name)
        shutil.copy(exported / f"{name}.json", tmp_path / f"{name}.json")
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
    for engine, name in (("pt2", "best.pt2"), ("onnx", "best.onnx")):
        with pytest.raises(MmemoError, match=rf"best\.{name.split('.')[1]}: not a loadable") as e:
            load_exported_run(tmp_path, engine)
        assert str(tmp_path / name) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(MmemoError, match=r"best\.int8\.onnx: no such exported model; write it with `mmemo export "
                       r".* --format onnx --quantize int8`"):  # fmt: skip
        load_exported_run(tmp_path, "onnx-int8")
    (tmp_path / "best.onnx.json").unlink()
    with pytest.raises(MmemoError, match=r"best\.onnx\.json: missing"):
        load_exported_run(tmp_path, "onnx")
    r = CliRunner().invoke(main, ["predict", str(tmp_path), "--run", str(tmp_path), "--engine", "pt2"])
    assert r.exit_code == 1 and "best.pt2: not a loadable pt2 model" in r.output
    assert len([ln for ln in r.output.splitlines() if "Error" in ln]) == 1


@pytest.mark.slow
def test_int8_refused_unless_forced(exported, demo_features, tmp_path, monkeypatch):
    """An int8 model that loses more validation CCC than allowed is not written; --force writes it and says so.
    (The allowance is moved to -1, i.e. the model would have to gain a whole unit of CCC to pass.)"""
    monkeypatch.setattr(E, "MAX_CCC_DROP", -1.0)
    out = tmp_path / "m.int8.onnx"
    with pytest.raises(MmemoError, match=r"m\.int8\.onnx: the int8 model loses .* not written; --force") as e:
        export_run(exported, out, fmt="onnx", quantize="int8", features_dir=demo_features)
    assert "\n" not in str(e.value) and list(tmp_path.iterdir()) == []
    r = CliRunner().invoke(main, ["export", str(exported), "--format", "onnx", "--quantize", "int8", "--features",
                                  str(demo_features), "--force", "--out", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "int8 vs float on" in r.output and "written with --force" in r.output
    meta = json.loads((tmp_path / "m.int8.onnx.json").read_text())
    assert meta["agreement"]["forced"] is True and out.is_file()
