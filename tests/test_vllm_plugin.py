"""The CPU LoRA fast path gives exactly what vLLM's own ops give."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch

from rest_loop import vllm_plugin

lora_ops = pytest.importorskip("vllm.lora.ops.torch_ops.lora_ops")


def original(name: str):
    return vllm_plugin._ORIGINAL.get(name) or getattr(lora_ops, name)


@pytest.mark.parametrize("indices", [[1, 1, 1, 1, 1], [0, 0, 0, 0, 0], [0, 1, 1, 0, 1]])
@pytest.mark.parametrize("stacked_dims", [3, 4])
def test_fast_ops_match_vllm(indices, stacked_dims):
    torch.manual_seed(0)
    idx = torch.tensor(indices)
    tokens, hidden, rank, out = len(indices), 12, 4, 10
    x = torch.randn(tokens, hidden)
    a = torch.randn(2, 1, rank, hidden) if stacked_dims == 4 else torch.randn(2, rank, hidden)
    b = torch.randn(2, 1, out, rank) if stacked_dims == 4 else torch.randn(2, out, rank)

    got, want = torch.zeros(tokens, rank), torch.zeros(tokens, rank)
    vllm_plugin.bgmv_shrink(x, a, got, idx, 0.5)
    original("bgmv_shrink")(x, a, want, idx, 0.5)
    torch.testing.assert_close(got, want)

    h = torch.randn(tokens, rank)
    for add in (True, False):
        got, want = torch.ones(tokens, out), torch.ones(tokens, out)
        vllm_plugin.bgmv_expand(h, b, got, idx, add)
        original("bgmv_expand")(h, b, want, idx, add)
        torch.testing.assert_close(got, want)

        got, want = torch.ones(tokens, 3 * out), torch.ones(tokens, 3 * out)
        vllm_plugin.bgmv_expand_slice(h, b, got, idx, out, out, add)
        original("bgmv_expand_slice")(h, b, want, idx, out, out, add)
        torch.testing.assert_close(got, want)


def test_plugin_is_registered_for_vllm():
    names = [ep.value for ep in importlib.metadata.entry_points(group="vllm.general_plugins")]
    assert "rest_loop.vllm_plugin:register" in names
