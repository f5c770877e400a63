"""The AVEC-style post-processing chain (mmemo.pipeline.postprocess): each step with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from mmemo.pipeline.metrics import ccc
from mmemo.pipeline.postprocess import (
    DimensionChain,
    PostProcess,
    StreamPostProcess,
    delay,
    fit,
    fit_dimension,
    smooth,
)


def test_smoothing_and_delay_by_hand():
    np.testing.assert_allclose(smooth(np.array([0.0, 3, 6, 9]), 3), [1.5, 3, 6, 7.5])  # ends: the rows that exist
    np.testing.assert_allclose(smooth(np.array([0.0, 3, 6, 9]), 1), [0, 3, 6, 9])
    np.testing.assert_allclose(delay(np.array([1.0, 2, 3, 4]), 2), [1, 1, 1, 2])
    np.testing.assert_allclose(delay(np.array([1.0, 2]), 5), [1, 1])


def _slow(T: int, seed: int) -> np.ndarray:
    """A slow annotation-like trace (a few seconds per swing)."""
    t = np.arange(T) / 25
    r = np.random.default_rng(seed)
    return 0.5 * np.sin(2 * np.pi * t / r.uniform(6, 9) + r.uniform(0, 6)) + 0.2 * np.sin(2 * np.pi * t / 3.1)


def test_the_fit_finds_a_known_lag_noise_and_shrinkage():
    """Predictions that run 12 rows ahead of the labels, at half their range, 0.3 too high, with frame-to-frame
    noise: the chain smooths, delays by 12 rows and rescales, and the validation CCC rises to near 1."""
    r = np.random.default_rng(0)
    clips = []
    for seed in range(4):
        gold = _slow(800, seed)
        ahead = np.concatenate([gold[12:], np.full(12, gold[-1])])  # the prediction of row t is gold at t + 12
        pred = 0.5 * ahead + 0.3 + r.normal(0, 0.08, gold.size)
        clips.append((pred, gold, np.ones(gold.size, bool)))
    c = fit_dimension(clips)
    assert c.steps == ["smooth", "delay", "scale"]
    assert abs(c.delay - 12) <= 1 and c.window > 1
    assert c.ccc_before < 0.6 and c.ccc_after > 0.95
    # the record says exactly what the chain does: applying it gives the CCC it reports
    p = np.concatenate([PostProcess(c, c).apply(np.stack([x, x], 1))[:, 0] for x, _, _ in clips])
    g = np.concatenate([g for _, g, _ in clips])
    assert ccc(p, g) == pytest.approx(c.ccc_after, abs=1e-6)


def test_steps_that_do_not_help_are_not_kept():
    """Predictions equal to the labels: nothing to gain, the chain stays the identity."""
    gold = _slow(500, 1)
    c = fit_dimension([(gold.copy(), gold, np.ones(500, bool))])
    assert c.steps == [] and (c.window, c.delay, c.scale) == (1, 0, False)
    np.testing.assert_allclose(PostProcess(c, c).apply(np.stack([gold, gold], 1))[:, 0], gold, atol=1e-6)


def test_masked_frames_do_not_enter_the_fit_and_too_few_frames_give_the_identity():
    gold = _slow(300, 2)
    pred = 0.5 * gold + 0.3
    mask = np.zeros(300, bool)
    mask[100:200] = True
    c = fit_dimension([(pred, np.where(mask, gold, 99.0), mask)])  # the unlabelled rows' 99s are never seen
    assert c.scale and c.mu_gold == pytest.approx(gold[100:200].mean(), abs=1e-9)
    assert fit_dimension([(pred, gold, np.zeros(300, bool))]).steps == []


def test_the_stream_equals_predict_once_the_delay_covers_the_trailing_window():
    """A trailing mean over w rows is the centred mean (w - 1) / 2 rows late: with delay >= (w - 1) / 2 the live
    chain gives predict's numbers from row `delay` on, fed in pieces of any size."""
    x = np.stack([_slow(400, 3), _slow(400, 4)], 1) + np.random.default_rng(5).normal(0, 0.05, (400, 2))
    chain = DimensionChain(window=9, delay=7, scale=True, mu_pred=0.1, sd_pred=0.5, mu_gold=-0.1, sd_gold=0.7)
    post = PostProcess(chain, DimensionChain(window=5, delay=2), 25)
    offline = post.apply(x)
    live = StreamPostProcess(post)
    pieces, at = [], 0
    for n in (1, 7, 30, 2, 360):
        pieces.append(live.push(x[at : at + n]))
        at += n
    online = np.concatenate(pieces)
    np.testing.assert_allclose(online[7:, 0], offline[7:, 0], atol=1e-5)
    np.testing.assert_allclose(online[2:, 1], offline[2:, 1], atol=1e-5)
    assert post.stream_lag() == 0.0
    assert PostProcess(DimensionChain(window=25, delay=2), DimensionChain(), 25).stream_lag() == pytest.approx(0.4)


