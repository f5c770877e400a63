"""Shared test helpers: where the real recordings are, and whether the ffmpeg command line is at hand."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
HAVE_FFMPEG = shutil.which("ffmpeg") is not None

needs_ffmpeg = pytest.mark.skipif(
    not HAVE_FFMPEG, reason="the ffmpeg command line is not installed (apt-get install ffmpeg)"
)
needs_realdata = pytest.mark.skipif(not REALDATA.is_dir(), reason=f"real recordings not found at {REALDATA}")


@pytest.fixture
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip(f"real recordings not found at {REALDATA}")
    return REALDATA
