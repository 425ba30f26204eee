"""Agent Grow throughput: trajectories/s and tokens/s of rest_loop.agent.rollout against two peers.

    .venv/bin/python bench/agent.py --quick       # 6 problems x n=4, 1 repetition: development
    .venv/bin/python bench/agent.py               # the run_all size: 24 problems x n=8, 3 repetitions

The CPU agent demo as `rest-loop experiment=agent_calculator` composes it (conf/experiment/
agent_calculator.yaml): its arithmetic word problems, the calculator environment (calculator, finish;
3 steps), the ReAct format with constrained actions and no Thought, and its sampler (T=0.8, 48 tokens
per turn). Three sides on the same problems, tools, format and sampling:

ours    `rollout(engine, BASE, env, fmt, prompts, n, sampler, round, seed)`, as the loop runs it:
        step-synchronous (every live trajectory advances one step per engine call), the history kept
        as token ids, the prefix cache kept across the rollout's steps.
serial  (a) one trajectory at a time through the same engine: a plain agent loop (generate a turn,
        parse it, call the tool, append the observation, repeat) run to its end, then the next
        trajectory; the same Renderer, format and environment, token-id prompts, the prefix cache
        kept across the side's calls (emptied at its start, as ours is).
server  (b) vLLM's OpenAI server (`python -m vllm.entrypoints.openai.api_server` on 127.0.0.1, the same
        model folder, float32, eager, the same KV block, KV cache, max_model_len, LoRA slots and
        scheduler limits as our engine, vLLM's own process layout) driven by N concurrent plain agent
        loops (asyncio + the `openai` client, N = every trajectory at once, as a LangChain or ART user
        runs them): chat messages in (system prompt with the tools, question, then the assistant and
        observation turns), `chat.completions.create` with the same temperature/top_p/top_k/max_tokens
        and the same action regex (`extra_body={"structured_outputs": {"regex": ...}}`), the same
        parser and tools; with a lead (agent.format.lead), an assistant message holding it, continued
        (`continue_final_message`). Its prefix cache is emptied before each repetition (/reset_prefix_cache).

The in-process engine and the server never run at once: the sides run one after another, the order
reversed every other repetition (A B C, C B A, ...); the server stays up, idle, while the others run.
Reported: trajectories/s and generated tokens/s per side (medians), ratios ours/serial (target >= 5)
and ours/server (target >= 1.0), mean steps, valid-action rate and answers per side (alike: the same
model and sampling), and the prompt tokens read from the prefix cache per step index and overall
(ours and serial: Completion.cached_tokens; server: usage.prompt_tokens_details.cached_tokens).
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import common

SERVED_NAME = "bench-agent"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy


# --- the agent demo's config ---------------------------------------------------------------------------

@functools.cache
def agent_raw(problems: int, n: int | None, extra: tuple[str, ...] = ()):
    """conf/experiment/agent_calculator.yaml composed as `rest-loop experiment=agent_calculator` does."""
    from hydra import compose, initialize_config_dir

    overrides = ["experiment=agent_calculator", "paths.run_dir=unused", f"task.n_train={problems}", *extra]
    if n:
        overrides.append(f"sampler.n={n}")
    with initialize_config_dir(config_dir=str(common.CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


class Setup:
    """The task's problems, the environment, the format and the sampler the loop would build."""

    def __init__(self, problems: int, n: int | None, extra: tuple[str, ...] = ()):
        from rest_loop.agent.actions import first_parameter
        from rest_loop.config import validate
        from rest_loop.loop import build

        raw = agent_raw(problems, n, extra)
        cfg = validate(raw)
        self.model = cfg.model
        self.sampler = cfg.sampler
        self.prompts = build(raw.task).train[:problems]
        self.env = build(raw.env)
        self.fmt = build(raw.agent.format)
        self.specs = self.env.specs()
        self.params = {s["function"]["name"]: first_parameter(s) for s in self.specs}
        self.regex = self.fmt.regex(self.specs) if self.fmt.constrain else None


# --- one agent step, shared by the peers (the same logic as rollout's) ------------------------------------

