"""Audio I/O and front ends (Kaldi fbank + CMVN, Whisper log-mel) with streaming chunkers."""

from freeze_omni.audio.io import AudioError, load_audio, resample, save_wav

__all__ = ["AudioError", "load_audio", "resample", "save_wav"]
