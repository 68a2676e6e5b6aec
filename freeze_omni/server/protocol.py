"""The ``/ws`` websocket protocol: every constant, client-message parsing and engine-event encoding in one place.

See ``docs/protocol.md`` for the specification written for client authors. In short:

* up: binary frames of 16 kHz mono PCM16 (little-endian) audio; JSON text frames ``session.update``,
  ``input.flush``, ``response.cancel``;
* down: ``session.created`` first (with the answer audio's sample rate), then ``state``, ``input.*``,
  ``response.*`` and ``error`` JSON events, and the answer audio as binary PCM16 frames (every binary frame
  between ``response.started`` and ``response.done`` of an answer belongs to it).

Malformed input never ends a session: it is answered with an ``error`` event and dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np

from freeze_omni.dialogue import events as ev

PROTOCOL_VERSION = 1
PATH = "/ws"
INPUT_SAMPLE_RATE = 16000
AUDIO_FORMAT = "pcm16"  # signed 16-bit little-endian, mono

# client -> server
SESSION_UPDATE = "session.update"
INPUT_FLUSH = "input.flush"
RESPONSE_CANCEL = "response.cancel"
CLIENT_EVENTS = (SESSION_UPDATE, INPUT_FLUSH, RESPONSE_CANCEL)
SESSION_UPDATE_FIELDS = ("system_prompt", "input_sample_rate", "input_format", "vad")

# server -> client
SESSION_CREATED = "session.created"
SESSION_UPDATED = "session.updated"
STATE = "state"
SPEECH_STARTED = "input.speech_started"
SPEECH_STOPPED = "input.speech_stopped"
TURN_ENDED = "input.turn_ended"
RESPONSE_STARTED = "response.started"
RESPONSE_TEXT_DELTA = "response.text.delta"
RESPONSE_DONE = "response.done"
ERROR = "error"

# error codes (stable; messages are for people)
E_BUSY = "busy"  # too many users; the connection is closed
E_BAD_JSON = "bad_json"
E_BAD_EVENT = "bad_event"  # JSON but not a valid event (no type, wrong field types, values out of range)
E_UNKNOWN_EVENT = "unknown_event"
E_UNKNOWN_FIELD = "unknown_field"
E_BAD_AUDIO = "bad_audio_frame"  # odd byte count
E_SAMPLE_RATE = "unsupported_sample_rate"
E_FORMAT = "unsupported_format"
E_TOO_LARGE = "message_too_large"
E_OVERFLOW = "input_overflow"  # audio arrives faster than it can be processed; dropped
E_IDLE = "idle_timeout"  # the connection is closed
E_SESSION_TIMEOUT = "session_timeout"  # the connection is closed
E_PROMPT_TOO_LONG = "system_prompt_too_long"  # more tokens than the session's context keeps; not applied
E_INTERNAL = "internal_error"

# websocket close codes
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008  # bad token or origin (sent before the handshake completes: HTTP 403)
CLOSE_TRY_AGAIN = 1013  # busy


class ProtocolError(ValueError):
    """A client message that is answered with an ``error`` event (the session goes on)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class ClientEvent:
    type: str
    fields: dict[str, Any]


def error_event(code: str, message: str) -> dict[str, Any]:
    return {"type": ERROR, "code": code, "message": message}