def act(setup: Setup, traj, generated: str, token_ids: list[int], finish_reason: str | None):
    """One turn as rollout takes it (rest_loop.agent.rollout.take). Returns the observation text when the
    trajectory goes on, None when it stopped."""
    from rest_loop.agent.rollout import take

    going = take(setup.env, setup.fmt, setup.params, traj, generated, token_ids, finish_reason)
    return traj.steps[-1].observation if going else None


def new_trajectory(p, i: int, prompt_ids=()):
    from rest_loop.agent.records import Trajectory

    return Trajectory(round=1, prompt_id=p.id, sample_idx=i, policy="base", seed=0, prompt_ids=list(prompt_ids))


class CacheTally:
    """Prompt tokens and those read from the prefix cache, per step index."""

    def __init__(self):
        self.prompt: dict[int, int] = {}
        self.cached: dict[int, int] = {}
        self.requests: dict[int, int] = {}

    def add(self, step: int, prompt: int, cached: int | None) -> None:
        self.prompt[step] = self.prompt.get(step, 0) + prompt
        self.requests[step] = self.requests.get(step, 0) + 1
        if cached is not None:
            self.cached[step] = self.cached.get(step, 0) + cached

    def summary(self) -> dict:
        def frac(c, p):
            return round(c / p, 4) if p else None

        steps = {str(k): {"requests": self.requests[k], "prompt": self.prompt[k],
                          "cached": self.cached.get(k), "fraction": frac(self.cached.get(k, 0), self.prompt[k])
                          if k in self.cached else None} for k in sorted(self.prompt)}
        prompt, cached = sum(self.prompt.values()), sum(self.cached.values()) if self.cached else None
        return {"per_step": steps, "prompt": prompt, "cached": cached,
                "fraction": frac(cached, prompt) if cached is not None else None}


def canonical(tokenizer, steps, lead: str = "") -> dict | None:
    """How many generated turns are not the tokenizer's own tokenization of their text (constrained decoding
    can spell `Action:` as A|ct|i|on|:), and generated tokens over the canonical count. None without token ids
    (the server side: its history is re-tokenized from text every turn, so it always reads the canonical form)."""
    pairs = []
    for s in steps:
        if not s.token_ids:
            return None
        body = s.token_ids[:-1] if s.token_ids[-1] == tokenizer.eos_token_id else s.token_ids
        generated = s.text[len(lead):] if s.text.startswith(lead) else s.text  # the lead is read, not generated
        pairs.append((body, tokenizer(generated, add_special_tokens=False).input_ids))
    if not pairs:
        return None
    return {"non_canonical_steps": round(sum(a != b for a, b in pairs) / len(pairs), 4),
            "token_inflation": round(sum(len(a) for a, _ in pairs) / max(1, sum(len(b) for _, b in pairs)), 3)}


def stats(setup: Setup, trajectories, tokens: int, tokenizer=None) -> dict:
    """What each side's trajectories look like: they should be alike (same model, same sampling)."""
    from rest_loop.improve.verifiers import NumericMatch

    steps = [s for t in trajectories for s in t.steps]
    refs = {p.id: p.reference for p in setup.prompts}
    stops: dict[str, int] = {}
    for t in trajectories:
        stops[t.stop] = stops.get(t.stop, 0) + 1
    correct = sum(t.answer is not None and NumericMatch.one(refs[t.prompt_id], t.answer).score == 1.0
                  for t in trajectories)
    return {"trajectories": len(trajectories), "steps": len(steps),
            "mean_steps": round(len(steps) / len(trajectories), 3) if trajectories else None,
            "valid_action_rate": round(sum(s.parse == "ok" for s in steps) / len(steps), 4) if steps else None,
            "answered": sum(t.answer is not None for t in trajectories), "correct": correct,
            "stops": stops, "tokens": tokens,
            "tokenization": canonical(tokenizer, steps, setup.fmt.lead()) if tokenizer is not None else None}


# --- ours: rest_loop.agent.rollout ---------------------------------------------------------------------------

