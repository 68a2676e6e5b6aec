"""`freeze-omni train`: the stage registry, config loading and --set overrides."""

from __future__ import annotations

import argparse
import subprocess
import sys
import types

import pytest

from freeze_omni.train import cli


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="freeze-omni")
    cli.register(p.add_subparsers(dest="command", required=True))
    return p


@pytest.fixture
def fake_stage(monkeypatch):
    calls = []
    mod = types.ModuleType("fake_stage_mod")
    mod.run = lambda config, resume: calls.append((config, resume)) or 0
    monkeypatch.setitem(sys.modules, "fake_stage_mod", mod)
    monkeypatch.setitem(cli.STAGES, "fake", "fake_stage_mod:run")
    monkeypatch.setitem(cli.STAGES, "broken", "freeze_omni.train.no_such_stage:run")
    return calls


def test_train_runs_stage_with_overrides(fake_stage, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  lr: 1.0e-3\n  max_steps: 10\nmodel:\n  dim: 4\n")
    args = _parser().parse_args(["train", "fake", "--config", str(cfg), "--resume", "--json",
                                 "--set", "train.lr=3e-4", "--set", "train.betas=[0.9, 0.95]",
                                 "--set", "data.manifest=a.jsonl", "--set", "model.dim=8"])
    assert args.func(args) == 0
    (config, resume), = fake_stage
    assert resume is True
    assert config == {"train": {"lr": 3e-4, "max_steps": 10, "betas": [0.9, 0.95]},
                      "model": {"dim": 8}, "data": {"manifest": "a.jsonl"}}
    assert '"rc": 0' in capsys.readouterr().out


def test_stage_that_fails_to_import_is_a_clear_error(fake_stage):
    with pytest.raises(ValueError, match="stage 'broken': cannot import 'freeze_omni.train.no_such_stage'"):
        cli.resolve_stage("broken")
    with pytest.raises(SystemExit):  # argparse rejects names outside the registry
        _parser().parse_args(["train", "nope", "--config", "x.yaml"])


def test_bad_overrides_and_missing_config(tmp_path):
    with pytest.raises(ValueError, match="KEY=VALUE"):
        cli.apply_override({}, "train.lr")
    with pytest.raises(ValueError, match="not a section"):
        cli.apply_override({"train": 3}, "train.lr=1")
    with pytest.raises(FileNotFoundError):
        cli.load_config(tmp_path / "missing.yaml")


def test_cli_does_not_import_torch():
    code = "import sys, freeze_omni.train.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
