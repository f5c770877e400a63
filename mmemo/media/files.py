"""Which files are clips: the media suffixes mmemo reads, and the clips of a corpus directory.

Rules:
- The directory is walked recursively, directories and files in sorted (code point) order, so the clip list is
  the same on every machine. Symbolic links to directories are followed once: a directory already visited
  (same device and inode) is not entered again, so a symlink loop cannot hang the walk.
- Hidden files and directories (name starting with ".") are skipped.
- Media are recognised by suffix, case-insensitively: video containers .mp4 .mov .mkv .avi .webm .flv .m4v
  .mpg and audio files .wav .flac .mp3 .m4a .ogg .opus.
- Clip id = the file's path relative to the corpus directory, without suffix, with "/" separators.
- An audio file beside a video with the same stem (``a/b.mp4`` + ``a/b.wav``) is that clip's audio: it is
  used *instead of* any audio track inside the video (separately recorded audio is usually the better signal).
- Two videos (or, without a video, two audio files) with the same stem would make one clip id twice: the first
  suffix in the lists above is used and the other file is reported as a duplicate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".flv", ".m4v", ".mpg")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus")
MEDIA_SUFFIXES = VIDEO_SUFFIXES + AUDIO_SUFFIXES


@dataclass(frozen=True)
class ClipSource:
    """One clip of the corpus: its media file and, if any, a separate audio file (paths are absolute)."""

    clip_id: str
    path: Path
    audio_path: Path | None = None

    def rel(self, corpus: Path) -> str:
        return self.path.relative_to(corpus).as_posix()


@dataclass
class CorpusFiles:
    """The clips found under a corpus directory."""

    root: Path
    clips: list[ClipSource]
    duplicates: list[str]  # one line per file left out, naming it and the file used instead


def _walk(root: Path):
    """Yield (dir, sorted file names), following directory symlinks without entering any directory twice."""
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            st = d.stat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            continue
        files, subdirs = [], []
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                is_dir = e.is_dir()  # follows symlinks
            except OSError:
                is_dir = False
            (subdirs if is_dir else files).append(e.name)
        yield d, files
        stack.extend(d / name for name in reversed(subdirs))  # popped in sorted order


def discover(root: str | os.PathLike) -> CorpusFiles:
    """All clips under ``root`` in deterministic order (sorted by clip id)."""
    root = Path(root).absolute()
    video_rank = {s: i for i, s in enumerate(VIDEO_SUFFIXES)}
    audio_rank = {s: i for i, s in enumerate(AUDIO_SUFFIXES)}
    groups: dict[str, dict[str, list[Path]]] = {}
    for d, files in _walk(root):
        for name in files:
            p = d / name
            suffix = p.suffix.lower()
            if suffix not in video_rank and suffix not in audio_rank:
                continue
            clip_id = p.relative_to(root).with_suffix("").as_posix()
            kind = "video" if suffix in video_rank else "audio"
            groups.setdefault(clip_id, {"video": [], "audio": []})[kind].append(p)

    clips, duplicates = [], []
    for clip_id in sorted(groups):
        g = groups[clip_id]
        videos = sorted(g["video"], key=lambda p: (video_rank[p.suffix.lower()], p.name))
        audios = sorted(g["audio"], key=lambda p: (audio_rank[p.suffix.lower()], p.name))
        if videos:
            main, audio = videos[0], (audios[0] if audios else None)
            left_out = videos[1:] + audios[1:]
        else:
            main, audio = audios[0], None
            left_out = audios[1:]
        for p in left_out:
            duplicates.append(
                f"{p}: duplicate clip id {clip_id!r}; using {main.name}"
                + (f" with audio {audio.name}" if audio is not None else "")
            )
        clips.append(ClipSource(clip_id, main, audio))
    return CorpusFiles(root, clips, duplicates)
