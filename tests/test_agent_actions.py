"""Action formats, the token-level history, and the loss mask of agent training examples (no engine)."""

from __future__ import annotations

import re

import pytest
from transformers import AutoTokenizer

from rest_loop.agent.actions import ReactFormat, ToolCallFormat
from rest_loop.agent.env import Environment
from rest_loop.agent.grow import training_examples
from rest_loop.agent.records import Step, Trajectory
from rest_loop.agent.rollout import Renderer
from rest_loop.agent.tools.calculator import Calculator
from rest_loop.agent.tools.finish import Finish
from rest_loop.records import Prompt

PARAMS = {"calculator": "expression", "finish": "answer", "search": "query"}
ENV = Environment({"calculator": Calculator(), "finish": Finish()})


@pytest.fixture
def react(prompts_dir):
    return ReactFormat(prompts_dir, thought=True)


@pytest.fixture
def calls(prompts_dir):
    return ToolCallFormat(prompts_dir)


@pytest.mark.parametrize("text,status,tool,args,thought", [
    ("Thought: add them\nAction: calculator[23 + 45]", "ok", "calculator", {"expression": "23 + 45"}, "add them"),
    ("Action: finish[68]", "ok", "finish", {"answer": "68"}, ""),
    ("Action:finish[ Paris ]  \n", "ok", "finish", {"answer": "Paris"}, ""),
    ("Thought: look it up\nAction: search[employer of Dana Whitfield]", "ok", "search",
     {"query": "employer of Dana Whitfield"}, "look it up"),
    ("Action: google[x]", "ok", "google", {"input": "x"}, ""),  # parses; the environment says no such tool
    ("The answer is 68.", "unparsed", None, {}, ""),
    ("Thought: hmm\nAction: calculator 23+45", "unparsed", None, {}, ""),  # no brackets
    ("Action: calculator[23 +\n45]", "unparsed", None, {}, ""),  # an argument over two lines
    ("Action: [68]", "unparsed", None, {}, ""),  # no tool name
    ("", "unparsed", None, {}, ""),
])
def test_react_parse(react, text, status, tool, args, thought):
    action = react.parse(text, PARAMS)
    assert (action.status, action.tool, action.arguments) == (status, tool, args)
    if status == "ok":
        assert action.thought == thought


@pytest.mark.parametrize("text,status,tool,args,answer", [
    ('<tool_call>\n{"name": "calculator", "arguments": {"expression": "2+3"}}\n</tool_call>', "ok", "calculator",
     {"expression": "2+3"}, None),
    ('Let me compute.<tool_call>{"name": "finish", "arguments": {"answer": "5"}}</tool_call>', "ok", "finish",
     {"answer": "5"}, None),
    ('<tool_call>{"name": "calculator", "arguments": "{\\"expression\\": \\"1+1\\"}"}</tool_call>', "ok",
     "calculator", {"expression": "1+1"}, None),  # arguments as a JSON string, as OpenAI sends them
    ("The answer is 5.", "ok", None, {}, "The answer is 5."),  # no call: the final answer
    ('<tool_call>{"name": "calculator", "arguments": {"expression": "2+3"}</tool_call>', "unparsed", None, {}, None),
    ('<tool_call>{"name": "calculator", "arguments": {"expression": "2+3"}}', "unparsed", None, {}, None),  # unclosed
    ('<tool_call>{"arguments": {}}</tool_call>', "unparsed", None, {}, None),  # no name
    ('<tool_call>["calculator"]</tool_call>', "unparsed", None, {}, None),
    ('<tool_call>{"name": "calculator", "arguments": [1]}</tool_call>', "unparsed", None, {}, None),
])
def test_tool_call_parse(calls, text, status, tool, args, answer):
    action = calls.parse(text, PARAMS)
    assert (action.status, action.tool, action.arguments, action.answer) == (status, tool, args, answer)


