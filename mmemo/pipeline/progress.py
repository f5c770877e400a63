"""Progress of a corpus extraction: one live bar on a terminal, plain periodic lines otherwise, or nothing.

The figures are the same in every form: clips done / total, media seconds per wall second (x real time),
estimated time left, failures so far.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _hms(seconds: float) -> str:
    seconds = int(round(max(0.0, seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def resolve_mode(mode: str, stream: TextIO | None = None) -> str:
    """ "auto" -> "bar" on a terminal, "lines" otherwise (logs, pipes); any other mode as it is."""
    if mode != "auto":
        return mode
    stream = stream or sys.stderr
    return "bar" if getattr(stream, "isatty", lambda: False)() else "lines"


class Progress:
    """Counts finished clips and reports them.

    Args:
        total: clips to extract in this run.
        mode: "bar" (a tqdm bar, for terminals), "lines" (a line every ``every_s`` seconds, for logs and pipes),
            "quiet" (nothing but errors), or "auto" (bar on a terminal, lines otherwise).
    """

    def __init__(self, total: int, mode: str = "auto", every_s: float = 10.0, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        mode = resolve_mode(mode, self.stream)
        self.total, self.mode, self.every_s = total, mode, every_s
        self.done = self.failed = 0
        self.media_s = 0.0
        self.t0 = self._last = time.perf_counter()
        self.bar = None
        if mode == "bar" and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="clip", desc="extract", file=self.stream, dynamic_ncols=True)

    @property
    def speed(self) -> float:
        """Media seconds extracted per wall second so far."""
        elapsed = time.perf_counter() - self.t0
        return self.media_s / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float | None:
        if not self.done:
            return None
        elapsed = time.perf_counter() - self.t0
        return elapsed / self.done * (self.total - self.done)

    def update(self, media_s: float, failed: bool) -> None:
        self.done += 1
        self.failed += failed
        self.media_s += media_s
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.speed:.1f}x real time, {self.failed} failed", refresh=False)
            self.bar.update(1)
        elif self.mode == "lines":
            now = time.perf_counter()
            if now - self._last >= self.every_s or self.done == self.total:
                self._last = now
                print(self.line(), file=self.stream, flush=True)

    def line(self) -> str:
        eta = self.eta()
        return (
            f"extract: {self.done}/{self.total} clips, {self.media_s / 60:.1f} media min, "
            f"{self.speed:.1f}x real time, ETA {_hms(eta) if eta is not None else '?'}, {self.failed} failed"
        )

    def write(self, message: str) -> None:
        """An error or warning line that must not tear the bar (shown even when quiet)."""
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
