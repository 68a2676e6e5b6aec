"""Streaming codec decode: overlapping token windows, carried oscillator phase, low-energy splicing.

Tokens arrive while the LLM is still writing. As in upstream Freeze-Omni (``reference/freeze_omni_facts.md``
§1.9), they are decoded in windows: the first window of an answer has ``first_chunk`` new tokens and
``context`` tokens of right context (first audio after ``first_chunk + context`` tokens: 30 = 0.75 s by
default); every later window has ``context`` tokens of left context, ``chunk`` new tokens and ``context`` of
right context; the context is decoded again and thrown away. A segment (one text segment's tokens) ends with
:meth:`StreamingCodecDecoder.flush`, which decodes what is left with no right context.

Our decoder's receptive field (:attr:`Codec.receptive_tokens`, 9 tokens) fits in the 10-token context, the noise
is a fixed table indexed by absolute sample, and each window's oscillator phase is pinned to where the previous
window left it, so every piece equals the matching stretch of the whole-utterance decode up to float32 rounding,
with no click at the joins. The rounding grows slowly with time: the convolutions run on windows of other
lengths, so the predicted F0 differs by ~1e-7 relative and the phase (a running sum of F0) drifts by that much
of the elapsed phase: measured 1e-5 (tiny codec) to 2.3e-4 (default codec, 3.4 s, peak 0.27) absolute.

Splicing (upstream's, kept so a codec with a wider receptive field would still join cleanly): a piece is scanned
from ``len / 2 - N / 2`` on with a sliding window of ``N`` samples (100 ms); if the lowest mean ``|x|`` is below
the threshold (``first_threshold`` until the answer's first audio, then ``threshold``), everything held back
plus the piece up to the quietest sample of that window is emitted and the rest held back; otherwise the whole
piece is held back. Nothing is ever dropped or repeated: the concatenated output of a segment has exactly
``n_tokens * hop`` samples. ``splice=False`` emits every piece at once (lower latency).

The state of one stream is a :class:`CodecStreamState`; a :class:`StreamingCodecDecoder` holds one and a
reference to the (stateless, shared) codec, so a server session keeps one decoder per user.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from freeze_omni.codec.model import Codec

log = logging.getLogger(__name__)


@dataclass
class StreamingConfig:
    """Window geometry (in tokens) and splicing of streaming decode; defaults follow upstream's server."""

    first_chunk: int = 20  # new tokens in the first window of an answer
    chunk: int = 40  # new tokens in every later window
    context: int = 10  # tokens of left context (after a segment's first window) and of right context
    splice: bool = True  # hold audio back until a low-energy point (see the module docstring)
    first_threshold: float = 0.1  # mean |x| below which a cut is made, until the answer's first audio
    threshold: float = 0.015  # the same afterwards
    splice_window_ms: float = 100.0  # N, the sliding window of the low-energy search

    def __post_init__(self) -> None:
        if self.first_chunk < 1 or self.chunk < 1 or self.context < 0:
            raise ValueError(f"need first_chunk, chunk >= 1 and context >= 0, got {self}")


@dataclass
class CodecStreamState:
    """Where one stream stands."""

    pending: list[int] = field(default_factory=list)  # `left` context tokens, then tokens not yet emitted
    left: int = 0  # context tokens at the start of `pending` (0 at a segment start)
    token_offset: int = 0  # position of pending[0] in the segment
    phase: Optional[float] = None  # oscillator phase before pending[left]'s first sample; None: segment start
    held: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # decoded, not yet emitted
    emitted: bool = False  # the answer has emitted audio (selects the splice threshold)
    windows: int = 0  # windows decoded in this answer (the first uses first_chunk)