def parse_text(text: str, max_prompt_chars: int) -> ClientEvent:
    """Parse and validate one JSON text frame (raises :class:`ProtocolError`)."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ProtocolError(E_BAD_JSON, f"not JSON: {e}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ProtocolError(E_BAD_EVENT, "an event is a JSON object with a string 'type'")
    kind = obj["type"]
    if kind not in CLIENT_EVENTS:
        raise ProtocolError(E_UNKNOWN_EVENT, f"unknown event type {kind[:64]!r}; expected one of {CLIENT_EVENTS}")
    fields = {k: v for k, v in obj.items() if k not in ("type", "event_id")}
    if kind == SESSION_UPDATE:
        _check_update(fields, max_prompt_chars)
    return ClientEvent(kind, fields)


def _check_update(f: dict[str, Any], max_prompt_chars: int) -> None:
    if "system_prompt" in f:
        p = f["system_prompt"]
        if not isinstance(p, str):
            raise ProtocolError(E_BAD_EVENT, "system_prompt must be a string")
        if len(p) > max_prompt_chars:
            raise ProtocolError(E_TOO_LARGE, f"system_prompt longer than {max_prompt_chars} characters")
    if "input_sample_rate" in f:
        sr = f["input_sample_rate"]
        if not isinstance(sr, int) or isinstance(sr, bool):
            raise ProtocolError(E_BAD_EVENT, "input_sample_rate must be an integer")
        if sr != INPUT_SAMPLE_RATE:
            raise ProtocolError(E_SAMPLE_RATE, f"input audio must be {INPUT_SAMPLE_RATE} Hz (got {sr}); resample "
                                               "on the client")
    if "input_format" in f and f["input_format"] != AUDIO_FORMAT:
        raise ProtocolError(E_FORMAT, f"input_format must be {AUDIO_FORMAT!r}")
    if "vad" in f and not isinstance(f["vad"], bool):
        raise ProtocolError(E_BAD_EVENT, "vad must be true or false")


def unknown_fields(event: ClientEvent) -> list[str]:
    """Fields of a ``session.update`` that this server does not know (they are ignored)."""
    if event.type != SESSION_UPDATE:
        return []
    return sorted(k for k in event.fields if k not in SESSION_UPDATE_FIELDS)


def decode_audio(data: bytes) -> np.ndarray:
    """A binary frame -> float32 samples in [-1, 1] (raises :class:`ProtocolError` on an odd byte count)."""
    if len(data) % 2:
        raise ProtocolError(E_BAD_AUDIO, f"a PCM16 frame has an even number of bytes (got {len(data)})")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def encode_audio(pcm: np.ndarray) -> bytes:
    """float32 samples -> PCM16 little-endian bytes (clipped)."""
    return (np.clip(pcm, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def session_created(session_id: str, system_prompt: str, vad: bool, output_rate: Optional[int],
                    limits: dict[str, Any]) -> dict[str, Any]:
    audio = lambda sr: {"format": AUDIO_FORMAT, "sample_rate": sr, "channels": 1}  # noqa: E731
    return {"type": SESSION_CREATED, "protocol": PROTOCOL_VERSION, "session_id": session_id,
            "input_audio": audio(INPUT_SAMPLE_RATE), "output_audio": audio(output_rate) if output_rate else None,
            "system_prompt": system_prompt, "vad": vad, "limits": limits}


def encode_event(e: ev.Event) -> Union[dict[str, Any], bytes]:
    """An engine event -> a JSON-able dict, or bytes for answer audio."""
    if isinstance(e, ev.ResponseAudio):
        return encode_audio(e.pcm)
    if isinstance(e, ev.StateChanged):
        return {"type": STATE, "state": e.state}
    if isinstance(e, ev.SpeechStarted):
        return {"type": SPEECH_STARTED, "audio_ms": e.audio_ms}
    if isinstance(e, ev.SpeechStopped):
        return {"type": SPEECH_STOPPED, "audio_ms": e.audio_ms}
    if isinstance(e, ev.TurnEnded):
        return {"type": TURN_ENDED, "decision": e.decision, "chunks": e.chunks, "barge_in": e.barge_in}
    if isinstance(e, ev.ResponseStarted):
        return {"type": RESPONSE_STARTED, "response_id": e.response_id}
    if isinstance(e, ev.ResponseText):
        return {"type": RESPONSE_TEXT_DELTA, "response_id": e.response_id, "delta": e.delta}
    if isinstance(e, ev.ResponseDone):
        return {"type": RESPONSE_DONE, "response_id": e.response_id, "status": e.status, "text": e.text,
                "latency_ms": e.latency_ms}
    if isinstance(e, ev.SessionUpdated):
        return {"type": SESSION_UPDATED, "system_prompt": e.system_prompt, "vad": e.vad}
    if isinstance(e, ev.SessionError):
        return error_event(e.code, e.message)
    raise TypeError(f"no wire form for {type(e).__name__}")
