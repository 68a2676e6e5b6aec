"""A toy stage for the trainer tests: frozen feature extractor + trainable MLP with dropout.

Also a script: ``python _toy.py CONFIG_JSON [--resume]`` trains with `TrainConfig.from_dict(CONFIG_JSON)`
(extra keys: ``sleep`` seconds per forward, ``n_items``) and writes ``out_dir/params_rank{R}.pt``.
Runs under ``torchrun`` too.
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch
from torch import nn

from freeze_omni.train import Trainer, TrainConfig, TrainResult


class ToyModel(nn.Module):
    def __init__(self, dim: int = 8, hidden: int = 32, sleep: float = 0.0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1234)  # same weights whatever the global RNG state
        self.frozen = nn.Linear(dim, 16)  # stands in for the frozen LLM
        self.frozen.register_buffer("scale", torch.full((16,), 0.5))
        self.frozen.requires_grad_(False)
        self.norm = nn.LayerNorm(16)
        self.mlp = nn.Sequential(nn.Linear(16, hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, 1))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        self.sleep = sleep

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        if self.sleep:
            time.sleep(self.sleep)
        h = self.norm(self.frozen(batch["x"]) * self.frozen.scale)  # [B, 16]
        pred = self.mlp(h).squeeze(-1)  # [B]
        err = pred.float() - batch["y"]
        return {"loss": (err**2).mean(), "mae": err.abs().mean()}


class ToyDataset:
    """y = <w, x>; every 13th item is "corrupt" (None); x gets random jitter from the global RNG."""

    def __init__(self, n: int = 60, dim: int = 8, none_every: int = 13) -> None:
        g = torch.Generator().manual_seed(99)
        self.x = torch.randn(n, dim, generator=g)
        self.y = self.x @ torch.randn(dim, generator=g)
        self.none_every = none_every

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        if self.none_every and i % self.none_every == 5:
            return None
        return self.x[i] + 0.01 * torch.randn(self.x.shape[1]), self.y[i]


def collate(items: list) -> dict:
    xs, ys = zip(*items)
    return {"x": torch.stack(xs), "y": torch.stack(ys), "audio_seconds": torch.full((len(xs),), 1.5)}


def toy_eval(model: nn.Module, step: int) -> dict[str, float]:
    torch.rand(3)  # eval may use the RNG; the trainer must isolate it
    return {"step_seen": float(step)}


def toy_config(out_dir, **kw) -> dict:
    base = dict(out_dir=str(out_dir), max_steps=24, lr=3e-2, warmup_steps=3, batch_size=8, grad_accum=2,
                log_every=4, ckpt_every=5, keep_last=2, eval_every=7, seed=3, threads=1)
    base.update(kw)
    return base


def train(config: dict, resume: bool = False, **trainer_kw) -> tuple[ToyModel, TrainResult]:
    config = dict(config)
    sleep, n_items = config.pop("sleep", 0.0), config.pop("n_items", 60)
    model = ToyModel(sleep=sleep)
    trainer = Trainer(model, TrainConfig.from_dict(config), ToyDataset(n_items), collate,
                      **{"eval_fn": toy_eval, **trainer_kw})
    return model, trainer.fit(resume=resume)


def main(argv: list[str]) -> int:
    config = json.loads(argv[0])
    model, result = train(config, resume="--resume" in argv)
    rank = int(os.environ.get("RANK", "0"))
    torch.save({n: p.detach() for n, p in model.named_parameters()},
               os.path.join(config["out_dir"], f"params_rank{rank}.pt"))
    print(json.dumps({"rank": rank, "step": result.step, "interrupted": result.interrupted}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
