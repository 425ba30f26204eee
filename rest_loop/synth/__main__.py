"""rest-loop-synth: new task inputs from a few examples, written as a dataset that `task=from_file` reads.

    rest-loop-synth synth.seeds=examples/seeds.jsonl synth.constrain=true     # the embedded model writes them
    rest-loop-synth synth.seeds=my.jsonl synth.requests=200 'synth.decks={topic: [birds, tax, chess]}'
    rest-loop-synth synth.seeds=my.jsonl judge@synth.generator=openai synth.generator.model=gpt-4o-mini \\
                    judge=openai judge.model=gpt-4o-mini                      # an endpoint writes and judges
    rest-loop-synth synth.seeds=my.jsonl out=runs/synth/<time>                # go on after a stop

Also `python -m rest_loop.synth ...`. The stages (rest_loop/synth/run.py) live in the run directory `out`
with DONE markers; run the same command with `out=<dir>` and finished stages are read back, answered
requests come from the reply cache. Exit codes: 2 a bad config or file (the message names the key, or
the file and row), 4 the generator or the judge stopped (budget spent, endpoint down): run it again with
`out=<dir>`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from rest_loop.__main__ import CONF
from rest_loop.config import ConfigError
from rest_loop.improve.backends import JudgeStopped
from rest_loop.rundir import RunInUse
from rest_loop.store import read_jsonl
from rest_loop.synth.stage import synthesise

log = logging.getLogger("rest_loop")


def next_command(dataset: Path, rows: list[dict]) -> str:
    """The rest-loop command that trains on the dataset (its references too, when the rows have them)."""
    return (f"rest-loop task=from_file task.source={dataset}"
            + (" task.fields.reference=reference" if any(r.get("reference") for r in rows) else ""))


@hydra.main(config_path=CONF, config_name="synth", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from rest_loop.engine import close_engines

    out = Path(HydraConfig.get().runtime.output_dir)
    try:
        OmegaConf.resolve(cfg)
        cfg.paths.run_dir = str(out)
        dataset = synthesise(cfg, out)
    except (ConfigError, MissingMandatoryValue) as e:
        log.error("%s: %s", getattr(e, "what", "config error"), e)
        sys.exit(2)
    except RunInUse as e:
        log.error("%s", e)
        sys.exit(2)
    except JudgeStopped as e:  # every answer so far is cached: the same command with out= re-asks only the rest
        log.error("%s. Stopped cleanly; every answer so far is cached. To go on, run the same command with "
                  "out=%s (where a budget was spent, a new one: synth.generator.budget_requests=<n> or "
                  "judge.budget_requests=<n>)", e, out)
        sys.exit(4)
    finally:
        close_engines()
    rows = read_jsonl(dataset)
    print(f"synthesised {len(rows)} rows: {dataset} (diversity report: {dataset.parent / 'diversity.png'})", flush=True)
    print(f"next: {next_command(dataset, rows)}", flush=True)


if __name__ == "__main__":  # vLLM starts its workers with spawn: keep this guard
    main()
