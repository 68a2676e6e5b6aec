"""The bridge: adapter, state head, training sequences == live listening, frozen backbone, Qwen2 shapes."""

import numpy as np
import pytest
import torch

from freeze_omni.encoder.encoder import EncoderConfig, SpeechEncoder
from freeze_omni.llm.adapter import Adapter
from freeze_omni.llm.bridge import StateHead, Task, UserState
from freeze_omni.llm.model import BridgeConfig, Listener, Segment, SpeechLLM
from freeze_omni.llm.sampling import SamplingConfig
from freeze_omni.llm.testing import tiny_llm


def _model(arch: str = "llama", family: str = "whisper") -> SpeechLLM:
    torch.manual_seed(0)
    chunk = 8 if family == "whisper" else 4
    enc = SpeechEncoder(EncoderConfig(family=family, d_model=32, n_heads=2, d_ff=64, n_layers=1, chunk_size=chunk,
                                      left_chunks=4, dropout=0.0))
    return SpeechLLM(enc, tiny_llm(arch), BridgeConfig(prompt_num=3)).eval()


@pytest.mark.parametrize("upstream", [False, True])
@pytest.mark.parametrize("stride", [2, 4])
def test_adapter_streaming_equals_whole(upstream, stride):
    a = Adapter(16, 24, stride=stride, upstream_left_pad=upstream).eval()
    x = torch.randn(2, 32, 16)
    whole, _ = a(x)
    cache, outs = a.init_cache(2), []
    for s in range(0, 32, 8):
        y, cache = a.forward_chunk(x[:, s:s + 8], cache)
        outs.append(y)
    assert whole.shape == (2, 32 // stride, 24)
    torch.testing.assert_close(torch.cat(outs, 1), whole)


def test_adapter_gives_two_embeddings_per_chunk_for_both_families():
    for family, stride in (("whisper", 4), ("upstream", 2)):
        m = _model(family=family)
        assert m.adapter.stride == stride


def test_state_head_rule():
    head = StateHead(4, 4)
    with torch.no_grad():
        head.proj.weight.zero_()
        head.proj.bias.copy_(torch.tensor([0.0, 0.0, 5.0, 9.0]))  # 4th logit is dropped
        assert head.decide(torch.zeros(4)) == UserState.IGNORE
        head.proj.bias.copy_(torch.tensor([0.0, 5.0, 5.0, 0.0]))
        assert head.decide(torch.zeros(4)) == UserState.LISTEN  # neither p1 nor p2 above 0.5
        head.proj.bias.copy_(torch.tensor([0.0, 5.0, 0.0, 0.0]))
        assert head.decide(torch.zeros(4)) == UserState.RESPOND


def _wave(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_live_listening_equals_training_sequence(arch):
    """State probabilities read chunk by chunk from the KV cache equal those of the training pass."""
    m = _model(arch)
    with torch.no_grad():
        m.bridge.predictor_head.proj.weight.normal_(0, 1.0)
    listener = Listener(m, "be brief")
    session = listener.new_session()
    wave = _wave(0.96)  # 6 chunks
    live = [p for s in range(0, len(wave), 2560) for _, p in listener.accept(session, wave[s:s + 2560])]
    assert len(live) == 6
    from freeze_omni.audio.features import extract

    feats = torch.from_numpy(extract(wave, "whisper"))[None]
    with torch.no_grad():
        audio, _ = m.audio_embeds(feats, torch.tensor([feats.shape[1]]))
        segs = [m.system_segment("be brief")] + m.user_segments(audio[0], states=None)
        emb = torch.cat([m.embed_ids(s.ids) if s.ids is not None else s.embeds for s in segs])[None]
        hidden, _, _ = m.llm.forward_embeds(emb, None, logits_for="none")
        ends = [emb.shape[1] - audio.shape[1] + 2 * c + 1 for c in range(6)]
        offline = m.bridge.predictor_head.probs(hidden[0, ends])
    torch.testing.assert_close(torch.stack(live), offline, atol=1e-5, rtol=1e-4)


def test_loss_trains_bridge_not_llm():
    m = _model()
    fp = m.llm.fingerprint()
    m.train()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    feats = torch.randn(2, 64, 80)
    answer = m.llm.tokenize("ok")
    first = None
    for _ in range(5):
        audio, lens = m.audio_embeds(feats, torch.tensor([64, 48]))
        seqs = []
        for b in range(2):
            segs = [m.system_segment("sys")]
            segs += m.user_segments(audio[b, : lens[b]], states=[0] * (int(lens[b]) // 2 - 1) + [1])
            segs += m.answer_segments(answer)
            seqs.append(segs)
        seqs.append([m.system_segment("sys")] + m.user_segments(audio[0, :4], states=[0, 2], task=None))
        out = m.loss(seqs)
        assert {"ce", "state_ce", "loss", "token_acc", "state_acc"} <= set(out)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first if first is not None else out["loss"].item()
    assert out["loss"].item() < first
    assert m.llm.fingerprint() == fp  # the backbone never changes
    assert not any(n.startswith("llm") for n, _ in m.named_parameters())  # never optimised, never saved
    assert m.bridge.prompt_embeddings.weight.grad is not None


def test_transcribe_task_segment_and_generation():
    m = _model()
    segs = m.user_segments(torch.zeros(4, m.llm.hidden_size), None, task=Task.TRANSCRIBE)
    assert segs[1].embeds.shape[0] == m.cfg.transcribe_tokens
    listener = Listener(m, "sys")
    session = listener.new_session()
    listener.accept(session, _wave(0.32))
    ids, hiddens, text = listener.respond(session, SamplingConfig(greedy=True, max_new_tokens=5))
    assert len(ids) <= 5 and hiddens.shape == (len(ids), m.llm.hidden_size)
    before = session.llm.length
    listener2 = Listener(m, "sys")
    s2 = listener2.new_session()
    start = s2.llm.length
    listener2.accept(s2, _wave(0.32))
    s2 = listener2.rollback(s2)
    assert s2.llm.length == start and before > start


def test_multi_turn_sequence_has_one_end_of_turn_between_rounds():
    """Training feeds what the live path feeds: answer, one end-of-turn, next user prefix."""
    m = _model()
    f, eot = m.llm.framing, m.llm.eot_id
    audio = torch.zeros(4, m.llm.hidden_size)
    a1, a2 = m.llm.tokenize("four"), m.llm.tokenize("yes")
    segs = [m.system_segment("sys")] + m.user_segments(audio, None) + m.answer_segments(a1)
    segs += m.user_segments(audio, None, after_answer=True) + m.answer_segments(a2)
    ids = [i for s in segs if s.ids is not None for i in s.ids]
    text_ids = m.llm.text_prompt_ids("sys", "q2", history=[("q1", "four")]) + a2 + [eot]
    drop_q = lambda xs: [i for i in xs if i not in m.llm.tokenize("q1") + m.llm.tokenize("q2")]  # noqa: E731
    assert ids == drop_q(text_ids)
    assert ids.count(eot) == text_ids.count(eot)
