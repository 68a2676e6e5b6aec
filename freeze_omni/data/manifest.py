"""JSON Lines manifests (DESIGN.md §5).

One JSON object per line. ASR/TTS rows look like
``{"id": str, "audio": str, "text": str, "duration": float, "speaker": str}``; Q&A rows hold
``{"id", "turns": [{"question", "audio", "answer"}]}``. An ``audio`` path is relative to the manifest's folder
or absolute: :func:`read_manifest` resolves it to an absolute path and :func:`write_manifest` writes paths
inside the manifest's folder back as relative ones, so a data folder can be moved as a whole.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Union

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


def _map_audio(row: dict[str, Any], fn: Callable[[str], str]) -> dict[str, Any]:
    """A copy of ``row`` with ``fn`` applied to its ``audio`` field and to each ``turns[*].audio``."""
    out = dict(row)
    if isinstance(out.get("audio"), str):
        out["audio"] = fn(out["audio"])
    if isinstance(out.get("turns"), list):
        out["turns"] = [_map_audio(t, fn) if isinstance(t, dict) else t for t in out["turns"]]
    return out


def _absolute(base: Path) -> Callable[[str], str]:
    return lambda p: p if os.path.isabs(p) else os.path.normpath(os.fspath(base / p))


def _relative(base: Path) -> Callable[[str], str]:
    base_abs = os.path.abspath(base)

    def fn(p: str) -> str:
        if os.path.isabs(p) and os.path.commonpath([os.path.normpath(p), base_abs]) == base_abs:
            return Path(os.path.relpath(p, base_abs)).as_posix()
        return p
    return fn


def read_manifest(path: PathLike, resolve_audio: bool = True) -> list[dict[str, Any]]:
    """Read a JSON Lines manifest.

    Blank lines are skipped silently; lines that are not a JSON object (a truncated last line after a crash,
    garbage) are skipped and counted, with one warning giving the count.

    Args:
        path: the ``.jsonl`` file.
        resolve_audio: make relative ``audio`` paths (also inside ``turns``) absolute, against the manifest's
            folder.

    Returns:
        The rows, in file order.

    Raises:
        FileNotFoundError: no such file.
    """
    path = Path(path)
    base = Path(os.path.abspath(path)).parent
    rows: list[dict[str, Any]] = []
    bad = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if not isinstance(row, dict):
                bad += 1
                continue
            rows.append(_map_audio(row, _absolute(base)) if resolve_audio else row)
    if bad:
        log.warning("%s: skipped %d malformed line(s)", path, bad)
    return rows


def _dumps(rows: Iterable[dict[str, Any]], base: Path) -> str:
    rel = _relative(base)
    return "".join(json.dumps(_map_audio(r, rel), ensure_ascii=False) + "\n" for r in rows)


def write_manifest(path: PathLike, rows: Iterable[dict[str, Any]]) -> None:
    """Write ``rows`` as JSON Lines atomically (a temporary file, then ``os.replace``).

    Audio paths that lie inside the manifest's folder are written relative to it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = _dumps(rows, Path(os.path.abspath(path)).parent)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def append_rows(path: PathLike, rows: Iterable[dict[str, Any]]) -> None:
    """Append ``rows`` to a manifest (created if missing), audio paths made relative as in
    :func:`write_manifest`. Not atomic: a crash can leave a truncated last line, which
    :func:`read_manifest` skips."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = _dumps(rows, Path(os.path.abspath(path)).parent)
    if not text:
        return
    with open(path, "a+b") as f:
        if f.tell() > 0:  # start on a fresh line if the file was cut mid-line
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                text = "\n" + text
        f.write(text.encode("utf-8"))
