"""Agent Grow: n trajectories per question through the one vLLM engine, step-synchronously.

    trajectories = rollout(engine, policy, env, fmt, prompts, n=8, sampling=..., round=1)

Every live trajectory advances one step per engine call: the call generates each one's next turn,
the tools answer, and the observations are appended as tokens. A trajectory stops when it calls the
environment's finish tool (or, in the tool_calls format, answers without a call), when its action
cannot be parsed, at the step limit, or when its history would outgrow the model's context.

The history is kept as token ids, never rendered again: the prompt is the chat template's rendering
of the question (with the tools), each step appends exactly the tokens the policy generated and the
observation turn's tokens. So fine-tuning trains on what the policy produced, and the engine's prefix
cache reads each trajectory's history from the previous step (the cache is emptied once, before the
first step, so the draw is a function of its inputs: the seed, the prompts, the policy, the tools).
"""

from __future__ import annotations

import logging
from rest_loop.agent.actions import SENTINEL, Format, first_parameter
from rest_loop.agent.env import Environment
from rest_loop.agent.records import Step, Trajectory
from rest_loop.config import SamplerConfig
from rest_loop.engine import Engine, Policy, draw_seed
from rest_loop.records import Prompt

log = logging.getLogger(__name__)


class Renderer:
    """Turns the question and each observation into the token ids the policy reads."""

    def __init__(self, tokenizer, fmt: Format, specs: list[dict]):
        self.tokenizer, self.fmt, self.specs = tokenizer, fmt, specs
        self.native = fmt.name == "tool_calls" and self.renders_tools()
        eos = tokenizer.eos_token_id
        self.stop_ids = set(eos if isinstance(eos, list) else [eos])
        self.lead_ids = self.encode(fmt.lead()) if fmt.lead() else []  # the start of every turn, canonical

    def renders_tools(self) -> bool:
        """Whether the chat template shows `tools=` (Qwen's does; SmolLM2's ignores them)."""
        question = [{"role": "user", "content": "?"}]
        plain = self.template(question)
        return self.template(question, tools=self.specs) != plain

    def template(self, messages: list[dict], tools: list[dict] | None = None, generation: bool = True) -> str:
        return self.tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                                  add_generation_prompt=generation)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids  # the template has its own markers

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        messages = self.fmt.messages(prompt.messages, self.specs, self.native)
        return self.encode(self.template(messages, tools=self.specs if self.native else None)) + self.lead_ids

    def observation_ids(self, text: str, generated: list[int]) -> list[int]:
        """The tokens after the agent's turn: the end of its turn (unless it generated that itself),
        the observation turn, and the next turn's opening, as the chat template writes them, then the lead."""
        turn = [{"role": "user", "content": "?"}, {"role": "assistant", "content": SENTINEL}]
        after = self.template(turn + [self.fmt.observation_message(text)]).split(SENTINEL, 1)[1]
        if generated and generated[-1] in self.stop_ids:  # the policy closed its turn: do not close it twice
            closing = self.tokenizer.decode([generated[-1]])
            if after.startswith(closing):
                after = after[len(closing):]
        return self.encode(after) + self.lead_ids


def step_params(sampler: SamplerConfig, fmt: Format, specs: list[dict]) -> dict:
    """vLLM sampling parameters for one step: one completion each (the n copies are separate requests)."""
    out = {"n": 1, "temperature": sampler.temperature, "top_p": sampler.top_p, "top_k": sampler.top_k,
           "max_tokens": sampler.max_tokens}
    if fmt.constrain:
        out["structured_outputs"] = {"regex": fmt.regex(specs)}
    return out


def vllm_params(params: dict) -> dict:
    if "structured_outputs" not in params:
        return params
    from vllm.sampling_params import StructuredOutputsParams

    return {**params, "structured_outputs": StructuredOutputsParams(**params["structured_outputs"])}


