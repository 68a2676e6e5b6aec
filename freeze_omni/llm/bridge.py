"""Trainable inputs and outputs around the frozen LLM: prompt / task embeddings and the chunk state head."""

from __future__ import annotations

from enum import IntEnum

import torch
from torch import nn


class UserState(IntEnum):
    """What the state head says at the end of a 160 ms chunk while listening."""

    LISTEN = 0  # keep listening
    RESPOND = 1  # the user is done: answer now (barge in if speaking)
    IGNORE = 2  # the user is done but this was not for the assistant: do not answer


class Task(IntEnum):
    """Rows of the task-embedding table (upstream keeps 20; these are the ones used here)."""

    TRANSCRIBE = 1  # stage 2: make the frozen LLM write what was said


class StateHead(nn.Module):
    """Linear classifier on the LLM's final hidden state.

    ``n_outputs`` is 3 for our models; the upstream checkpoint has 4 (the 4th is dropped at inference).
    Decision rule (upstream, facts §1.6): softmax over the first 3 logits; IGNORE if p2 > 0.5, else RESPOND if
    p1 > 0.5, else LISTEN.
    """

    def __init__(self, llm_dim: int, n_outputs: int = 3, threshold: float = 0.5) -> None:
        super().__init__()
        if n_outputs < 3:
            raise ValueError("the state head needs at least 3 outputs")
        self.proj = nn.Linear(llm_dim, n_outputs)
        self.threshold = threshold

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[..., H]`` -> logits ``[..., n_outputs]``."""
        return self.proj(hidden)

    def probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[..., H]`` -> probabilities of the 3 states ``[..., 3]``."""
        return self.forward(hidden)[..., :3].float().softmax(dim=-1)

    def decide(self, hidden: torch.Tensor) -> UserState:
        """Decision for one position ``[H]``."""
        p = self.probs(hidden.reshape(-1, hidden.shape[-1])[-1])
        if p[UserState.IGNORE] > self.threshold:
            return UserState.IGNORE
        if p[UserState.RESPOND] > self.threshold:
            return UserState.RESPOND
        return UserState.LISTEN


class Bridge(nn.Module):
    """Everything trainable on the LLM side: prompt embeddings (before each user turn's audio), task
    embeddings (stage-2 instructions) and the state head. Names follow the upstream state dict."""

    def __init__(self, llm_dim: int, prompt_num: int = 25, task_num: int = 20, n_states: int = 3) -> None:
        super().__init__()
        self.prompt_embeddings = nn.Embedding(prompt_num, llm_dim)
        self.task_embeddings = nn.Embedding(task_num, llm_dim)
        self.predictor_head = StateHead(llm_dim, n_states)
        nn.init.normal_(self.prompt_embeddings.weight, std=0.02)
        nn.init.normal_(self.task_embeddings.weight, std=0.02)

    def prompt(self, batch: int = 1) -> torch.Tensor:
        """``[B, prompt_num, H]``."""
        return self.prompt_embeddings.weight[None].expand(batch, -1, -1)

    def task(self, task: Task, n: int = 1, batch: int = 1) -> torch.Tensor:
        """``[B, n, H]``: the task's embedding repeated ``n`` times (rows ``task .. task + n - 1``)."""
        ids = torch.arange(int(task), int(task) + n, device=self.task_embeddings.weight.device)
        return self.task_embeddings(ids)[None].expand(batch, -1, -1)
