"""GGUF files of an exported model, for llama.cpp, Ollama and in-browser runtimes, made by llama.cpp's own tools.

    rest-loop-export runs/demo/<time> --model best --gguf q8_0,q4_k_m

- `q8_0`, `f16`, `bf16`, `f32`: llama.cpp's converter (`convert_hf_to_gguf.py`) writes them from `merged/`.
- `q4_k_m`, `q4_0`, `q5_k_m`, `q6_k`: llama.cpp's quantizer (`llama_model_quantize`, through llama-cpp-python)
  makes them from a float32 GGUF the converter writes first. Tensors whose rows do not divide into 256-wide
  k-quant blocks fall back to another type, as llama-quantize does (SmolLM2's 576-wide rows do).

The converter is the one of the installed llama-cpp-python: its source package vendors the llama.cpp it was
built from, and pip fetches it once into `<cache>/llama.cpp/<version>/` (`--llama-cpp DIR` uses a llama.cpp
checkout instead). Each file is read back by transformers (`from_pretrained(..., gguf_file=)`, which
dequantizes it) and compared with the merged model on the run's held-out completions: `fidelity` says how
often the GGUF's next token is the merged model's, and how many greedy completions come out the same.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

CONVERTED = ("q8_0", "f16", "bf16", "f32")
QUANTIZED = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
             "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M", "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K"}
TYPES = (*CONVERTED, *QUANTIZED)
VENDORED = ("convert_hf_to_gguf.py", "conversion", "gguf-py")  # what the converter needs of llama.cpp's tree


def parse_types(text: str) -> list[str]:
    types = [t.strip().lower() for t in text.split(",") if t.strip()]
    if not types or any(t not in TYPES for t in types):
        raise ValueError(f"--gguf {text!r}: use a comma-separated list of {', '.join(TYPES)}")
    return list(dict.fromkeys(types))


def llama_cpp_version() -> str:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        raise ValueError("--gguf needs llama-cpp-python (llama.cpp's converter and quantizer): "
                         "pip install 'rest-loop[gguf]'") from None


def converter(cache: Path, llama_cpp: Path | None = None) -> Path:
    """llama.cpp's convert_hf_to_gguf.py: in `llama_cpp` if given, else the installed llama-cpp-python's own."""
    if llama_cpp is not None:
        script = Path(llama_cpp).expanduser() / "convert_hf_to_gguf.py"
        if not script.is_file():
            raise ValueError(f"--llama-cpp {llama_cpp}: no convert_hf_to_gguf.py there; give a llama.cpp checkout")
        return script
    version = llama_cpp_version()
    home = Path(cache).expanduser() / "llama.cpp" / version
    if not (home / VENDORED[0]).is_file():
        fetch_converter(version, home)
    return home / VENDORED[0]


def fetch_converter(version: str, home: Path) -> None:
    """Unpack the converter of llama-cpp-python `version`'s source package (the registry pip uses) into `home`."""
    log.info("fetching llama.cpp's converter from llama-cpp-python %s's source package into %s", version, home)
    home.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=home.parent) as tmp:
        got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                              "-d", tmp, f"llama-cpp-python=={version}"], capture_output=True, text=True)
        sdists = list(Path(tmp).glob("*.tar.gz"))
        if got.returncode or not sdists:
            raise ValueError(f"could not fetch llama-cpp-python {version}'s source package for its converter "
                             f"(pip: {got.stderr.strip()[-300:]}); give a llama.cpp checkout with --llama-cpp DIR")
        unpacked = Path(tmp) / "llama.cpp"
        with tarfile.open(sdists[0]) as tar:
            prefix = f"{tar.getnames()[0].split('/')[0]}/vendor/llama.cpp/"
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)
                       and m.name[len(prefix):].split("/")[0] in VENDORED and (m.isfile() or m.isdir())]
            for m in members:
                m.name = m.name[len(prefix):]
            tar.extractall(unpacked, members=members, filter="data")
        unpacked.rename(home)  # whole or not at all


