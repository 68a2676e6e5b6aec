"""Why the server's model worker is the main thread: torch ops on the main thread vs in another thread.

    python benchmarks/thread_overhead.py --threads 2                       # small ops only (seconds)
    python benchmarks/thread_overhead.py --threads 2 --model models/tiny-en  # + one LLM step per listening chunk

Times the same ops (an element-wise add of 512x512, a [2, 576] x [576, 1536] linear, a 512x512 matmul, and with
``--model`` the frozen LLM fed one 160 ms chunk, 2 positions) on the main thread and in a ``threading.Thread``,
with ``--threads`` intra-op threads. One JSON line: microseconds per op (ms for the LLM step), and the ratio
thread / main. On the 2-core CI machine every multi-threaded op costs 70-120 us more off the main thread, which
makes a whole LLM step ~2x slower; with one intra-op thread the two are equal.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _time(fn, n: int) -> float:
    for _ in range(max(3, n // 10)):
        fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--model", default=None, help="also time an LLM step of this bundle's frozen LLM")
    ap.add_argument("--n", type=int, default=300, help="repetitions of each small op")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    big, a, w = torch.randn(512, 512), torch.randn(2, 576), torch.randn(1536, 576)
    ops = {"add_512x512_us": (lambda: big + big, args.n, 1e6),
           "linear_2x576x1536_us": (lambda: torch.nn.functional.linear(a, w), args.n, 1e6),
           "matmul_512_us": (lambda: big @ big, args.n // 3, 1e6)}
    if args.model:
        from freeze_omni.llm.loader import load_speech_llm

        model, system = load_speech_llm(args.model)
        llm = model.llm
        state = llm.forward_embeds(llm.embed(torch.tensor([llm.system_ids(system)])), llm.new_state(),
                                   logits_for="none")[2]
        x = torch.randn(1, 2, llm.hidden_size)

        def chunk() -> None:
            llm.forward_embeds(x, state, logits_for="none")
            state.crop(state.length - 2)

        ops["llm_chunk_ms"] = (chunk, 30, 1e3)
    out: dict = {"threads": args.threads}

    def run(where: str) -> None:
        with torch.inference_mode():
            for name, (fn, n, scale) in ops.items():
                out.setdefault(name, {})[where] = round(scale * _time(fn, n), 1)

    run("main")
    t = threading.Thread(target=run, args=("thread",))
    t.start()
    t.join()
    for name in ops:
        out[name]["thread_over_main"] = round(out[name]["thread"] / out[name]["main"], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
