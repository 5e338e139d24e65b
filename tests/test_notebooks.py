"""The notebooks in notebooks/: their sources run, and the committed .ipynb files match them.

The fast tier checks that each committed notebook holds exactly the cells that
`notebooks/build.py` makes from its source (`notebooks/src/<name>.py`), each executed without
an error. The slow tier (`pytest -m slow`) executes the committed notebooks top to bottom in a
fresh Jupyter kernel with JAXDIV_NOTEBOOK_QUICK=1 (smaller samples, fewer steps), as a reader
would: since the cells are the source's, that runs every line of every source once (running
the sources as scripts in the fast tier as well cost 30-70 s a notebook for no code the slow
tier does not run). Neither rewrites the committed outputs: rebuild those with
`python notebooks/build.py`.
"""

import os
import pathlib
import sys

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]
sys.path.insert(0, str(ROOT / "notebooks"))
import build  # noqa: E402  (notebooks/build.py: the source -> cells rule)


def _quick_env() -> dict[str, str]:
  env = dict(os.environ, JAXDIV_NOTEBOOK_QUICK="1", MPLBACKEND="Agg")
  env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
  return env


def test_every_notebook_has_its_source_and_back():
  sources = sorted(p.stem for p in (ROOT / "notebooks" / "src").glob("*.py"))
  assert len(NOTEBOOKS) >= 1, "no notebooks found in notebooks/"
  assert sources == IDS, f"notebooks {IDS} and sources {sources} differ"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_matches_its_source(path):
  want = build.cells((path.parent / "src" / f"{path.stem}.py").read_text())
  got = nbformat.read(path, as_version=4).cells
  assert [(c.cell_type, c.source) for c in got] == [(c.cell_type, c.source) for c in want], (
      f"{path.name} is not what notebooks/build.py makes of src/{path.stem}.py: rebuild it")
  unexecuted = [i for i, c in enumerate(got)
                if c.cell_type == "code" and c.get("execution_count") is None]
  assert not unexecuted, f"{path.name}: cells {unexecuted} have no committed outputs"
  errors = [o for c in got if c.cell_type == "code" for o in c.get("outputs", [])
            if o.get("output_type") == "error"]
  assert not errors, f"{path.name}: committed with {errors[0].get('ename')}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_executes(path, monkeypatch):
  from nbclient import NotebookClient

  for key, value in _quick_env().items():
    monkeypatch.setenv(key, value)
  nb = nbformat.read(path, as_version=4)
  client = NotebookClient(nb, timeout=300, kernel_name="python3",
                          resources={"metadata": {"path": str(path.parent)}})
  client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if o.get("output_type") == "error"]
  assert not errors, f"{path.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
