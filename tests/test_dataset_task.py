"""DatasetTask: a task from a data file and a template, configured only in YAML.

Uses the Alpaca, ShareGPT and ticket files of tests/data (see test_formats.py) and
the 80 labelled reviews of data/classification. Templates made for a test are
written to a temporary prompts folder.
"""

from __future__ import annotations

import doctest
import logging
import re
from pathlib import Path

import pytest
from hydra.utils import instantiate

from rest_loop.config import PROJECT_ROOT, ConfigError, validate
from rest_loop.improve import verifiers
from rest_loop.records import Sample
from rest_loop.tasks import dataset
from rest_loop.tasks.data import load_rows
from rest_loop.tasks.dataset import DatasetTask
from tests.conftest import compose_config

DATA = Path(__file__).parent / "data"
ALPACA, SHAREGPT, DUMPED = (str(DATA / f) for f in ("alpaca_mixed.json", "sharegpt_chats.jsonl",
                                                    "sharegpt_dumped.jsonl"))
TICKETS = str(DATA / "custom_tickets.jsonl")
REVIEWS = str(PROJECT_ROOT / "data" / "classification" / "reviews.jsonl")
PROMPTS = str(PROJECT_ROOT / "prompts")


@pytest.fixture(scope="module", autouse=True)
def datasets_cache(tmp_path_factory):
    """datasets caches every loaded file as Arrow: keep the tests' files out of ~/.cache/huggingface."""
    import datasets

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf-datasets")))
        yield


@pytest.fixture
def prompts(tmp_path) -> Path:
    (tmp_path / "tasks").mkdir()
    return tmp_path


def test_plain_rows_render_every_column_and_constant_variables(prompts):
    (prompts / "tasks" / "ticket.j2").write_text(
        "Ticket {{ ticket }} from {{ customer }} (priority {{ priority }}):\n{{ input }}\n"
        "Route it to one of: {{ queues | join(', ') }}.")
    task = DatasetTask(TICKETS, str(prompts), name="tickets", fields={"input": "body", "reference": "queue"},
                       template="tasks/ticket.j2", variables={"queues": ["billing", "bugs", "sales"]},
                       system_prompt="You route support tickets.", n_heldout=3)
    first = next(p for p in task.train + task.heldout if p.id == "tickets-0")
    assert first.messages == [
        {"role": "system", "content": "You route support tickets."},
        {"role": "user", "content": "Ticket 1000 from Ana (priority 2):\n"
                                    "I was charged twice for my subscription this month.\n"
                                    "Route it to one of: billing, bugs, sales."}]
    assert (first.input, first.reference, first.target) == (
        "I was charged twice for my subscription this month.", "billing", None)
    assert task.describe()["formats"] == {"task.source": "plain"} and task.describe()["skipped_rows"] == 0


def test_chat_rows_become_system_context_and_user(prompts):
    task = DatasetTask(SHAREGPT, PROMPTS, name="chats", heldout_source=DUMPED, system_prompt="Be helpful.")
    by_id = {p.id: p for p in task.train + task.heldout}
    travel = by_id["chats-1"]
    assert [m["role"] for m in travel.messages] == ["system", "user", "assistant", "user"]
    assert travel.messages[0]["content"] == "You are a helpful travel agent."  # the row's own system wins
    assert travel.messages[-1]["content"] == "Which city should I start in?"  # tasks/plain.j2: the input as is
    assert travel.target == "Start in Tokyo, then take the train to Kyoto."
    assert by_id["chats-0"].messages[0] == {"role": "system", "content": "Be helpful."}  # none in the row
    assert sorted(p.id for p in task.heldout) == ["chats-heldout-0", "chats-heldout-1"]
    assert by_id["chats-heldout-1"].target is None  # the dump ends on a user turn
    assert task.describe()["formats"] == {"task.source": "sharegpt", "task.heldout_source": "sharegpt"}


def test_a_column_may_be_called_id(prompts):
    (prompts / "tasks" / "tagged.j2").write_text("[{{ id }}] {{ input }}")
    task = DatasetTask(ALPACA, str(prompts), name="alpaca", template="tasks/tagged.j2", n_heldout=1)
    rendered = {p.id: p.messages[-1]["content"] for p in task.train + task.heldout}
    assert rendered["alpaca-1"] == "[a-002] Translate the sentence into French.\n\nThe cat is on the table."
    history = [p for p in task.train + task.heldout if p.id == "alpaca-3"][0].messages
    assert len(history) == 5 and history[-1]["content"].endswith("And what is that in Celsius?")


