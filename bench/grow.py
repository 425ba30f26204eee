"""Grow throughput: generated tokens/s of rest_loop.grow.grow against plain vLLM and transformers.

    .venv/bin/python bench/grow.py --quick        # about 2 minutes on a quiet machine
    .venv/bin/python bench/grow.py                # the run_all size

Three measurements on the demo's arithmetic prompts and sampler (n=6, T=0.8, 16 tokens):

1. Our Grow (the public `grow(engine, BASE, prompts, sampler, round=1)`, with whatever it does
   besides generating: chat rendering, records, reseeding) against `engine.llm.generate` on the
   same chat-rendered prompts with the same SamplingParams, in the same engine. Their ratio is
   our overhead over vLLM (target >= 0.95). The prefix cache is reset before every timed call, and
   before the peer's the workers are reseeded (untimed) with the seed Grow drew with, so both
   sides generate the same tokens (the output says whether they did).
2. Our Grow against transformers' `generate` (float32, left padding, do_sample, the same
   temperature/top-p/top-k and max_new_tokens, num_return_sequences=n), batched over a subset of
   the prompts; tok/s counts each sequence's tokens up to its first EOS (target >= 1.5x).
3. n>1 sampling: one request with n=N per prompt against N independent n=1 requests per prompt,
   tok/s and prompt tokens submitted vs prefilled by compute (the rest come from the prefix cache,
   which shares whole KV blocks only: see `block_size` in the output).
"""

from __future__ import annotations

import common


def count_hf_tokens(generated, eos_ids: set[int]) -> int:
    """Tokens each sequence generated up to and including its first EOS (the rest is padding)."""
    total = 0
    for row in generated.tolist():
        n = len(row)
        for i, t in enumerate(row):
            if t in eos_ids:
                n = i + 1
                break
        total += n
    return total


class HFGenerate:
    """transformers' batched sampling, the peer a plain PyTorch user would write."""

    def __init__(self, path: str, sampler, batch_prompts: int):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch, self.sampler, self.batch = torch, sampler, batch_prompts
        self.tok = AutoTokenizer.from_pretrained(path, padding_side="left")
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        eos = self.model.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos]) | {self.tok.eos_token_id}

    def __call__(self, texts: list[str]) -> int:
        s, tokens = self.sampler, 0
        for start in range(0, len(texts), self.batch):
            enc = self.tok(texts[start:start + self.batch], return_tensors="pt", padding=True,
                           add_special_tokens=False)  # the chat template already wrote them
            with self.torch.inference_mode():
                out = self.model.generate(**enc, do_sample=s.temperature > 0, temperature=s.temperature,
                                          top_p=s.top_p, top_k=0 if s.top_k == -1 else s.top_k,
                                          max_new_tokens=s.max_tokens, num_return_sequences=s.n,
                                          pad_token_id=self.tok.pad_token_id)
            tokens += count_hf_tokens(out[:, enc["input_ids"].shape[1]:], self.eos)
        return tokens


def seed_of_next_generate(eng, call) -> int | None:
    """Run `call` and return the seed our Engine.generate was given in it (Grow derives one from its
    inputs and reseeds the workers with it), or None when generate takes no seed."""
    seen: dict = {}
    original = eng.generate

    def spy(*args, **kwargs):
        seen["seed"] = kwargs.get("seed")
        return original(*args, **kwargs)

    eng.generate = spy
    try:
        call()
    finally:
        del eng.generate  # the class's method again
    return seen.get("seed")


def same_draw(eng, seed: int | None) -> None:
    """Reseed vLLM's workers as our Engine does before a draw (rest_loop.vllm_worker), so that plain
    vLLM samples the same tokens as Grow; nothing when the engine has no such worker method."""
    if seed is None:
        return
    try:
        eng.llm.collective_rpc("reseed", args=(seed,))
    except Exception:  # noqa: BLE001 - an engine without the extension: the draws differ, still fair
        pass


def vs_peers(eng, prompts, texts: list[str], sampler, hf: HFGenerate, hf_prompts: int, reps: int) -> dict:
    """Grow, plain vLLM and transformers, alternated; tok/s of each and the prefill of the vLLM sides."""
    from vllm import SamplingParams

    from rest_loop.engine import BASE
    from rest_loop.grow import grow, sampling_params

    params = sampling_params(sampler)
    prefill: dict[str, dict] = {}
    tokens: dict[str, int] = {}

    def ours():
        eng.llm.reset_prefix_cache()
        t: list[float] = []
        with common.PrefillCounter() as pc, common.timed(t):
            samples = grow(eng, BASE, prompts, sampler, round=1)
        prefill["ours"], tokens["ours"] = pc.summary(), sum(s.num_tokens for s in samples)
        return tokens["ours"] / t[0]

    def vllm_raw():
        eng.llm.reset_prefix_cache()
        same_draw(eng, grow_seed)  # untimed: the peer draws the very tokens Grow drew
        t: list[float] = []
        with common.PrefillCounter() as pc, common.timed(t):
            outs = eng.llm.generate(texts, SamplingParams(**params), use_tqdm=False)
        prefill["vllm"], tokens["vllm"] = pc.summary(), sum(len(c.token_ids) for o in outs for c in o.outputs)
        return tokens["vllm"] / t[0]

    def transformers_():
        t: list[float] = []
        with common.timed(t):
            count = hf(texts[:hf_prompts])
        return count / t[0]

    grow_seed = seed_of_next_generate(eng, ours)  # also the warm-up: first-call costs are not Grow's
    hf(texts[:1])
    runs = common.alternate({"ours": ours, "vllm": vllm_raw, "hf": transformers_}, reps)
    return {"runs": runs, "tok_s": {k: common.median(v) for k, v in runs.items()}, "prefill": prefill,
            "tokens": tokens, "same_draw": tokens["ours"] == tokens["vllm"],
            "vs_vllm": common.paired_ratio(runs["ours"], runs["vllm"]),
            "vs_hf": common.paired_ratio(runs["ours"], runs["hf"])}


