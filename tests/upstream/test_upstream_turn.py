"""A spoken turn end to end on a converted upstream bundle, through the same code as our own bundles: listen
chunk by chunk (upstream state rule), answer, segment, normalise, speech decoder (prefix over the hidden states,
split mapping, top-k 2), TiCodec in upstream's streaming windows."""

import time

import numpy as np
import torch

from freeze_omni.bundle import Bundle
from freeze_omni.codec.streaming import StreamingCodecDecoder
from freeze_omni.codec.ticodec import TiCodec, load_codec
from freeze_omni.decoder.generator import SpeechGenerator
from freeze_omni.decoder.model import SpeechDecoder
from freeze_omni.decoder.segmenter import segment_answer
from freeze_omni.llm.bridge import UserState
from freeze_omni.llm.loader import load_speech_llm
from freeze_omni.llm.model import Listener
from freeze_omni.settings import PipelineSettings


def test_spoken_turn_on_the_converted_bundle(converted):
    t0 = time.perf_counter()
    bundle = Bundle(converted[0])
    settings = PipelineSettings.from_bundle(bundle)
    model, system = load_speech_llm(bundle.path)
    assert model.bridge.predictor_head.proj.out_features == 4
    listener = Listener(model, system)
    session = listener.new_session()
    t = np.arange(16000) / 16000
    wave = (0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    decision = None
    for s in range(0, len(wave), 2560):  # 160 ms packets, as a microphone delivers them
        for state, probs in listener.accept(session, wave[s:s + 2560]):
            assert probs.shape == (3,)  # softmax over the first 3 of the 4 logits
            decision = decision or (state if state != UserState.LISTEN else None)
        if decision is not None:
            break
    # the fake head's bias is [0, 5, 0, 9]: over the first 3 logits p1 > 0.5 (RESPOND); the 4th is dropped
    assert decision == UserState.RESPOND and session.chunks == 1

    sampling = settings.sampling_config(max_new_tokens=12)
    ids, hiddens, text = listener.respond(session, sampling, generator=torch.Generator().manual_seed(0))
    assert len(ids) > 0 and hiddens.shape == (len(ids), 128)

    decoder, codec = SpeechDecoder.from_bundle(bundle), load_codec(bundle)
    assert isinstance(codec, TiCodec) and decoder.cfg.split_factor == 4
    gen = SpeechGenerator(decoder, model.llm, settings.generation_config(max_tokens=45, min_tokens=45), seed=0)
    stream = StreamingCodecDecoder(codec, settings.streaming_config())
    pieces, n_tokens, spoken = [], 0, []
    for seg in segment_answer(ids, model.llm.decode, hiddens, settings.segmenter_config()):
        tts = settings.normalize(seg.text)
        if not tts:
            continue
        spoken.append(tts)
        assert tts[-1] in "。？！.?!"
        for tok in gen.iter_tokens(tts, seg.hidden):
            assert 0 <= tok < 1024
            n_tokens += 1
            pieces.append(stream.push([tok]))
        pieces.append(stream.flush())
    audio = np.concatenate(pieces)
    assert spoken and n_tokens > 0
    assert audio.shape == (n_tokens * 600,) and np.isfinite(audio).all() and np.abs(audio).max() <= 1
    assert time.perf_counter() - t0 < 60