class StreamingCodecDecoder:
    """Incremental decode of one token stream (see the module docstring).

    Args:
        codec: the codec, in eval mode (it is only read).
        cfg: window and splicing settings.
    """

    def __init__(self, codec: Codec, cfg: StreamingConfig | None = None) -> None:
        self.codec, self.cfg = codec, cfg or StreamingConfig()
        self.state = CodecStreamState()
        self.splice_window = int(round(codec.sample_rate * self.cfg.splice_window_ms / 1000)) + 1
        if codec.receptive_tokens > self.cfg.context:
            log.warning("codec receptive field %d tokens > streaming context %d: windows will not match the "
                        "whole-utterance decode exactly", codec.receptive_tokens, self.cfg.context)

    def reset(self) -> None:
        """Start a new answer (forgets everything, including audio held back)."""
        self.state = CodecStreamState()

    def push(self, tokens: Sequence[int]) -> np.ndarray:
        """Add tokens of the current segment; returns the audio ready now (float32 ``[n]``, possibly empty)."""
        assert not self.codec.training, "StreamingCodecDecoder needs the codec in eval mode"
        st, cfg, hop = self.state, self.cfg, self.codec.hop
        st.pending.extend(int(t) for t in tokens)
        out = []
        while True:
            chunk = cfg.first_chunk if st.windows == 0 else cfg.chunk
            if len(st.pending) - st.left < chunk + cfg.context:
                break
            wave, phase = self._decode(st.pending[: st.left + chunk + cfg.context])
            a, b = st.left * hop, (st.left + chunk) * hop
            out.append(self._splice(wave[a:b]))
            st.phase = float(phase[b])
            drop = st.left + chunk - cfg.context  # keep `context` tokens before the next new token
            st.pending = st.pending[drop:]
            st.token_offset += drop
            st.left = cfg.context
            st.windows += 1
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def flush(self) -> np.ndarray:
        """End the current segment: decode what is left (no right context) and release everything held back.

        The next :meth:`push` starts a new segment (phase and position from zero, no left context).
        """
        st, hop = self.state, self.codec.hop
        parts = [st.held]
        if len(st.pending) > st.left:
            wave, _ = self._decode(st.pending)
            parts.append(wave[st.left * hop:])
            st.windows += 1
        out = np.concatenate(parts).astype(np.float32)
        st.pending, st.left, st.token_offset, st.phase = [], 0, 0, None
        st.held = np.zeros(0, np.float32)
        st.emitted = st.emitted or len(out) > 0
        return out

    # ------------------------------------------------------------------------------------------ internals
    def _decode(self, tokens: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Decode a window of the segment's tokens starting at ``state.token_offset``: ``[n * hop]`` audio and
        the float64 phase track ``[n * hop + 1]``."""
        st, hop = self.state, self.codec.hop
        device = self.codec.noise_table.device
        x = torch.tensor([tokens], dtype=torch.long, device=device)
        phase0 = None if st.phase is None else torch.tensor([st.phase], dtype=torch.float64, device=device)
        wave, phase = self.codec.decode_window(x, phase0=phase0, phase_index=st.left * hop,
                                               sample_offset=st.token_offset * hop)
        return wave[0].float().cpu().numpy(), phase[0].cpu().numpy()

    def _splice(self, piece: np.ndarray) -> np.ndarray:
        """Emit held audio + ``piece`` up to a low-energy cut, hold the rest (see the module docstring)."""
        st, N = self.state, self.splice_window
        if not self.cfg.splice:
            out, st.held = np.concatenate([st.held, piece]), np.zeros(0, np.float32)
            st.emitted = st.emitted or len(out) > 0
            return out
        threshold = self.cfg.threshold if st.emitted else self.cfg.first_threshold
        start = max(len(piece) // 2 - N // 2, 0)
        mag = np.abs(piece[start:]).astype(np.float64)
        if len(mag) >= N:
            csum = np.concatenate([[0.0], np.cumsum(mag)])
            means = (csum[N:] - csum[:-N]) / N  # mean |x| of the window starting at each sample
            i = int(np.argmin(means))
            if means[i] < threshold:
                cut = start + i + int(np.argmin(mag[i:i + N]))
                out = np.concatenate([st.held, piece[:cut]])
                st.held = piece[cut:].copy()
                st.emitted = st.emitted or len(out) > 0
                return out
        st.held = np.concatenate([st.held, piece])
        return np.zeros(0, np.float32)
