"""One synthesis in a run directory: review, generate, gate, dedup, report; each a stage with a DONE marker.

    Synthesis(cfg, out).run()  ->  out/report/dataset.jsonl

    review     synth requests for the first `synth.review.first` rows, scored by the gate; the judge's reasons
               for the worst become the `mistakes` the full batch is told to avoid
    generate   `synth.requests` requests (dealt after the review's), with those mistakes in the prompt
    gate       every row scored by the gate's reward terms; rows under `synth.gate.threshold` are dropped
    dedup      exact and near copies, and repeats of a seed or a held-out prompt, dropped (dedup.py)
    report     the dataset, stats.json (each stage's counts, before/after quality) and the diversity report

The generator is a judge-style backend (improve/backends.py) called with `ask`: its replies are cached as
they arrive, so a stopped run (budget spent, endpoint down) goes on where it stopped and re-asks nothing.
Everything that can be wrong with the config or the files is found in `__init__`, before any model starts.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rest_loop.config import ConfigError, build
from rest_loop.improve.backends import Request as Wire, ask
from rest_loop.improve.rewards import Reward
from rest_loop.store import Stage, read_json, read_jsonl, write_json, write_jsonl
from rest_loop.synth.gate import UNJUDGED, passing, quality, score, worst_reasons
from rest_loop.synth.dedup import dedup
from rest_loop.synth.files import DATASET, load_seeds, save
from rest_loop.synth.parse import parse, rows as parsed_rows, tally
from rest_loop.synth.prompt import build_requests
from rest_loop.synth.records import Request, SynthRow
from rest_loop.synth.report import report

log = logging.getLogger("rest_loop")


def read_decks(decks: Any) -> dict[str, list[str]]:
    """synth.decks: {name: [entry, ...]} in the config, or a YAML/JSON file of that mapping."""
    if isinstance(decks, str):
        path = Path(decks).expanduser()
        if not path.is_file():
            raise ConfigError(f"synth.decks={decks!r}: no such file; give a YAML or JSON file of name: [entries]")
        decks = OmegaConf.load(path)
    decks = OmegaConf.to_container(decks) if isinstance(decks, DictConfig) else decks
    if decks is not None and not isinstance(decks, dict):
        raise ConfigError(f"synth.decks: must map a deck's name to a list of entries, not {type(decks).__name__}")
    return decks or {}


def read_heldout(spec: Any) -> list[str]:
    """synth.heldout: a file of held-out prompts (any seed format), or a task config whose held-out prompts count."""
    if spec is None:
        return []
    if isinstance(spec, str):
        return [ex.input for ex in load_seeds(spec, key="synth.heldout")]
    if isinstance(spec, DictConfig) and "_target_" in spec:
        return [p.input for p in build(spec).heldout]
    raise ConfigError(f"synth.heldout: a file of held-out prompts or a task config (with _target_), not {spec!r}")


def reply_format(count: int, with_reference: bool) -> str:
    """synth.constrain: a regex for a JSON list of `count` items, for vLLM's structured outputs (locally or on a
    vLLM server). A small generator that cannot keep to the format otherwise then always writes a list.

    >>> import re; bool(re.fullmatch(reply_format(2, False), '["Name a bird.", "Name a tree."]'))
    True
    """
    text, answer = r'"[^"\\\n]{8,400}"', r'"[^"\\\n]{1,400}"'  # no quotes or escapes inside: always valid JSON
    item = rf'\{{"input": {text}, "reference": {answer}\}}' if with_reference else text
    return rf"\[{item}(, {item}){{{count - 1}}}\]"


class Synthesis:
    def __init__(self, cfg: DictConfig, out: Path):
        self.cfg, self.opts, self.out = cfg, cfg.synth, Path(out)
        opts, review = self.opts, cfg.synth.review
        for key, value, low in [("synth.requests", opts.requests, 1), ("synth.count", opts.count, 1),
                                ("synth.k", opts.k, 1), ("synth.max_tokens", opts.max_tokens, 1),
                                ("synth.review.first", review.first, 0),
                                ("synth.review.worst", review.worst, 1)]:
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"{key}={value!r}: must be an integer >= {low}")
        if not opts.seeds:
            raise ConfigError("synth.seeds: give the seed file (Alpaca, ShareGPT or plain columns)")
        self.seeds = load_seeds(opts.seeds, opts.format, OmegaConf.to_container(opts.fields) if opts.fields else
                                None, opts.on_bad_row)
        self.decks, self.heldout = read_decks(opts.decks), read_heldout(opts.heldout)
        if opts.reference_from is not None and opts.reference_from not in self.decks:
            raise ConfigError(f"synth.reference_from={opts.reference_from!r}: not a deck; the decks are "
                              f"{sorted(self.decks)}")
        gate = opts.gate
        self.reward = Reward.from_config(gate) if gate is not None else None
        if self.reward is not None and not 0 <= gate.threshold <= 1:
            raise ConfigError(f"synth.gate.threshold={gate.threshold}: scores are in [0, 1]")
        if self.reward is not None and gate.unjudged not in UNJUDGED:
            raise ConfigError(f"synth.gate.unjudged={gate.unjudged!r}: must be one of {', '.join(UNJUDGED)}")
        if self.reward is None and review.first:
            raise ConfigError("synth.review.first: the review pass needs a gate to judge its rows; set "
                              "synth.review.first=0 "
                              "or give a gate")
        self.first = math.ceil(review.first / opts.count)  # requests of the review pass
        self.requests(0, 1, [])  # the template renders: a bad one stops here, not after the review
        self.generator = build(cfg.synth.generator)
        self.name = str(self.generator.identity.get("model"))

    def run(self) -> Path:
        """The stages in order; a finished one is read back, not redone."""
        mistakes = self.review()
        made = self.generate(mistakes)
        kept = self.gate(made)
        kept, stages = self.dedup(kept)
        return self.report(kept, stages)

    def requests(self, start: int, n: int, mistakes: list[str]) -> list[Request]:
        o = self.opts
        return build_requests(self.seeds, self.decks, o.k, n, self.cfg.seed, self.cfg.paths.prompts, o.template,
                              o.count, o.with_reference, mistakes, start, o.system_prompt)

    def make(self, requests: list[Request]) -> tuple[list[SynthRow], list[dict], dict[str, Any]]:
        """Ask the generator; the rows its replies yield, each reply's status, and the tally."""
        wire = [Wire(r.messages, max_tokens=self.opts.max_tokens, temperature=self.opts.temperature, draw=r.index,
                     regex=reply_format(r.count, self.opts.with_reference) if self.opts.constrain else None)
                for r in requests]  # draw: each sampled request its own cache entry
        rows, replies, answered, parsed, errors = [], [], [], [], []
        for r, reply in zip(requests, ask(self.generator, wire)):
            if reply.error is not None:  # failed after its retries: nothing parsed, its rows counted missing
                errors.append(r)
                replies.append({"request": r.index, "error": reply.error})
                continue
            p = parse(reply.text)
            answered.append(r)
            parsed.append(p)
            rows += parsed_rows(r, p, self.name, self.opts.reference_from)
            replies.append({"request": r.index, "status": p.status, "form": p.form, "reason": p.reason,
                            "text": reply.text, "finish_reason": reply.finish_reason})
        stats = tally(answered, parsed)
        stats.update(errors=len(errors), missing=stats["missing"] + sum(r.count for r in errors),
                     asked=stats["asked"] + sum(r.count for r in errors), prompt=requests[0].messages if requests
                     else None)
        return rows, replies, stats

    def review(self) -> list[str]:
        stage = Stage(self.out / "review")
        if not self.first:
            return []
        if stage.done:
            return read_json(stage / "review.json")["mistakes"]
        rows, replies, made = self.make(self.requests(0, self.first, []))
        judged = score(self.reward, rows, self.seeds, self.name)
        threshold = self.cfg.synth.gate.threshold
        mistakes = worst_reasons(rows, judged, threshold, self.cfg.synth.review.worst)
        write_jsonl(stage / "rows.jsonl", rows)
        write_jsonl(stage / "replies.jsonl", replies)
        write_json(stage / "review.json", {"mistakes": mistakes, "quality": quality(judged, threshold),
                                           "made": made, "gate": self.reward.last_stats})
        stage.finish(rows=len(rows), mistakes=len(mistakes))
        log.info("review: %d rows, %d mistakes to avoid: %s", len(rows), len(mistakes), mistakes)
        return mistakes

    def generate(self, mistakes: list[str]) -> list[SynthRow]:
        stage = Stage(self.out / "generate")
        if not stage.done:
            requests = self.requests(self.first, self.opts.requests, mistakes)
            rows, replies, made = self.make(requests)
            write_jsonl(stage / "rows.jsonl", rows)
            write_jsonl(stage / "replies.jsonl", replies)
            write_json(stage / "stats.json", {**made, "mistakes": mistakes})
            stage.finish(rows=len(rows))
            log.info("generate: %d rows from %d requests", len(rows), len(requests))
        return read_jsonl(stage / "rows.jsonl", SynthRow)

    def gate(self, rows: list[SynthRow]) -> list[SynthRow]:
        stage = Stage(self.out / "gate")
        if not stage.done:
            if self.reward is None:
                kept, stats = rows, {"gate": None, "in": len(rows), "kept": len(rows)}
            else:
                threshold = self.cfg.synth.gate.threshold
                judged = score(self.reward, rows, self.seeds, self.name)
                kept, counts = passing(rows, judged, threshold, self.cfg.synth.gate.unjudged)
                before = read_json(self.out / "review/review.json")["quality"] if self.first else None
                stats = {**counts, "threshold": threshold, "reward": self.reward.version, "terms": self.reward.last_stats,
                         "quality": {"before_review": before, "after_review": quality(judged, threshold)}}
            write_jsonl(stage / "rows.jsonl", rows)  # every row, with its scores
            write_jsonl(stage / "kept.jsonl", kept)
            write_json(stage / "stats.json", stats)
            stage.finish(kept=len(kept))
            log.info("gate: kept %d of %d rows", len(kept), len(rows))
        return read_jsonl(stage / "kept.jsonl", SynthRow)

    def dedup(self, rows: list[SynthRow]) -> tuple[list[SynthRow], list[dict]]:
        stage = Stage(self.out / "dedup")
        if not stage.done:
            kept, stages = dedup(rows, against={"seeds": [ex.input for ex in self.seeds], "heldout": self.heldout})
            write_jsonl(stage / "kept.jsonl", kept)
            write_json(stage / "stages.json", stages)
            stage.finish(kept=len(kept))
            log.info("dedup: kept %d of %d rows", len(kept), len(rows))
        return read_jsonl(stage / "kept.jsonl", SynthRow), read_json(stage / "stages.json")

    def report(self, kept: list[SynthRow], stages: list[dict]) -> Path:
        stage = Stage(self.out / "report")
        if not stage.done:
            summary = report(kept, stages, self.decks, seeds=len(self.seeds))
            stats = {"generator": self.name, "seeds": len(self.seeds), "heldout": len(self.heldout), "rows": len(kept),
                     "review": read_json(self.out / "review/review.json") if self.first else None,
                     "generate": read_json(self.out / "generate/stats.json"),
                     "gate": read_json(self.out / "gate/stats.json"), "dedup": stages,
                     "generator_usage": vars(self.generator.usage)}  # this process's calls: 0 when all were cached
            save(stage.path, kept, stats, summary)
            stage.finish(rows=len(kept))
        return stage / DATASET