def spy_generate(eng, tally_ref: list):
    """Count every Engine.generate call's prompt tokens and cached tokens into tally_ref[0] (a CacheTally),
    by step index: a call's index within the current side's run (rollout: call k is step k)."""
    original = eng.generate
    calls = [0]

    def generate(prompts, params, policy=None, use_tqdm=True, seed=None, fresh_cache=True, step=None):
        from rest_loop.engine import BASE

        outs = original(prompts, params, policy or BASE, use_tqdm=use_tqdm, seed=seed, fresh_cache=fresh_cache)
        k = calls[0] if step is None else step
        calls[0] += 1
        for ids, out in zip(prompts, outs):
            tally_ref[0].add(k, len(ids), out[0].cached_tokens)
        return outs

    def reset():
        calls[0] = 0

    eng.generate = generate
    return reset


def run_ours(eng, setup: Setup, n: int, seed: int, tally: CacheTally, prompts=None):
    from rest_loop.agent.rollout import rollout
    from rest_loop.engine import BASE

    trajectories = rollout(eng, BASE, setup.env, setup.fmt, prompts or setup.prompts, n, setup.sampler, round=1,
                           seed=seed, use_tqdm=False)
    return trajectories, sum(t.num_tokens for t in trajectories)


# --- (a) one trajectory at a time through the same engine ---------------------------------------------------

def run_serial(eng, setup: Setup, n: int, seed: int, prompts=None):
    """A plain agent loop, one trajectory to its end, then the next; token-id prompts as rollout's."""
    from rest_loop.agent.rollout import Renderer, step_params, vllm_params
    from rest_loop.engine import BASE, draw_seed

    renderer = Renderer(eng.tokenizer, setup.fmt, setup.specs)
    sampling = vllm_params(step_params(setup.sampler, setup.fmt, setup.specs))
    limit = eng.llm.llm_engine.vllm_config.model_config.max_model_len
    trajectories, first = [], True
    for p in prompts or setup.prompts:
        ids = renderer.prompt_ids(p)
        for i in range(n):
            traj, history = new_trajectory(p, i, ids), list(ids)
            for k in range(setup.env.max_steps):
                c = eng.generate([history], sampling, BASE, use_tqdm=False, seed=draw_seed(seed, p.id, i, k),
                                 fresh_cache=first, step=k)[0][0]
                first = False
                observation = act(setup, traj, c.text, c.token_ids, c.finish_reason)
                if observation is None:
                    break
                step = traj.steps[-1]
                step.observation_ids = renderer.observation_ids(observation, c.token_ids)
                history += c.token_ids + step.observation_ids
                if len(history) + setup.sampler.max_tokens > limit:
                    traj.stop = "context"
                    break
            trajectories.append(traj)
    return trajectories, sum(t.num_tokens for t in trajectories)


# --- (b) vLLM's OpenAI server, N concurrent agent loops ----------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """vLLM's OpenAI server in its own process group on loopback; stopped (the whole group) on exit."""

    def __init__(self, path: str, eng, model, startup_timeout: float):
        sched = eng.llm.llm_engine.vllm_config.scheduler_config
        cache = eng.llm.llm_engine.vllm_config.cache_config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [
            "--model", path, "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(self.port),
            "--dtype", eng.identity["dtype"], "--block-size", str(eng.block_size),
            "--max-model-len", str(model.max_model_len), "--seed", str(eng.seed),
            "--max-num-seqs", str(sched.max_num_seqs), "--max-num-batched-tokens", str(sched.max_num_batched_tokens),
            "--enable-lora", "--max-lora-rank", str(model.max_lora_rank), "--max-loras", "1",
            "--generation-config", "vllm",  # no sampling defaults from the model folder: the request's params only
            "--enable-prompt-tokens-details", "--disable-uvicorn-access-log", "--uvicorn-log-level", "warning",
        ]
        if eng.identity["eager"]:
            self.args.append("--enforce-eager")
        if cache.kv_cache_memory_bytes:
            self.args += ["--kv-cache-memory-bytes", str(cache.kv_cache_memory_bytes)]
        if cache.enable_prefix_caching:
            self.args.append("--enable-prefix-caching")
        env = {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}  # vLLM's own layout
        env["VLLM_SERVER_DEV_MODE"] = "1"  # /reset_prefix_cache between repetitions (loopback only)
        self.startup_s = None
        start = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", *self.args],
                                     stdout=sys.stderr, stderr=sys.stderr, stdin=subprocess.DEVNULL, env=env,
                                     start_new_session=True)
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the vLLM server exited with code {self.proc.returncode} before /health "
                                       "answered (its log is on stderr)")
                if time.perf_counter() - start > startup_timeout:
                    raise RuntimeError(f"the vLLM server did not answer /health within {startup_timeout:.0f} s")
                if self.ok("/health"):
                    break
                time.sleep(1.0)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - start

    def ok(self, route: str, method: str = "GET") -> bool:
        try:
            req = urllib.request.Request(self.url + route, method=method)
            with NO_PROXY.open(req, timeout=30) as r:
                return r.status == 200
        except OSError:
            return False

    def cpu_seconds(self) -> float:
        """CPU time the server's process tree has used so far (its API server, engine core and worker)."""
        import psutil

        total = 0.0
        try:
            root = psutil.Process(self.proc.pid)
            for proc in [root, *root.children(recursive=True)]:
                try:
                    t = proc.cpu_times()
                    total += t.user + t.system
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        return total

    def reset_prefix_cache(self) -> bool:
        return self.ok("/reset_prefix_cache", "POST")

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group we started: the API server and its engine core
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever of the group is left
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)


