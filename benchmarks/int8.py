"""What the LLM's int8 serving option costs and changes: the product kernels, the steps, the answers.

    python benchmarks/int8.py --model models/tiny-en --threads 2

Three ways to run the frozen LLM's inference steps: float32, weight-only int8 (``_weight_int8pack_mm``) and dynamic
int8 (fbgemm, inputs quantized on the fly, smoothed; the default of ``quantize_int8``). One JSON line with
- ``matmul_us``: one product of SmolLM2's stacked gate/up shape at 1..32 rows per kernel;
- ``step_ms``: one session's 160 ms listening step (2 inputs, ~270 positions cached) and one pass of
  ``--sessions`` sessions x 2 inputs (a server round);
- ``answers``: the float32 LLM's greedy answers to ``QUESTIONS`` (``--tokens`` each) teacher-forced through each
  variant: nats per token, how often its argmax is float32's token, and how many greedy answers stay identical.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUESTIONS = ["What is the capital of France?", "How many legs does a spider have?", "Who wrote Hamlet?",
             "What is two plus three?", "Tell me a joke.", "What color is the sky?", "Why do cats purr?",
             "What is the largest ocean?", "How do I bake bread?", "What is the boiling point of water?",
             "Can you name three fruits?", "What does a bee make?"]


def mean_us(fn, reps: int = 100) -> float:
    for _ in range(5):
        fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return round(1e6 * (time.perf_counter() - t) / reps, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/tiny-en")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=40)
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    from freeze_omni.llm.loader import load_speech_llm
    from freeze_omni.ragged import Int8Linear

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    model, system = load_speech_llm(args.model)
    g = torch.Generator().manual_seed(0)

    mlp = model.llm.lm.get_decoder().layers[0].mlp
    matmul = {}
    for name, q8 in (("float32", None), ("weight_only", Int8Linear(mlp.gate_proj, mlp.up_proj, dynamic=False)),
                     ("dynamic", Int8Linear(mlp.gate_proj, mlp.up_proj, dynamic=True))):
        w = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).detach()
        row = {}
        for n in (1, 2, 8, 16, 32):
            x = torch.randn(n, w.shape[1], generator=g)
            row[n] = mean_us((lambda: F.linear(x, w)) if q8 is None else (lambda: q8(x)))
        matmul[name] = row

    def greedy(llm, q: str) -> list[int]:
        state, toks = llm.new_state(), []
        _, logits, _ = llm.forward_embeds(llm.embed(torch.tensor([llm.text_prompt_ids(system, q)])), state,
                                          logits_for="last")
        for _ in range(args.tokens):
            t = int(logits[0, -1].argmax())
            if t in llm.stop_ids:
                break
            toks.append(t)
            logits = llm.step(state, [t])[1][:, None]
        return toks

    def forced(llm, q: str, answer: list[int]) -> tuple[float, int]:
        """Summed NLL of ``answer`` and the number of its tokens that are the argmax (16 inputs per step)."""
        prompt = llm.text_prompt_ids(system, q)
        ids, state, out = prompt + answer, llm.new_state(), []
        for i in range(0, len(ids), 16):
            out.append(llm.forward_embeds(llm.embed(torch.tensor([ids[i:i + 16]])), state, logits_for="all")[1][0])
        logits, target = torch.cat(out)[len(prompt) - 1:-1], torch.tensor(answer)
        return F.cross_entropy(logits, target, reduction="sum").item(), int((logits.argmax(-1) == target).sum())

    def steps(llm) -> dict:
        states = [llm.forward_embeds(torch.randn(1, 270 - 5 * b, llm.hidden_size, generator=g), llm.new_state(),
                                     logits_for="none")[2] for b in range(args.sessions)]
        xs = [torch.randn(2, llm.hidden_size, generator=g) for _ in states]

        def timed(fn, touched) -> float:
            best = float("inf")
            for _ in range(7):
                t = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t)
                for s in touched:
                    s.crop(s.length - 2)
            return round(1000 * best, 1)

        return {"one_session": timed(lambda: llm.forward_embeds(xs[0][None], states[0], logits_for="none"),
                                     states[:1]),
                f"{args.sessions}_sessions": timed(lambda: llm.forward_ragged(xs, states), states)}

    results, reference = {}, None
    with torch.inference_mode():
        for name in ("float32", "weight_only", "dynamic"):
            llm = load_speech_llm(args.model)[0].llm
            if name != "float32":
                llm.quantize_int8(dynamic=name == "dynamic")
            answers = [greedy(llm, q) for q in QUESTIONS]
            if reference is None:
                reference = answers
            nll = hits = count = 0
            for q, ref in zip(QUESTIONS, reference):
                a, b = forced(llm, q, ref)
                nll, hits, count = nll + a, hits + b, count + len(ref)
            results[name] = {"step_ms": steps(llm), "nats_per_token": round(nll / count, 4),
                             "argmax_is_float32": round(hits / count, 4),
                             "greedy_identical": sum(a == b for a, b in zip(answers, reference))}
    print(json.dumps({"threads": args.threads, "matmul_us": matmul, "questions": len(QUESTIONS),
                      "tokens": args.tokens, "variants": results}))


if __name__ == "__main__":
    main()