def n_way(eng, texts: list[str], sampler, reps: int) -> dict:
    """One request with n samples per prompt against n requests with one sample each (plain vLLM)."""
    from vllm import SamplingParams

    from rest_loop.grow import sampling_params

    params, n = sampling_params(sampler), sampler.n
    prefill: dict[str, dict] = {}

    def draw(name: str, prompts: list[str], p: dict):
        def once():
            eng.llm.reset_prefix_cache()
            t: list[float] = []
            with common.PrefillCounter() as pc, common.timed(t):
                outs = eng.llm.generate(prompts, SamplingParams(**p), use_tqdm=False)
            prefill[name] = pc.summary()
            return sum(len(c.token_ids) for o in outs for c in o.outputs) / t[0]
        return once

    runs = common.alternate({"n_in_one": draw("n_in_one", texts, params),
                             "n_separate": draw("n_separate", [x for x in texts for _ in range(n)],
                                                {**params, "n": 1})}, reps)
    return {"runs": runs, "tok_s": {k: common.median(v) for k, v in runs.items()}, "prefill": prefill,
            "ratio": common.paired_ratio(runs["n_in_one"], runs["n_separate"])}


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--prompts", type=int, default=16, help="train prompts for Grow and plain vLLM")
    p.add_argument("--hf-prompts", type=int, default=4, help="the first prompts, for transformers")
    p.add_argument("--hf-batch", type=int, default=4, help="prompts per transformers batch (x n sequences)")
    p.add_argument("--nway-prompts", type=int, default=8, help="prompts for the n>1 vs n x (n=1) comparison")
    p.add_argument("--n", type=int, default=None, help="samples per prompt (default: the demo's)")
    p.add_argument("--block-size", type=int,
                   help="what-if: model.block_size, vLLM's KV block (default: the config's, 32 on CPU)")
    args = p.parse_args()
    if args.quick:
        args.prompts, args.hf_prompts, args.hf_batch, args.nway_prompts = 6, 2, 2, 4
    reps = args.reps or 2
    common.quiet()
    common.BLOCK_SIZE[0] = args.block_size

    sampler = common.demo_sampler(**({"n": args.n} if args.n else {}))
    prompts = common.arithmetic_prompts(max(args.prompts, args.hf_prompts, args.nway_prompts))
    eng = common.engine()
    texts = [eng.chat_prompt(p.messages) for p in prompts]
    lens = [len(eng.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    hf = HFGenerate(common.model_path(), sampler, args.hf_batch)
    print(f"grow: {args.prompts} prompts x n={sampler.n}, T={sampler.temperature}, max_tokens={sampler.max_tokens}; "
          f"prompt {min(lens)}-{max(lens)} tokens, KV block {eng.block_size}; {reps} reps alternated",
          flush=True)

    g = vs_peers(eng, prompts[:args.prompts], texts[:args.prompts], sampler, hf, args.hf_prompts, reps)
    for key, label in (("ours", "Grow (rest_loop.grow)"), ("vllm", "plain engine.llm.generate"),
                       ("hf", f"transformers generate ({args.hf_prompts} prompts)")):
        common.line(f"{label} tok/s", f"{g['tok_s'][key]:.1f}", f"runs {[round(x, 1) for x in g['runs'][key]]}")
    common.line("Grow / plain vLLM", f"{g['vs_vllm']:.3f}", f"target >= 0.95; tokens {g['tokens']['ours']} vs "
                f"{g['tokens']['vllm']} ({'the same draw' if g['same_draw'] else 'different draws'})")
    common.line("Grow / transformers", f"{g['vs_hf']:.2f}x", "target >= 1.5")
    pf = g["prefill"]["ours"]
    common.line("Grow prefill: computed / submitted", f"{pf['computed']} / {pf['submitted']}", f"cached {pf['cached']}")

    w = n_way(eng, texts[:args.nway_prompts], sampler, reps)
    for key, label in (("n_in_one", f"one request, n={sampler.n}"), ("n_separate", f"{sampler.n} requests, n=1")):
        pf = w["prefill"][key]
        common.line(f"{label}: tok/s", f"{w['tok_s'][key]:.1f}",
                    f"prefill computed {pf['computed']} / submitted {pf['submitted']} (cached {pf['cached']})")
    common.line(f"n={sampler.n} in one request / {sampler.n} requests", f"{w['ratio']:.3f}")

    common.emit("grow", args, {
        "grow_vs_vllm": common.ratio_entry(g["vs_vllm"], ">=0.95"),
        "grow_vs_hf": common.ratio_entry(g["vs_hf"], ">=1.5"),
        "n_in_one_vs_n_requests": common.ratio_entry(w["ratio"]),
    }, {
        "tok_s": {k: round(v, 1) for k, v in g["tok_s"].items()},
        "runs": {k: [round(x, 2) for x in v] for k, v in g["runs"].items()},
        "prefill": g["prefill"], "tokens": g["tokens"], "same_draw": g["same_draw"],
        "nway_tok_s": {k: round(v, 1) for k, v in w["tok_s"].items()}, "nway_prefill": w["prefill"],
        "n": sampler.n, "reps": reps, "block_size": eng.block_size,
        "prompt_tokens": {"min": min(lens), "max": max(lens), "mean": round(sum(lens) / len(lens), 1)},
    })


if __name__ == "__main__":  # vLLM may start processes with spawn, which re-imports this file: keep the guard
    main()
    from rest_loop.engine import close_engines

    close_engines()
