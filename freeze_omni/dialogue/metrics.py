"""Counters, gauges and histograms of the dialogue engine, rendered in the Prometheus text format.

Thread-safe (workers record, the server renders). No dependency on ``prometheus_client``: the exposition format
is a few lines of text (``# HELP``, ``# TYPE``, ``name{labels} value``).
"""

from __future__ import annotations

import bisect
import threading
from typing import Callable, Optional

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.16, 0.25, 0.5, 1.0, 2.5, 5.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1


class Metrics:
    """The engine's measurements. ``counter``/``observe`` record; :meth:`render` writes the exposition text."""

    PREFIX = "freeze_omni_"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, tuple], float] = {}
        self._hist: dict[str, Histogram] = {}
        self._gauges: dict[str, Callable[[], float]] = {}
        self._help: dict[str, tuple[str, str]] = {}
        for name, text in [("listen_chunks_total", "160 ms chunks fed to the LLM"),
                           ("listen_audio_seconds_total", "audio seconds encoded while listening"),
                           ("listen_compute_seconds_total", "compute seconds spent encoding and feeding chunks"),
                           ("answer_audio_seconds_total", "answer audio seconds produced"),
                           ("answer_compute_seconds_total", "compute seconds spent producing answers"),
                           ("responses_total", "answers by final status"),
                           ("turns_total", "user turns by decision"),
                           ("sessions_total", "sessions opened"),
                           ("errors_total", "errors by code"),
                           ("batches_total", "listening rounds"),
                           ("batched_chunks_total", "chunks encoded in listening rounds"),
                           ("llm_passes_total", "LLM passes (each serves several sessions)"),
                           ("llm_rows_total", "session rows in LLM passes (chunks and answer tokens)"),
                           ("decoder_rounds_total", "speech units stepped together (one decoder pass per token)"),
                           ("decoder_rows_total", "sessions in those speech units")]:
            self._help[name] = ("counter", text)
        self._help["chunk_latency_seconds"] = ("histogram", "from a chunk's last sample in to its state-head verdict")
        self._help["first_audio_seconds"] = ("histogram", "from the end-of-turn decision to the answer's first audio")

    def counter(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._counters[key] = self._counters.get(key, 0.0) + value

    def observe(self, name: str, value: float) -> None:
        with self._lock:
            if name not in self._hist:
                self._hist[name] = Histogram(LATENCY_BUCKETS)
            self._hist[name].observe(value)

    def gauge(self, name: str, fn: Callable[[], float], help_text: str = "") -> None:
        """Register a gauge read at render time."""
        with self._lock:
            self._gauges[name] = fn
            self._help[name] = ("gauge", help_text)

    def value(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._counters.get((name, tuple(sorted(labels.items()))), 0.0)

    def histogram(self, name: str) -> Optional[Histogram]:
        return self._hist.get(name)

    def rtf(self, kind: str) -> Optional[float]:
        """Real-time factor of ``listen`` or ``answer``: compute seconds per audio second (None before any)."""
        audio = self.value(f"{kind}_audio_seconds_total")
        return self.value(f"{kind}_compute_seconds_total") / audio if audio > 0 else None

    def render(self) -> str:
        """The Prometheus text exposition (version 0.0.4)."""
        p = self.PREFIX
        lines: list[str] = []
        with self._lock:
            counters = dict(self._counters)
            hists = {k: (h.buckets, list(h.counts), h.sum, h.count) for k, h in self._hist.items()}
            gauges = dict(self._gauges)
        done: set[str] = set()
        for (name, labels), v in sorted(counters.items()):
            if name not in done:
                lines += self._header(p + name, name)
                done.add(name)
            lab = ",".join(f'{k}="{_escape(val)}"' for k, val in labels)
            lines.append(f"{p}{name}{{{lab}}} {v:g}" if lab else f"{p}{name} {v:g}")
        for name, fn in sorted(gauges.items()):
            lines += self._header(p + name, name)
            try:
                lines.append(f"{p}{name} {float(fn()):g}")
            except Exception:  # a gauge must never break the page
                lines.append(f"{p}{name} NaN")
        for kind in ("listen", "answer"):
            r = self.rtf(kind)
            lines += [f"# HELP {p}{kind}_rtf compute seconds per audio second ({kind})", f"# TYPE {p}{kind}_rtf gauge",
                      f"{p}{kind}_rtf {r if r is not None else float('nan'):g}"]
        for name, (buckets, counts, total, n) in sorted(hists.items()):
            lines += self._header(p + name, name)
            acc = 0
            for b, c in zip(buckets, counts):
                acc += c
                lines.append(f'{p}{name}_bucket{{le="{b:g}"}} {acc}')
            lines.append(f'{p}{name}_bucket{{le="+Inf"}} {n}')
            lines += [f"{p}{name}_sum {total:g}", f"{p}{name}_count {n}"]
        return "\n".join(lines) + "\n"

    def _header(self, full: str, name: str) -> list[str]:
        kind, text = self._help.get(name, ("untyped", ""))
        return [f"# HELP {full} {text}", f"# TYPE {full} {kind}"]


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
