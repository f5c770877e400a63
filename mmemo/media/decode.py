"""Decode a clip file with PyAV onto mmemo's time grid (see ``mmemo.media.grid`` for how rows are made).

Time origin: t = 0 is the start of the video stream (of the audio stream for audio-only clips). Audio that
starts later than the video is preceded by silence and those rows are marked absent in ``audio_mask``; audio
before the origin is dropped. The picture is the clip's timeline: a clip with video ends when its last frame
leaves the screen (audio past that point is dropped, with a warning beyond a second); without video, the audio's
end is the clip's end.

One sequential demux pass reads both streams of a container; containers are always closed. Frames are handed to
a callback in chunks as they are made, so memory does not grow with clip length.

A file that holds less than it declares (a download cut short) is not refused: what decodes is kept, the clip is as
long as that, and ``DecodedMedia.truncations`` says how much is missing (one ``Truncation`` per file, its
``message`` also among the warnings). A file with nothing decodable still raises ``MediaError``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from mmemo.errors import MediaError
from mmemo.media.grid import (
    AudioSink,
    AudioTrack,
    FrameSink,
    GridConfig,
    PictureSink,
    VideoTrack,
    audio_row_mask,
    best_stream,
    ffmpeg_reason,
    set_skip_loop_filter,
    stream_start,
)

# A decode that ends this much before the duration the container declares is reported as truncated.
_TRUNCATION_TOLERANCE_S = 0.5
# A file cut inside a packet that declares less than this beyond what decoded does not say how much it lost.
_CUT_MARGIN_S = 0.05


@dataclass(frozen=True)
class Truncation:
    """A file that ends before what it declares: ``decoded_s`` of the ``declared_s`` seconds are there.

    ``declared_by``: "container" (the streams' durations) or "header" (a WAV file's RIFF header).
    ``declared_s`` is None for a file that ends inside a packet without declaring more than that (an AVI without
    its index). ``part``: "" for the clip's file, "audio stream" when only the audio of a video file is short,
    "audio file" for the clip's separate audio file.
    """

    path: Path
    decoded_s: float
    declared_s: float | None
    declared_by: str = "container"
    part: str = ""

    @property
    def missing_s(self) -> float | None:
        return None if self.declared_s is None else max(0.0, self.declared_s - self.decoded_s)

    @property
    def message(self) -> str:
        """One line: ``<path>: truncated: decoded 4.44 s of the 6.28 s the container declares (1.84 s missing)``."""
        what = "truncated audio stream" if self.part == "audio stream" else "truncated"
        if self.declared_s is None:
            tail = "(how much is missing is unknown)"
            return f"{self.path}: {what}: the file ends inside a packet after {self.decoded_s:.2f} s {tail}"
        return (
            f"{self.path}: {what}: decoded {self.decoded_s:.2f} s of the {self.declared_s:.2f} s the "
            f"{self.declared_by} declares ({self.missing_s:.2f} s missing)"
        )

    @property
    def note(self) -> str:
        """Short, without the path: ``truncated: 1.84 s missing`` (``truncated audio file: ...`` and so on)."""
        what = f"truncated {self.part}" if self.part else "truncated"
        return f"{what}: " + ("the end is missing" if self.missing_s is None else f"{self.missing_s:.2f} s missing")

    def to_dict(self) -> dict:
        """Everything but the path (which a reader joins again: a corpus may move)."""
        return {"decoded_s": self.decoded_s, "declared_s": self.declared_s, "declared_by": self.declared_by,
                "part": self.part}  # fmt: skip

    @classmethod
    def from_dict(cls, path: str | os.PathLike, d: dict) -> Truncation:
        declared = d["declared_s"]
        return cls(Path(path), float(d["decoded_s"]), None if declared is None else float(declared),
                   str(d["declared_by"]), str(d["part"]))  # fmt: skip


@dataclass
class DecodedMedia:
    """Everything one decode produced, on the grid ``t / fps``; ``T = n_frames``.

    ``frames`` is only filled when no frame callback was given.
    """

    n_frames: int  # T
    fps: int
    sample_rate: int
    has_video: bool
    has_audio: bool
    audio: np.ndarray | None  # (T * hop,) float32 mono, zero where absent; None when streamed to on_audio
    video_mask: np.ndarray  # (T,) bool: a source frame is on screen in this row
    audio_mask: np.ndarray  # (T,) bool: the centre of row t's analysis window (t / fps) is decoded audio
    source_time: np.ndarray  # (T,) float64: presentation time (s, from origin) of the source frame shown
    duration: float  # seconds, from origin to the end of the longer stream
    native_fps: float = 0.0
    native_width: int = 0  # display size, after rotation and sample aspect ratio
    native_height: int = 0
    rotation: int = 0  # degrees clockwise applied to the coded picture
    native_sample_rate: int = 0
    native_channels: int = 0
    frames: np.ndarray | None = None  # (T, size, size, 3) uint8 when collected
    warnings: list[str] = field(default_factory=list)
    # Files that end before what they declare (their messages are among ``warnings`` too); empty for whole files.
    truncations: list[Truncation] = field(default_factory=list)
    # (T,) int64: index of the source frame shown in row t, counting every frame the decoder delivered from 0 in
    # presentation order; -1 where no source frame is on screen (before the first frame, past the last, no video).
    # Per-frame annotations (one line per native frame) are put on the grid with it.
    source_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # The face stage's summary when faces were looked for (filled by mmemo.features.clip): rows, present, ...
    face_stats: dict = field(default_factory=dict)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m, present in (("audio", self.has_audio), ("video", self.has_video)) if present)


def _open(path: Path) -> av.container.InputContainer:
    if not path.exists():
        raise MediaError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes)")
    try:
        return av.open(str(path), mode="r")
    except av.FFmpegError as e:
        raise MediaError(f"{path}: not a readable media file ({ffmpeg_reason(e)})") from None


def _wav_truncation(path: Path) -> Truncation | None:
    """A WAV file cut short still decodes (FFmpeg trusts the bytes it finds), so compare with its header.

    The RIFF ``data`` chunk states its size; a file shorter than that lost its end (seconds from the byte rate of
    the ``fmt`` chunk). Sizes 0 and 0xFFFFFFFF mean "unknown" (written while streaming) and are not checked.
    """
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, byte_rate = 12, 0
    while pos + 8 <= len(head):
        chunk, size = head[pos : pos + 4], int.from_bytes(head[pos + 4 : pos + 8], "little")
        if chunk == b"fmt " and pos + 20 <= len(head):
            byte_rate = int.from_bytes(head[pos + 16 : pos + 20], "little")
        if chunk == b"data":
            have = path.stat().st_size - (pos + 8)
            if 0 < size < 0xFFFFFFFF and have < size and byte_rate > 0:
                return Truncation(path, max(0, have) / byte_rate, size / byte_rate, "header")
            return None
        pos += 8 + size + (size & 1)
    return None


def _declared_duration(stream) -> float | None:
    """How long the container says the stream lasts (Matroska and others only say it for the whole file)."""
    if stream is None:
        return None
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    container_duration = stream.container.duration
    if container_duration is None:
        return None
    return container_duration / av.time_base - float(stream_start(stream))


def _demux(container, streams: list, handlers: dict, path: Path) -> bool:
    """Decode ``streams`` in one pass; True when the file is cut inside a packet.

    A file cut short ends with a partial packet, which the demuxer flags as corrupt and which reaches the end of
    the file. Its decode error is not a failure (the truncation is reported instead, as the ffmpeg command line
    goes on past it; a frame-threaded decoder drops it silently anyway); any other decode error is.
    """
    at = 0.0  # media time reached, to say where a damaged file breaks
    cut_inside = False
    file_size = path.stat().st_size
    try:
        for packet in container.demux(streams):
            if packet.pts is not None and packet.time_base is not None:
                at = max(at, float(packet.pts * packet.time_base))
            handler = handlers[packet.stream.index]
            cut = (
                packet.is_corrupt
                and packet.pos is not None
                and 0 <= packet.pos
                and packet.pos + packet.size >= file_size
            )
            cut_inside |= cut
            try:
                for frame in packet.decode():
                    handler(frame)
            except av.FFmpegError:
                if not cut:
                    raise
    except av.FFmpegError as e:
        raise MediaError(f"{path}: decoding failed near {at:.2f} s ({ffmpeg_reason(e)})") from None
    return cut_inside


def decode_media(
    path: str | os.PathLike,
    *,
    audio_path: str | os.PathLike | None = None,
    fps: int = 25,
    sample_rate: int = 16000,
    size: int = 224,
    aspect: str = "letterbox",
    use_video: bool = True,
    use_audio: bool = True,
    on_frames: FrameSink | None = None,
    on_audio: AudioSink | None = None,
    chunk_frames: int = 16,
    threads: int = 0,
    on_picture: PictureSink | None = None,
    skip_loop_filter: str = "none",
) -> DecodedMedia:
    """Decode ``path`` (and, when given, its audio from ``audio_path``) onto the ``fps`` grid.

    Args:
        path: a video container or an audio file.
        audio_path: a separate audio file holding this clip's sound (used instead of ``path``'s audio).
        on_frames: called with each chunk of rows ``(n, size, size, 3)`` uint8 in order; when None the frames
            are collected into ``DecodedMedia.frames`` ``(T, size, size, 3)``.
        on_audio: called with consecutive mono samples from the origin on (samples past the clip's end may
            follow; they are the consumer's to drop); when None they are collected into ``DecodedMedia.audio``.
        threads: decoder threads for the video (0: FFmpeg picks, one per core).
        on_picture: called once per grid row, in order, with the source picture on screen in it (a
            ``mmemo.media.picture.FramePicture`` at full resolution) or None: the face tracker's input.
        skip_loop_filter: which frames the H.264 / HEVC decoder does not deblock (``mmemo.config.SKIP_LOOP_FILTER``;
            other codecs ignore it).

    Raises:
        MediaError: one line naming the file and what is wrong with it.
    """
    path = Path(path)
    cfg = GridConfig(fps, sample_rate, size, aspect)
    hop = sample_rate // fps
    collected: list[np.ndarray] = []
    sink = on_frames if on_frames is not None else collected.append
    samples: list[np.ndarray] = []
    audio_sink = on_audio if on_audio is not None else samples.append
    video = audio = None
    declared: dict[str, tuple[Path, float | None]] = {}
    cuts: set[Path] = set()  # files that end inside a packet
    warnings: list[str] = []
    container = _open(path)
    try:
        vstream = best_stream(container, "video") if use_video else None
        astream = best_stream(container, "audio") if use_audio and audio_path is None else None
        if vstream is None and astream is None and audio_path is None:
            raise MediaError(f"{path}: no audio or video stream")
        origin = stream_start(vstream if vstream is not None else astream)
        handlers = {}
        if vstream is not None:
            vstream.thread_type = "AUTO"  # frame + slice threads: decoding is the cost that matters
            vstream.thread_count = threads
            set_skip_loop_filter(vstream, skip_loop_filter)
            video = VideoTrack(vstream, origin, cfg, sink, chunk_frames, on_picture)
            handlers[vstream.index] = video.push
            declared["video"] = (path, _declared_duration(vstream))
        if astream is not None:
            audio = AudioTrack(astream, origin, sample_rate, audio_sink)
            handlers[astream.index] = audio.push
            declared["audio"] = (path, _declared_duration(astream))
        if _demux(container, [s for s in (vstream, astream) if s is not None], handlers, path):
            cuts.add(path)
    finally:
        container.close()

    if audio_path is not None and use_audio:
        apath = Path(audio_path)
        acontainer = _open(apath)
        try:
            astream = best_stream(acontainer, "audio")
            if astream is None:
                raise MediaError(f"{apath}: no audio stream")
            audio = AudioTrack(astream, stream_start(astream), sample_rate, audio_sink)  # starts with its video
            declared["audio"] = (apath, _declared_duration(astream))
            if _demux(acontainer, [astream], {astream.index: audio.push}, apath):
                cuts.add(apath)
        finally:
            acontainer.close()

    if video is not None and video.n_decoded == 0:
        raise MediaError(f"{path}: video stream has no decodable frames")
    if audio is not None:
        audio.finish()
        if audio.n_decoded == 0:
            raise MediaError(f"{declared['audio'][0]}: audio stream has no decodable samples")

    video_end = float(video.end_position()) / fps if video is not None else 0.0
    first, end = audio.span if audio is not None else (0, 0)
    audio_end = end / sample_rate
    truncations = _truncations(declared, {"video": video_end, "audio": (end - first) / sample_rate}, cuts, path)
    warnings.extend(t.message for t in truncations)
    # The picture is the clip's timeline: with video, the clip ends when the last frame leaves the screen and
    # audio past that point is dropped; without video, the audio's end is the clip's end.
    duration = video_end if video is not None else audio_end
    n_rows = math.ceil(duration * fps - 1e-6)
    if n_rows == 0:
        raise MediaError(f"{path}: nothing to decode (duration 0)")
    if video is not None and audio is not None and audio_end - video_end > 1.0:
        warnings.append(f"{path}: audio runs {audio_end - video_end:.1f} s past the end of the video; dropped")

    rows = np.arange(n_rows)
    audio_mask = audio_row_mask(rows, hop, audio.span, audio.gaps) if audio is not None else np.zeros(n_rows, bool)
    audio_grid = None
    if on_audio is None:
        y = np.concatenate(samples) if samples else np.zeros(0, np.float32)
        audio_grid = np.zeros(n_rows * hop, np.float32)
        audio_grid[: min(y.size, audio_grid.size)] = y[: audio_grid.size]
    if video is not None:
        video.finish(n_rows)
        video_mask = np.asarray(video.grid.mask, bool)
        source_time = np.asarray(video.grid.source_time, np.float64)
        source_index = np.asarray(video.grid.source_index, np.int64)
    else:
        video_mask = np.zeros(n_rows, bool)
        source_time = np.arange(n_rows, dtype=np.float64) / fps
        source_index = np.full(n_rows, -1, np.int64)

    out = DecodedMedia(
        n_frames=n_rows,
        fps=fps,
        sample_rate=sample_rate,
        has_video=video is not None,
        has_audio=audio is not None,
        audio=audio_grid,
        video_mask=video_mask,
        audio_mask=audio_mask,
        source_time=source_time,
        duration=duration,
        warnings=warnings,
        truncations=truncations,
        source_index=source_index,
    )
    if video is not None:
        geo = video.geometry
        out.native_width, out.native_height = geo.display
        out.rotation = geo.rotation
        out.native_fps = _native_fps(video)
    if audio is not None:
        out.native_sample_rate, out.native_channels = audio.native_sr, audio.native_channels
    if on_frames is None and video is not None:
        out.frames = np.concatenate(collected) if collected else np.zeros((0, size, size, 3), np.uint8)
    return out


def _native_fps(video: VideoTrack) -> float:
    """Mean frame rate over the decoded frames (exact for constant rate, the average for VFR)."""
    span = float(video.end_position()) / video.cfg.fps
    return video.n_decoded / span if span > 0 else 0.0


def _short(decoded: float, declared: float | None) -> bool:
    return bool(declared) and declared > 1.0 and decoded < declared - max(_TRUNCATION_TOLERANCE_S, 0.05 * declared)


def _truncations(declared: dict, decoded_span: dict, cuts: set[Path], main: Path) -> list[Truncation]:
    """One Truncation for each file that holds less than it declares.

    ``declared``: stream kind -> (its file, the duration the container declares); ``decoded_span``: kind -> the
    seconds decoded. A WAV file is judged by its header (exact to the byte); other files by their streams'
    declared durations (beyond a tolerance: containers round, and encoders pad), the video first since it is the
    clip's timeline, and by a partial packet at their end (``cuts``: cut inside a packet, declared length or not).
    """
    found = []
    for file in dict.fromkeys(f for f, _ in declared.values()):
        kinds = [k for k in ("video", "audio") if k in declared and declared[k][0] == file]
        part = "" if file == main else "audio file"
        wav = _wav_truncation(file) if file.suffix.lower() == ".wav" else None
        if wav is not None:
            found.append(Truncation(wav.path, wav.decoded_s, wav.declared_s, wav.declared_by, part))
            continue
        short = [k for k in kinds if _short(decoded_span[k], declared[k][1])]
        if short:
            kind = short[0]
            expected = declared[kind][1]
        elif file in cuts:
            # Cut inside a packet, yet within the tolerance of what the file declares, or beyond what it declares
            # (an AVI without its index: FFmpeg then measures the streams by the packets that are there).
            kind = kinds[0]
            expected = declared[kind][1]
            if not expected or expected < decoded_span[kind] + _CUT_MARGIN_S:
                expected = None
        else:
            continue
        if kind == "audio" and "video" in kinds:
            part = "audio stream"
        found.append(Truncation(file, decoded_span[kind], expected, "container", part))
    return found
