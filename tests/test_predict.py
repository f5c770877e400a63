"""`mmemo predict`: the same numbers as the extracted shard (no skew), smooth stitching of long clips,
one-modality clips, broken clips, output formats."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from mmemo.cli import main
from mmemo.config import ExtractConfig
from mmemo.data.dataset import pool_frames
from mmemo.data.shards import read_clip
from mmemo.features.clip import ClipArrays
from mmemo.media.synth import tone, write_media
from mmemo.pipeline.demo import make_demo_corpus
from mmemo.pipeline.extract import extract_corpus
from mmemo.pipeline.predict import infer, load_run, model_inputs, predict_clip, window_starts


def test_window_starts_cover_with_half_overlap():
    """150 rows in windows of 40: starts 0, 20, ..., 100 and a last one ending at 150."""
    assert window_starts(150, 40) == [0, 20, 40, 60, 80, 100, 110]
    assert window_starts(30, 40) == [0]


def test_predict_equals_the_shard_path(demo, demo_features, small_run):
    """predict_clip on the media file == the model on the arrays read back from the clip's shard."""
    run = load_run(small_run)
    pred = predict_clip(run, demo / "corpus/speaker1/clip01.mp4")
    clip = read_clip(demo_features / "shards/speaker1/clip01.h5")
    x = np.concatenate([clip.features[k] for k in run.feature_names], axis=1)
    audio = ((x - run.mean) / run.std).astype(np.float32)
    frames = pool_frames(clip.frames, run.model_cfg.video_size)
    y = infer(run, audio, frames, clip.audio_mask, clip.video_mask)
    np.testing.assert_array_equal(pred.table[["valence", "arousal"]].to_numpy(), y)
    assert len(pred.table) == clip.n_frames == 150
    np.testing.assert_allclose(pred.table["time"], np.arange(150) / 25)


def test_stitching_has_no_jumps_at_window_borders(demo, small_run):
    """Steps between consecutive rows at window borders are no larger than the model's own row-to-row steps."""
    run = load_run(small_run)
    y = predict_clip(run, demo / "corpus/speaker0/clip00.mp4").table[["valence", "arousal"]].to_numpy()
    steps = np.abs(np.diff(y, axis=0))  # step i is between rows i and i + 1
    borders = sorted({s - 1 for s in window_starts(len(y), 40)[1:]} | {s + 39 for s in window_starts(len(y), 40)})
    borders = [b for b in borders if 0 <= b < len(steps)]
    inside = np.delete(steps, borders, axis=0)
    assert steps[borders].max() <= np.percentile(inside, 99) * 1.5


def test_one_modality_clips(small_run, tmp_path):
    """An audio-only WAV and a silent video both get finite predictions on the 25 fps grid."""
    run = load_run(small_run)
    write_media(tmp_path / "voice.wav", audio=tone(220, 2.0)[None])
    rng = np.random.default_rng(0)
    write_media(tmp_path / "face.mp4", frames=rng.integers(0, 255, (30, 64, 64, 3), dtype=np.uint8), fps=25)
    for name, rows in (("voice.wav", 50), ("face.mp4", 30)):
        t = predict_clip(run, tmp_path / name).table
        assert len(t) == rows and np.isfinite(t[["valence", "arousal"]].to_numpy()).all()


def test_cli_writes_files_and_survives_a_broken_clip(demo, small_run, tmp_path):
    """A directory with a broken file: the good clips are written, one error line, exit 1."""
    d = tmp_path / "clips"
    d.mkdir()
    for k in (0, 1):
        (d / f"c{k}.mp4").write_bytes((demo / f"corpus/speaker{k}/clip0{k}.mp4").read_bytes())
    (d / "broken.mp4").write_bytes(b"\x00" * 64)
    r = CliRunner().invoke(main, ["predict", str(d), "--run", str(small_run), "--out", str(tmp_path / "o"),
                                  "--format", "json", "--plot", str(tmp_path / "png")])  # fmt: skip
    assert r.exit_code == 1
    assert [line for line in r.stderr.splitlines() if line.startswith("error: ")][0].count("broken.mp4") == 1
    assert "1 of 3 clip(s) failed" in r.output
    doc = json.loads((tmp_path / "o" / "c0.json").read_text())
    assert doc["summary"]["frames"] == 150 and len(doc["frames"]) == 150 and set(doc["frames"][0]) == {
        "time", "valence", "arousal"}  # fmt: skip
    assert (tmp_path / "png" / "c1.png").exists() and not (tmp_path / "o" / "broken.json").exists()


