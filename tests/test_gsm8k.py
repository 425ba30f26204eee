"""GSM8K from local files only: jsonl, parquet and a save_to_disk folder give the same prompts.

The fixtures in tests/data are 16 train and 4 held-out problems in GSM8K's format,
written for these tests. The hub is never reached: the offline test forces
datasets' offline mode so it fails at once instead of retrying for ~25 s.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra.utils import instantiate

from rest_loop.config import ConfigError
from rest_loop.improve.verifiers import NumericMatch
from rest_loop.records import Sample
from rest_loop.tasks.data import load_rows
from rest_loop.tasks.gsm8k import GSM8KTask, parse_answer
from tests.conftest import compose_config

DATA = Path(__file__).parent / "data"
TINY, TINY_TEST = str(DATA / "gsm8k_tiny.jsonl"), str(DATA / "gsm8k_tiny_test.jsonl")


def snapshot(prompts):
    return [(p.id, p.input, p.reference, p.target, p.messages) for p in prompts]


@pytest.fixture(scope="module", autouse=True)
def datasets_cache(tmp_path_factory):
    """datasets caches every loaded file as Arrow: keep the tests' tmp files out of ~/.cache/huggingface."""
    import datasets

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf-datasets")))
        yield


@pytest.fixture(scope="module")
def task(datasets_cache) -> GSM8KTask:
    return GSM8KTask(str(Path(__file__).parent.parent / "prompts"), source=TINY, heldout_source=TINY_TEST)


@pytest.mark.parametrize("answer,reference,target", [
    ("Half is 48/2 = <<48/2=24>>24.\nIn all 48+24 = <<48+24=72>>72.\n#### 72",
     "72", "Half is 48/2 = 24.\nIn all 48+24 = 72.\n#### 72"),
    ("It costs $<<1000+250=1250>>1,250.  \n#### 1,250", "1250", "It costs $1,250.\n#### 1250"),
    ("The change is 5 - 8 = <<5-8=-3>>-3\n####-3", "-3", "The change is 5 - 8 = -3\n#### -3"),
    ("#### 4.5", "4.5", "#### 4.5"),
    ("So the answer is 12.", None, None),  # no "####" line
    ("Twelve.\n#### twelve", None, None),  # not a number after it
], ids=["annotations", "commas", "negative", "decimal", "no-marker", "not-a-number"])
def test_parse_answer(answer, reference, target):
    assert parse_answer(answer) == (None if reference is None else (reference, target))


def test_jsonl_gives_references_and_clean_targets(task):
    assert (len(task.train), len(task.heldout)) == (16, 4)
    assert task.train[0].id == "gsm8k-train-0" and task.heldout[3].id == "gsm8k-test-3"
    prompts = task.train + task.heldout
    for p in prompts:
        assert "<<" not in p.target and p.target.splitlines()[-1] == f"#### {p.reference}"
        assert p.input in p.messages[-1]["content"] and "#### <number>" in p.messages[-1]["content"]
    assert task.train[-1].reference == "3240"  # "#### 3,240": commas dropped
    samples = [Sample(0, p.id, 0, p.target, 0, "original", 0) for p in prompts]
    assert [r.score for r in NumericMatch()(prompts, samples)] == [1.0] * 20


def test_parquet_and_saved_folder_match_jsonl(task, tmp_path):
    import datasets

    train, test = (datasets.Dataset.from_list(load_rows(f)) for f in (TINY, TINY_TEST))
    train.to_parquet(tmp_path / "train.parquet")
    test.save_to_disk(str(tmp_path / "test_saved"))  # a lone Dataset: the folder is the split
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "saved"))
    prompts_dir = task.template.root

    from_parquet = GSM8KTask(prompts_dir, source=str(tmp_path / "train.parquet"),
                             heldout_source=str(tmp_path / "test_saved"))
    from_folder = GSM8KTask(prompts_dir, source=str(tmp_path / "saved"))  # heldout_split "test" of the folder
    for other in (from_parquet, from_folder):
        assert snapshot(other.train) == snapshot(task.train)
        assert snapshot(other.heldout) == snapshot(task.heldout)
    no_dev = r"task.source='.*saved' has no split 'dev'; its splits are \['test', 'train'\]"
    with pytest.raises(ConfigError, match=no_dev):
        GSM8KTask(prompts_dir, source=str(tmp_path / "saved"), heldout_split="dev")


