"""rest-loop: ReST-style synthetic-data self-improvement loops for small language models.

From Python (a script or a notebook), with the same overrides as the `rest-loop` command:

    import rest_loop
    result = rest_loop.run(["experiment=demo", "loop.rounds=1"], config_dir=None)
    print(result.table); result.best; result.run_dir; result.metrics

See rest_loop/api.py. Importing the package is cheap: vLLM, torch and TRL load when a run starts.
"""

from __future__ import annotations

__all__ = ["run", "RunResult", "Stopped", "close_engines"]


def run(overrides=(), config_dir=None):
    """Compose `overrides` over rest-loop's config (plus `config_dir`, as --config-dir), run, return a RunResult."""
    from rest_loop.api import run as _run

    return _run(overrides, config_dir)


def close_engines() -> None:
    """Stop the vLLM engines this process started (a notebook keeps them for its next run)."""
    from rest_loop.engine import close_engines as _close

    _close()


def __getattr__(name: str):
    if name in ("RunResult", "Stopped"):
        from rest_loop import api

        return getattr(api, name)
    raise AttributeError(f"module 'rest_loop' has no attribute {name!r}")
