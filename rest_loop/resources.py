"""Where rest-loop's own files are, in a checkout and in an installed wheel.

A checkout keeps them beside the package, at the repository root:

    conf/      the Hydra configs (the groups `rest-loop --help` lists)
    prompts/   the Jinja templates of tasks, judges and agents
    data/      the small data files that tasks ship with
    launch/    `accelerate launch` configs for trainer.accelerate_config (not a Hydra group)

A wheel carries the same folders inside the package, as rest_loop/conf, rest_loop/prompts, ...
(setup.py copies them in at build time). `SHIPPED` is whichever of the two holds conf/config.yaml;
the package's own copy wins, so an installed rest-loop never reads a stray conf/ in site-packages.

Runs go under `work_root()`: the checkout when rest-loop runs from one, else the folder it is started in.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
CHECKOUT = PACKAGE.parent
FOLDERS = ("conf", "prompts", "data", "launch")  # what setup.py copies into the wheel


def shipped_root() -> Path:
    """The folder that holds conf/, prompts/, data/ and launch/."""
    return PACKAGE if (PACKAGE / "conf" / "config.yaml").is_file() else CHECKOUT


SHIPPED = shipped_root()
INSTALLED = SHIPPED == PACKAGE  # a wheel (pip install . or git+...), not a checkout
CONF = SHIPPED / "conf"
PROMPTS = SHIPPED / "prompts"


def work_root() -> Path:
    """Where runs/ goes by default (paths.root): the checkout, or for an installed wheel the current folder."""
    return Path.cwd() if INSTALLED else CHECKOUT