def take(env: Environment, fmt: Format, params: dict[str, str], traj: Trajectory, generated: str,
         token_ids: list[int], finish_reason: str | None) -> bool:
    """One agent turn: parse it (the format's lead and what was generated), append its Step, call its tool.
    True when the trajectory goes on (the step holds the observation); else its `stop` and `answer` are set."""
    text = fmt.turn_text(generated)
    action = fmt.parse(text, params)
    step = Step(text=text, token_ids=token_ids, finish_reason=finish_reason, parse=action.status,
                tool=action.tool, arguments=action.arguments, thought=action.thought)
    traj.steps.append(step)
    if action.status != "ok":
        traj.stop = "no_action"
    elif action.answer is not None:  # tool_calls: a reply with no call is the answer
        traj.answer, traj.stop = action.answer, "finish"
    elif env.is_finish(action.tool) and (result := env.call(action.tool, action.arguments)).ok:
        traj.answer, traj.stop = result.text.strip(), "finish"
    else:  # a tool's reply, or finish's complaint about its arguments, is the next observation
        result = env.call(action.tool, action.arguments)
        step.observation, step.tool_status = result.text, result.status
        traj.stop = "max_steps"  # until a later step says otherwise
        return True
    return False


def rollout(engine: Engine, policy: Policy, env: Environment, fmt: Format, prompts: list[Prompt], n: int,
            sampler: SamplerConfig, round: int, seed: int, use_tqdm: bool = True) -> list[Trajectory]:
    """n trajectories per prompt, in prompt order then sample order. `seed` decides the whole draw."""
    specs = env.specs()
    params = {s["function"]["name"]: first_parameter(s) for s in specs}
    renderer = Renderer(engine.tokenizer, fmt, specs)
    sampling = step_params(sampler, fmt, specs)
    env_id = f"{env.name}:{fmt.version()}"
    trajectories, history = [], []
    for p in prompts:
        ids = renderer.prompt_ids(p)
        for i in range(n):
            trajectories.append(Trajectory(round=round, prompt_id=p.id, sample_idx=i, policy=policy.name,
                                           seed=engine.seed, prompt_ids=ids, sampling=dict(sampling), env=env_id))
            history.append(list(ids))
    live = list(range(len(trajectories)))
    limit = engine.max_model_len
    for k in range(env.max_steps):
        if not live:
            break
        outs = engine.generate([history[t] for t in live], vllm_params(sampling), policy, use_tqdm=use_tqdm,
                               seed=draw_seed(seed, k), fresh_cache=k == 0)
        still = []
        for t, out in zip(live, outs):
            c, traj = out[0], trajectories[t]
            if take(env, fmt, params, traj, c.text, c.token_ids, c.finish_reason):
                step = traj.steps[-1]
                step.observation_ids = renderer.observation_ids(step.observation, c.token_ids)
                history[t] += c.token_ids + step.observation_ids
                if len(history[t]) + sampler.max_tokens > limit:
                    traj.stop = "context"
                else:
                    still.append(t)
        live = still
    return trajectories


def describe(trajectories: list[Trajectory]) -> dict:
    """Counts for a stage's DONE and the log: stops, steps, actions, tool errors, tokens."""
    steps = [s for t in trajectories for s in t.steps]
    calls = [s for s in steps if s.tool_status is not None]
    stops: dict[str, int] = {}
    for t in trajectories:
        stops[t.stop] = stops.get(t.stop, 0) + 1
    return {
        "trajectories": len(trajectories),
        "stops": stops,
        "mean_steps": len(steps) / len(trajectories) if trajectories else 0.0,
        "valid_action_rate": sum(s.parse == "ok" for s in steps) / len(steps) if steps else None,
        "tool_calls": len(calls),
        "tool_error_rate": sum(s.tool_status != "ok" for s in calls) / len(calls) if calls else None,
        "answered": sum(t.answer is not None for t in trajectories),
        "tokens": sum(t.num_tokens for t in trajectories),
    }