def convert(script: Path, merged: Path, outtype: str, path: Path) -> None:
    done = subprocess.run([sys.executable, str(script), str(merged), "--outtype", outtype, "--outfile", str(path)],
                          capture_output=True, text=True)
    if done.returncode or not path.is_file():
        raise RuntimeError(f"llama.cpp's converter failed on {merged} ({outtype}):\n{done.stderr[-3000:]}")


def quantize(source: Path, qtype: str, path: Path) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANTIZED[qtype])
    if llama_cpp.llama_model_quantize(str(source).encode(), str(path).encode(), ctypes.byref(params)) != 0:
        raise RuntimeError(f"llama.cpp's quantizer failed to make {qtype} from {source}")


def write_gguf(script: Path, merged: Path, types: list[str], out: Path) -> dict[str, Path]:
    """`out/model-<type>.gguf` for each type, by the converter `script` and llama.cpp's quantizer; {type: path}."""
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for t in (t for t in types if t in CONVERTED):
        convert(script, merged, t, tmp := out / f".model-{t}.gguf.tmp")
        written[t] = tmp.replace(out / f"model-{t}.gguf")
    if quantized := [t for t in types if t in QUANTIZED]:
        f32 = written.get("f32") or out / ".model-f32.gguf.tmp"
        if "f32" not in written:
            convert(script, merged, "f32", f32)
        try:
            for t in quantized:
                quantize(f32, t, tmp := out / f".model-{t}.gguf.tmp")
                written[t] = tmp.replace(out / f"model-{t}.gguf")
        finally:
            if "f32" not in written:
                f32.unlink(missing_ok=True)
    return {t: written[t] for t in types}


def fidelity(gguf: Path, merged: Path, prompts: list, recorded: list[str], max_tokens: int, metric=None) -> dict:
    """How close the GGUF comes to the merged model on the held-out prompts and the completions the run recorded.

    - `next_token_agreement`: the GGUF read back by transformers (dequantized) and the merged model, fed each
      prompt and its recorded completion, agree on the most likely next token this often (teacher-forced);
      `max_logit_diff` is the largest gap between their logits there.
    - `greedy_same`: llama.cpp itself (llama-cpp-python, the chat template from the GGUF) answers greedily, and
      this many answers equal the recorded ones; `metric` is the task's held-out metric on llama.cpp's answers.
    """
    import llama_cpp
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rest_loop.records import Sample

    tokenizer = AutoTokenizer.from_pretrained(merged)
    ours = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
    theirs = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    agree = total = 0
    worst = 0.0
    for prompt, text in zip(prompts, recorded):
        head = tokenizer.apply_chat_template(prompt.messages, add_generation_prompt=True, return_tensors="pt",
                                             return_dict=True)["input_ids"]
        ids = torch.cat([head, tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]], dim=1)
        with torch.no_grad():
            a, b = (m(ids).logits[0, head.shape[1] - 1: -1] for m in (ours, theirs))
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        total += a.shape[0]
        worst = max(worst, float((a - b).abs().max()) if a.numel() else 0.0)
    del ours, theirs

    llm = llama_cpp.Llama(str(gguf), n_ctx=2048, n_threads=len(os.sched_getaffinity(0)), verbose=False, seed=0)
    answers = [llm.create_chat_completion(messages=p.messages, temperature=0.0, max_tokens=max_tokens)
               ["choices"][0]["message"]["content"] or "" for p in prompts]
    scores = None
    if metric is not None:
        samples = [Sample(round=0, prompt_id=p.id, sample_idx=0, text=a, num_tokens=0, policy=gguf.name, seed=0)
                   for p, a in zip(prompts, answers)]
        scores = [r.score if r.status == "ok" else 0.0 for r in metric(prompts, samples)]
    return {"next_token_agreement": agree / total if total else None, "tokens": total,
            "max_logit_diff": round(worst, 4), "greedy_same": sum(a == t for a, t in zip(answers, recorded)),
            "completions": len(recorded), "metric": sum(scores) / len(scores) if scores else None}
