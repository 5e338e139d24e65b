"""Builds the notebooks from their sources in notebooks/src/ and executes them in place.

    python notebooks/build.py                # every notebook
    python notebooks/build.py 01 02          # those whose name starts with 01 or 02

A source is a plain Python file split into cells by `# %%` lines; `# %% [markdown]` starts a
markdown cell whose lines are written as `# text`. The executed notebook, with its outputs and
plots, is written next to this file as <name>.ipynb. The sources are the thing to edit; the
.ipynb files are their executed record (tests/test_notebooks.py re-executes them).
"""

from __future__ import annotations

import os
import sys
import time

import nbformat
from nbclient import NotebookClient

HERE = os.path.dirname(os.path.abspath(__file__))


def cells(source: str) -> list:
  out, kind, lines = [], None, []

  def flush():
    text = "\n".join(lines).strip("\n")
    if kind == "markdown":
      text = "\n".join(s[2:] if s.startswith("# ") else s.lstrip("#") for s in text.splitlines())
      out.append(nbformat.v4.new_markdown_cell(text))
    elif kind == "code" and text.strip():
      out.append(nbformat.v4.new_code_cell(text))

  for line in source.splitlines():
    if line.startswith("# %%"):
      flush()
      kind, lines = ("markdown" if "[markdown]" in line else "code"), []
    else:
      lines.append(line)
  flush()
  return out


def build(name: str, timeout: int = 600) -> float:
  with open(os.path.join(HERE, "src", name + ".py")) as f:
    nb = nbformat.v4.new_notebook(cells=cells(f.read()))
  nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
  start = time.perf_counter()
  NotebookClient(nb, timeout=timeout, kernel_name="python3",
                 resources={"metadata": {"path": HERE}}).execute()
  seconds = time.perf_counter() - start
  nbformat.write(nb, os.path.join(HERE, name + ".ipynb"))
  return seconds


def main(argv):
  names = sorted(f[:-3] for f in os.listdir(os.path.join(HERE, "src")) if f.endswith(".py"))
  if argv:
    names = [n for n in names if any(n.startswith(a) for a in argv)]
  for name in names:
    seconds = build(name)
    size = os.path.getsize(os.path.join(HERE, name + ".ipynb")) / 1024
    print(f"{name}: executed in {seconds:.1f} s, {size:.0f} KiB", flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