def test_cli_single_clip_csv_to_stdout(demo, small_run):
    """One clip without --out: CSV on stdout, the summary on stderr."""
    r = CliRunner().invoke(main, ["predict", str(demo / "corpus/speaker2/clip02.mp4"), "--run", str(small_run)])
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[0] == "time,valence,arousal" and len(lines) == 151 and lines[1].startswith("0.0,")
    assert "150 frames; valence" in r.stderr


def test_prediction_inputs_follow_the_run(demo, small_run):
    """The run's feature order and statistics shape the inputs: (T, 91) standardised audio, 28-px frames."""
    run = load_run(small_run)
    from mmemo.features.clip import featurise_in_memory

    arrays: ClipArrays = featurise_in_memory(demo / "corpus/speaker0/clip00.mp4", run.extract_cfg)
    audio, frames, am, vm = model_inputs(run, arrays)
    assert audio.shape == (150, 91) and frames.shape == (150, 28, 28, 3) and am.all() and vm.all()
    assert run.feature_names[:2] == ["logmel", "rms"]  # 64 log-mel columns, then RMS in column 64
    expected = (arrays.features["rms"][:, 0] - run.mean[64]) / run.std[64]
    np.testing.assert_allclose(audio[:, 64], expected, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------- evaluate
def test_evaluate_scores_what_predict_gives(demo, demo_features, small_run):
    """Each clip's predictions in `evaluate` are predict's on the media file, bit for bit, and the pooled CCC is
    Lin's formula on exactly those labelled frames."""
    from mmemo.pipeline.evaluate import evaluate_features

    run = load_run(small_run)
    ev = evaluate_features(run, demo_features)
    assert len(ev.results) == 8
    r = ev.results[-1]
    pred = predict_clip(run, demo / f"corpus/{r.clip}.mp4").table[["valence", "arousal"]].to_numpy()
    np.testing.assert_array_equal(r.pred, pred)
    p = np.concatenate([x.pred[x.mask, 1] for x in ev.results]).astype(np.float64)
    t = np.concatenate([x.truth[x.mask, 1] for x in ev.results]).astype(np.float64)
    by_hand = 2 * np.mean((p - p.mean()) * (t - t.mean())) / (p.var() + t.var() + (p.mean() - t.mean()) ** 2)
    assert ev.metrics["arousal"]["ccc"] == pytest.approx(by_hand, abs=1e-12)
    assert ev.metrics["arousal"]["rmse"] == pytest.approx(np.sqrt(np.mean((p - t) ** 2)), abs=1e-12)
    assert int(ev.clips["labelled"].sum()) == len(p) == sum(int(x.mask.sum()) for x in ev.results)


@pytest.mark.slow
def test_evaluate_cli_writes_table_json_csv_and_plots(demo_features, small_run, tmp_path):
    out = tmp_path / "ev"
    r = CliRunner().invoke(main, ["evaluate", str(demo_features), "--run", str(small_run),
                                  "--out", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("8 clips, ") and "CCC/clip" in lines[1]
    assert lines[2].split()[0] == "valence" and lines[3].split()[0] == "arousal" and len(lines[2].split()) == 6
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["clips"] == 8 and set(doc["metrics"]) == {"valence", "arousal"}
    assert set(doc["metrics"]["valence"]) == {"ccc", "ccc_clip", "pcc", "rmse", "mae"}
    import pandas as pd

    clips = pd.read_csv(out / "clips.csv")
    assert len(clips) == 8 and {"clip", "labelled", "valence_ccc", "arousal_mae"} <= set(clips.columns)
    assert (out / "scatter.png").stat().st_size > 1000 and (out / "traces.png").stat().st_size > 1000
    r = CliRunner().invoke(main, ["evaluate", str(demo_features), "--run", str(small_run),
                                  "--out", str(out), "--json"])  # fmt: skip
    assert json.loads(r.stdout)["metrics"]["arousal"]["ccc"] == doc["metrics"]["arousal"]["ccc"]


def test_evaluate_refuses_features_made_differently(small_run, tmp_path):
    """Features extracted with another mel setting than the run's: one line naming the setting."""
    make_demo_corpus(tmp_path / "c", n_clips=2, seconds=2.0)
    extract_corpus(tmp_path / "c", tmp_path / "f", ExtractConfig(n_mels=32, n_mfcc=13), progress=False,
                   log=lambda s: None)  # fmt: skip
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path / "f"), "--run", str(small_run)])
    assert r.exit_code == 1 and "n_mels=32" in r.output and "n_mels=64" in r.output


