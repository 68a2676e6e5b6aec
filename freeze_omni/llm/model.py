"""`SpeechLLM`: streaming encoder -> adapter -> frozen LLM, with prompt/task embeddings and the state head.

Training (stages 2 and 3) builds, per example, the same token/embedding sequence the live dialogue feeds the
LLM, one segment at a time::

    [system_prefix + system] ( [user_prefix] [prompt x 25 | task x n] [audio embeddings] [assistant_prefix]
                               [answer tokens] )*

and computes the LLM's cross-entropy on the answer (or transcript) tokens and the state head's cross-entropy at
the last position of every 160 ms chunk of audio. The audio embeddings come from the encoder run over the whole
utterance under the streaming chunk mask, which equals the chunk-by-chunk outputs the live path produces.

Listening (inference) feeds each chunk's embeddings straight into the LLM's KV cache and reads the state head:
see :class:`ListenSession`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from freeze_omni.audio.features import StreamingFrontend
from freeze_omni.encoder.encoder import EncoderCache, SpeechEncoder
from freeze_omni.llm.adapter import Adapter
from freeze_omni.llm.backbone import FrozenLLM, LLMState
from freeze_omni.llm.bridge import Bridge, Task, UserState

IGNORE_INDEX = -100
EMBEDS_PER_CHUNK = 2  # 160 ms chunk -> 2 LLM embeddings (12.5 Hz)


def whole_chunks(feats: np.ndarray, chunk_frames: int) -> np.ndarray:
    """Whole-utterance features ``[T, 80]`` padded (last frame repeated) to a whole number of chunks, at least one:
    how training and the whole-utterance readers feed the streaming encoder."""
    n_chunks = max(1, -(-feats.shape[0] // chunk_frames))
    return np.pad(feats, ((0, n_chunks * chunk_frames - feats.shape[0]), (0, 0)), mode="edge")


@dataclass
class BridgeConfig:
    """Shapes of the trainable pieces between the encoder and the frozen LLM."""

    adapter_kernel: int = 5
    adapter_stride: Optional[int] = None  # default: encoder frames per 80 ms (2 upstream, 4 Whisper)
    upstream_left_pad: bool = False
    prompt_num: int = 25
    task_num: int = 20
    transcribe_tokens: int = 4  # task embeddings before the audio in stage 2
    n_states: int = 3


@dataclass
class Segment:
    """One piece of a training sequence: token ids or embeddings, with what to learn there.

    ``targets``: learn to produce these ids (the LLM predicts each from the position before it).
    ``states``: per chunk of an audio segment, the state label at the chunk's last position (-100 = none).
    """

    ids: Optional[list[int]] = None
    embeds: Optional[torch.Tensor] = None  # [T, H]
    targets: bool = False
    states: Optional[list[int]] = None


class SpeechLLM(nn.Module):
    def __init__(self, encoder: SpeechEncoder, llm: FrozenLLM, cfg: BridgeConfig = BridgeConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        stride = cfg.adapter_stride or encoder.cfg.chunk_size // EMBEDS_PER_CHUNK
        if encoder.cfg.chunk_size % stride or encoder.cfg.chunk_size // stride != EMBEDS_PER_CHUNK:
            raise ValueError(f"adapter stride {stride} does not give {EMBEDS_PER_CHUNK} embeddings per chunk of "
                             f"{encoder.cfg.chunk_size} encoder frames")
        self.adapter = Adapter(encoder.output_dim, llm.hidden_size, stride, cfg.adapter_kernel,
                               upstream_left_pad=cfg.upstream_left_pad)
        self.bridge = Bridge(llm.hidden_size, cfg.prompt_num, cfg.task_num, cfg.n_states)
        self.llm = llm  # frozen (FrozenLLM keeps requires_grad False and eval mode)

    # -- pieces -----------------------------------------------------------------------------------------------------
    def embed_ids(self, ids: Sequence[int]) -> torch.Tensor:
        """``[T, H]`` LLM input embeddings of ``ids``."""
        return self.llm.embed(torch.tensor([list(ids)], device=self.llm.device))[0]

    def audio_embeds(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole utterances under the streaming chunk mask: ``[B, T, 80]`` -> ``([B, A, H], A lengths)``."""
        ec = self.encoder.cfg
        enc, enc_len = self.encoder(feats, lengths, ec.chunk_size, ec.left_chunks)
        return self.adapter(enc, enc_len)

    def system_segment(self, system: str) -> Segment:
        return Segment(ids=self.llm.system_ids(system))

    def user_segments(self, audio: torch.Tensor, states: Optional[list[int]], task: Optional[Task] = None,
                      after_answer: bool = False) -> list[Segment]:
        """``[user_prefix] [prompt or task embeddings] [audio]`` of one user turn.

        ``after_answer``: the previous segment was an answer, whose end-of-turn token is already in the sequence
        (as the answer's last target), so the user prefix's own leading end-of-turn is not repeated; the live
        path feeds it exactly once too (sampled, not fed; then supplied by the next user prefix).
        """
        lead = (self.bridge.task(task, self.cfg.transcribe_tokens)[0] if task is not None
                else self.bridge.prompt()[0])
        prefix = self.llm.framing_ids(self.llm.framing.user_prefix)
        if after_answer:
            if prefix[:1] != [self.llm.eot_id]:
                raise ValueError("this chat framing's user prefix does not start with the end-of-turn token")
            prefix = prefix[1:]
        return [Segment(ids=prefix), Segment(embeds=lead), Segment(embeds=audio, states=states)]

    def answer_segments(self, answer_ids: list[int]) -> list[Segment]:
        """``[assistant_prefix] [answer + eot]`` with the answer (and its end of turn) as targets."""
        return [Segment(ids=self.llm.framing_ids(self.llm.framing.assistant_prefix)),
                Segment(ids=list(answer_ids) + [self.llm.eot_id], targets=True)]

    # -- training ---------------------------------------------------------------------------------------------------
    def loss(self, sequences: list[list[Segment]], state_weight: float = 1.0) -> dict[str, torch.Tensor]:
        """LLM CE on target segments + state CE at chunk ends, over a batch of segment lists."""
        embeds, labels, state_pos, state_lab = [], [], [], []
        for b, segs in enumerate(sequences):
            e, lab, pos = [], [], 0
            for s in segs:
                x = self.embed_ids(s.ids) if s.ids is not None else s.embeds
                e.append(x)
                if s.targets and s.ids is not None:
                    lab += list(s.ids)
                else:
                    lab += [IGNORE_INDEX] * x.shape[0]
                if s.states is not None:
                    for c, st in enumerate(s.states):
                        last = pos + min((c + 1) * EMBEDS_PER_CHUNK, x.shape[0]) - 1
                        if st != IGNORE_INDEX:
                            state_pos.append((b, last))
                            state_lab.append(st)
                pos += x.shape[0]
            embeds.append(torch.cat(e))
            labels.append(torch.tensor(lab))
        lengths = torch.tensor([x.shape[0] for x in embeds])
        x = nn.utils.rnn.pad_sequence(embeds, batch_first=True)
        y = nn.utils.rnn.pad_sequence(labels, batch_first=True, padding_value=IGNORE_INDEX).to(x.device)
        mask = (torch.arange(x.shape[1])[None] < lengths[:, None]).long().to(x.device)
        hidden, logits, _ = self.llm.forward_embeds(x, None, attention_mask=mask, logits_for="all")
        out: dict[str, torch.Tensor] = {}
        total = x.new_zeros(())
        if (y != IGNORE_INDEX).any():
            ce = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), y[:, 1:].flatten(), ignore_index=IGNORE_INDEX)
            out["ce"] = ce
            total = total + ce
            with torch.no_grad():
                pred = logits[:, :-1].argmax(-1)
                m = y[:, 1:] != IGNORE_INDEX
                out["token_acc"] = (pred[m] == y[:, 1:][m]).float().mean()
        if state_pos:
            idx_b = torch.tensor([p[0] for p in state_pos], device=x.device)
            idx_t = torch.tensor([p[1] for p in state_pos], device=x.device)
            st_logits = self.bridge.predictor_head(hidden[idx_b, idx_t])
            st = torch.tensor(state_lab, device=x.device)
            sce = F.cross_entropy(st_logits.float(), st)
            out["state_ce"] = sce
            with torch.no_grad():
                out["state_acc"] = (st_logits[:, :3].argmax(-1) == st).float().mean()
            total = total + state_weight * sce
        out["loss"] = total
        return out