def test_the_record_round_trips(tmp_path):
    gold = _slow(300, 6)
    post = fit([(np.stack([gold * 0.5, gold], 1), np.stack([gold, gold], 1), np.ones(300, bool))])
    post.save(tmp_path)
    again = PostProcess.load(tmp_path)
    assert again == post
    assert PostProcess.load(tmp_path / "nothing") is None


# ------------------------------------------------------------------------------- applied by predict, evaluate, stream
def _with_chain(small_run, tmp_path, post: PostProcess):
    import shutil

    run_dir = shutil.copytree(small_run, tmp_path / "run")
    (run_dir / "postprocess.json").unlink(missing_ok=True)
    post.save(run_dir)
    return run_dir


def test_predict_evaluate_and_stream_apply_the_runs_chain_and_off_leaves_it_out(small_run, demo, tmp_path):
    """A run with a known chain (smoothing over 5 rows, a 3-row delay, y -> 2 y + 0.5 on valence; arousal
    untouched): predict's rows are the chain applied to the raw rows; evaluate reports both; the live stream's
    hops are its causal version's; --postprocess off gives the raw model."""
    from click.testing import CliRunner

    from mmemo.cli import main
    from mmemo.pipeline.evaluate import evaluate_features
    from mmemo.pipeline.predict import open_run, predict_clip
    from mmemo.pipeline.stream import stream_predict

    chain = DimensionChain(window=5, delay=3, scale=True, mu_pred=0.0, sd_pred=1.0, mu_gold=0.5, sd_gold=2.0)
    post = PostProcess(chain, DimensionChain(), 25)
    run_dir = _with_chain(small_run, tmp_path, post)
    clip = demo / "corpus" / "speaker0" / "clip00.mp4"
    raw = predict_clip(open_run(run_dir, postprocess=False), clip).table[["valence", "arousal"]].to_numpy()
    got = predict_clip(open_run(run_dir), clip).table[["valence", "arousal"]].to_numpy()
    np.testing.assert_allclose(got[:, 0], 2 * delay(smooth(raw[:, 0], 5), 3) + 0.5, atol=1e-5)
    np.testing.assert_allclose(got[:, 1], raw[:, 1], atol=1e-6)

    ev = evaluate_features(open_run(run_dir), demo / "features")
    plain = evaluate_features(open_run(run_dir, postprocess=False), demo / "features")
    assert ev.metrics_raw == plain.metrics and plain.metrics_raw is None
    assert ev.to_json("r", "f")["postprocess"]["valence"]["window"] == 5

    hops, raw_hops = [], []
    stream_predict(open_run(run_dir), str(clip), hops.append, hop_s=0.5, context_s=1.2)
    stream_predict(open_run(run_dir, postprocess=False), str(clip), raw_hops.append, hop_s=0.5, context_s=1.2)
    assert len(hops) == len(raw_hops) > 3
    np.testing.assert_allclose([h.arousal for h in hops], [h.arousal for h in raw_hops], atol=1e-6)
    assert not np.allclose([h.valence for h in hops], [h.valence for h in raw_hops], atol=1e-3)

    r = CliRunner().invoke(main, ["evaluate", str(demo / "features"), "--run", str(run_dir), "-o", str(tmp_path / "e")])
    assert r.exit_code == 0, r.output
    assert "before the run's post-processing (valence: mean of 5 rows, 3 rows later, rescaled; arousal: nothing" in (
        r.output
    )


def test_a_finished_run_fits_its_chain_on_its_validation_clips(small_run, demo_features, tmp_path):
    """fit_run (what `mmemo train` and the demo do at the end): the chain fitted on the validation clips' whole-clip
    predictions of best.pt, saved; its validation CCC never below the raw one; per-clip labels fit nothing."""
    import json
    import shutil

    from mmemo.pipeline.evaluate import fit_run_postprocess
    from mmemo.pipeline.postprocess import POSTPROCESS_FILE

    run_dir = shutil.copytree(small_run, tmp_path / "run")
    val = json.loads((run_dir / "config.json").read_text())["val_clips"]
    said = []
    post = fit_run_postprocess(run_dir, demo_features, val, "frame", log=said.append)
    assert PostProcess.load(run_dir) == post
    for c in post.chains():
        assert c.ccc_after >= c.ccc_before
    assert said[0].startswith(f"post-processing fitted on {len(val)} validation clip(s): valence CCC")
    assert fit_run_postprocess(run_dir, demo_features, val, "clip", log=said.append) is None
    assert not (run_dir / POSTPROCESS_FILE).exists() and said[-1] == "post-processing: not fitted (labels per clip)"
