"""The shared trainer on a toy stage (`_toy.py`): learning, frozen parts, exact resume, atomic files, DDP."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import _toy  # noqa: E402

from freeze_omni.train import (  # noqa: E402
    TrainConfig, Trainer, epoch_batches, latest_checkpoint, load_trainable, lr_factor,
)

HERE = Path(__file__).parent
REPO = HERE.parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{HERE}"}


def _trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted toy run: (model, result, out_dir)."""
    out = tmp_path_factory.mktemp("reference")
    model, result = _toy.train(_toy.toy_config(out))
    return model, result, out


# ----------------------------------------------------------------------------------------- config
def test_config_unknown_key_raises(tmp_path):
    with pytest.raises(ValueError, match="unknown TrainConfig key.*'lr_shedule'"):
        TrainConfig.from_dict({"out_dir": str(tmp_path), "lr_shedule": "cosine"})


def test_config_types(tmp_path):
    cfg = TrainConfig.from_dict({"out_dir": str(tmp_path), "lr": "1e-3", "betas": [0.9, 0.95], "grad_clip": None})
    assert cfg.lr == 1e-3 and cfg.betas == (0.9, 0.95) and cfg.grad_clip is None
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    for bad in ({"max_steps": "ten"}, {"shuffle": 1}, {"batch_size": True}, {"lr_schedule": "linear"}):
        with pytest.raises(ValueError):
            TrainConfig.from_dict({"out_dir": str(tmp_path), **bad})
    with pytest.raises(ValueError, match="out_dir"):
        TrainConfig.from_dict({"lr": 1.0})


def test_lr_schedules(tmp_path):
    cos = TrainConfig(out_dir=str(tmp_path), max_steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, cos) == pytest.approx(0.1) and lr_factor(9, cos) == 1.0
    assert lr_factor(99, cos) == pytest.approx(0.1)
    noam = TrainConfig(out_dir=str(tmp_path), lr_schedule="noam", warmup_steps=10)
    assert lr_factor(9, noam) == 1.0 and lr_factor(39, noam) == pytest.approx(0.5)
    const = TrainConfig(out_dir=str(tmp_path), lr_schedule="constant")
    assert lr_factor(0, const) == lr_factor(500, const) == 1.0


def test_epoch_batches_deterministic_and_sharded():
    a = epoch_batches(23, 4, seed=1, epoch=2, rank=0, world=2)
    b = epoch_batches(23, 4, seed=1, epoch=2, rank=1, world=2)
    assert a == epoch_batches(23, 4, seed=1, epoch=2, rank=0, world=2)
    assert a != epoch_batches(23, 4, seed=1, epoch=3, rank=0, world=2)
    flat_a, flat_b = sum(a, []), sum(b, [])
    assert len(flat_a) == len(flat_b) == 11 and not set(flat_a) & set(flat_b)  # tail of 1 dropped
    assert [len(x) for x in a] == [4, 4, 3]


# ------------------------------------------------------------------------------------- training
def test_learns_and_leaves_frozen_alone(reference):
    model, result, out = reference
    fresh = _toy.ToyModel()
    assert result.step == 24 and not result.interrupted
    for (n, p), (_, p0) in zip(model.named_parameters(), fresh.named_parameters()):
        if not p.requires_grad:
            assert torch.equal(p, p0), f"frozen {n} changed"
    assert torch.equal(model.frozen.scale, fresh.frozen.scale)

    lines = [json.loads(ln) for ln in (out / "log.jsonl").read_text().splitlines()]
    losses = [ln["train/loss"] for ln in lines if "train/loss" in ln]
    assert losses[-1] < 0.8 * losses[0], losses
    assert {"train/lr", "train/items_per_s", "train/audio_s_per_s", "train/mae"} <= lines[0].keys()
    assert [ln["eval/step_seen"] for ln in lines if "eval/step_seen" in ln] == [7, 14, 21]
    assert list((out / "tb").glob("events.out.tfevents.*"))

    ckpts = sorted((out / "ckpt").glob("step_*.pt"))
    assert [c.name for c in ckpts] == ["step_00000020.pt", "step_00000024.pt"]  # keep_last=2, final step
    assert latest_checkpoint(out) == ckpts[-1]
    ckpt = torch.load(ckpts[-1], weights_only=True)
    assert set(ckpt["model"]) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(k.startswith("frozen.") for k in ckpt["model"])
    assert ckpt["step"] == 24 and len(ckpt["rng"]) == 1

    other = _toy.ToyModel()
    assert load_trainable(other, out, strict=True) == ([], [])
    _assert_same(_trainable(other), _trainable(model))