async def server_loop(client, setup: Setup, p, i: int, tally: CacheTally, request_timeout: float):
    """One plain agent loop through the OpenAI API: chat messages, the same regex, parser and tools."""
    sampler = setup.sampler
    extra = {"top_k": sampler.top_k}
    if setup.regex:
        extra["structured_outputs"] = {"regex": setup.regex}
    lead = setup.fmt.lead()
    if lead:  # the turn opens with the lead and the server continues it, as ours reads it
        extra.update(continue_final_message=True, add_generation_prompt=False)
    messages = setup.fmt.messages(p.messages, setup.specs, native_tools=False)
    traj, tokens = new_trajectory(p, i), 0
    for k in range(setup.env.max_steps):
        r = await client.chat.completions.create(
            model=SERVED_NAME, messages=[*messages, {"role": "assistant", "content": lead}] if lead else messages,
            n=1, temperature=sampler.temperature, top_p=sampler.top_p,
            max_tokens=sampler.max_tokens, extra_body=extra, timeout=request_timeout)
        choice, usage = r.choices[0], r.usage
        details = getattr(usage, "prompt_tokens_details", None)
        tally.add(k, usage.prompt_tokens, getattr(details, "cached_tokens", None) if details else None)
        tokens += usage.completion_tokens
        text = choice.message.content or ""
        observation = act(setup, traj, text, [], choice.finish_reason)
        if observation is None:
            break
        messages = [*messages, {"role": "assistant", "content": setup.fmt.turn_text(text)},
                    setup.fmt.observation_message(observation)]
        if usage.prompt_tokens + usage.completion_tokens + sampler.max_tokens > 2 * setup.model.max_model_len:
            break  # never reached at the demo's sizes; bounds the loop whatever the server says
    return traj, tokens


def run_server(server: Server, setup: Setup, n: int, tally: CacheTally, request_timeout: float, prompts=None):
    import httpx
    from openai import AsyncOpenAI

    loops = len(prompts or setup.prompts) * n

    async def all_loops():
        http = httpx.AsyncClient(trust_env=False, timeout=request_timeout,  # loopback: no proxy from the env
                                 limits=httpx.Limits(max_connections=loops + 8, max_keepalive_connections=loops + 8))
        async with AsyncOpenAI(base_url=server.url + "/v1", api_key="EMPTY", max_retries=0,
                               timeout=request_timeout, http_client=http) as client:
            return await asyncio.gather(*[server_loop(client, setup, p, i, tally, request_timeout)
                                          for p in prompts or setup.prompts for i in range(n)])

    results = asyncio.run(all_loops())
    return [t for t, _ in results], sum(tok for _, tok in results)


# --- main ------------------------------------------------------------------------------------------------

