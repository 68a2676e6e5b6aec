"""An OpenAI-Realtime-compatible websocket endpoint, ``/v1/realtime``: the subset a voice client needs.

A thin adapter over the same transport-agnostic session as ``/ws`` (:class:`freeze_omni.server.ws.Connection`
does admission, timeouts and the reader/writer tasks; this module only translates events). Audio is PCM16 mono at
24 kHz both ways, as in that API: input is resampled to the model's 16 kHz, answer audio from the codec's rate to
24 kHz. Point the official client at it::

    client = OpenAI(api_key="x", base_url="http://127.0.0.1:8765/v1", websocket_base_url="ws://127.0.0.1:8765/v1")
    with client.realtime.connect(model="freeze-omni") as conn: ...

Client events: ``session.update`` (``instructions`` -> the system prompt, a new one starts a new conversation;
``turn_detection`` ``server_vad``/``semantic_vad`` -> the server's VAD + state head end turns, ``null`` -> manual:
``input_audio_buffer.commit`` + ``response.create``; audio format ``audio/pcm`` at 24 kHz / ``pcm16`` only),
``input_audio_buffer.append`` / ``.commit`` / ``.clear``, ``response.create``, ``response.cancel``. Anything else
gets an ``error`` event and the session goes on. Output event names are the GA API's
(``response.output_audio.delta``, ...); a client that sends ``OpenAI-Beta: realtime=v1`` (the ``openai``
package's ``client.beta.realtime``) gets the beta names (``response.audio.delta``, ...).

Differences from OpenAI's service: with server VAD, audio is handed to the model as it arrives, so
``input_audio_buffer.clear`` cannot take back what was already heard (it only drops the partial 10 ms tail);
with ``turn_detection: null`` the buffer is held until ``response.create``. No tools, no text input items, no
input transcription.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
from fractions import Fraction
from typing import Any, Optional

import numpy as np
from fastapi import APIRouter, WebSocket

from freeze_omni.audio.io import resample
from freeze_omni.dialogue import events as ev
from freeze_omni.server import protocol as P
from freeze_omni.server.ws import Connection, handle_connection

PATH = "/v1/realtime"
RATE = 24000  # the API's PCM16 rate, both ways
MODEL_RATE = P.INPUT_SAMPLE_RATE
CLIENT_EVENTS = ("session.update", "input_audio_buffer.append", "input_audio_buffer.commit",
                 "input_audio_buffer.clear", "response.create", "response.cancel")
GA_NAMES = {"audio.delta": "response.output_audio.delta", "audio.done": "response.output_audio.done",
            "transcript.delta": "response.output_audio_transcript.delta",
            "transcript.done": "response.output_audio_transcript.done",
            "text.delta": "response.output_text.delta", "text.done": "response.output_text.done"}
BETA_NAMES = {"audio.delta": "response.audio.delta", "audio.done": "response.audio.done",
              "transcript.delta": "response.audio_transcript.delta",
              "transcript.done": "response.audio_transcript.done",
              "text.delta": "response.text.delta", "text.done": "response.text.done"}
ERROR_TYPES = {P.E_INTERNAL: "server_error", P.E_BUSY: "server_error", P.E_IDLE: "server_error",
               P.E_SESSION_TIMEOUT: "server_error"}


class StreamResampler:
    """Chunk-by-chunk polyphase resampling with no seams: every block is resampled with ``margin`` input samples
    of context on both sides (the right side is held back until it arrives, or until :meth:`flush`)."""

    def __init__(self, sr_in: int, sr_out: int, margin: int = 64) -> None:
        self.sr_in, self.sr_out = sr_in, sr_out
        r = Fraction(sr_out, sr_in).limit_denominator(1000)
        self.up, self.down = r.numerator, r.denominator
        self.margin = -(-margin // self.down) * self.down  # a whole number of blocks
        self.reset()

    def reset(self) -> None:
        self.buf = np.zeros(self.margin, np.float32)  # left context, then samples not yet converted

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.sr_in == self.sr_out:
            return x
        self.buf = np.concatenate([self.buf, x.astype(np.float32)])
        n = (len(self.buf) - 2 * self.margin) // self.down * self.down
        if n <= 0:
            return np.zeros(0, np.float32)
        y = resample(self.buf[:n + 2 * self.margin], self.sr_in, self.sr_out)
        a = self.margin * self.up // self.down
        out = y[a:a + n * self.up // self.down]
        self.buf = self.buf[n:]
        return out

    def flush(self) -> np.ndarray:
        """Convert what is held back (the stream ends here)."""
        if self.sr_in == self.sr_out or len(self.buf) <= self.margin:
            self.reset()
            return np.zeros(0, np.float32)
        y = resample(self.buf, self.sr_in, self.sr_out)
        out = y[self.margin * self.up // self.down:]
        self.reset()
        return out


def _pcm16_b64(x: np.ndarray) -> str:
    return base64.b64encode(P.encode_audio(x)).decode("ascii")


class RealtimeConnection(Connection):
    """One ``/v1/realtime`` websocket (see the module docstring)."""

    def __init__(self, ws: Any, state: Any) -> None:
        super().__init__(ws, state)
        self.beta = "realtime=v1" in ws.headers.get("openai-beta", "")
        self.names = BETA_NAMES if self.beta else GA_NAMES
        self.model = ws.query_params.get("model", "freeze-omni")
        self._ids = itertools.count(1)
        self._items = itertools.count(1)
        self.manual: list[np.ndarray] = []  # turn_detection null: 24 kHz audio appended, not yet committed
        self.committed: list[np.ndarray] = []  # committed, waiting for response.create
        self.inp = StreamResampler(RATE, MODEL_RATE)
        rate = self.engine.sample_rate
        self.outp = StreamResampler(rate, RATE) if rate else None
        self.item_id: Optional[str] = None  # the user item being heard
        self.item_committed = False
        self.last_item: Optional[str] = None
        self.resp: dict[int, dict] = {}  # engine response id -> {id, item_id, transcript}

    # ------------------------------------------------------------------ helpers
    def _event(self, kind: str, **fields: Any) -> dict:
        return {"type": kind, "event_id": f"event_{self.session.id}_{next(self._ids)}", **fields}

    @property
    def vad(self) -> bool:
        return bool(self.session.vad_enabled)

    def _session_obj(self, vad: Optional[bool] = None, prompt: Optional[str] = None) -> dict:
        vad = self.vad if vad is None else vad
        prompt = self.session.system_prompt if prompt is None else prompt
        td = ({"type": "server_vad", "create_response": True, "interrupt_response": True,
               "silence_duration_ms": self.engine.cfg.vad.min_silence_ms, "prefix_padding_ms":
               self.engine.cfg.preroll_chunks * 160} if vad else None)
        modalities = ["audio"] if self.outp is not None else ["text"]
        if self.beta:
            return {"id": self.session.id, "object": "realtime.session", "model": self.model,
                    "modalities": modalities, "instructions": prompt, "input_audio_format": "pcm16",
                    "output_audio_format": "pcm16", "turn_detection": td}
        fmt = {"type": "audio/pcm", "rate": RATE}
        return {"id": self.session.id, "object": "realtime.session", "type": "realtime", "model": self.model,
                "output_modalities": modalities, "instructions": prompt,
                "audio": {"input": {"format": fmt, "turn_detection": td}, "output": {"format": fmt}}}

    def _err(self, code: str, message: str, param: Optional[str] = None, event_id: Any = None) -> dict:
        err = {"type": ERROR_TYPES.get(code, "invalid_request_error"), "code": code, "message": message,
               "param": param, "event_id": event_id if isinstance(event_id, str) else None}
        return self._event("error", error=err)

    def _fail(self, code: str, message: str, param: Optional[str] = None, event_id: Any = None) -> None:
        self.engine.metrics.counter("protocol_errors_total", code=code)
        self.out.put_nowait(self._err(code, message, param, event_id))

    def _new_item(self) -> str:
        self.last_item, self.item_id = self.item_id, f"item_{self.session.id}_{next(self._items)}"
        self.item_committed = False
        return self.item_id

    def _committed(self) -> dict:
        item = self.item_id or self._new_item()
        self.item_committed = True
        msg = self._event("input_audio_buffer.committed", item_id=item, previous_item_id=self.last_item)
        self.item_id, self.last_item = None, item
        return msg

    # ------------------------------------------------------------------ Connection hooks
    def hello(self) -> dict:
        return self._event("session.created", session=self._session_obj())

    @staticmethod
    def encode_busy(event: dict) -> dict:
        return {"type": "error", "event_id": "event_busy",
                "error": {"type": "server_error", "code": event["code"], "message": event["message"],
                          "param": None, "event_id": None}}

    def _on_audio(self, data: bytes) -> None:
        raise P.ProtocolError(P.E_BAD_EVENT, "send audio as input_audio_buffer.append events (JSON text)")

    def _error(self, code: str, message: str) -> None:  # protocol errors of the shared reader
        self._fail(code, message)

    def _on_text(self, text: str) -> None:
        if len(text) > self.settings.max_message_bytes or len(text.encode()) > self.settings.max_message_bytes:
            raise P.ProtocolError(P.E_TOO_LARGE, f"text message over {self.settings.max_message_bytes} bytes")
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise P.ProtocolError(P.E_BAD_JSON, f"not JSON: {e}") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            raise P.ProtocolError(P.E_BAD_EVENT, "an event is a JSON object with a string 'type'")
        kind, eid = obj["type"], obj.get("event_id")
        if kind not in CLIENT_EVENTS:
            return self._fail(P.E_UNKNOWN_EVENT, f"unsupported event type {kind[:64]!r}; this server handles "
                                                 f"{CLIENT_EVENTS}", "type", eid)
        try:
            getattr(self, "_on_" + kind.replace(".", "_"))(obj)
        except P.ProtocolError as e:
            self._fail(e.code, str(e), getattr(e, "param", None), eid)

    # ------------------------------------------------------------------ client events
    def _on_session_update(self, obj: dict) -> None:
        s = obj.get("session")
        if not isinstance(s, dict):
            raise P.ProtocolError(P.E_BAD_EVENT, "session.update needs a 'session' object")
        prompt, vad = s.get("instructions"), None
        if prompt is not None:
            if not isinstance(prompt, str):
                raise P.ProtocolError(P.E_BAD_EVENT, "instructions must be a string")
            if len(prompt) > self.settings.max_prompt_chars:
                raise P.ProtocolError(P.E_TOO_LARGE, f"instructions longer than {self.settings.max_prompt_chars}")
        audio = s.get("audio") if isinstance(s.get("audio"), dict) else {}
        inp = audio.get("input") if isinstance(audio.get("input"), dict) else {}
        outp = audio.get("output") if isinstance(audio.get("output"), dict) else {}
        for where, src in (("turn_detection", s), ("audio.input.turn_detection", inp)):
            if "turn_detection" in src:
                td = src["turn_detection"]
                if td is not None and not (isinstance(td, dict) and td.get("type") in ("server_vad", "semantic_vad")):
                    raise P.ProtocolError(P.E_BAD_EVENT, f"{where}: null, server_vad or semantic_vad")
                vad = td is not None
        for where, fmt in (("audio.input.format", inp.get("format")), ("audio.output.format", outp.get("format"))):
            if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type", "audio/pcm") == "audio/pcm"
                                        and fmt.get("rate", RATE) == RATE):
                raise P.ProtocolError(P.E_FORMAT, f"{where}: only audio/pcm at {RATE} Hz")
        for key in ("input_audio_format", "output_audio_format"):
            if s.get(key, "pcm16") != "pcm16":
                raise P.ProtocolError(P.E_FORMAT, f"{key}: only pcm16")
        if vad is not None and vad != self.vad:
            self.manual.clear()
            self.committed.clear()
            self.inp.reset()
        self.session.update(system_prompt=prompt, vad=vad)

    def _on_input_audio_buffer_append(self, obj: dict) -> None:
        audio = obj.get("audio")
        if not isinstance(audio, str):
            raise P.ProtocolError(P.E_BAD_EVENT, "input_audio_buffer.append needs 'audio' (base64 PCM16)")
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise P.ProtocolError(P.E_BAD_AUDIO, "'audio' is not valid base64") from None
        pcm = P.decode_audio(data)
        if not self.vad:
            if sum(map(len, self.manual)) + len(pcm) > self.settings.max_backlog_s * RATE:
                raise P.ProtocolError(P.E_OVERFLOW, "the input audio buffer is full; commit or clear it")
            self.manual.append(pcm)
            return
        if self.session.backlog_seconds() > self.settings.max_backlog_s:
            raise P.ProtocolError(P.E_OVERFLOW, "audio arrives faster than it is processed; dropped")
        x = self.inp(pcm)
        if len(x):
            self.session.push_audio(x)

    def _on_input_audio_buffer_commit(self, obj: dict) -> None:
        if self.vad:  # end of the user's input: the open turn is answered now
            tail = self.inp.flush()
            if len(tail):
                self.session.push_audio(tail)
            self.session.flush()
            self.out.put_nowait(self._committed())
            return
        if not self.manual:
            raise P.ProtocolError("input_audio_buffer_commit_empty", "the input audio buffer is empty")
        self.committed.append(np.concatenate(self.manual))
        self.manual.clear()
        self.out.put_nowait(self._committed())

    def _on_input_audio_buffer_clear(self, obj: dict) -> None:
        self.manual.clear()
        self.inp.reset()
        self.out.put_nowait(self._event("input_audio_buffer.cleared"))

    def _on_response_create(self, obj: dict) -> None:
        if self.committed:
            self.session.push_audio(resample(np.concatenate(self.committed), RATE, MODEL_RATE))
            self.committed.clear()
        self.session.respond()

    def _on_response_cancel(self, obj: dict) -> None:
        self.session.cancel()

    # ------------------------------------------------------------------ engine events -> wire
    def encode(self, item: Any) -> list:
        if isinstance(item, dict):  # ours, or a shared-reader error / timeout in the /ws form
            if item.get("type") == "error" and "error" not in item:
                return [self._err(item.get("code", P.E_INTERNAL), item.get("message", ""))]
            return [item]
        e, r = item, None
        if isinstance(e, (ev.ResponseText, ev.ResponseAudio, ev.ResponseDone)):
            r = self.resp.get(e.response_id)
            if r is None:
                return []
        ids = lambda: {"response_id": r["id"], "item_id": r["item_id"], "output_index": 0,  # noqa: E731
                       "content_index": 0}
        if isinstance(e, ev.SpeechStarted):
            if self.item_id is None or self.item_committed:
                self._new_item()
            return [self._event("input_audio_buffer.speech_started", audio_start_ms=e.audio_ms, item_id=self.item_id)]
        if isinstance(e, ev.SpeechStopped):
            return [self._event("input_audio_buffer.speech_stopped", audio_end_ms=e.audio_ms,
                                item_id=self.item_id or self.last_item)]
        if isinstance(e, ev.TurnEnded):
            if e.decision in ("respond", "end_of_input") and self.item_id is not None:
                return [self._committed()]
            if e.decision not in ("respond", "end_of_input"):
                self.item_id = None  # forgotten speech
            return []
        if isinstance(e, ev.ResponseStarted):
            r = {"id": f"resp_{self.session.id}_{e.response_id}",
                 "item_id": f"item_{self.session.id}_a{e.response_id}", "transcript": ""}
            self.resp[e.response_id] = r
            if self.outp is not None:
                self.outp.reset()
            return [self._event("response.created", response=self._response(r, "in_progress"))]
        if isinstance(e, ev.ResponseText):
            r["transcript"] += e.delta
            kind = "transcript.delta" if self.outp is not None else "text.delta"
            return [self._event(self.names[kind], delta=e.delta, **ids())]
        if isinstance(e, ev.ResponseAudio):
            x = self.outp(resample(e.pcm, e.sample_rate, self.outp.sr_in) if e.sample_rate != self.outp.sr_in
                          else e.pcm)
            return [self._event(self.names["audio.delta"], delta=_pcm16_b64(x), **ids())] if len(x) else []
        if isinstance(e, ev.ResponseDone):
            del self.resp[e.response_id]
            out = []
            transcript = r["transcript"] if e.status == "completed" else e.text
            if self.outp is not None:
                tail = self.outp.flush()
                if len(tail) and e.status == "completed":
                    out.append(self._event(self.names["audio.delta"], delta=_pcm16_b64(tail), **ids()))
                out.append(self._event(self.names["audio.done"], **ids()))
                out.append(self._event(self.names["transcript.done"], transcript=transcript, **ids()))
            else:
                out.append(self._event(self.names["text.done"], text=transcript, **ids()))
            status = "completed" if e.status == "completed" else "cancelled"
            resp = self._response(r, status, transcript)
            if status == "cancelled":
                resp["status_details"] = {"type": "cancelled", "reason": "turn_detected" if e.status ==
                                          "interrupted" else "client_cancelled"}
            resp["metadata"] = {"latency_ms": json.dumps(e.latency_ms)}
            out.append(self._event("response.done", response=resp))
            return out
        if isinstance(e, ev.SessionUpdated):
            return [self._event("session.updated", session=self._session_obj(e.vad, e.system_prompt))]
        if isinstance(e, ev.SessionError):
            return [self._err(e.code, e.message)]
        return []  # StateChanged: no Realtime equivalent

    def _response(self, r: dict, status: str, transcript: Optional[str] = None) -> dict:
        out = []
        if transcript is not None:
            part = ({"type": "output_audio" if not self.beta else "audio", "transcript": transcript}
                    if self.outp is not None else {"type": "output_text" if not self.beta else "text",
                                                   "text": transcript})
            out = [{"id": r["item_id"], "object": "realtime.item", "type": "message", "role": "assistant",
                    "status": "completed" if status == "completed" else "incomplete", "content": [part]}]
        modalities = ["audio"] if self.outp is not None else ["text"]
        return {"id": r["id"], "object": "realtime.response", "status": status, "output": out,
                ("modalities" if self.beta else "output_modalities"): modalities, "conversation_id": None}


router = APIRouter()
"""``/v1/realtime``, for the app made by :func:`freeze_omni.server.app.create_app` (its ``state.server``)."""


@router.websocket(PATH)
async def realtime_endpoint(ws: WebSocket) -> None:
    await handle_connection(ws, ws.app.state.server, RealtimeConnection)
