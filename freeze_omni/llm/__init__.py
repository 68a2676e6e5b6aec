"""The frozen LLM: backbone wrapper (`backbone`), chat framing (`chat`), sampling (`sampling`), `ask` command (`cli`).

Importing this package is cheap (no torch, no transformers); import the submodules for the code.
"""

DEFAULT_LLM = "smollm2-135m-instruct"
"""LLM reference used when a bundle's ``bundle.yaml`` has no ``llm`` key."""

DEFAULT_SYSTEM_PROMPT = "You are a helpful voice assistant. Answer briefly, in one or two sentences."
"""System prompt used when a bundle's ``bundle.yaml`` has no ``llm`` key."""


def llm_reference(config: dict) -> tuple[str, str]:
    """``(llm reference, system prompt)`` from a ``bundle.yaml`` mapping, with defaults for whatever is missing:
    :data:`DEFAULT_LLM` and :data:`DEFAULT_SYSTEM_PROMPT`."""
    llm = config.get("llm") or {}
    return llm.get("ref") or DEFAULT_LLM, llm.get("system_prompt") or DEFAULT_SYSTEM_PROMPT
