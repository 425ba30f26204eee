"""examples/quickstart.ipynb runs in a real Jupyter kernel (nbclient), on the tiny model.

The notebook's cell tagged `parameters` is followed by one that sets the tiny overrides (papermill's
convention), so the notebook itself keeps the demo's settings. The kernel is a fresh Python with
the repository first on its path: `rest_loop.run` composes through Hydra's compose API, runs vLLM's
engine in the kernel's process and fine-tunes there, with no `__main__` guard to lean on.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rest_loop.config import PROJECT_ROOT

NOTEBOOK = PROJECT_ROOT / "examples" / "quickstart.ipynb"


def tiny_overrides(model: str, tmp_path: Path) -> list[str]:
    return ["experiment=demo", "model=hf", f"model.source={model}", "model.max_model_len=512", "model.kv_cache_gb=1",
            "task.n_train=6", "task.n_heldout=4", "sampler.n=2", "sampler.max_tokens=8", "loop.rounds=1",
            "eval.max_tokens=8", "filter.threshold=0.0", "trainer.epochs=1", "trainer.batch_size=4",
            f"paths.runs={tmp_path / 'runs'}", f"paths.pools={tmp_path / 'pools'}"]


def test_the_notebook_keeps_the_demo_settings_and_no_outputs():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    [parameters] = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert "experiment=demo" in parameters.source
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")  # a clean diff


@pytest.mark.slow
def test_the_quickstart_notebook_runs_in_a_kernel(tiny_model, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(f"overrides = {tiny_overrides(tiny_model, tmp_path)!r}",
                                                      metadata={"tags": ["injected-parameters"]}))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])))
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    text = "\n".join(out.get("text", "") + "".join(out.get("data", {}).get("text/plain", ""))
                     for c in nb.cells if c.cell_type == "code" for out in c.outputs)
    [run_dir] = (tmp_path / "runs" / "demo").iterdir()
    assert "held-out metric: accuracy; best round:" in text and str(run_dir) in text
    assert (run_dir / "round_001" / "eval" / "DONE").exists() and (run_dir / "run.log").exists()
    assert "(0, " in text and "(1, " in text  # the metrics rows of rounds 0 and 1
