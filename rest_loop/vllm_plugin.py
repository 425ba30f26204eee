"""A vLLM general plugin: fast LoRA on CPU when every token in a batch uses the same adapter.

vLLM's CPU LoRA ops (`vllm/lora/ops/torch_ops/lora_ops.py`) gather a copy of the
adapter weights for every token (`weights[indices]`, shape tokens x out x rank) and
then contract. In a ReST round every request of a Grow or Eval call uses one
adapter, so that gather is the same matrix repeated; a single matmul gives the
same numbers without it. Profiled on SmolLM2-135M, the gathers were about 60% of
decode time with an adapter.

vLLM loads this in each of its processes through the `vllm.general_plugins` entry
point in pyproject.toml. Batches that mix adapters take vLLM's own path.
"""

from __future__ import annotations

import torch

_ORIGINAL: dict = {}


def _original(name: str):
    if name not in _ORIGINAL:  # not registered (e.g. called directly): vLLM's module still has its own
        from vllm.lora.ops.torch_ops import lora_ops

        return getattr(lora_ops, name)
    return _ORIGINAL[name]


def _one_index(indices: torch.Tensor) -> int | None:
    """The adapter slot all tokens use, or None when they differ."""
    if indices.numel() == 0:
        return None
    first = indices[0]
    return int(first) if bool((indices == first).all()) else None


def _one_adapter_product(inputs, stacked, indices, dtype) -> torch.Tensor | None:
    """inputs @ W.T when every token uses the same adapter slot W; None when they differ."""
    index = _one_index(indices)
    if index is None:
        return None
    w = stacked[index]  # (1, out, in) or (out, in): the same slot the original gathers per token
    return inputs.to(dtype) @ (w.squeeze(0) if w.dim() == 3 else w).to(dtype).T


def bgmv_shrink(inputs, lora_b_weights, output_tensor, lora_indices_tensor, scaling=1.0):
    outputs = _one_adapter_product(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if outputs is None:
        return _original("bgmv_shrink")(inputs, lora_b_weights, output_tensor, lora_indices_tensor, scaling)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs


def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs=True):
    outputs = _one_adapter_product(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if outputs is None:
        return _original("bgmv_expand")(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs)
    limit = 1 if outputs.shape[0] == 1 and output_tensor.shape[0] != 1 else output_tensor.shape[0]
    common = min(outputs.shape[1], output_tensor.shape[1])  # adapter and model may pad differently
    if add_inputs:
        output_tensor[:, :common] += outputs[:limit, :common]
    else:
        output_tensor[:, :common] = outputs[:limit, :common]


def bgmv_expand_slice(inputs, lora_b_weights, output_tensor, lora_indices_tensor, slice_offset, slice_size,
                      add_inputs=True):
    outputs = _one_adapter_product(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if outputs is None:
        return _original("bgmv_expand_slice")(inputs, lora_b_weights, output_tensor, lora_indices_tensor,
                                              slice_offset, slice_size, add_inputs)
    if add_inputs:
        output_tensor[:, slice_offset: slice_offset + slice_size] += outputs
    else:
        output_tensor[:, slice_offset: slice_offset + slice_size] = outputs


def register() -> None:
    """Entry point: swap the ops in, on CPU only; safe to call more than once."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu() or _ORIGINAL:
        return
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    fast = {"bgmv_shrink": bgmv_shrink, "bgmv_expand": bgmv_expand, "bgmv_expand_slice": bgmv_expand_slice}
    for name, fn in fast.items():
        _ORIGINAL[name] = getattr(lora_ops, name)
        setattr(lora_ops, name, fn)  # used by the sgmv_* (prefill) ops through module globals
        setattr(punica_cpu, name, fn)  # imported by name into the CPU punica wrapper
