"""Chat framing: the text pieces around the system prompt, each user turn and each answer.

Freeze-Omni never renders a whole conversation with the chat template; it feeds the LLM piece by piece while the
user speaks (``reference/freeze_omni_facts.md`` §1.5). With a ChatML model (Qwen2, SmolLM2) a session is::

    "<|im_start|>system\\n" + SYSTEM                         system_prefix + system text (left open)
    "<|im_end|>\\n<|im_start|>user\\n" + QUESTION             user_prefix (closes the previous turn) + question
    "<|im_end|>\\n<|im_start|>assistant\\n"                   assistant_prefix, then the answer is sampled
    ANSWER ... "<|im_end|>"                                  eot: sampled, but NOT fed back; the next
    "<|im_end|>\\n<|im_start|>user\\n" + QUESTION 2 ...       user_prefix supplies it

The speech path replaces QUESTION by the audio embeddings; the text path (``freeze-omni ask``) tokenizes it.
:meth:`ChatFraming.from_tokenizer` derives the four pieces from the tokenizer's own chat template, so any HF chat
model can be the frozen backbone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Sentinel message contents: plain ASCII words that no template rewrites (survive ``| trim``) and that never
# occur in a template's own text.
_S_SYS, _S_USER1, _S_ASST1, _S_USER2 = "QqSysSentinelQq", "QqUserOneQq", "QqAsstOneQq", "QqUserTwoQq"

UPSTREAM_SYSTEM_PROMPT = "You are a helpful assistant."
"""The role text of the released Freeze-Omni (``model_conf.chat_template``)."""


@dataclass(frozen=True)
class ChatFraming:
    """The four text pieces of a Freeze-Omni session (see the module docstring).

    Attributes:
        system_prefix: text before the system prompt, e.g. ``"<|im_start|>system\\n"`` (contains a BOS token's
            text when the template renders one).
        user_prefix: text that closes the system prompt or the previous answer and opens a user turn, e.g.
            ``"<|im_end|>\\n<|im_start|>user\\n"``; it begins with ``eot``.
        assistant_prefix: text that closes the user turn and opens the answer, e.g.
            ``"<|im_end|>\\n<|im_start|>assistant\\n"``.
        eot: the end-of-turn marker the model samples to end its answer, e.g. ``"<|im_end|>"`` (must be a single
            token for generation to stop on it).
    """

    system_prefix: str
    user_prefix: str
    assistant_prefix: str
    eot: str

    # ------------------------------------------------------------------ builders
    @classmethod
    def chatml(cls) -> "ChatFraming":
        """The ChatML framing (Qwen2, SmolLM2, …)."""
        return cls(
            system_prefix="<|im_start|>system\n",
            user_prefix="<|im_end|>\n<|im_start|>user\n",
            assistant_prefix="<|im_end|>\n<|im_start|>assistant\n",
            eot="<|im_end|>",
        )

    @classmethod
    def qwen2_upstream(cls) -> "ChatFraming":
        """The framing of the released Freeze-Omni on Qwen2-7B-Instruct: ChatML.

        Upstream splits its template into ``"<|im_start|>system\\n" + role``, ``[<|im_end|>] + "\\n<|im_start|>user\\n"``
        and ``"<|im_end|>\\n<|im_start|>assistant\\n"`` (facts §1.5), which is exactly :meth:`chatml`. Its system text is
        :data:`UPSTREAM_SYSTEM_PROMPT`.
        """
        return cls.chatml()

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> "ChatFraming":
        """Derive the framing from ``tokenizer.chat_template`` and check it (:meth:`check`).

        Renders ``[system S, user U1, assistant A1, user U2]`` with a generation prompt, using sentinel texts, and
        splits on the sentinels; renders ``[S, U1, A1]`` without one to find the end-of-turn marker.

        Raises:
            ValueError: no chat template; the template rejects or rewrites a system message; it injects its own
                text (e.g. a default system prompt) before ours; the text between turns differs between the
                system/user and assistant/user boundaries; or the framed text differs from the template's own.
                The message shows what was rendered.
        """
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat_template; pass an explicit ChatFraming")
        full = _render(tokenizer, [("system", _S_SYS), ("user", _S_USER1), ("assistant", _S_ASST1),
                                   ("user", _S_USER2)], add_generation_prompt=True)
        closed = _render(tokenizer, [("system", _S_SYS), ("user", _S_USER1), ("assistant", _S_ASST1)],
                         add_generation_prompt=False)
        pos = []
        for s in (_S_SYS, _S_USER1, _S_ASST1, _S_USER2):
            if full.count(s) != 1:
                raise ValueError(f"chat template does not render each message exactly once "
                                 f"({s!r} appears {full.count(s)}x); rendered: {full!r}")
            pos.append(full.index(s))
        if pos != sorted(pos):
            raise ValueError(f"chat template reorders messages; rendered: {full!r}")
        i_s, i_u1, i_a1, i_u2 = pos
        system_prefix = full[:i_s]
        user_prefix = full[i_s + len(_S_SYS):i_u1]
        assistant_prefix = full[i_u1 + len(_S_USER1):i_a1]
        user_prefix_2 = full[i_a1 + len(_S_ASST1):i_u2]
        tail = full[i_u2 + len(_S_USER2):]
        if user_prefix != user_prefix_2:
            raise ValueError(f"text after the system prompt ({user_prefix!r}) differs from the text after an answer "
                             f"({user_prefix_2!r}); cannot frame turns uniformly; rendered: {full!r}")
        if tail != assistant_prefix:
            raise ValueError(f"generation prompt ({tail!r}) differs from the assistant header inside the "
                             f"conversation ({assistant_prefix!r}); rendered: {full!r}")
        if closed.count(_S_ASST1) != 1:
            raise ValueError(f"chat template renders the answer oddly without a generation prompt: {closed!r}")
        eot = closed[closed.index(_S_ASST1) + len(_S_ASST1):].strip()
        if not eot:
            raise ValueError(f"chat template closes an answer with no end-of-turn marker; rendered: {closed!r}")
        if not (user_prefix.startswith(eot) and assistant_prefix.startswith(eot)):
            raise ValueError(f"end-of-turn marker {eot!r} does not open the user/assistant prefixes "
                             f"({user_prefix!r}, {assistant_prefix!r}); rendered: {full!r}")
        if eot in system_prefix:
            raise ValueError(f"chat template injects its own turn (a default system prompt?) before the system "
                             f"message: system prefix {system_prefix!r}; rendered: {full!r}")
        framing = cls(system_prefix=system_prefix, user_prefix=user_prefix, assistant_prefix=assistant_prefix,
                      eot=eot)
        framing.check(tokenizer)
        return framing

    # ------------------------------------------------------------------ use
    def text(self, system: str, turns: list[tuple[str, str | None]]) -> str:
        """The whole session as text, exactly as it reaches the LLM piece by piece.

        Args:
            system: the system prompt.
            turns: ``(question, answer)`` pairs; the last answer may be ``None`` (the prompt then ends with
                ``assistant_prefix``, ready for generation). Only the last answer may be ``None``.

        Returns:
            ``system_prefix + system + Σ(user_prefix + q + assistant_prefix + a)``; when the last answer is given,
            ``eot`` is appended to close it.

        Difference from ``apply_chat_template``: with a generation prompt the two are identical (checked by
        :meth:`check`). When the last answer is given, the template also renders the separator after the end-of-turn
        marker (ChatML: ``"<|im_end|>\\n"``); here it is ``"<|im_end|>"`` alone, because in this framing the
        separator belongs to the next ``user_prefix``.
        """
        out = [self.system_prefix, system]
        for i, (q, a) in enumerate(turns):
            if a is None and i != len(turns) - 1:
                raise ValueError("only the last turn may have no answer")
            out += [self.user_prefix, q, self.assistant_prefix]
            if a is not None:
                out.append(a)
        if turns and turns[-1][1] is not None:
            out.append(self.eot)
        return "".join(out)

    def check(self, tokenizer: Any) -> None:
        """Raise ``ValueError`` unless :meth:`text` equals the template's own rendering (with a generation
        prompt) on a two-round example conversation with ordinary text."""
        system, turns = "You are a test.", [("Hi there.", "Hello! How can I help?"), ("What is 2+2?", None)]
        msgs = [("system", system)]
        for q, a in turns:
            msgs.append(("user", q))
            if a is not None:
                msgs.append(("assistant", a))
        ref = _render(tokenizer, msgs, add_generation_prompt=True)
        ours = self.text(system, turns)
        if ours != ref:
            raise ValueError(f"chat framing does not reproduce the chat template: framed {ours!r}, "
                             f"template {ref!r}")


def _render(tokenizer: Any, msgs: list[tuple[str, str]], add_generation_prompt: bool) -> str:
    try:
        out = tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in msgs], tokenize=False,
                                            add_generation_prompt=add_generation_prompt)
    except Exception as e:  # jinja raise_exception(), unsupported roles, …
        raise ValueError(f"chat template cannot render a system/user/assistant conversation: {e}") from e
    if not isinstance(out, str):
        raise ValueError(f"apply_chat_template(tokenize=False) returned {type(out).__name__}, expected str")
    return out
