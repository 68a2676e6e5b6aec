"""One ``/ws`` connection: checks, the session, a reader (client -> session) and a writer (events -> client).

The reader validates every message (:mod:`freeze_omni.server.protocol`) and forwards audio and commands to the
:class:`~freeze_omni.dialogue.session.Session`; it never runs the model. Worker threads report the session's
events through ``loop.call_soon_threadsafe`` into one queue, which the writer sends in order (protocol errors
from the reader go through the same queue, so a client sees everything in the order it happened).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, Optional, Union

from freeze_omni.server import protocol as P

log = logging.getLogger(__name__)


async def handle_connection(ws: Any, state: Any, factory: Any = None) -> None:
    """Admit (origin, token, capacity) and serve one websocket connection (``factory(ws, state)``: the
    :class:`Connection` subclass of a protocol; default ``/ws``)."""
    settings, metrics = state.settings, state.engine.metrics
    if not settings.origin_ok(ws.headers.get("origin"), ws.headers.get("host")):
        metrics.counter("rejected_total", reason="origin")
        await ws.close(code=P.CLOSE_POLICY)
        return
    if not settings.token_ok(ws.headers, ws.query_params):
        metrics.counter("rejected_total", reason="auth")
        await ws.close(code=P.CLOSE_POLICY)
        return
    await ws.accept()
    if state.active >= settings.max_users:
        metrics.counter("rejected_total", reason="busy")
        with contextlib.suppress(Exception):
            busy = P.error_event(P.E_BUSY, f"the server is full ({settings.max_users} users); try again later")
            await ws.send_text(json.dumps((factory or Connection).encode_busy(busy)))
            await ws.close(code=P.CLOSE_TRY_AGAIN, reason="busy")
        return
    state.active += 1
    conn = (factory or Connection)(ws, state)
    state.connections.add(conn)
    try:
        await conn.run()
    finally:
        state.active -= 1
        state.connections.discard(conn)


class Connection:
    """The session of one websocket and the two tasks that serve it."""

    def __init__(self, ws: Any, state: Any) -> None:
        self.ws, self.engine, self.settings = ws, state.engine, state.settings
        self.out: asyncio.Queue[Union[dict, Any, None]] = asyncio.Queue()
        self.session: Any = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()

        def on_event(e: Any) -> None:  # worker threads
            with contextlib.suppress(RuntimeError):  # the loop is gone: the connection is over
                loop.call_soon_threadsafe(self.out.put_nowait, e)

        self.session = self.engine.open_session(on_event=on_event)
        writer = None
        try:
            await self.ws.send_text(json.dumps(self.hello(), ensure_ascii=False))
            writer = asyncio.create_task(self._write())
            reason = await self._read(loop)
            if reason is not None:  # a timeout: say why, let the writer drain, close
                self.out.put_nowait(P.error_event(reason, "idle for too long" if reason == P.E_IDLE
                                                  else "the session reached its time limit"))
                self.out.put_nowait(None)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer, 5.0)
                with contextlib.suppress(Exception):
                    await self.ws.close(code=P.CLOSE_NORMAL, reason=reason)
        except Exception:  # the client went away mid-send, or worse: the session must still be closed
            log.debug("connection ended", exc_info=True)
        finally:
            self.session.close()
            if writer is not None:  # awaited even when done: a client gone mid-send is not an unretrieved error
                if not writer.done():
                    writer.cancel()
                with contextlib.suppress(BaseException):
                    await writer

    def hello(self) -> dict:
        """The first message (``session.created``)."""
        s = self.session
        return P.session_created(s.id, s.system_prompt, s.vad_enabled, self.engine.sample_rate,
                                 self.settings.limits())

    @staticmethod
    def encode_busy(event: dict) -> dict:
        """The ``busy`` error event in this protocol's form."""
        return event

    def encode(self, item: Any) -> list:
        """A queued item (an engine event, or a protocol dict) -> the messages to send (dicts or bytes)."""
        return [item if isinstance(item, dict) else P.encode_event(item)]

    async def _read(self, loop: asyncio.AbstractEventLoop) -> Optional[str]:
        """Serve client messages until disconnect (None) or a timeout (its error code)."""
        start = loop.time()
        while True:
            left = self.settings.max_session_s - (loop.time() - start)
            if left <= 0:
                return P.E_SESSION_TIMEOUT
            idle = self.settings.idle_timeout_s <= left
            try:
                msg = await asyncio.wait_for(self.ws.receive(), min(self.settings.idle_timeout_s, left))
            except asyncio.TimeoutError:
                return P.E_IDLE if idle else P.E_SESSION_TIMEOUT
            if msg["type"] == "websocket.disconnect":
                return None
            try:
                if msg.get("bytes") is not None:
                    self._on_audio(msg["bytes"])
                elif msg.get("text") is not None:
                    self._on_text(msg["text"])
            except P.ProtocolError as e:
                self._error(e.code, str(e))

    def _on_audio(self, data: bytes) -> None:
        if len(data) > self.settings.max_message_bytes:
            raise P.ProtocolError(P.E_TOO_LARGE, f"audio frame of {len(data)} bytes; the limit is "
                                                 f"{self.settings.max_message_bytes}")
        pcm = P.decode_audio(data)
        if self.session.backlog_seconds() > self.settings.max_backlog_s:
            raise P.ProtocolError(P.E_OVERFLOW, "audio arrives faster than it is processed; frame dropped")
        self.session.push_audio(pcm)

    def _on_text(self, text: str) -> None:
        if len(text) > self.settings.max_message_bytes or len(text.encode()) > self.settings.max_message_bytes:
            raise P.ProtocolError(P.E_TOO_LARGE, f"text message over {self.settings.max_message_bytes} bytes")
        event = P.parse_text(text, self.settings.max_prompt_chars)
        if event.type == P.SESSION_UPDATE:
            extra = P.unknown_fields(event)
            if extra:
                self._error(P.E_UNKNOWN_FIELD, f"ignored unknown field(s) {extra}")
            self.session.update(system_prompt=event.fields.get("system_prompt"), vad=event.fields.get("vad"))
        elif event.type == P.INPUT_FLUSH:
            self.session.flush()
        elif event.type == P.RESPONSE_CANCEL:
            self.session.cancel()

    def _error(self, code: str, message: str) -> None:
        self.engine.metrics.counter("protocol_errors_total", code=code)
        self.out.put_nowait(P.error_event(code, message))

    async def _write(self) -> None:
        while (item := await self.out.get()) is not None:
            for msg in self.encode(item):
                if isinstance(msg, bytes):
                    await self.ws.send_bytes(msg)
                else:
                    await self.ws.send_text(json.dumps(msg, ensure_ascii=False))
