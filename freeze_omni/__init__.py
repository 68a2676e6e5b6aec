"""freeze-omni: a trainable, servable Freeze-Omni (speech in, speech out, frozen LLM in the middle)."""

__version__ = "0.1.0"

SAMPLE_RATE = 16000  # every model input is 16 kHz mono
