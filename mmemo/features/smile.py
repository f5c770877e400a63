"""openSMILE's eGeMAPS (v02) and ComParE 2016 low-level descriptors, moved onto the video frame grid.

openSMILE (PyPI ``opensmile``, the optional extra ``pip install 'mmemo[smile]'``; the library and its configuration
files ship in the wheel, nothing is downloaded) computes one frame of low-level descriptors (LLDs) every 10 ms:
frame ``k`` starts at ``k * 10 ms`` (openSMILE's own timestamps). Both sets compute most descriptors (energy,
loudness, spectra, MFCC, formants: 59 of ComParE's 65) on the 25 ms window starting there, and F0 and voice
quality (F0, jitter, shimmer, HNR, voicing) on a 60 ms window starting at the same instant. openSMILE labels a
frame with one length for the whole set (20 ms for eGeMAPSv02, 60 ms for ComParE_2016), which is the length of
neither window for eGeMAPS and would put 59 of ComParE's descriptors 17.5 ms late. So a frame's centre here is
the centre of its 25 ms window, ``k * 10 ms + 12.5 ms`` (a click at ``t / 25`` peaks in row ``t``: tested); the
60 ms descriptors are centred 17.5 ms later than that, less than half a row.

The grid rule: row ``t`` is the mean of the frames whose centre falls in ``[t/25 - 20 ms, t/25 + 20 ms)``, the
same 40 ms window centred on ``t / 25`` that every other feature summarises: 4 frames a row (row 0: 1). Each frame
belongs to exactly one row (half-open windows). A row whose window holds no frame centre (only in a clip too
short for openSMILE to make a frame) takes the frame whose centre is nearest to ``t / 25`` (the earlier one on a
tie). All arithmetic is in whole samples, so no row depends on rounding.

The signal openSMILE reads is the clip's audio followed by zeros up to the end of the last row's window
(``n_rows * hop + hop / 2`` samples; audio past that is kept, as the other features' analysis windows may see
it), converted to 16-bit integers as ``opensmile.Smile.process_signal`` does (``int16(x * 32768)``, truncated;
samples are first clipped to ``[-1, 32767 / 32768]`` so a full-scale 1.0 does not wrap round to -32768).

Streaming: openSMILE runs block by block (BLOCK_ROWS rows, 60 s) on the block's samples plus ``MARGIN_S``
seconds on each side, the margins' frames discarded; a block's first sample lies on openSMILE's 10 ms frame
grid, so its frames are the whole-signal call's frames. openSMILE's F0 is Viterbi-smoothed over a bounded
buffer and ComParE's RASTA filter is a decaying IIR filter, so a block's rows depend on audio before and after it
only through those; with 5 s of margin they equal one call on the whole signal (``tests/test_smile.py`` checks a
multi-block clip against the direct call). Memory stays one block plus its margins per feature.

Values: openSMILE reports unvoiced frames' F0, jitter, shimmer and HNR as 0 (eGeMAPS' ``nz`` descriptors) and
silence as floor values (-201 dB, -100 dB), all finite and passed on unchanged. A non-finite value from openSMILE
is an error naming the descriptor and the time, never replaced by a number.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from mmemo.config import ExtractConfig
from mmemo.errors import ConfigError, MediaError

INSTALL_HINT = "pip install 'mmemo[smile]'"
FRAME_STEP_S = 0.01  # openSMILE's frame period in both sets
WINDOW_S = 0.025  # the analysis window most descriptors are computed on: a frame's centre is the centre of it
MARGIN_S = 5.0  # audio on each side of a block that openSMILE also reads (its frames are discarded)
# Live input: a row is computed once this much audio past its window has arrived. openSMILE's Viterbi F0 smoother
# decides over 0.3 s buffers, so rows at the very end of what has arrived would see their F0 change later.
LIVE_LOOKAHEAD_S = 0.5


@dataclass(frozen=True)
class SmileSet:
    """One openSMILE feature set at the LLD level: its name in ``opensmile.FeatureSet``, width, frame length."""

    feature_set: str
    dim: int
    reported_frame_s: float  # the frame length openSMILE reports (end - start) for this set's LLD frames


SMILE_SETS: dict[str, SmileSet] = {
    "egemaps": SmileSet("eGeMAPSv02", 25, 0.02),
    "compare": SmileSet("ComParE_2016", 65, 0.06),
}


def check_smile() -> None:
    """A one-line ConfigError saying how to install openSMILE when it is not importable."""
    try:
        import opensmile  # noqa: F401
    except ImportError:
        raise ConfigError(f"the eGeMAPS / ComParE features need openSMILE: {INSTALL_HINT}") from None


def check_grid(cfg: ExtractConfig) -> None:
    """The grid rule is exact in whole samples only when the 10 ms step and the 12.5 ms half window are."""
    if cfg.sample_rate % 200 or cfg.hop_length % 2:
        raise ConfigError(
            f"openSMILE features need a sample rate divisible by 200 and an even hop, not sample_rate "
            f"{cfg.sample_rate} with hop {cfg.hop_length}"
        )


@cache
def _smile(name: str):
    """This process's openSMILE extractor for ``name`` (built once: it parses the set's configuration files)."""
    check_smile()
    import opensmile

    return opensmile.Smile(
        feature_set=getattr(opensmile.FeatureSet, SMILE_SETS[name].feature_set),
        feature_level=opensmile.FeatureLevel.LowLevelDescriptors,
    )


def descriptor_names(name: str) -> list[str]:
    """The set's column names as openSMILE gives them (``Loudness_sma3``, ``F0final_sma``, ...)."""
    return list(_smile(name).feature_names)