def test_seeded_split_is_disjoint_and_keeps_heldout_when_n_train_changes(task):
    def split(n_train, seed=0):
        t = GSM8KTask(task.template.root, source=TINY, heldout_split=None, n_heldout=4, n_train=n_train, seed=seed)
        return [p.id for p in t.heldout], [p.id for p in t.train]

    held, train = split(None)
    assert len(held) == 4 and len(train) == 12 and not set(held) & set(train)
    held_small, train_small = split(5)
    assert held_small == held and set(train_small) < set(train) and len(train_small) == 5
    assert split(5) == (held_small, train_small)  # the same seed, the same prompts
    assert split(None, seed=1)[0] != held


def test_n_over_the_rows_names_the_key(task):
    with pytest.raises(ConfigError, match=r"task.n_train=13: .*12 rows left after holding out task.n_heldout=4"):
        GSM8KTask(task.template.root, source=TINY, heldout_split=None, n_heldout=4, n_train=13)
    with pytest.raises(ConfigError, match="task.n_heldout=None"):
        GSM8KTask(task.template.root, source=TINY, heldout_split=None)
    with pytest.raises(ConfigError, match="task.n_heldout=5: must be between 0 and the 4 rows"):
        GSM8KTask(task.template.root, source=TINY, heldout_source=TINY_TEST, n_heldout=5)


def test_single_file_needs_a_heldout_source_or_a_seeded_split(task):
    with pytest.raises(ConfigError, match="is a single file, which has no splits; set task.heldout_source"):
        GSM8KTask(task.template.root, source=TINY)


@pytest.mark.parametrize("line,message", [
    ('{"question": "How many?"}', "missing field 'answer'"),
    ('{"question": "How many?", "answer": "It is 3 + 4 = 7."}', "the answer has no final '#### <number>' line"),
])
def test_bad_row_names_the_file_and_row(task, tmp_path, line, message):
    bad = tmp_path / "bad.jsonl"
    good = Path(TINY).read_text().splitlines()[:2]
    bad.write_text("\n".join([*good, line, good[0]]) + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{bad}: row 3: {message}")):
        GSM8KTask(task.template.root, source=str(bad), heldout_source=TINY_TEST)


def test_unreadable_file_names_the_key(tmp_path):
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"question": "a", "answer": "#### 1"}\n{"question": oops}\n')
    unreadable = re.escape(f"task.source='{bad}': could not read it as json: line 2, column 14: Expecting value")
    with pytest.raises(ValueError, match=unreadable):
        load_rows(str(bad), key="task.source")


def test_missing_sources_say_where_they_looked(monkeypatch, tmp_path):
    import datasets
    import huggingface_hub

    # Both are read when datasets and huggingface_hub are imported: set the constants, not only the env.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match=r"task.source='rest-loop-tests/no-such-gsm8k': not found locally "
                                          r"\(no such file or folder\) and the Hugging Face Hub could not be reached"):
        load_rows("rest-loop-tests/no-such-gsm8k", "train", name="main", key="task.source")
    missing = tmp_path / "train.jsonl"  # a path is never looked up on the hub
    with pytest.raises(ConfigError, match=re.escape(f"task.heldout_source='{missing}': no such file or folder")):
        load_rows(str(missing), key="task.heldout_source")


def test_config_composes_and_instantiates():
    cfg = compose_config("task=gsm8k", f"task.source={TINY}", f"task.heldout_source={TINY_TEST}", "task.n_train=8")
    task = instantiate(cfg.task)
    assert isinstance(task, GSM8KTask) and isinstance(task.metric, NumericMatch)
    assert (len(task.train), len(task.heldout)) == (8, 4)
    assert task.describe()["template"].startswith("tasks/gsm8k.j2@")

    cfg = compose_config("task=gsm8k", f"task.source={TINY}", "task.heldout_split=null", "task.n_heldout=3")
    task = instantiate(cfg.task)
    assert (len(task.train), len(task.heldout)) == (13, 3)