# ------------------------------------------------------------------------------------------------------ stream
def _offline_hops(run, path, hop_s, context_rows):
    """What a live stream of ``path`` must give: for each hop end R, the model on the window [R - context, R)
    of the recording's own (offline) features and frames, with the rhythm computed on that window's onsets."""
    import math

    from mmemo.features.audio import context_features
    from mmemo.features.clip import featurise_in_memory
    from mmemo.pipeline.predict import prepare_inputs

    cfg = run.extract_cfg
    arrays = featurise_in_memory(path, cfg)
    T = arrays.media.n_frames
    onset = arrays.features["rhythm"][:, 0]
    ends = sorted({min(T, math.ceil(k * hop_s * cfg.fps - 1e-9)) for k in range(1, T)})
    out, prev = [], 0
    for end in ends:
        w0 = max(0, end - context_rows)
        feats = {k: v[w0:end] for k, v in arrays.features.items()}
        feats |= {name: x for name, _, x in context_features(onset[w0:end], cfg, ["rhythm"])}
        frames = arrays.frames[w0:end] if arrays.frames is not None else None
        y = infer(run, *prepare_inputs(run, feats, frames, arrays.media.audio_mask[w0:end],
                                       arrays.media.video_mask[w0:end]))  # fmt: skip
        out.append((end / cfg.fps, *y[max(prev, w0) - w0 :].mean(axis=0)))
        prev = end
    return np.array(out)


@pytest.mark.parametrize("name", ["speaker1/clip01.mp4", "voice.wav"])
def test_stream_gives_the_recordings_numbers_at_hop_times(demo, small_run, tmp_path, name):
    """A file streamed as fast as it decodes: one prediction per 0.5 s hop at media times 0.52, 1.00, 1.52, ...
    (hop k ends at row ceil(12.5 k)), equal to the model on the offline-decoded window of the same rows."""
    from mmemo.pipeline.stream import stream_predict

    run = load_run(small_run)
    if name == "voice.wav":
        x = tone(220, 3.3)
        write_media(tmp_path / name, audio=(x * np.linspace(0, 1, x.size, dtype=np.float32))[None])
    path = tmp_path / name if name == "voice.wav" else demo / "corpus" / name
    got = []
    stats = stream_predict(run, str(path), got.append, hop_s=0.5, context_s=1.2)  # context 30 rows < 40
    expected = _offline_hops(run, path, 0.5, 30)
    times = [p.time for p in got]
    np.testing.assert_allclose(times, expected[:, 0])
    assert times[:4] == [0.52, 1.0, 1.52, 2.0] and stats.dropped == 0 and stats.predictions == len(got)
    np.testing.assert_allclose([[p.valence, p.arousal] for p in got], expected[:, 1:], atol=1e-4)


@pytest.mark.slow
def test_stream_at_natural_pace_never_runs_ahead_of_the_media(demo, small_run):
    """--realtime: a prediction for media time t is never emitted before t seconds have passed."""
    import time

    from mmemo.pipeline.stream import stream_predict

    run = load_run(small_run)
    t0, seen = time.monotonic(), []
    stream_predict(run, str(demo / "corpus/speaker2/clip02.mp4"), lambda p: seen.append((p, time.monotonic() - t0)),
                   hop_s=0.5, realtime=True)  # fmt: skip
    assert seen[-1][0].time == 6.0 and all(0 <= p.latency_s for p, _ in seen)
    for p, wall in seen:
        assert wall >= p.time - 0.1, (p.time, wall)  # 0.1 s: the warm-up before the clock starts is excluded


