"""`freeze-omni serve`: the model as a multi-user streaming server (``docs/protocol.md``).

Loads the bundle once, warms it up, then serves ``/ws``, ``/health`` and ``/metrics`` with uvicorn. One process,
``--workers`` threads sharing the model weights; every session's caches live in its own ``Session``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any, Callable

from freeze_omni.cli import add_common


def register(sub: argparse._SubParsersAction) -> None:
    p = add_common(sub.add_parser("serve", help="serve the model over a websocket (many users at once)"))
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    p.add_argument("--port", type=int, default=8765, help="port (default: %(default)s)")
    p.add_argument("--workers", type=int, default=1,
                   help="model workers (default: %(default)s, the main thread, with every core as a torch thread; "
                        "more workers run in threads, where multi-threaded torch ops are slow: README, serving)")
    p.add_argument("--max-users", type=int, default=8, help="concurrent sessions (default: %(default)s)")
    p.add_argument("--token", default=os.environ.get("FREEZE_OMNI_TOKEN"),
                   help="require this bearer token (default: $FREEZE_OMNI_TOKEN, else none)")
    p.add_argument("--tls-cert", default=None, help="TLS certificate (PEM); with --tls-key serves wss/https")
    p.add_argument("--tls-key", default=None, help="TLS private key (PEM)")
    p.add_argument("--allowed-origins", default=None,
                   help="comma-separated browser origins allowed on /ws, or '*' (default: same origin and "
                        "localhost pages, and clients that send no Origin)")
    p.add_argument("--no-batching", action="store_true", help="one session per worker round (benchmarks)")
    p.add_argument("--max-batch", type=int, default=8, help="sessions per batched round (default: %(default)s)")
    p.add_argument("--vad", choices=("silero", "energy"), default="silero", help="speech gate (default: silero)")
    p.add_argument("--max-context", type=int, default=2048,
                   help="LLM positions per session before old turns are evicted (default: %(default)s)")
    p.add_argument("--idle-timeout", type=float, default=120.0, help="seconds without client messages")
    p.add_argument("--max-session", type=float, default=3600.0, help="seconds a connection may last")
    p.add_argument("--max-message-bytes", type=int, default=65536, help="largest client message handled")
    p.add_argument("--device", default="cpu", help="torch device of the model (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: cores / workers)")
    p.add_argument("--int8", action="store_true",
                   help="step the LLM with weight-only int8 copies of its weights (CPU: faster, answers change "
                        "slightly)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn
    import torch

    from freeze_omni.dialogue.engine import DialogueEngine, EngineConfig
    from freeze_omni.server.app import ServerSettings, create_app

    if bool(args.tls_cert) != bool(args.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    if args.workers < 1 or args.max_users < 1:
        raise ValueError("--workers and --max-users must be at least 1")
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // args.workers))
    cfg = EngineConfig(workers=args.workers, batching=not args.no_batching, max_batch=args.max_batch,
                       max_context=args.max_context)
    engine = DialogueEngine.from_bundle(args.model, cfg, vad=args.vad, device=args.device, int8=args.int8)
    engine.warmup()
    origins = [o.strip() for o in args.allowed_origins.split(",") if o.strip()] if args.allowed_origins else None
    settings = ServerSettings(max_users=args.max_users, token=args.token or None, allowed_origins=origins,
                              max_message_bytes=args.max_message_bytes, idle_timeout_s=args.idle_timeout,
                              max_session_s=args.max_session)
    app = create_app(engine, settings)
    scheme = "wss" if args.tls_cert else "ws"
    page_host = "localhost" if args.host in ("127.0.0.1", "0.0.0.0") else args.host
    print(f"freeze-omni: serving {args.model} on {scheme}://{args.host}:{args.port}/ws "
          f"({args.workers} worker(s), up to {args.max_users} users); web client: "
          f"{'https' if args.tls_cert else 'http'}://{page_host}:{args.port}/", flush=True)
    # no access log: a browser's token travels in the query string (?token=...) and must not land in logs
    server = uvicorn.Server(uvicorn.Config(
        app, host=args.host, port=args.port, log_level=args.log_level, ws_max_size=4 * args.max_message_bytes,
        ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key, ws_ping_interval=20.0, ws_ping_timeout=20.0,
        access_log=False))
    host_engine(engine, server.run, lambda: setattr(server, "should_exit", True))
    return 0


MMAP_THRESHOLD = 128 * 1024
"""Allocations from this size up are mapped and unmapped on their own (glibc ``M_MMAP_THRESHOLD``)."""


def steady_heap() -> bool:
    """Pin glibc's mmap threshold (it otherwise rises to the largest block freed): sessions' KV caches, grown and
    dropped in blocks of 100 KB and more, then go back to the system when freed instead of fragmenting the heap,
    so a long-running server's memory stays flat (16 sessions rebuilt for 5 minutes: +54 MB resident without, flat
    with; ``benchmarks/soak.py``). False where there is no glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, MMAP_THRESHOLD))  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def host_engine(engine: Any, serve: Callable[[], Any], shutdown: Callable[[], None]) -> None:
    """Run ``serve()`` (which starts and stops ``engine``, e.g. uvicorn with the app's lifespan) in a thread while
    this (main) thread is one of the engine's workers: torch's multi-threaded ops run at full speed only on the
    main thread (measured: README, serving). Ctrl-C and SIGTERM call ``shutdown()``; returns when ``serve`` does.
    The heap is kept from fragmenting (:func:`steady_heap`), and what exists by now (the model, warm-up garbage
    collected) is left out of Python's garbage collections, whose full passes would otherwise stall rounds."""
    import gc

    steady_heap()
    gc.collect()
    gc.freeze()
    engine.scheduler.hosted = True
    thread = threading.Thread(target=serve, name="freeze-omni-io", daemon=True)
    previous = None
    if threading.current_thread() is threading.main_thread():  # SIGTERM (a service manager): a clean shutdown
        previous = signal.signal(signal.SIGTERM, lambda *_: shutdown())
    thread.start()
    try:
        engine.scheduler.run(until=lambda: not thread.is_alive())
    except KeyboardInterrupt:
        shutdown()
        thread.join(30)
    finally:
        gc.unfreeze()
        engine.scheduler.hosted = False
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """``python -m freeze_omni.server.cli`` == ``freeze-omni serve``."""
    from freeze_omni.cli import main as cli_main

    return cli_main(["serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
