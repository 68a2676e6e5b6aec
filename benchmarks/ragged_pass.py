"""One LLM pass for many sessions (`FrozenLLM.forward_ragged`) against one pass per session, and one session's
step against the transformers forward it replaces.

    python benchmarks/ragged_pass.py --model models/tiny-en --threads 2 --sessions 8

Sessions hold caches of different lengths (about ``--context`` positions each); each feeds ``T`` new inputs (2: a
160 ms listening chunk; 1: an answer token). One JSON line: ms per round, ragged vs one by one, per context and T,
and ms for the first session alone through our lean step (``ragged_layers``) and through transformers' forward.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/tiny-en")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--context", type=int, nargs="+", default=[100, 400, 1000])
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()

    import torch

    from freeze_omni.llm.loader import load_speech_llm

    torch.set_num_threads(args.threads)
    llm = load_speech_llm(args.model)[0].llm
    g = torch.Generator().manual_seed(0)
    rows = []
    with torch.inference_mode():
        for L in args.context:
            states = [llm.forward_embeds(torch.randn(1, max(1, L - 10 * b), llm.hidden_size, generator=g),
                                         llm.new_state(), logits_for="none")[2] for b in range(args.sessions)]
            for T in (2, 1):
                xs = [torch.randn(T, llm.hidden_size, generator=g) for _ in states]

                def timed(fn, touched=states) -> float:
                    best = float("inf")
                    for _ in range(args.reps):
                        t = time.perf_counter()
                        fn()
                        best = min(best, time.perf_counter() - t)
                        for s in touched:
                            s.crop(s.length - T)
                    return round(1000 * best, 1)

                def transformers_step(state):
                    llm.lm.get_decoder()(inputs_embeds=x0, cache=state.cache, use_cache=True,
                                         position_ids=torch.arange(state.length, state.length + T)[None])
                    state.length += T

                ragged = timed(lambda: llm.forward_ragged(xs, states))
                alone = timed(lambda: [llm.forward_embeds(x[None], s, logits_for="none") for x, s in zip(xs, states)])
                first, x0 = states[0], xs[0][None]
                lean = timed(lambda: llm.forward_embeds(x0, first, logits_for="none"), [first])
                hf = timed(lambda: transformers_step(first), [first])
                rows.append({"context": L, "inputs": T, "ragged_ms": ragged, "one_by_one_ms": alone,
                             "speedup": round(alone / ragged, 2), "one_session_ms": lean,
                             "one_session_transformers_ms": hf})
    print(json.dumps({"sessions": args.sessions, "threads": args.threads, "rows": rows}))


if __name__ == "__main__":
    main()