def to_int16_range(x: np.ndarray) -> np.ndarray:
    """float32 samples clipped to what openSMILE's 16-bit input holds: ``[-1, 32767 / 32768]``."""
    return np.clip(np.asarray(x, np.float32), -1.0, 32767 / 32768)


def smile_frames(name: str, signal: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """openSMILE's LLD frames of ``signal`` (already clipped): (start sample of each frame (n,), values (n, D)).

    Starts come from openSMILE's own frame timestamps (``process_signal``'s index), in samples.
    """
    df = _smile(name).process_signal(signal, sample_rate)
    starts = np.round(df.index.get_level_values("start").total_seconds().to_numpy() * sample_rate).astype(np.int64)
    return starts, df.to_numpy(np.float32)


def frames_to_rows(
    starts: np.ndarray, values: np.ndarray, frame_len: int, rows: range, hop: int
) -> np.ndarray:  # fmt: skip
    """The grid rule (module docstring): rows ``rows`` (n, D) float32 from frames starting at ``starts`` (samples).

    ``values`` (F, D) are the frames' descriptors, ``frame_len`` the length of the window a frame is centred in
    (samples), ``hop`` the row spacing.
    """
    centre2 = 2 * starts + frame_len  # twice each frame's centre, in samples: whole numbers
    t = np.arange(rows.start, rows.stop)
    lo, hi = 2 * t * hop - hop, 2 * t * hop + hop  # twice each row's window [t*hop - hop/2, t*hop + hop/2)
    first = np.searchsorted(centre2, lo, side="left")
    stop = np.searchsorted(centre2, hi, side="left")
    count = stop - first
    out = np.empty((t.size, values.shape[1]), np.float64)
    has = count > 0
    # The mean of the frames in the window; summing in order keeps it the plain left-to-right mean.
    for i in np.flatnonzero(has):
        out[i] = values[first[i] : stop[i]].astype(np.float64).sum(axis=0) / count[i]
    if not has.all():
        for i in np.flatnonzero(~has):
            near = int(np.argmin(np.abs(centre2 - 2 * t[i] * hop)))  # argmin: the earlier on a tie
            out[i] = values[near]
    return out.astype(np.float32)


class SmileStream:
    """One openSMILE set's rows, block by block, as the clip's samples arrive (see the module docstring).

    ``push(samples)`` any number of times, ``finish(n_rows)`` once: rows ``[0, n_rows)`` reach
    ``sink(name, first_row, rows)`` in order. ``advance(limit)`` serves live input.
    """

    def __init__(self, name: str, cfg: ExtractConfig, sink, block_rows: int) -> None:
        check_smile()
        check_grid(cfg)
        self.name, self.cfg, self.sink, self.block = name, cfg, sink, block_rows
        self.sr, self.hop = cfg.sample_rate, cfg.hop_length
        self.step = cfg.sample_rate // 100  # samples per openSMILE frame
        self.frame_len = round(WINDOW_S * cfg.sample_rate)
        self.margin = round(MARGIN_S * 100) * self.step
        self.buf = np.zeros(0, np.float32)
        self.buf_start = 0  # sample index of buf[0]
        self.pending: list[np.ndarray] = []
        self.n_pending = 0
        self.next_row = 0
        _smile(name)  # build it now: a missing extra or a bad configuration fails before any audio

    def _seg_start(self, row: int) -> int:
        """First sample openSMILE reads for a block starting at ``row``: a margin before its window, on the frame
        grid (so the block's frames are the whole signal's)."""
        s = row * self.hop - self.hop // 2 - self.margin
        return max(0, s // self.step * self.step)

    def _end(self) -> int:
        return self.buf_start + self.buf.size + self.n_pending

    def push(self, samples: np.ndarray) -> None:
        self.pending.append(to_int16_range(samples))
        self.n_pending += self.pending[-1].size
        need = (self.next_row + self.block) * self.hop + self.hop // 2 + self.margin
        if self._end() >= need:
            self._join()
            while self._end() >= (self.next_row + self.block) * self.hop + self.hop // 2 + self.margin:
                r1 = self.next_row + self.block
                self._compute(r1, r1 * self.hop + self.hop // 2 + self.margin)

    def _join(self) -> None:
        if self.pending:
            self.buf = np.concatenate([self.buf, *self.pending])
            self.pending, self.n_pending = [], 0

    def _compute(self, r1: int, seg_end: int) -> None:
        """Rows [next_row, r1) from openSMILE run on samples [seg start, seg_end) (zeros past the buffer)."""
        s0 = self._seg_start(self.next_row)
        seg = self.buf[s0 - self.buf_start : seg_end - self.buf_start]
        if seg.size < seg_end - s0:
            seg = np.pad(seg, (0, seg_end - s0 - seg.size))
        starts, values = smile_frames(self.name, seg, self.sr)
        bad = ~np.isfinite(values)
        if bad.any():
            f, d = np.argwhere(bad)[0]
            raise MediaError(
                f"openSMILE {SMILE_SETS[self.name].feature_set} gave {values[f, d]} for "
                f"{descriptor_names(self.name)[d]} at {(s0 + starts[f]) / self.sr:.2f} s"
            )
        rows = range(self.next_row, r1)
        self.sink(self.name, self.next_row, frames_to_rows(starts + s0, values, self.frame_len, rows, self.hop))
        self.next_row = r1
        keep = self._seg_start(r1)
        if keep > self.buf_start:
            self.buf = self.buf[keep - self.buf_start :]
            self.buf_start = keep

    def advance(self, limit: int | None = None) -> int:
        """Live input: compute every row (up to ``limit``) whose frames and LIVE_LOOKAHEAD_S after them have
        arrived, as one block whose right margin is whatever has arrived (shorter than extraction's, so a row's
        values can differ from a shard's where openSMILE's smoothers would have decided otherwise with more audio).
        Returns the number of rows computed so far."""
        self._join()
        end = self._end()
        # Row t's last frame centre is below t*hop + hop/2; that frame ends frame_len/2 later.
        ahead = round(LIVE_LOOKAHEAD_S * self.sr)
        ready = max(0, (end - ahead - self.frame_len // 2 - self.hop // 2) // self.hop + 1)
        if limit is not None:
            ready = min(ready, limit)
        if ready > self.next_row:
            self._compute(ready, end)
        return self.next_row

    def finish(self, n_rows: int) -> None:
        """The rows still missing up to ``n_rows``, on the audio zero-padded to the last row's window end."""
        self._join()
        end = max(self._end(), n_rows * self.hop + self.hop // 2)
        while self.next_row < n_rows:
            r1 = min(n_rows, self.next_row + self.block)
            # An inner block still gets its right margin; the last one reads to the signal's end, as one call does.
            seg_end = end if r1 == n_rows else min(end, r1 * self.hop + self.hop // 2 + self.margin)
            self._compute(r1, seg_end)
