"""Evaluation (WER, spoken QA, TTS intelligibility, state accuracy, latency) and benchmarks."""