def test_missing_template_variable_names_the_template_the_variable_and_the_row(prompts, caplog):
    template = prompts / "tasks" / "ticket.j2"
    template.write_text("{{ input }} (via {{ channel }})")  # only row 5 has a channel
    kw = dict(prompts_dir=str(prompts), fields={"input": "body"}, template="tasks/ticket.j2")
    message = f"{TICKETS}: row 1: {template}: 'channel' is undefined; variables given: ["
    with pytest.raises(ValueError, match=re.escape(message)):
        DatasetTask(TICKETS, n_heldout=0, **kw)
    with caplog.at_level(logging.WARNING, logger="rest_loop.tasks.formats"):
        task = DatasetTask(TICKETS, n_heldout=0, on_bad_row="skip", **kw)
    assert [p.id for p in task.train] == ["dataset-4"]
    assert task.train[0].messages[-1]["content"].endswith("(via email)")
    assert "skipped 11 of 12 rows (on_bad_row=skip): rows 1, 2, 3, 4, 6, ..." in caplog.text
    assert task.describe()["skipped_rows"] == 11


def test_seeded_split_is_disjoint_and_keeps_heldout_when_n_train_changes():
    def split(n_train, seed=0):
        t = DatasetTask(REVIEWS, PROMPTS, fields={"input": "text", "reference": "label"}, n_heldout=20,
                        n_train=n_train, seed=seed, template="tasks/plain.j2")
        return [p.id for p in t.heldout], [p.id for p in t.train]

    held, train = split(None)
    assert len(held) == 20 and len(train) == 60 and not set(held) & set(train)
    held_small, train_small = split(10)
    assert held_small == held and set(train_small) < set(train) and len(train_small) == 10
    assert split(10) == (held_small, train_small)  # the same seed, the same prompts
    assert split(None, seed=1)[0] != held


def test_split_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="task.n_heldout=None: without task.heldout_source"):
        DatasetTask(ALPACA, PROMPTS)
    with pytest.raises(ConfigError, match="task.heldout_split='test': task.source=.* is a single file"):
        DatasetTask(ALPACA, PROMPTS, heldout_split="test")
    with pytest.raises(ConfigError, match="is the train data itself"):
        DatasetTask(ALPACA, PROMPTS, heldout_source=ALPACA)
    with pytest.raises(ConfigError, match=r"task.n_train=6: must be between 0 and the 4 rows left"):
        DatasetTask(ALPACA, PROMPTS, n_heldout=2, n_train=6)
    with pytest.raises(ConfigError, match="task.format='csv'"):
        DatasetTask(ALPACA, PROMPTS, n_heldout=2, format="csv")


def test_saved_folder_splits(tmp_path):
    import datasets

    rows = load_rows(TICKETS)
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:9]),
                          "test": datasets.Dataset.from_list(rows[9:])}).save_to_disk(str(tmp_path / "saved"))
    task = DatasetTask(str(tmp_path / "saved"), PROMPTS, source_split="train", heldout_split="test",
                       fields={"input": "body", "reference": "queue"})
    assert (len(task.train), len(task.heldout)) == (9, 3)
    assert task.heldout[0].input == rows[9]["body"] and task.heldout[0].id == "dataset-heldout-0"


def test_from_file_config_composes_and_instantiates():
    cfg = compose_config("task=from_file", f"task.source={ALPACA}", "task.n_heldout=2", "task.name=alpaca")
    validate(cfg)
    task = instantiate(cfg.task)
    assert isinstance(task, DatasetTask) and task.metric is None
    assert (len(task.train), len(task.heldout)) == (4, 2) and task.train[0].id.startswith("alpaca-")
    assert task.describe()["template"].startswith("tasks/plain.j2@")


def test_classification_config_composes_and_scores_its_own_labels():
    has_label_match = hasattr(verifiers, "LabelMatch")
    overrides = [] if has_label_match else ["task.metric._target_=rest_loop.improve.verifiers.ExactMatch",
                                            "~task.metric.labels"]
    cfg = compose_config("task=classification", *overrides)
    validate(cfg)
    task = instantiate(cfg.task)
    assert (len(task.train), len(task.heldout)) == (60, 20) and task.name == "classification"
    prompt = task.heldout[0]
    assert prompt.reference in ("positive", "negative", "neutral") and prompt.target == prompt.reference
    assert "one of: positive, negative, neutral." in prompt.messages[-1]["content"]
    assert prompt.input in prompt.messages[-1]["content"]
    samples = [Sample(0, p.id, 0, f"{p.reference.title()}.", 1, "base", 0) for p in task.heldout]
    assert [r.score for r in task.metric(task.heldout, samples)] == [1.0] * 20
    if has_label_match:
        assert isinstance(task.metric, verifiers.LabelMatch)
        wrong = [Sample(0, p.id, 0, "positive" if p.reference != "positive" else "neutral", 1, "base", 0)
                 for p in task.heldout]
        assert [r.score for r in task.metric(task.heldout, wrong)] == [0.0] * 20


def test_review_data_is_balanced_and_distinct():
    rows = load_rows(REVIEWS)
    labels = [r["label"] for r in rows]
    assert len(rows) == 80 and {labels.count(x) for x in ("positive", "negative", "neutral")} <= {26, 27}
    assert len({r["text"] for r in rows}) == 80


def test_doctest(monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)  # the example uses repo-relative paths
    assert doctest.testmod(dataset).failed == 0