@pytest.mark.slow
def test_stream_drops_hops_rather_than_falling_behind(demo, small_run):
    """A consumer slower than the hop (0.9 s per line, hop 0.5 s) on a 6-s clip at natural pace: taking every hop
    in order would emit all 12; one line per 0.9 s over 6 s of media leaves room for at most 8, so at least 4 hops
    must be dropped (a slower machine only drops more), each counted, and the last hop is still emitted."""
    import time

    from mmemo.pipeline.stream import stream_predict

    run = load_run(small_run)
    got = []

    def slow(p):
        got.append(p)
        time.sleep(0.9)

    stats = stream_predict(run, str(demo / "corpus/speaker3/clip03.mp4"), slow, hop_s=0.5, realtime=True)
    assert stats.dropped >= 4 and stats.dropped == sum(p.dropped for p in got)
    assert stats.predictions + stats.dropped == 12 and got[-1].time == 6.0
    assert all(b.time > a.time for a, b in zip(got, got[1:], strict=False))


def test_stream_cli_lines_and_a_broken_source(demo, small_run, tmp_path):
    r = CliRunner().invoke(main, ["predict", "--stream", str(demo / "corpus/speaker0/clip00.mp4"),
                                  "--run", str(small_run), "--hop", "1"])  # fmt: skip
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == "time,valence,arousal,latency_s" and len(lines) == 7
    assert [float(x.split(",")[0]) for x in lines[1:]] == [1, 2, 3, 4, 5, 6]
    assert "6 predictions over 6.0 s of media" in r.stderr
    r = CliRunner().invoke(main, ["predict", "--stream", str(demo / "corpus/speaker0/clip00.mp4"),
                                  "--run", str(small_run), "--format", "json", "--hop", "2"])  # fmt: skip
    assert [json.loads(x)["time"] for x in r.stdout.splitlines()] == [2, 4, 6]
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    r = CliRunner().invoke(main, ["predict", "--stream", str(bad), "--run", str(small_run)])
    assert r.exit_code == 1 and "bad.mp4" in r.output and len(r.stderr.strip().splitlines()) == 1


def test_export_cli_writes_a_checked_pt2_file(demo_features, small_run, tmp_path):
    """`mmemo export` -> a torch.export program (the default format) whose output on a clip's inputs is the run's,
    and its sidecar."""
    import torch

    out = tmp_path / "m.pt2"
    r = CliRunner().invoke(main, ["export", str(small_run), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "max abs difference from PyTorch" in r.output and out.exists()
    meta = json.loads((tmp_path / "m.pt2.json").read_text())
    run = load_run(small_run)
    clip = read_clip(demo_features / "shards/speaker1/clip01.h5")
    x = np.concatenate([clip.features[f["name"]] for f in meta["features"]], axis=1)[None, :40]
    frames = pool_frames(clip.frames[:40], run.model_cfg.video_size)[None]
    ones = torch.ones(1, 40, dtype=torch.bool)
    with torch.no_grad():
        y = torch.export.load(str(out)).module()(torch.from_numpy(x), torch.from_numpy(frames), ones, ones, ones)
    y = y.numpy()[0]
    expected = infer(run, ((x[0] - run.mean) / run.std).astype(np.float32), frames[0], np.ones(40, bool),
                     np.ones(40, bool))  # fmt: skip
    np.testing.assert_allclose(y, expected, atol=1e-4)


@pytest.mark.slow
def test_stream_from_a_pipe_every_hop(demo, small_run, tmp_path):
    """`--stream -` reads standard input (here MPEG-TS remuxed from a demo clip by PyAV, in a real subprocess);
    with --every-hop no hop is dropped and the lines are those of the same clip streamed from its file."""
    import subprocess
    import sys

    import av

    src, ts = demo / "corpus/speaker0/clip04.mp4", tmp_path / "c.ts"
    with av.open(str(src)) as inp, av.open(str(ts), "w", format="mpegts") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    cmd = [sys.executable, "-m", "mmemo", "predict", "--stream", "-", "--input-format", "mpegts", "--every-hop",
           "--hop", "1", "--run", str(small_run)]  # fmt: skip
    with open(ts, "rb") as stdin:
        r = subprocess.run(cmd, stdin=stdin, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    piped = [line.split(",")[:3] for line in r.stdout.splitlines()[1:]]
    direct = CliRunner().invoke(main, ["predict", "--stream", str(src), "--run", str(small_run), "--hop", "1"])
    assert piped == [line.split(",")[:3] for line in direct.stdout.splitlines()[1:]] and len(piped) == 6
    assert "0 dropped" in r.stderr