@dataclass
class ListenSession:
    """One user's listening state: front end, pending features, encoder/adapter caches, LLM KV cache."""

    frontend: StreamingFrontend
    enc: EncoderCache
    adapter: torch.Tensor
    llm: LLMState
    turn_start: int = 0  # LLM cache length before this user turn (rollback point)
    chunks: int = 0  # chunks of this turn fed so far
    pending: np.ndarray = field(default_factory=lambda: np.zeros((0, 80), dtype=np.float32))


class Listener:
    """Chunk-by-chunk listening with the state head (the live path; nothing is re-encoded at end of turn)."""

    def __init__(self, model: SpeechLLM, system: str) -> None:
        self.model = model.eval()
        self.system = system
        self.timings: Optional[list[dict[str, float]]] = None  # set to [] to record per-chunk stage times

    @torch.inference_mode()
    def new_session(self) -> ListenSession:
        m = self.model
        llm_state = m.llm.new_state()
        _, _, llm_state = m.llm.forward_embeds(m.embed_ids(m.llm.system_ids(self.system))[None],
                                               llm_state, logits_for="none")
        return self._fresh_turn(llm_state)

    def _fresh_turn(self, llm_state: LLMState) -> ListenSession:
        m = self.model
        return ListenSession(StreamingFrontend(m.encoder.cfg.frontend), m.encoder.init_cache(),
                             m.adapter.init_cache(), llm_state, turn_start=llm_state.length)

    def next_turn(self, session: ListenSession) -> ListenSession:
        """Fresh encoder/adapter/front-end state for the next user turn, keeping the LLM context."""
        return self._fresh_turn(session.llm)

    @torch.inference_mode()
    def accept(self, session: ListenSession, samples: np.ndarray) -> list[tuple[UserState, torch.Tensor]]:
        """Feed 16 kHz samples; returns ``(decision, probabilities [3])`` for every completed 160 ms chunk."""
        m = self.model
        feats = np.concatenate([session.pending, session.frontend.accept(samples)])
        step = m.encoder.cfg.chunk_frames
        out = []
        n = feats.shape[0] // step
        for i in range(n):
            out.append(self.feed_chunk(session, torch.from_numpy(feats[i * step:(i + 1) * step])[None]))
        session.pending = feats[n * step:]
        return out

    @torch.inference_mode()
    def feed_chunk(self, session: ListenSession, feats: torch.Tensor) -> tuple[UserState, torch.Tensor]:
        """One chunk of features ``[1, 16, 80]`` -> encoder -> adapter -> LLM cache; the state head's verdict."""
        m = self.model
        t0 = time.perf_counter()
        enc, session.enc = m.encoder.forward_chunk(feats, session.enc)
        t1 = time.perf_counter()
        emb, session.adapter = m.adapter.forward_chunk(enc, session.adapter)
        if session.chunks == 0:  # first chunk of a turn: user prefix and prompt embeddings go first
            lead = torch.cat([m.embed_ids(m.llm.framing_ids(m.llm.framing.user_prefix)), m.bridge.prompt()[0]])
            emb = torch.cat([lead[None], emb], dim=1)
        t2 = time.perf_counter()
        hidden, _, session.llm = m.llm.forward_embeds(emb, session.llm, logits_for="none")
        session.chunks += 1
        last = hidden[0, -1]
        verdict = m.bridge.predictor_head.decide(last), m.bridge.predictor_head.probs(last)
        if self.timings is not None:
            self.timings.append({"encoder": t1 - t0, "adapter": t2 - t1, "llm": time.perf_counter() - t2,
                                 "first": float(session.chunks == 1)})
        return verdict

    def rollback(self, session: ListenSession) -> ListenSession:
        """Discard this turn's audio from the LLM context (after IGNORE)."""
        session.llm.crop(session.turn_start)
        return self._fresh_turn(session.llm)

    @torch.inference_mode()
    def respond(self, session: ListenSession, sampling, generator=None, on_token=None):
        """Feed the assistant prefix and generate the answer: ``(ids, hiddens [N, H], text)``."""
        m = self.model
        first = m.embed_ids(m.llm.framing_ids(m.llm.framing.assistant_prefix))[None]
        ids, hiddens, session.llm = m.llm.generate(session.llm, first, sampling, generator=generator,
                                                   on_token=on_token)
        return ids, hiddens, m.llm.tokenizer.decode(ids, skip_special_tokens=True).strip()