def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--problems", type=int, default=24, help="arithmetic problems (the agent demo's first train ones)")
    p.add_argument("--n", type=int, default=None, help="trajectories per problem (default: the demo's, 8)")
    p.add_argument("--no-server", action="store_true", help="skip (b), vLLM's OpenAI server")
    p.add_argument("--startup-timeout", type=float, default=900, help="seconds to wait for the server's /health")
    p.add_argument("--request-timeout", type=float, default=600, help="seconds per chat completion request")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a Hydra override on the demo's config, e.g. agent.format.lead=true (repeatable)")
    p.add_argument("--dump", help="write each side's last trajectories to this JSONL file (side, trajectory)")
    args = p.parse_args()
    if args.quick:
        args.problems, args.n = 6, args.n or 4
    reps = args.reps or (1 if args.quick else 3)
    common.quiet()

    from rest_loop.engine import draw_seed

    setup = Setup(args.problems, args.n, tuple(args.set))
    n = setup.sampler.n
    assert setup.model.source == common.demo_config().model.source, "the agent demo's model is the demo's"
    eng = common.engine()
    seed = draw_seed("bench/agent", args.problems, n)
    s = setup.sampler
    print(f"agent: {len(setup.prompts)} problems x n={n} = {len(setup.prompts) * n} trajectories; env "
          f"{setup.env.name} (max {setup.env.max_steps} steps), {setup.fmt.version()}, T={s.temperature}, "
          f"top_p={s.top_p}, max_tokens={s.max_tokens}/turn; KV block {eng.block_size}; {reps} reps alternated",
          flush=True)
    tally_ref = [CacheTally()]
    reset_calls = spy_generate(eng, tally_ref)

    server = None
    try:
        if not args.no_server:
            server = Server(common.model_path(), eng, setup.model, args.startup_timeout)
            print(f"  vLLM OpenAI server up in {server.startup_s:.0f} s on {server.url}", flush=True)

        results: dict[str, list] = {}
        tallies: dict[str, dict] = {}

        dumps: dict[str, list] = {}

        def side(name, call, before=None):
            def once():
                if before:
                    before()  # untimed
                tally_ref[0] = CacheTally()
                reset_calls()
                t: list[float] = []
                server_cpu = server.cpu_seconds() if server and name != "server" else None
                load = os.getloadavg()[0]
                with common.timed(t):
                    trajectories, tokens = call(tally_ref[0])
                results.setdefault(name, []).append(stats(setup, trajectories, tokens, eng.tokenizer))
                tallies[name] = tally_ref[0].summary()
                dumps[name] = trajectories
                out = {"traj_s": len(trajectories) / t[0], "tok_s": tokens / t[0], "seconds": t[0],
                       "load1": (load + os.getloadavg()[0]) / 2}
                if server_cpu is not None:  # the idle server's CPU while this side ran: should be ~0
                    out["server_cpu_s"] = server.cpu_seconds() - server_cpu
                print(f"  [{name}] {t[0]:.1f} s, {len(trajectories)} trajectories, {tokens} tokens, "
                      f"load {out['load1']:.1f}", file=sys.stderr, flush=True)
                return out
            return once

        sides = {
            "ours": side("ours", lambda tally: run_ours(eng, setup, n, seed, tally)),
            "serial": side("serial", lambda tally: run_serial(eng, setup, n, seed)),
        }
        if server:
            sides["server"] = side("server", lambda tally: run_server(server, setup, n, tally, args.request_timeout),
                                   before=server.reset_prefix_cache)

        # warm-up, untimed: first-call costs (grammar compilation, the server's first requests) are no side's
        warm = setup.prompts[:1]
        run_ours(eng, setup, 2, seed + 1, None, prompts=warm)
        run_serial(eng, setup, 1, seed + 1, prompts=warm)
        if server:
            server.reset_prefix_cache()
            run_server(server, setup, 2, CacheTally(), args.request_timeout, prompts=warm)

        runs = common.alternate(sides, reps)
    finally:
        if server:
            server.stop()
    del eng.generate
    if args.dump:
        import json
        from dataclasses import asdict

        with open(args.dump, "w") as f:
            for name, trajectories in dumps.items():
                for t in trajectories:
                    f.write(json.dumps({"side": name, **asdict(t)}) + "\n")

    names = list(runs)
    traj_s = {k: common.median([r["traj_s"] for r in runs[k]]) for k in names}
    tok_s = {k: common.median([r["tok_s"] for r in runs[k]]) for k in names}

    def ratio(peer, key):
        if peer not in runs:
            return None
        return common.paired_ratio([r[key] for r in runs["ours"]], [r[key] for r in runs[peer]])

    labels = {"ours": "ours (rollout, step-synchronous)", "serial": "(a) one trajectory at a time",
              "server": "(b) vLLM OpenAI server, N loops"}
    for k in names:
        idle = [round(r["server_cpu_s"], 1) for r in runs[k] if "server_cpu_s" in r]
        common.line(f"{labels[k]} traj/s", f"{traj_s[k]:.2f}",
                    f"tok/s {tok_s[k]:.1f}; s {[round(r['seconds'], 1) for r in runs[k]]}; load "
                    f"{[round(r['load1'], 1) for r in runs[k]]}" + (f"; idle server's CPU s {idle}" if idle else ""))
    print(f"  {'side':<10} {'traj':>5} {'steps':>6} {'mean':>5} {'valid':>6} {'answered':>8} {'correct':>7} "
          f"{'tokens':>7}  stops", flush=True)
    for k in names:
        st = results[k][-1]
        print(f"  {k:<10} {st['trajectories']:>5} {st['steps']:>6} {st['mean_steps']:>5} "
              f"{st['valid_action_rate']:>6} {st['answered']:>8} {st['correct']:>7} {st['tokens']:>7}  {st['stops']}",
              flush=True)
    for k in names:
        tk = results[k][-1]["tokenization"]
        if tk:
            common.line(f"{k}: turns not canonically tokenized", f"{tk['non_canonical_steps']:.0%}",
                        f"generated / canonical tokens {tk['token_inflation']}")
    for k in names:
        c = tallies[k]
        per = "; ".join(f"step {i}: {v['cached']}/{v['prompt']}" + (f" ({v['fraction']:.0%})" if v["fraction"]
                        is not None else "") for i, v in c["per_step"].items())
        overall = f"{c['cached']}/{c['prompt']} ({c['fraction']:.0%})" if c["fraction"] is not None else "not reported"
        common.line(f"{k}: prompt tokens from the prefix cache", overall, per)
    r_serial, r_server = ratio("serial", "traj_s"), ratio("server", "traj_s")
    common.line("ours / (a) one at a time, traj/s", f"{r_serial:.2f}x",
                f"target >= 5; tok/s {ratio('serial', 'tok_s'):.2f}x")
    if r_server is not None:
        common.line("ours / (b) OpenAI server, traj/s", f"{r_server:.2f}x",
                    f"target >= 1.0; tok/s {ratio('server', 'tok_s'):.2f}x")

    print(f"{'this was the --quick size; ' if args.quick else ''}the full size: .venv/bin/python bench/agent.py "
          f"(24 problems x n=8, 3 reps alternated), alone on the machine", flush=True)
    common.emit("agent", args, {
        "agent_vs_serial": common.ratio_entry(r_serial, ">=5"),
        "agent_vs_server": common.ratio_entry(r_server, ">=1.0"),
        "agent_vs_serial_tok_s": common.ratio_entry(ratio("serial", "tok_s")),
        "agent_vs_server_tok_s": common.ratio_entry(ratio("server", "tok_s")),
    }, {
        "traj_s": {k: round(v, 3) for k, v in traj_s.items()},
        "tok_s": {k: round(v, 1) for k, v in tok_s.items()},
        "runs": {k: [{kk: round(vv, 3) for kk, vv in r.items()} for r in v] for k, v in runs.items()},
        "trajectories": {k: v[-1] for k, v in results.items()},
        "prefix_cache": tallies,
        "problems": len(setup.prompts), "n": n, "reps": reps, "block_size": eng.block_size,
        "format": setup.fmt.version(), "max_steps": setup.env.max_steps,
        "sampler": {"temperature": s.temperature, "top_p": s.top_p, "top_k": s.top_k, "max_tokens": s.max_tokens},
        "server": {"args": server.args, "startup_s": round(server.startup_s, 1)} if server else None,
    })


if __name__ == "__main__":  # vLLM may start processes with spawn, which re-imports this file: keep the guard
    main()
    from rest_loop.engine import close_engines

    close_engines()
