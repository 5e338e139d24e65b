"""Executes every notebook in notebooks/ top to bottom, so that a notebook that breaks fails CI.

The notebooks run with JAXDIV_NOTEBOOK_QUICK=1 (smaller samples, fewer steps) in a fresh kernel;
their committed outputs are not rewritten. Rebuild those with `python notebooks/build.py`.
"""

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_notebooks_are_present():
  assert len(NOTEBOOKS) >= 1, "no notebooks found in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, monkeypatch):
  monkeypatch.setenv("JAXDIV_NOTEBOOK_QUICK", "1")
  monkeypatch.setenv("MPLBACKEND", "Agg")
  nb = nbformat.read(path, as_version=4)
  client = NotebookClient(nb, timeout=300, kernel_name="python3",
                          resources={"metadata": {"path": str(path.parent)}})
  client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if o.get("output_type") == "error"]
  assert not errors, f"{path.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
  # Every committed notebook carries its executed outputs.
  committed = nbformat.read(path, as_version=4)
  unexecuted = [i for i, c in enumerate(committed.cells)
                if c.cell_type == "code" and c.get("execution_count") is None]
  assert not unexecuted, f"{path.name}: cells {unexecuted} have no committed outputs"