@pytest.mark.parametrize("fmt_name,text,valid", [
    ("react", "Thought: add\nAction: calculator[23 + 45]", True),
    ("react", "Thought: done\nAction: finish[68 apples]", True),
    ("react", "Thought: add\nAction: calculator[twenty]", False),  # the calculator's schema pattern: digits
    ("react", "Action: calculator[23 + 45]", False),  # thought=true: a thought first
    ("calls", '<tool_call>\n{"name": "calculator", "arguments": {"expression": "23+45"}}\n</tool_call>', True),
    ("calls", '<tool_call>\n{"name": "finish", "arguments": {"answer": "68"}}\n</tool_call>', True),
    ("calls", '<tool_call>\n{"name": "search", "arguments": {"query": "x"}}\n</tool_call>', False),  # not a tool
])
def test_constrained_shapes_parse(react, calls, fmt_name, text, valid):
    """What the structured-outputs regex lets through, the parser reads: constrained turns always parse."""
    fmt = react if fmt_name == "react" else calls
    assert bool(re.fullmatch(fmt.regex(ENV.specs()), text)) is valid
    if valid:
        assert fmt.parse(text, PARAMS).status == "ok"


@pytest.mark.parametrize("thought", [False, True])
def test_constrained_turns_open_with_the_lead(prompts_dir, tokenizer, thought):
    """Constrained, a turn's literal start is read in the tokenizer's own spelling (after the prompt and
    after each observation) and the regex shapes only the rest: lead + generated is a valid action."""
    for fmt, generated in ((ReactFormat(prompts_dir, constrain=True, thought=thought),
                            " add\nAction: calculator[2+3]" if thought else " calculator[2+3]"),
                           (ToolCallFormat(prompts_dir, constrain=True, thought=thought),
                            ('sum\n<tool_call>' if thought else '') +
                            '\n{"name": "calculator", "arguments": {"expression": "2+3"}}\n</tool_call>')):
        lead = fmt.lead()
        assert lead == {("react", False): "Action:", ("react", True): "Thought:",
                        ("tool_calls", False): "<tool_call>", ("tool_calls", True): ""}[fmt.name, thought]
        assert re.fullmatch(fmt.regex(ENV.specs()), generated)
        assert fmt.parse(fmt.turn_text(generated), PARAMS).tool == "calculator"
        r = Renderer(tokenizer, fmt, ENV.specs())
        lead_ids = tokenizer(lead, add_special_tokens=False).input_ids if lead else []
        prompt = r.prompt_ids(Prompt("p", [{"role": "user", "content": "What is 2+3?"}]))
        after = r.observation_ids("5", tokenizer.encode("x") + [tokenizer.eos_token_id])
        assert prompt[len(prompt) - len(lead_ids):] == lead_ids and after[len(after) - len(lead_ids):] == lead_ids
        assert tokenizer.decode(prompt).endswith(f"<|im_start|>assistant\n{lead}")
    assert ReactFormat(prompts_dir, constrain=True).version() != ReactFormat(prompts_dir).version()


def test_react_system_prompt_lists_the_tools(react):
    messages = react.messages([{"role": "user", "content": "What is 2+3?"}], ENV.specs(), native_tools=False)
    assert messages[0]["role"] == "system" and messages[-1] == {"role": "user", "content": "What is 2+3?"}
    assert "calculator[expression]" in messages[0]["content"] and "finish[answer]" in messages[0]["content"]


@pytest.fixture(scope="module")
def tokenizer(request):
    return AutoTokenizer.from_pretrained(request.getfixturevalue("smollm2"))


def test_observation_turn_tokens(tokenizer, react, calls):
    """After the agent's turn come exactly the template's observation turn and the next turn's opening,
    and the end of the agent's turn only when the agent did not generate it."""
    for fmt, opening in ((react, "<|im_start|>user\nObservation: 68"), (calls, "<|im_start|>tool\n68")):
        r = Renderer(tokenizer, fmt, ENV.specs())
        closed = tokenizer.decode(r.observation_ids("68", tokenizer.encode("x") + [tokenizer.eos_token_id]))
        assert closed == f"\n{opening}<|im_end|>\n<|im_start|>assistant\n"
        cut = tokenizer.decode(r.observation_ids("68", tokenizer.encode("x")))  # stopped by max_tokens
        assert cut == f"<|im_end|>\n{opening}<|im_end|>\n<|im_start|>assistant\n"


