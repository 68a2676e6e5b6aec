"""The training loop shared by every stage (CTC, alignment, QA, codec, decoder, ...).

A stage builds its model (frozen parts included), its dataset and collate function, a `TrainConfig`, and
calls ``Trainer(...).fit(resume)``. The loop gives every stage the same guarantees:

- only parameters with ``requires_grad`` are optimized and checkpointed (the frozen LLM never is);
- the data order is a pure function of (seed, epoch, rank), and a resumed run continues **exactly**: same
  batches, same RNG streams (dropout, augmentation), same final weights as an uninterrupted run;
- checkpoints are written atomically; SIGTERM/SIGINT write one and return;
- ``torchrun`` (``WORLD_SIZE`` > 1) gives DistributedDataParallel, with rank 0 logging and checkpointing.

Exactness with ``num_workers > 0``: workers draw from their own generators, seeded from (seed, epoch), so a
dataset that augments with the global RNG inside workers is reproducible per epoch but not across a resume
in the middle of one. Seed augmentation from the item index (or use ``num_workers=0``) where that matters.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from freeze_omni.train.batches import SkipNone, epoch_batches, to_device, worker_init
from freeze_omni.train.checkpoint import (
    CKPT_SUBDIR, LATEST, atomic_save, atomic_write_text, ckpt_name, get_rng_state, latest_checkpoint,
    prune_checkpoints, seed_everything, set_rng_state, trainable_state_dict,
)
from freeze_omni.train.config import TrainConfig, lr_factor

EvalFn = Callable[[nn.Module, int], "dict[str, float]"]
# Changing these between an interrupted run and its resume changes the data order.
_DATA_KEYS = ("batch_size", "grad_accum", "seed", "shuffle")


@dataclass
class TrainResult:
    step: int  # optimizer steps done in total
    interrupted: bool  # stopped by SIGTERM/SIGINT before max_steps
    checkpoint: str | None  # the checkpoint written last (rank 0; None on other ranks)
    metrics: dict[str, float] = field(default_factory=dict)  # the last logged training scalars


def _param_groups(model: nn.Module, params: Iterable[Any] | None, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on matrices only (no decay on biases, norm weights, other 1-D tensors)."""
    if params is not None:
        params = list(params)
        if params and isinstance(params[0], dict):
            return params  # explicit parameter groups: the caller decides
        named = [(f"param{i}", p) for i, p in enumerate(params) if p.requires_grad]
    else:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no parameter with requires_grad=True")
    no_decay = [p for n, p in named if p.ndim < 2 or n.endswith(".bias")]
    decay = [p for n, p in named if not (p.ndim < 2 or n.endswith(".bias"))]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Trainer:
    """Runs ``cfg.max_steps`` optimizer steps of ``model`` on ``train_dataset``.

    Args:
        model: ``model(batch)`` returns a dict of scalar tensors with key ``"loss"``; every other key is logged.
            Frozen parts must already have ``requires_grad=False``.
        cfg: the loop's settings.
        train_dataset: a map-style dataset (``len`` and ``[i]``); an item may be None (skipped).
        collate_fn: list of (non-None) items -> batch (moved to the device recursively). A None or empty
            result skips the batch. A dict batch may carry ``"audio_seconds"`` for the throughput display.
        eval_fn: ``eval_fn(model, step) -> {name: value}``, called on rank 0 every ``cfg.eval_every`` steps
            with the unwrapped model in eval mode under ``torch.no_grad``; its RNG use does not leak into
            training.
        params: what to optimize instead of every trainable parameter (parameters, or AdamW param groups).
        on_checkpoint: ``on_checkpoint(path, step)``, called on rank 0 after each checkpoint is complete.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        train_dataset: Sequence[Any],
        collate_fn: Callable[[list], Any],
        eval_fn: EvalFn | None = None,
        params: Iterable[Any] | None = None,
        on_checkpoint: Callable[[str, int], None] | None = None,
    ) -> None:
        self.cfg, self.dataset, self.eval_fn, self.on_checkpoint = cfg, train_dataset, eval_fn, on_checkpoint
        self.collate = SkipNone(collate_fn)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        # 1. Device and process group (torchrun sets WORLD_SIZE, RANK, LOCAL_RANK).
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        default = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(cfg.device or default)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self._owns_pg = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
        if self._owns_pg:
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.is_main = self.rank == 0
        # 2. Model, optimizer, schedule.
        self.model = model.to(self.device)
        self.optimizer = torch.optim.AdamW(
            _param_groups(model, params, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas
        )
        self._trainable = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, cfg))
        self.train_model: nn.Module = model
        if self.world > 1:
            self.train_model = nn.parallel.DistributedDataParallel(
                model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.find_unused_parameters,
            )
        # 3. Position: optimizer steps done, and batches of the current epoch consumed.
        self.out_dir = Path(cfg.out_dir)
        self.ckpt_dir = self.out_dir / CKPT_SUBDIR
        self.step = self.epoch = self.batch_in_epoch = 0
        self._signal: int | None = None
        self._saved_at: tuple[int, str] | None = None
        self._sums: dict[str, torch.Tensor] = {}
        self._items = self._audio = 0.0
        self._micro = 0
        self._lr = cfg.lr
        self._writer: Any = None
        self._bar: Any = None

    # ----------------------------------------------------------------------------------------- the loop
    def fit(self, resume: bool = False) -> TrainResult:
        """Train up to ``cfg.max_steps`` (continuing the latest checkpoint if ``resume``); call once."""
        cfg, interrupted, metrics = self.cfg, False, {}
        try:
            self._start(resume)
            batches = self._micro_batches()
            t_last = time.perf_counter()
            with self._catch_signals():
                while self.step < cfg.max_steps:
                    if self._any_rank(self._signal is not None):
                        interrupted = True
                        break
                    self._train_step(batches)
                    self.step += 1
                    if self._bar is not None:
                        self._bar.update(1)
                    if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                        metrics = self._log_train(time.perf_counter() - t_last)
                        t_last = time.perf_counter()
                    if cfg.eval_every and self.step % cfg.eval_every == 0:
                        self._evaluate()
                    if cfg.ckpt_every and self.step % cfg.ckpt_every == 0:
                        self._save()
                if self._saved_at is None or self._saved_at[0] != self.step:
                    self._save()
            batches.close()
            if interrupted:
                self._say(f"stopped by {signal.Signals(self._signal).name}: checkpoint at step {self.step}")
        finally:
            self._close()
        ckpt = self._saved_at[1] if self._saved_at and self.is_main else None
        return TrainResult(step=self.step, interrupted=interrupted, checkpoint=ckpt, metrics=metrics)

    def _start(self, resume: bool) -> None:
        if self.is_main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            prune_checkpoints(self.ckpt_dir, keep_last=0)  # removes stray *.tmp only
        self._barrier()
        path = latest_checkpoint(self.ckpt_dir) if resume else None
        if path is not None:
            self._load(path)
            self._saved_at = (self.step, str(path))
            self._say(f"resumed from {path} (step {self.step}, epoch {self.epoch}, batch {self.batch_in_epoch})")
        else:
            if resume:
                self._say(f"--resume: no checkpoint in {self.ckpt_dir}, starting fresh")
            seed_everything(self.cfg.seed + self.rank)
        if self.is_main:
            self._open_logs(purge_after=self.step if path is not None else None)

    def _train_step(self, batches: Iterator[tuple[int, float, Any]]) -> None:
        """One optimizer step over ``grad_accum`` non-empty micro-batches."""
        cfg = self.cfg
        self.model.train()
        lowp = cfg.precision == "bf16"
        for micro in range(cfg.grad_accum):
            n_items, audio_seconds, batch = next(batches)
            sync = self.world == 1 or micro == cfg.grad_accum - 1
            with contextlib.nullcontext() if sync else self.train_model.no_sync():
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=lowp):
                    out = self.train_model(batch)
                (out["loss"] / cfg.grad_accum).backward()
            for k, v in out.items():
                v = torch.as_tensor(v).detach().float()
                self._sums[k] = self._sums[k] + v if k in self._sums else v
            self._micro += 1
            self._items += n_items
            self._audio += audio_seconds
        if cfg.grad_clip:
            norm = nn.utils.clip_grad_norm_(self._trainable, cfg.grad_clip)
            # x grad_accum: _log_train divides every sum by the number of micro-batches
            self._sums["grad_norm"] = self._sums.get("grad_norm", 0.0) + norm.detach().float() * cfg.grad_accum
        self._lr = self.optimizer.param_groups[0]["lr"]  # the lr this step used, for the log
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _micro_batches(self) -> Iterator[tuple[int, float, Any]]:
        """Endless (n_items, audio_seconds, batch) stream from the current position; advances epoch/batch_in_epoch."""
        cfg = self.cfg
        while True:
            batches = epoch_batches(len(self.dataset), cfg.batch_size, seed=cfg.seed, epoch=self.epoch,
                                    rank=self.rank, world=self.world, shuffle=cfg.shuffle)
            if not batches:
                raise ValueError(f"dataset of {len(self.dataset)} items is too small for {self.world} rank(s)")
            start, yielded = self.batch_in_epoch, 0
            loader = DataLoader(
                self.dataset, batch_sampler=batches[start:], collate_fn=self.collate,
                num_workers=cfg.num_workers, pin_memory=self.device.type == "cuda",
                worker_init_fn=worker_init if cfg.num_workers else None,
                # An explicit generator keeps the loader from drawing its base seed from the global RNG.
                generator=torch.Generator().manual_seed(cfg.seed * 100_003 + self.epoch),
            )
            for item in loader:
                self.batch_in_epoch += 1
                if self.world > 1 and self._any_rank(item is None):
                    item = None  # every rank skips together, or DDP's all-reduce would hang
                if item is not None:
                    yielded += 1
                    yield item[0], item[1], to_device(item[2], self.device)
            if start == 0 and yielded == 0:
                raise RuntimeError(f"epoch {self.epoch}: every batch was empty (all items None?)")
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    # ------------------------------------------------------------------------------ logging and eval
    def _log_train(self, seconds: float) -> dict[str, float]:
        """Average the accumulated scalars over micro-batches and ranks; log on rank 0."""
        keys = sorted(self._sums)
        comm = self.device if self.device.type == "cuda" else torch.device("cpu")
        vec = torch.stack([torch.as_tensor(self._sums[k], device=comm).float() for k in keys]
                          + [torch.tensor(float(v), device=comm) for v in (self._micro, self._items, self._audio)])
        if self.world > 1:
            dist.all_reduce(vec)
        vals = vec.tolist()
        micro, items, audio = vals[-3:]
        scalars = {f"train/{k}": v / micro for k, v in zip(keys, vals)}
        scalars["train/lr"] = self._lr
        scalars["train/items_per_s"] = items / max(seconds, 1e-9)
        if audio:
            scalars["train/audio_s_per_s"] = audio / max(seconds, 1e-9)
        scalars["train/epoch"] = float(self.epoch)
        self._sums, self._micro, self._items, self._audio = {}, 0, 0.0, 0.0
        if self.is_main:
            self._write(scalars)
            if self._bar is not None:
                post = {"loss": f"{scalars.get('train/loss', float('nan')):.4f}", "lr": f"{scalars['train/lr']:.2e}",
                        "items/s": f"{scalars['train/items_per_s']:.1f}"}
                if audio:
                    post["audio_s/s"] = f"{scalars['train/audio_s_per_s']:.1f}"
                self._bar.set_postfix(post, refresh=False)
        return scalars

    def _evaluate(self) -> None:
        if self.eval_fn is None or not self.is_main:
            return
        rng = get_rng_state()  # eval must not shift the training RNG streams (exact resume)
        self.model.eval()
        try:
            with torch.no_grad():
                result = self.eval_fn(self.model, self.step)
        finally:
            self.model.train()
            set_rng_state(rng)
        scalars = {f"eval/{k}": float(v) for k, v in result.items()}
        self._write(scalars)
        self._say(f"step {self.step} eval: " + " ".join(f"{k}={v:.4g}" for k, v in result.items()))

    def _open_logs(self, purge_after: int | None) -> None:
        from tqdm.auto import tqdm

        self.out_dir.mkdir(parents=True, exist_ok=True)
        log = self.out_dir / "log.jsonl"
        if purge_after is not None and log.is_file():  # drop lines the interrupted run logged past the checkpoint
            lines = [ln for ln in log.read_text().splitlines(keepends=True)
                     if ln.strip() and json.loads(ln).get("step", 0) <= purge_after]
            atomic_write_text(log, "".join(lines))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.out_dir / "tb"), purge_step=purge_after)
        except ImportError:
            self._say("tensorboard is not installed: logging to log.jsonl only")
        self._bar = tqdm(total=self.cfg.max_steps, initial=self.step, desc="train", dynamic_ncols=True,
                         file=sys.stderr)

    def _write(self, scalars: dict[str, float]) -> None:
        if self._writer is not None:
            for k, v in scalars.items():
                self._writer.add_scalar(k, v, self.step)
        with open(self.out_dir / "log.jsonl", "a") as f:
            f.write(json.dumps({"step": self.step, "time": round(time.time(), 3), **scalars}) + "\n")

    def _say(self, msg: str) -> None:
        if not self.is_main:
            return
        if self._bar is not None:
            self._bar.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr, flush=True)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()
        self._bar = self._writer = None
        if self._owns_pg and dist.is_initialized():
            dist.destroy_process_group()
            self._owns_pg = False

    # --------------------------------------------------------------------------------- checkpoints
    def _save(self) -> None:
        """Checkpoint the current step (a collective: every rank calls it, rank 0 writes)."""
        rngs = [get_rng_state()]
        if self.world > 1:
            rngs = [None] * self.world
            dist.all_gather_object(rngs, get_rng_state())
        path = self.ckpt_dir / ckpt_name(self.step)
        if self.is_main:
            atomic_save({
                "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "model": trainable_state_dict(self.model),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "rng": rngs, "world_size": self.world, "config": self.cfg.to_dict(),
            }, path)
            atomic_write_text(self.ckpt_dir / LATEST, path.name + "\n")
            prune_checkpoints(self.ckpt_dir, self.cfg.keep_last)
            if self._writer is not None:
                self._writer.flush()
            if self.on_checkpoint is not None:
                self.on_checkpoint(str(path), self.step)
        self._saved_at = (self.step, str(path))
        self._barrier()

    def _load(self, path: Path) -> None:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        result = self.model.load_state_dict(ckpt["model"], strict=False)
        trainable = {n for n, p in self.model.named_parameters() if p.requires_grad}
        missing = [n for n in result.missing_keys if n in trainable]
        if missing or result.unexpected_keys:
            raise ValueError(f"{path} does not match the model: missing {missing}, "
                             f"unexpected {list(result.unexpected_keys)}")
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.step, self.epoch, self.batch_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]
        old = ckpt.get("config", {})
        changed = [k for k in _DATA_KEYS if k in old and old[k] != getattr(self.cfg, k)]
        if ckpt["world_size"] != self.world or changed:
            self._say(f"warning: {changed or 'world size'} changed since the checkpoint; the data order and "
                      "RNG streams will differ from an uninterrupted run")
        if len(ckpt["rng"]) == self.world:
            set_rng_state(ckpt["rng"][self.rank])
        else:
            seed_everything(self.cfg.seed + self.rank + 1_000_003 * self.step)

    # ---------------------------------------------------------------------------- signals and DDP
    @contextlib.contextmanager
    def _catch_signals(self) -> Iterator[None]:
        """SIGTERM/SIGINT set a flag; the loop checkpoints at the end of the step. A second SIGINT aborts."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, _frame: Any) -> None:
            if self._signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._signal = signum
            self._say(f"{signal.Signals(signum).name}: finishing this step, then checkpointing")

        old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _any_rank(self, flag: bool) -> bool:
        """True if ``flag`` is true on any rank (a collective when distributed)."""
        if self.world == 1:
            return flag
        t = torch.tensor([int(flag)], device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def _barrier(self) -> None:
        if self.world > 1:
            dist.barrier()
