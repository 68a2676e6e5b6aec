"""Where a speech decoder's errors come from: teacher-forced resynthesis.

For held-out utterances, the decoder reads the text and the *true* codec tokens of the audio (teacher forcing,
one pass) and at every position draws its next token as generation would (top-k, seeded); the codec decodes those
tokens and the independent recogniser reads them. Each drawn token has the true history, so no error compounds:

* if the teacher-forced speech is intelligible while free generation is not, the errors come from running on the
  decoder's own mistakes (exposure bias, drift);
* if it is not intelligible either, each single prediction is already wrong in a way the listener hears: the
  decoder cannot tell from the text what the next token must be (underfitting, or tokens the text hardly
  predicts).

Prints one JSON line: CER/WER of the audio, of its codec resynthesis, of teacher-forced draws (top-k 1 and the
bundle's), and the teacher-forced token accuracy.

    python benchmarks/decoder_diagnosis.py --model exp/tiny-en/decoder/bundle \
        --manifest data/tiny-en/assistant_heldout/manifest.jsonl --limit 20
"""

from __future__ import annotations

import argparse
import json

import torch


def main() -> None:
    from freeze_omni.audio.io import load_audio
    from freeze_omni.bundle import Bundle
    from freeze_omni.codec.model import Codec
    from freeze_omni.data.manifest import read_manifest
    from freeze_omni.data.text import normalize_text
    from freeze_omni.decoder.generator import SpeechGenerator, sample_top_k
    from freeze_omni.decoder.model import SpeechDecoder
    from freeze_omni.decoder.segmenter import normalize_tts
    from freeze_omni.eval.asr import error_rates
    from freeze_omni.eval.recognizer import Transcriber
    from freeze_omni.llm.backbone import FrozenLLM
    from freeze_omni.llm.loader import llm_settings

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="bundle with a speech decoder and a codec")
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    bundle = Bundle(args.model)
    decoder, codec = SpeechDecoder.from_bundle(bundle), Codec.from_bundle(bundle).eval()
    llm = FrozenLLM.load(llm_settings(bundle)[0]) if decoder.cfg.text_input == "llm" else None
    gen = SpeechGenerator(decoder, llm)
    asr = Transcriber(threads=args.threads)
    rows = [r for r in read_manifest(args.manifest)[: args.limit] if r.get("text")]
    refs: list[str] = []
    hyps: dict[str, list[str]] = {"audio": [], "resynth": [], "tf_top1": [], f"tf_top{args.top_k}": []}
    hit = total = 0
    rng = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for row in rows:
            wave = load_audio(row["audio"], codec.sample_rate)
            codes = codec.encode(torch.from_numpy(wave)[None])[0]  # [N]
            text = gen.text_inputs(normalize_tts(row["text"]))
            key = "text_ids" if decoder.cfg.text_input == "phonemes" else "text_embeds"
            batch = {key: text, "text_lens": torch.tensor([text.shape[1]]), "codes": codes[None].long(),
                     "code_lens": torch.tensor([len(codes)])}
            logits, _ = decoder.compute_logits(batch)
            logits = logits[0, : len(codes)].float()  # rows predicting c1..cN
            logits[:, decoder.cfg.codebook_size:] = float("-inf")  # codes only
            hit += int((logits.argmax(-1) == codes).sum())
            total += len(codes)
            refs.append(normalize_text(row["text"]))
            for name, toks in (("audio", None), ("resynth", codes), ("tf_top1", logits.argmax(-1)),
                               (f"tf_top{args.top_k}", sample_top_k(logits, args.top_k, rng))):
                audio = wave if toks is None else codec.decode(toks[None].long())[0].numpy()
                hyps[name].append(normalize_text(asr.transcribe(audio, codec.sample_rate)))
    out: dict = {"n": len(rows), "tf_token_acc": round(hit / max(total, 1), 4)}
    for name, h in hyps.items():
        wer, cer = error_rates(refs, h)
        out[f"{name}_cer"], out[f"{name}_wer"] = round(cer, 2), round(wer, 2)
    out["examples"] = [{"text": r["text"], **{k: v[i] for k, v in hyps.items()}} for i, r in enumerate(rows[:5])]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
