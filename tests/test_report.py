"""`mmemo report` and `mmemo predict --html`: the page, its media, and the clip viewer driven in a real browser.

The browser tests run headless Chromium from the distribution's packages (`apt-get install chromium
chromium-driver`) through selenium with the system's chromedriver (nothing downloaded); they skip with the
reason where either is absent. The report is built for a run trained on a corpus holding an FLV, an AVI and MP4
clips (the FLV and AVI made by the ffmpeg command line), moved to another folder after it was written and its
corpus moved away, then opened from disk.

Screenshots go to the test's tmp dir and, when MMEMO_ARTEFACTS names a directory, there too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SMALL, needs_ffmpeg, needs_realdata

from mmemo.cli import main
from mmemo.media.synth import write_media
from mmemo.pipeline.report import PREVIEW_HEIGHT, build_report, probe_media, safe_name, write_preview

FPS = 25
SECONDS = 4.0
FLV, AVI = "speaker1/clip01", "speaker2/clip02"  # the clips converted from the demo's MP4s


def _frames(n: int, h: int = 96, w: int = 128) -> np.ndarray:
    x = np.zeros((n, h, w, 3), np.uint8)
    x[..., 0] = (np.arange(n) * 9 % 256)[:, None, None]
    return x


# --------------------------------------------------------------------------------------------- media, no browser
@needs_ffmpeg
def test_browsers_play_h264_mp4_and_nothing_else(tmp_path):
    mp4 = write_media(tmp_path / "a.mp4", frames=_frames(10), audio=np.zeros((1, 16000), np.float32))
    flv, avi, mkv = tmp_path / "a.flv", tmp_path / "a.avi", tmp_path / "a.mkv"
    for dst, args in ((flv, ["-c:v", "flv", "-c:a", "libmp3lame", "-ar", "22050"]),
                      (avi, ["-c:v", "mpeg4", "-c:a", "pcm_s16le"]), (mkv, ["-c", "copy"])):  # fmt: skip
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(mp4), *args, str(dst)], check=True)
    h444 = write_media(tmp_path / "odd.mp4", frames=_frames(10, 95, 127))  # odd sizes: written as yuv444p
    assert probe_media(mp4).playable and probe_media(mp4).why == ""
    assert probe_media(flv).why == ".flv (flv container)"
    assert probe_media(avi).why == ".avi (avi container)"
    assert probe_media(mkv).why == ".mkv (matroska container)"
    assert probe_media(h444).why == "h264 video in yuv444p"
    wav = write_media(tmp_path / "a.wav", audio=np.zeros((1, 1600), np.float32))
    info = probe_media(wav)
    assert info.playable and not info.has_video and info.has_audio


@needs_realdata
def test_mpeg4_part2_in_mp4_needs_a_preview(realdata):
    info = probe_media(realdata / "sadtalker_hdtf_talking_faces" / "WDA_KatieHill_000.mp4")
    assert not info.playable and info.why == "mpeg4 video"


def test_a_file_that_is_not_media_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "x.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(Exception, match=r"x\.mp4: cannot be opened for the report") as e:
        probe_media(bad)
    assert "\n" not in str(e.value)


def test_preview_keeps_frame_times_from_the_first_frame_in_h264_aac(tmp_path):
    """Frames at 1.0 + i/25 s come out at i/25 s (mmemo's origin is the first frame), H.264 4:2:0 + AAC, not
    upscaled (96 px stays 96), every frame kept."""
    n = 30
    src = write_media(tmp_path / "late.mp4", frames=_frames(n), frame_times=[1.0 + i / FPS for i in range(n)],
                      audio=np.zeros((1, 16000 * 3), np.float32), audio_start=1.0)  # fmt: skip
    out = write_preview(src, tmp_path / "p.mp4")
    with av.open(str(out)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.codec_context.name, v.codec_context.pix_fmt, a.codec_context.name) == ("h264", "yuv420p", "aac")
        assert (v.codec_context.width, v.codec_context.height) == (128, 96)
        times = [float(f.pts * f.time_base) for f in c.decode(v)]
    assert times == pytest.approx([i / FPS for i in range(n)], abs=1e-3)
    with av.open(str(write_preview(src, tmp_path / "cut.mp4", end=0.5))) as c:  # frames at 0, 0.04, ..., 0.48 s
        assert len(list(c.decode(video=0))) == 13
        assert float(c.streams.audio[0].duration * c.streams.audio[0].time_base) == pytest.approx(0.5, abs=0.03)


def test_preview_is_a_few_hundred_pixels_high(tmp_path):
    src = write_media(tmp_path / "big.mp4", frames=_frames(5, 720, 1280))
    with av.open(str(write_preview(src, tmp_path / "p.mp4"))) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.width, cc.height) == (640, PREVIEW_HEIGHT)
    with av.open(str(write_preview(src, tmp_path / "q.mp4", height=241))) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.width, cc.height) == (426, 240)  # even sizes for 4:2:0: 426.7 wide -> 426


@needs_ffmpeg
def test_a_rotated_video_is_previewed_upright_as_ffmpeg_shows_it(tmp_path):
    frames = np.zeros((10, 96, 128, 3), np.uint8)
    frames[:, :, :32] = 255  # a white left quarter: any turn or flip moves it
    src = write_media(tmp_path / "a.mp4", frames=frames)
    rot = tmp_path / "rot.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-c", "copy", "-metadata:s:v:0", "rotate=90",
                    str(rot)], check=True)  # fmt: skip
    decode = ["ffmpeg", "-v", "error", "-i", str(rot), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"]
    ref = subprocess.run(decode, check=True, capture_output=True).stdout  # the ffmpeg CLI turns the picture upright
    with av.open(str(write_preview(rot, tmp_path / "p.mp4"))) as c:
        got = next(c.decode(video=0)).to_ndarray(format="gray")
    assert got.shape == (128, 96)
    assert np.abs(got.astype(int) - np.frombuffer(ref, np.uint8).reshape(got.shape)).mean() < 2


def test_safe_names_differ_for_ids_that_look_alike():
    assert safe_name("a/b") != safe_name("a__b")
    assert re.fullmatch(r"[A-Za-z0-9._-]+", safe_name("ünï/cödé x?"))


# ------------------------------------------------------------------------------------------- a trained run, report
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A run trained on 4 clips (2 MP4, 1 FLV, 1 AVI), its report written in one folder, then moved to another,
    and its corpus moved away: what a page still finds must travel with it."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("the ffmpeg command line is not installed (apt-get install ffmpeg): it makes the FLV and AVI")
    from mmemo.config import ExtractConfig, TrainConfig
    from mmemo.pipeline.demo import make_demo_corpus
    from mmemo.pipeline.extract import extract_corpus
    from mmemo.pipeline.train import Trainer

    root = tmp_path_factory.mktemp("report")
    corpus = make_demo_corpus(root / "corpus", n_clips=4, seconds=SECONDS)
    for clip, suffix, args in ((FLV, ".flv", ["-c:v", "flv", "-c:a", "libmp3lame", "-ar", "22050"]),
                               (AVI, ".avi", ["-c:v", "mpeg4", "-c:a", "pcm_s16le"])):  # fmt: skip
        mp4 = corpus / f"{clip}.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(mp4), *args, str(mp4.with_suffix(suffix))],
                       check=True)  # fmt: skip
        mp4.unlink()
    extract_corpus(corpus, root / "features", ExtractConfig(faces=False), jobs=1, progress=False, log=lambda s: None)
    run = root / "run"
    with Trainer(root / "features", run, TrainConfig(epochs=2, batch_size=4, workers=0, max_seq_len=40), SMALL,
                 log=lambda s: None, progress=False) as t:  # fmt: skip
        t.fit()
    summary = build_report(run, root / "features", out_dir=root / "written" / "report")
    moved = root / "elsewhere" / "copy of the report"
    shutil.move(root / "written" / "report", moved)
    shutil.rmtree(root / "written")
    corpus.rename(root / "corpus-moved")
    return {"root": root, "run": run, "features": root / "features", "page": moved / "index.html",
            "corpus": root / "corpus-moved", "summary": summary}  # fmt: skip


def _page_data(page: Path) -> dict:
    m = re.search(r"<script>window\.MMEMO = (.*?);</script>", page.read_text(), re.S)
    return json.loads(m.group(1))


def _clip_data(page: Path, clip: str) -> dict:
    text = (page.parent / "clips" / f"{safe_name(clip)}.js").read_text()
    return json.loads(text[len("mmemoClipLoaded(") : -len(");\n")])


@pytest.mark.slow
def test_report_lists_every_clip_with_media_that_travels(built):
    page, s = built["page"], built["summary"]
    assert (s.clips, s.previews, s.originals, s.missing) == (4, 2, 2, 0)
    data = _page_data(page)
    media = {r["clip"]: r["media"] for r in data["clips"]}
    assert media == {"speaker0/clip00": "original", FLV: "preview", AVI: "preview", "speaker3/clip03": "original"}
    for r in data["clips"]:
        clip = _clip_data(page, r["clip"])
        assert (page.parent / clip["media"]).is_file() and not Path(clip["media"]).is_absolute()
        assert clip["rows"] == SECONDS * FPS and len(clip["pred"]["valence"]) == clip["rows"]
    # Offline: the only URLs in the page are the SVG and XHTML namespaces its script names.
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", page.read_text()))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xhtml"}, urls


@pytest.mark.slow
def test_report_numbers_are_those_of_evaluate(built):
    from mmemo.pipeline.evaluate import evaluate_features
    from mmemo.pipeline.predict import load_run

    ev = evaluate_features(load_run(built["run"]), built["features"])
    data = _page_data(built["page"])
    assert data["metrics"]["valence"]["ccc"] == pytest.approx(ev.metrics["valence"]["ccc"], abs=1e-6)
    for r in ev.results:
        clip = _clip_data(built["page"], r.clip)
        np.testing.assert_allclose(clip["pred"]["arousal"], r.pred[:, 1], atol=6e-5)
        gold = np.array([np.nan if g is None else g for g in clip["gold"]["valence"]])
        np.testing.assert_allclose(gold, np.where(r.mask, r.truth[:, 0], np.nan), atol=6e-5)


@pytest.mark.slow
def test_cli_report_with_moved_media_and_without_features(built, tmp_path):
    run = built["run"]
    r = CliRunner().invoke(main, ["report", str(run), "--features", str(built["features"]), "--out",
                                  str(tmp_path / "a")])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "4 clip(s): 0 preview(s), 0 original(s), 4 without media" in r.output
    note = _clip_data(tmp_path / "a" / "index.html", FLV)["note"]
    assert note.startswith("media not found: ") and "give --media CORPUS_DIR" in note
    args = ["--out", str(tmp_path / "b"), "--media", str(built["corpus"]), "--previews", "all"]
    r = CliRunner().invoke(main, ["report", str(run), "--features", str(built["features"]), *args])
    assert r.exit_code == 0, r.output
    assert "4 clip(s): 4 preview(s), 0 original(s), 0 without media" in r.output
    r = CliRunner().invoke(main, ["report", str(run), "--out", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    data = _page_data(tmp_path / "c" / "index.html")
    assert "clips" not in data and data["history"]["epoch"] == [1, 2] and data["best_epoch"] in (1, 2)


def test_cli_report_refuses_a_directory_that_is_not_a_run(tmp_path):
    r = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert r.exit_code == 1
    assert r.output.strip() == f"Error: {tmp_path}: no config.json; is this a run directory written by `mmemo train`?"


# ------------------------------------------------------------------------------------------------- in a browser
def _browser_paths() -> tuple[str | None, str | None]:
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
    return browser, shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    binary, driver = _browser_paths()
    if binary is None or driver is None:
        pytest.skip("headless Chromium not found (apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,2000",
              "--mute-audio", "--allow-file-access-from-files"):  # fmt: skip
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(driver), options=opts)  # an explicit driver: selenium-manager never runs
    d.set_page_load_timeout(30)
    yield d
    d.quit()


def _severe(d) -> list[str]:
    return [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE"]


def _screenshot(d, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    d.save_screenshot(str(path))
    if os.environ.get("MMEMO_ARTEFACTS"):
        art = Path(os.environ["MMEMO_ARTEFACTS"])
        art.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, art / name)
    return path


def _wait(d, script: str, timeout: float = 20):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(d, timeout, poll_frequency=0.05).until(lambda drv: drv.execute_script(script))


def _open_clip(d, page: Path, clip: str) -> None:
    """Open the page, then the clip by clicking its row in the table (a real click), and wait for its media."""
    d.get(page.as_uri())
    d.get_log("browser")  # start from an empty log
    _wait(d, "return document.querySelectorAll('#cliptable tbody tr').length > 0")
    row = d.find_element("css selector", f"#cliptable tbody tr[data-file='{safe_name(clip)}']")
    row.click()
    _wait(d, f"var v = document.getElementById('viewer'); return v.dataset.clip === {json.dumps(clip)} && "
             "document.querySelector('#viewer .media').readyState >= 1")  # fmt: skip


def _seek(d, t: float) -> None:
    d.execute_script("var m = document.querySelector('#viewer .media'); m.dataset.seeked = '';"
                     "m.addEventListener('seeked', function () { m.dataset.seeked = '1'; }, {once: true});"
                     f"m.currentTime = {t};")  # fmt: skip
    _wait(d, "return document.querySelector('#viewer .media').dataset.seeked === '1'")


def _cursor_time(d) -> float:
    left, right, dur, x = d.execute_script(
        "var s = document.querySelector('#viewer svg.traces'), c = s.querySelector('.cursor');"
        "return [+s.dataset.left, +s.dataset.right, +s.dataset.duration, +c.getAttribute('x1')];"
    )
    return (x - left) / (right - left) * dur


@pytest.mark.slow
@pytest.mark.parametrize("clip", [FLV, "speaker0/clip00"])
def test_the_player_follows_the_rows_and_the_rows_follow_the_player(built, browser, clip, tmp_path):
    """From another folder than it was written in, with the corpus moved away: no console error; the player
    reports the clip's duration; seeking the player moves the cursor and the plane's point to the row; a click on
    the traces seeks the player."""
    from selenium.webdriver.common.action_chains import ActionChains

    d, page = browser, built["page"]
    _open_clip(d, page, clip)
    data = _clip_data(page, clip)
    assert d.execute_script("return document.querySelector('#viewer .media').duration") == pytest.approx(
        SECONDS, abs=0.05
    )
    for t in (1.7, 2.23, 0.0):  # 2.23 s lies between rows 55 (2.20 s) and 56 (2.24 s): row 55 is on screen
        _seek(d, t)
        assert _cursor_time(d) == pytest.approx(t, abs=0.002)
        row = int(np.floor(t * FPS + 1e-6))
        assert int(d.execute_script("return document.getElementById('viewer').dataset.row")) == row
        left, right, top, bottom, cx, cy = d.execute_script(
            "var s = document.querySelector('#viewer svg.plane'), p = s.querySelector('.point'), d = s.dataset;"
            "return [+d.left, +d.right, +d.top, +d.bottom, +p.getAttribute('cx'), +p.getAttribute('cy')];"
        )
        v, a = (cx - left) / (right - left) * 2 - 1, 1 - (cy - top) / (bottom - top) * 2
        assert (v, a) == pytest.approx((data["pred"]["valence"][row], data["pred"]["arousal"][row]), abs=0.02)
    svg = d.find_element("css selector", "#viewer svg.traces")
    left, right, width, height = d.execute_script(
        "var s = arguments[0], b = s.getBoundingClientRect();"
        "return [+s.dataset.left, +s.dataset.right, b.width, b.height]",
        svg,
    )
    t = 3.1
    x = left + (right - left) * t / SECONDS
    ActionChains(d).move_to_element_with_offset(svg, round(x - width / 2), round(40 - height / 2)).click().perform()
    _wait(d, "return !document.querySelector('#viewer .media').seeking")
    px = SECONDS / (right - left)  # one pixel of time: the click lands on a whole pixel
    assert d.execute_script("return document.querySelector('#viewer .media').currentTime") == pytest.approx(t, abs=px)
    assert _cursor_time(d) == pytest.approx(t, abs=px)
    assert _severe(d) == []
    shot = _screenshot(d, tmp_path, f"report-{safe_name(clip)}.png")
    assert shot.stat().st_size > 10_000


@pytest.mark.slow
def test_the_table_sorts_and_pages_and_the_report_has_no_console_error(built, browser, tmp_path):
    d = browser
    d.get(built["page"].as_uri())
    _wait(d, "return document.querySelectorAll('#cliptable tbody tr').length === 4")
    d.find_element("css selector", "#cliptable th[data-key='valence_rmse']").click()  # largest first
    cells = "Array.from(document.querySelectorAll('#cliptable tbody tr')).map(r => r.children[6].textContent)"
    shown = [float(x) for x in d.execute_script(f"return {cells}")]
    assert shown == sorted(shown, reverse=True)
    assert d.execute_script("return document.querySelectorAll('#curves svg path').length") >= 2
    assert _severe(d) == []
    _screenshot(d, tmp_path, "report-index.png")


def test_a_long_corpus_is_paged_25_clips_at_a_time(browser, tmp_path):
    """600 clips: the table holds one page of rows, the pager and the filter move through the rest."""
    from mmemo.pipeline.report import render_page

    rows = [{"clip": f"spk{i % 7}/take{i:03d}", "file": f"c{i}", "seconds": 10.0, "media": "original",
             **{f"{d}_{m}": (i % 50) / 50 for d in ("valence", "arousal") for m in ("ccc", "pcc", "rmse", "mae")}}
            for i in range(600)]  # fmt: skip
    page = tmp_path / "index.html"
    body = "<section id='evaluation'><div id='viewer' class='viewer' hidden></div><div id='cliptable'></div></section>"
    page.write_text(render_page("long", body, {"kind": "report", "clips": rows, "rows_per_page": 25}))
    d = browser
    d.get(page.as_uri())
    d.get_log("browser")
    _wait(d, "return document.querySelectorAll('#cliptable tbody tr').length === 25")
    info = "return document.querySelector('#cliptable .pager span').textContent"
    assert d.execute_script(info) == "page 1 of 24 (600 clips)"
    d.find_element("css selector", "#cliptable .pager button:last-child").click()
    assert d.execute_script(info) == "page 2 of 24 (600 clips)"
    first = "return document.querySelector('#cliptable tbody tr td').textContent"
    assert d.execute_script(first) == "spk0/take175"  # sorted by clip: spk0 holds takes 0, 7, 14, ...
    d.find_element("css selector", "#cliptable input").send_keys("spk3/")
    assert d.execute_script(info) == "page 1 of 4 (86 clips)"
    assert _severe(d) == []


@pytest.mark.slow
def test_predict_html_is_a_viewer_for_a_new_clip(built, browser, tmp_path):
    clip = built["corpus"] / f"{FLV}.flv"
    page = tmp_path / "written" / "new.html"
    r = CliRunner().invoke(main, ["predict", str(clip), "--run", str(built["run"]), "--html", str(page)])
    assert r.exit_code == 0, r.output
    assert "viewer: " in r.output and "1 preview(s)" in r.output
    moved = tmp_path / "moved"
    shutil.copytree(page.parent, moved)
    shutil.rmtree(page.parent)
    d = browser
    d.get((moved / "new.html").as_uri())
    d.get_log("browser")
    _wait(d, "var m = document.querySelector('#viewer .media'); return m && m.readyState >= 1")
    assert d.execute_script("return document.querySelector('#viewer .media').duration") == pytest.approx(
        SECONDS, abs=0.05
    )
    assert d.execute_script("return document.querySelector('#viewer .gold-point')") is None  # no labels here
    _seek(d, 1.0)
    assert _cursor_time(d) == pytest.approx(1.0, abs=0.002)
    assert _severe(d) == []
    _screenshot(d, tmp_path, "predict-html.png")


def test_cli_report_on_a_cross_validation_directory_names_a_fold_to_report(tmp_path):
    (tmp_path / "seed0" / "fold0").mkdir(parents=True)
    (tmp_path / "seed0" / "fold0" / "config.json").write_text("{}")
    (tmp_path / "results.json").write_text("{}")
    r = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert r.exit_code == 1
    fold = tmp_path / "seed0" / "fold0"
    assert r.output.strip() == (f"Error: {tmp_path}: a cross-validation directory (its results are results.md); "
                                f"report one fold's run, e.g. `mmemo report {fold}`")  # fmt: skip
