"""JSON Lines manifests: garbage tolerance, path resolution, atomic writes, appends."""

import json
import logging
import os

from freeze_omni.data.manifest import append_rows, read_manifest, write_manifest


def test_roundtrip_relative_paths(tmp_path):
    m = tmp_path / "sub" / "m.jsonl"
    rows = [{"id": "a", "audio": str(tmp_path / "sub" / "wav" / "a.wav"), "text": "hi", "duration": 1.0,
             "speaker": "x"},
            {"id": "b", "audio": "/elsewhere/b.wav", "text": "yo"},
            {"id": "q", "turns": [{"question": "q?", "audio": str(tmp_path / "sub" / "q.wav"), "answer": "a"}]}]
    write_manifest(m, rows)
    raw = [json.loads(x) for x in m.read_text().splitlines()]
    assert raw[0]["audio"] == "wav/a.wav" and raw[1]["audio"] == "/elsewhere/b.wav"
    assert raw[2]["turns"][0]["audio"] == "q.wav"
    assert read_manifest(m) == rows
    assert read_manifest(m, resolve_audio=False)[0]["audio"] == "wav/a.wav"
    assert not list(m.parent.glob("*.tmp"))


def test_garbage_lines_skipped_and_counted(tmp_path, caplog):
    m = tmp_path / "m.jsonl"
    m.write_text('{"id": "a", "audio": "a.wav"}\n\n   \nnot json\n[1, 2]\n{"id": "b"}\n{"id": "c", "au')
    with caplog.at_level(logging.WARNING):
        rows = read_manifest(m)
    assert [r["id"] for r in rows] == ["a", "b"]
    assert rows[0]["audio"] == os.path.join(str(tmp_path), "a.wav")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "3 malformed" in warnings[0].getMessage()


def test_append_after_truncated_line(tmp_path):
    m = tmp_path / "m.jsonl"
    append_rows(m, [{"id": "a"}])
    with open(m, "a") as f:
        f.write('{"id": "trunc')  # a crash mid-write
    append_rows(m, [{"id": "b"}, {"id": "c"}])
    assert [r["id"] for r in read_manifest(m)] == ["a", "b", "c"]