def test_smollm2_template_ignores_tools_so_the_system_prompt_describes_them(tokenizer, calls):
    r = Renderer(tokenizer, calls, ENV.specs())
    assert not r.native
    text = tokenizer.decode(r.prompt_ids(Prompt("p", [{"role": "user", "content": "What is 2+3?"}])))
    assert "<tools>" in text and '"name": "calculator"' in text and text.endswith("<|im_start|>assistant\n")


def handmade(tokenizer) -> Trajectory:
    enc = lambda s: tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
    steps = [Step("Action: calculator[2+3]", enc("Action: calculator[2+3]") + [2], "stop", "ok", "calculator",
                  {"expression": "2+3"}, "5", enc("\n<|im_start|>user\nObservation: 5<|im_end|>\n<|im_start|>assistant\n"),
                  "ok"),
             Step("Action: finish[5]", enc("Action: finish[5]") + [2], "stop", "ok", "finish", {"answer": "5"})]
    return Trajectory(1, "p", 0, "base", 0, prompt_ids=enc("<|im_start|>user\nWhat is 2+3?<|im_end|>\n"
                                                              "<|im_start|>assistant\n"), steps=steps, answer="5",
                      stop="finish")


def test_loss_mask_per_step_and_whole(tokenizer):
    t = handmade(tokenizer)
    per_step = training_examples([(t, 1.0)], "step", "verifier")
    assert [e.turn for e in per_step] == [0, 1]
    for e, s in zip(per_step, t.steps):
        target = [i for i, m in zip(e.input_ids, e.mask) if m]
        assert target == s.token_ids  # exactly what the policy generated in that turn
        assert e.input_ids[:len(t.prompt_ids)] == t.prompt_ids
    # the second step's prompt holds the first step and its observation, as the policy read them
    assert per_step[1].input_ids[:-len(t.steps[1].token_ids)] == t.prompt_ids + t.steps[0].token_ids + \
        t.steps[0].observation_ids
    (whole,) = training_examples([(t, 1.0)], "trajectory", "verifier")
    assert [i for i, m in zip(whole.input_ids, whole.mask) if m] == t.steps[0].token_ids + t.steps[1].token_ids
    at = len(t.prompt_ids) + len(t.steps[0].token_ids)  # where the observation begins
    assert whole.mask[at:at + len(t.steps[0].observation_ids)] == [0] * len(t.steps[0].observation_ids)
    assert (whole.prompt_id, whole.sample_idx, whole.score, whole.turn) == ("p", 0, 1.0, None)


def test_unparsed_turns_are_never_targets(tokenizer):
    t = handmade(tokenizer)
    t.steps[1].parse = "unparsed"
    assert [e.turn for e in training_examples([(t, 1.0)], "step", "verifier")] == [0]


def test_trl_labels_follow_the_mask(tokenizer, tiny_model, tmp_path):
    """TRL's SFTTrainer, given our dataset, trains on exactly the masked-in tokens: the labels are -100 on the
    prompt and the observations and equal to the policy's tokens elsewhere."""
    from trl import SFTTrainer

    from rest_loop.config import TrainerConfig
    from rest_loop.finetune import sft_config, to_dataset

    t = handmade(tokenizer)
    examples = training_examples([(t, 1.0)], "trajectory", "verifier") + training_examples([(t, 1.0)], "step", "v")
    cfg = TrainerConfig(epochs=1, batch_size=2, report_to=[])
    trainer = SFTTrainer(model=tiny_model, args=sft_config(cfg, 1e-4, tmp_path), train_dataset=to_dataset(examples),
                         processing_class=tokenizer)
    rows = trainer.train_dataset
    for row, e in zip(rows, examples):
        assert row["input_ids"] == e.input_ids  # no token re-rendered or re-tokenised
        assert row["labels"] == [i if m else -100 for i, m in zip(e.input_ids, e.mask)]
