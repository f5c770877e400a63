"""Corpus discovery: order, clip ids, audio beside video, hidden files, duplicates, symlink loops."""

from __future__ import annotations

import os

from mmemo.media.files import discover


def _touch(root, *names):
    for n in names:
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def test_clip_ids_order_and_pairing(tmp_path):
    """Sorted ids; a .wav beside a .mp4 of the same stem is its audio; other files ignored."""
    _touch(tmp_path, "b/z.MP4", "b/z.wav", "a/y.flac", "a/x.mkv", "notes.txt", "c/d/e.webm", "labels.csv")
    corpus = discover(tmp_path)
    assert [c.clip_id for c in corpus.clips] == ["a/x", "a/y", "b/z", "c/d/e"]
    z = corpus.clips[2]
    assert z.path.name == "z.MP4" and z.audio_path.name == "z.wav"
    assert corpus.clips[1].audio_path is None and corpus.duplicates == []


def test_hidden_files_and_directories_are_skipped(tmp_path):
    """Names starting with a dot are not clips, nor is anything under a hidden directory."""
    _touch(tmp_path, ".hidden.mp4", ".cache/x.mp4", "ok.wav")
    assert [c.clip_id for c in discover(tmp_path).clips] == ["ok"]


def test_duplicate_stems_are_reported(tmp_path):
    """Two videos with one stem: the first suffix of the list wins, the other is reported."""
    _touch(tmp_path, "a.mkv", "a.mp4", "b.mp3", "b.wav")
    corpus = discover(tmp_path)
    assert [(c.clip_id, c.path.name) for c in corpus.clips] == [("a", "a.mp4"), ("b", "b.wav")]
    assert len(corpus.duplicates) == 2
    assert "a.mkv" in corpus.duplicates[0] and "duplicate clip id 'a'" in corpus.duplicates[0]


def test_symlink_loop_does_not_hang(tmp_path):
    """A directory symlink pointing to its parent is entered at most once."""
    _touch(tmp_path, "sub/clip.wav")
    os.symlink(tmp_path, tmp_path / "sub" / "loop")
    ids = [c.clip_id for c in discover(tmp_path).clips]
    assert ids == ["sub/clip"]


def test_symlinked_directory_is_followed(tmp_path):
    """A symlink to a directory outside the corpus is walked like a directory."""
    outside = tmp_path / "outside"
    _touch(outside, "x.wav")
    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    os.symlink(outside, corpus_dir / "linked")
    assert [c.clip_id for c in discover(corpus_dir).clips] == ["linked/x"]
