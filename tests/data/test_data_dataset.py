"""SpeechDataset skips unreadable audio and counts it; collate_skip_none drops and pads."""

import logging

import numpy as np
import torch
from torch.utils.data import DataLoader

from freeze_omni.audio.io import save_wav
from freeze_omni.data.augment import Augmenter
from freeze_omni.data.dataset import SpeechDataset, collate_skip_none
from freeze_omni.data.manifest import write_manifest


def _manifest(tmp_path):
    wav = tmp_path / "wav"
    wav.mkdir()
    save_wav(wav / "good.wav", 0.1 * np.sin(np.arange(8000) / 5.0), 16000)
    (wav / "corrupt.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    rows = [{"id": "corrupt", "audio": str(wav / "corrupt.wav"), "text": "x", "duration": 1.0, "speaker": "s"},
            {"id": "good", "audio": str(wav / "good.wav"), "text": "hello", "duration": 0.5, "speaker": "s1"},
            {"id": "missing", "audio": str(wav / "missing.wav"), "text": "y", "duration": 1.0, "speaker": "s"}]
    write_manifest(tmp_path / "m.jsonl", rows)
    return tmp_path / "m.jsonl", rows


def test_skip_and_count(tmp_path, caplog):
    path, _ = _manifest(tmp_path)
    ds = SpeechDataset(path)
    with caplog.at_level(logging.WARNING):
        items = [ds[i] for i in range(len(ds))]
    good = [it for it in items if it is not None]
    assert [it["id"] for it in good] == ["good"] and ds.skipped == 2
    assert good[0]["wave"].dtype == np.float32 and len(good[0]["wave"]) == 8000
    assert good[0]["text"] == "hello" and good[0]["speaker"] == "s1"
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "corrupt" in logged and "missing" in logged


def test_dataloader_collate(tmp_path):
    path, rows = _manifest(tmp_path)
    batches = list(DataLoader(SpeechDataset(rows), batch_size=3, collate_fn=collate_skip_none))
    assert len(batches) == 1
    b = batches[0]
    assert b["ids"] == ["good"] and b["num_skipped"] == 2
    assert b["wave"].shape == (1, 8000) and b["wave_lens"].tolist() == [8000]
    empty = collate_skip_none([None, None])
    assert empty["wave"].shape == (0, 0) and empty["num_skipped"] == 2


def test_max_duration_and_augmentation(tmp_path):
    path, _ = _manifest(tmp_path)
    ds = SpeechDataset(path, max_duration=0.7, augmenter=Augmenter(p_noise=1.0, p_speed=0), seed=1)
    assert len(ds) == 1
    a, b = ds[0]["wave"], ds[0]["wave"]
    np.testing.assert_array_equal(a, b)  # same (seed, epoch, index): same draw
    ds.set_epoch(1)
    assert not np.array_equal(a, ds[0]["wave"])
    padded = collate_skip_none([ds[0], {"id": "z", "wave": np.ones(10, np.float32), "text": "", "speaker": ""}])
    assert torch.equal(padded["wave_lens"], torch.tensor([8000, 10]))
    assert padded["wave"][1, 10:].abs().sum() == 0
