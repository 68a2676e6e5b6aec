"""The scheduler: N worker threads share every session's ready work; no user is pinned to a worker.

A session is *ready* when it has something to do (new audio, a command, a chunk to encode, an answer step).
Ready sessions wait in one FIFO queue; an idle worker takes up to ``max_batch`` of them at once (1 with batching
off), marks them busy and hands them to the engine's ``process(batch)``, which does one bounded round of work
for each (at most one 160 ms chunk of listening, batched across the sessions, and one answer step). Afterwards
each session goes back to the queue if it has more to do, to a timer heap if its answer is paced (audio far
enough ahead of playback), or rests until its transport queues something (:meth:`Scheduler.notify`). A round with
room also takes paced sessions whose timer is due within ``coalesce_s``: their answers are ahead anyway, and one
LLM pass serves them all.

Invariants: a session is in the queue at most once and is processed by at most one worker at a time (work that
arrives while it is busy sets ``dirty`` and requeues it on release); a closed session is never processed again
and its caches are released as soon as no worker holds it. Worker threads are created once, at :meth:`start`.
Model weights are shared by all workers (read-only, ``inference_mode``); only the per-session caches differ.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Optional

log = logging.getLogger(__name__)

ProcessFn = Callable[[list[Any]], dict[Any, tuple[bool, Optional[float]]]]


class Scheduler:
    """Worker pool over ready sessions.

    Args:
        process: ``process(batch) -> {session: (more_work_now, wake_at or None)}`` (``wake_at`` in
            ``time.monotonic()`` seconds).
        release: called once with a closed session when no worker holds it any more.
        workers: worker threads.
        max_batch: sessions per round (1: no cross-session batching).
        coalesce_s: a round that has room also takes paced sessions whose timer is due within this many seconds
            (their answers are ahead of playback anyway), so more of them share its LLM pass.
        rider: ``rider(session) -> bool``: a paced session that can share any round's work (it is taken along
            whatever its timer; called under the scheduler's lock on sessions no worker holds).
    """

    def __init__(self, process: ProcessFn, release: Callable[[Any], None], workers: int = 1,
                 max_batch: int = 8, coalesce_s: float = 0.1, rider: Optional[Callable[[Any], bool]] = None
                 ) -> None:
        if workers < 1 or max_batch < 1:
            raise ValueError("need at least one worker and a batch of at least one")
        self.process, self.release = process, release
        self.n_workers, self.max_batch = workers, max_batch
        self.coalesce_s, self.rider = coalesce_s, rider
        self.hosted = False  # one of the workers is the thread that calls run()
        self._cond = threading.Condition()
        self._ready: deque = deque()
        self._timers: list = []
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._running = False
        self.busy_workers = 0
        self.rounds = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the worker threads (all ``workers``, or one fewer when :attr:`hosted`: :meth:`run` is that one)."""
        with self._cond:
            if self._running:
                return
            self._running = True
            self._cond.notify_all()
        self._threads = [threading.Thread(target=self._work, name=f"freeze-omni-worker-{i}", daemon=True)
                         for i in range(self.n_workers - (1 if self.hosted else 0))]
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._running = False
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout)
        self._threads = []

    @property
    def running(self) -> bool:
        return self._running

    @property
    def queued(self) -> int:
        return len(self._ready)

    # ------------------------------------------------------------------ sessions
    def notify(self, session: Any) -> None:
        """``session`` has new work (any thread)."""
        with self._cond:
            if session.closed:
                return
            if session.busy:
                session.dirty = True
            elif not session.queued:
                session.queued = True
                self._ready.append(session)
                self._cond.notify()

    def discard(self, session: Any) -> None:
        """Close ``session``: never processed again; released now or when its worker lets go."""
        with self._cond:
            if session.closed:
                return
            session.closed = True
            held = session.busy
        if not held:
            self.release(session)

    # ------------------------------------------------------------------ workers
    def run(self, until: Callable[[], bool]) -> None:
        """Be a worker on the calling thread (set :attr:`hosted` first) until ``until()``, across any number of
        :meth:`start` / :meth:`stop` cycles. On the main thread this is the fast worker: measured, torch's
        multi-threaded ops cost 70-120 us more each in any other thread (README, serving)."""
        while not until():
            batch = self._take(timeout=0.2)
            if batch is not None:
                self._round(batch)

    def _take(self, timeout: Optional[float] = None) -> Optional[list[Any]]:
        """A batch to process; None once stopped (with ``timeout``: also when nothing came in time)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._running or deadline is not None:
                now = time.monotonic()
                if not self._running:
                    if now >= deadline:
                        return None
                    self._cond.wait(deadline - now)
                    continue
                while self._timers and self._timers[0][0] <= now:
                    _, _, s = heapq.heappop(self._timers)
                    if not (s.closed or s.busy or s.queued):
                        s.queued = True
                        self._ready.append(s)
                batch = []
                while self._ready and len(batch) < self.max_batch:
                    s = self._ready.popleft()
                    s.queued = False
                    if not s.closed:
                        s.busy, s.dirty = True, False
                        batch.append(s)
                if batch and len(batch) < self.max_batch and self._timers:
                    self._ride_along(batch, now)
                if batch:
                    self.busy_workers += 1
                    return batch
                wait = self._timers[0][0] - now if self._timers else None
                if deadline is not None:
                    if now >= deadline:
                        return None
                    wait = deadline - now if wait is None else min(wait, deadline - now)
                self._cond.wait(wait)
        return None

    def _ride_along(self, batch: list[Any], now: float) -> None:
        """Fill a round with paced sessions that are due within ``coalesce_s`` or that ``rider`` says can share
        its pass (the engine: an answer with a token to feed); they come back to the timers afterwards."""
        keep, taken = [], 0
        for item in sorted(self._timers):
            s = item[2]
            if s.closed or s.busy or s.queued:
                continue  # stale entry
            if len(batch) < self.max_batch and (item[0] <= now + self.coalesce_s or
                                                (self.rider is not None and self.rider(s))):
                s.busy, s.dirty = True, False
                batch.append(s)
                taken += 1
            else:
                keep.append(item)
        if taken:
            self._timers = keep  # sorted, hence a heap

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            self._round(batch)

    def _round(self, batch: list[Any]) -> None:
        try:
            results = self.process(batch)
        except Exception:  # the engine guards each session; this is a last resort
            log.exception("worker round failed")
            results = {}
        released = []
        with self._cond:
            self.busy_workers -= 1
            self.rounds += 1
            for s in batch:
                s.busy = False
                if s.closed:
                    released.append(s)
                    continue
                more, wake = results.get(s, (False, None))
                if more or s.dirty:
                    s.queued, s.dirty = True, False
                    self._ready.append(s)
                elif wake is not None:
                    heapq.heappush(self._timers, (wake, next(self._seq), s))
            self._cond.notify_all()
        for s in released:
            self.release(s)