def test_resume_after_signal_is_exact(reference, tmp_path):
    """SIGTERM at step 7 (from inside eval) checkpoints and stops; resuming matches the uninterrupted run."""
    ref_model, _, _ = reference
    config = _toy.toy_config(tmp_path)

    def eval_and_kill(model, step):
        os.kill(os.getpid(), signal.SIGTERM)
        return _toy.toy_eval(model, step)

    _, first = _toy.train(config, eval_fn=eval_and_kill)
    assert first.interrupted and first.step == 7
    assert latest_checkpoint(tmp_path).name == "step_00000007.pt"
    # Leftovers of a write killed half-way must not break the resume.
    (tmp_path / "ckpt" / "step_00000010.pt.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / "ckpt" / "latest.tmp").write_text("step_00000010.pt")
    model, second = _toy.train(config, resume=True)
    assert second.step == 24 and not second.interrupted
    _assert_same(_trainable(model), _trainable(ref_model))
    assert not list((tmp_path / "ckpt").glob("*.tmp"))
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # the log of the interrupted run was cut at the checkpoint


def test_resume_after_sigkill_is_exact(reference, tmp_path):
    ref_model, _, _ = reference
    config = _toy.toy_config(tmp_path, sleep=0.05, ckpt_every=3)
    proc = subprocess.Popen([sys.executable, str(HERE / "_toy.py"), json.dumps(config)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while latest_checkpoint(tmp_path) is None and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        rc = proc.wait(timeout=30)
    assert rc == -signal.SIGKILL, "training finished before it could be killed"
    killed_at = torch.load(latest_checkpoint(tmp_path), weights_only=True)["step"]
    assert 3 <= killed_at < 24
    model, result = _toy.train({**config, "sleep": 0.0}, resume=True)
    assert result.step == 24
    _assert_same(_trainable(model), _trainable(ref_model))


def test_group_sigterm_with_loader_workers_checkpoints(tmp_path):
    """`pkill -f` / a job manager signals the whole process group, loader workers included: the run still
    finishes its step, checkpoints and exits cleanly (a worker dying of the signal used to crash it)."""
    config = _toy.toy_config(tmp_path, sleep=0.05, ckpt_every=3, max_steps=400, num_workers=1, eval_every=0)
    proc = subprocess.Popen([sys.executable, str(HERE / "_toy.py"), json.dumps(config)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 60
        while latest_checkpoint(tmp_path) is None and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err.decode()[-2000:]
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["interrupted"] and 3 <= result["step"] < 400
    assert latest_checkpoint(tmp_path).name == f"step_{result['step']:08d}.pt"


def test_resume_without_checkpoint_starts_fresh(tmp_path, capsys):
    _, result = _toy.train(_toy.toy_config(tmp_path, max_steps=2, eval_every=0), resume=True)
    assert result.step == 2 and "starting fresh" in capsys.readouterr().err


def test_eval_does_not_shift_training_rng(reference, tmp_path):
    ref_model, _, _ = reference
    model, _ = _toy.train(_toy.toy_config(tmp_path, eval_every=0))
    _assert_same(_trainable(model), _trainable(ref_model))


class _Sparse(_toy.ToyDataset):
    def __getitem__(self, i: int):
        return super().__getitem__(i) if i % 4 == 0 else None


def test_empty_batches_are_skipped_bf16(tmp_path):
    """Three items in four are None, so many batches are empty; bf16 autocast on CPU."""
    cfg = TrainConfig.from_dict(_toy.toy_config(tmp_path, max_steps=6, batch_size=2, precision="bf16"))
    model = _toy.ToyModel()
    result = Trainer(model, cfg, _Sparse(26, none_every=0), _toy.collate).fit()
    assert result.step == 6 and all(torch.isfinite(p).all() for p in model.parameters())


# ------------------------------------------------------------------------------------------- DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_ranks(tmp_path):
    config = _toy.toy_config(tmp_path, max_steps=6, batch_size=4, ckpt_every=3, eval_every=3)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(HERE / "_toy.py"), json.dumps(config)]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # both ranks print one JSON object to the same stdout; their writes may land on one line
    done = [json.loads(obj) for obj in re.findall(r"\{[^{}]*\}", proc.stdout)]
    assert sorted((d["rank"], d["step"]) for d in done) == [(0, 6), (1, 6)]
    p0 = torch.load(tmp_path / "params_rank0.pt", weights_only=True)
    p1 = torch.load(tmp_path / "params_rank1.pt", weights_only=True)
    _assert_same(p0, p1)
    ckpt = torch.load(latest_checkpoint(tmp_path), weights_only=True)
    assert ckpt["step"] == 6 and ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    _assert_same({k: v for k, v in p0.items() if k in ckpt["model"]}, ckpt["model"])
    assert not torch.equal(p0["mlp.0.weight"], _toy.ToyModel().mlp[0].weight.detach())  # it trained
