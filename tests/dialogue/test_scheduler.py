"""The scheduler alone, with a recording ``process``: paced sessions due soon ride along with a round."""

import threading
import time

from freeze_omni.dialogue.scheduler import Scheduler


class Item:
    def __init__(self, name):
        self.name = name
        self.closed = self.queued = self.busy = self.dirty = False


def _run(coalesce_s):
    rounds, done = [], threading.Event()
    paced, talker = Item("paced"), Item("talker")

    def process(batch):
        rounds.append(sorted(s.name for s in batch))
        if len(rounds) == 1:  # the paced session asks to be woken in 50 ms
            return {s: (False, time.monotonic() + 0.05 if s is paced else None) for s in batch}
        done.set()
        return {s: (False, None) for s in batch}

    sched = Scheduler(process, lambda s: None, workers=1, max_batch=4, coalesce_s=coalesce_s)
    sched.start()
    sched.notify(paced)
    assert _wait(lambda: rounds)
    sched.notify(talker)  # new input right away, 50 ms before the paced session is due
    assert done.wait(2.0)
    time.sleep(0.15)
    sched.stop()
    return rounds


def _wait(pred, timeout=2.0):
    deadline = time.monotonic() + timeout
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.001)
    return pred()


def test_a_session_due_soon_joins_the_round():
    rounds = _run(coalesce_s=0.1)
    assert rounds[:2] == [["paced"], ["paced", "talker"]]


def test_without_coalescing_it_waits_for_its_timer():
    rounds = _run(coalesce_s=0.0)
    assert rounds[:3] == [["paced"], ["talker"], ["paced"]]


def test_hosted_worker_runs_on_the_calling_thread_across_restarts():
    """With ``hosted``, start() spawns one thread fewer and run() is that worker, here on the test's thread,
    serving two start/stop cycles (bench concurrency restarts the server per batching mode)."""
    seen = []
    sched = Scheduler(lambda batch: seen.append(threading.current_thread()) or {s: (False, None) for s in batch},
                      lambda s: None, workers=1)
    sched.hosted = True
    for cycle in range(2):
        sched.start()
        assert sched._threads == []
        item = Item(f"s{cycle}")
        sched.notify(item)
        stop_at = time.monotonic() + 0.3
        sched.run(until=lambda: bool(len(seen) > cycle) or time.monotonic() > stop_at)
        sched.stop()
    assert seen == [threading.main_thread()] * 2
    sched.run(until=lambda: True)  # returns at once, stopped or not
