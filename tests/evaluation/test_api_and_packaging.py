"""The names users import, and what the package metadata promises."""

from __future__ import annotations

import ast
import os
import pathlib
import pkgutil
import subprocess
import sys
import tomllib

import pytest

import jaxdiv

ROOT = pathlib.Path(jaxdiv.__file__).parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_evaluate_the_function_and_evaluation_the_package():
  import jaxdiv.evaluation as ev

  assert callable(jaxdiv.evaluate) and jaxdiv.evaluate is ev.evaluate
  assert ev.__name__ == "jaxdiv.evaluation" and hasattr(ev, "DIVERGENCES")
  # No submodule has the function's name: importing one would rebind `jaxdiv.evaluate`.
  assert "evaluate" not in {m.name for m in pkgutil.iter_modules(jaxdiv.__path__)}
  assert jaxdiv.evaluate is ev.evaluate


def test_import_jaxdiv_does_not_import_jax_until_a_name_is_used():
  code = ("import sys, jaxdiv; before = 'jax' in sys.modules; f = jaxdiv.kl_divergence;"
          " print(before, 'jax' in sys.modules, f.__module__)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=120).stdout.split()
  assert out[:2] == ["False", "True"] and out[2].startswith("jaxdiv.discrete"), out


def test_every_public_name_resolves():
  for name in jaxdiv.__all__:
    assert getattr(jaxdiv, name) is not None, name
  assert set(jaxdiv.__all__) <= set(dir(jaxdiv))
  with pytest.raises(AttributeError, match="no attribute 'kl'"):
    jaxdiv.kl  # noqa: B018
  code = "import jaxdiv; print(jaxdiv.discrete.kl_divergence is jaxdiv.kl_divergence)"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=120)
  assert out.stdout.strip() == "True", out.stderr  # subpackages as the eager imports bound them


def test_python_version_license_and_typing_marker():
  project = PYPROJECT["project"]
  assert project["requires-python"] == ">=3.11"  # jax 0.10's wheels start at 3.11
  assert PYPROJECT["tool"]["ruff"]["target-version"] == "py311"
  assert project["license"] == {"text": "Apache-2.0"}
  text = (ROOT / "LICENSE").read_text()
  assert "Apache License" in text and "Version 2.0, January 2004" in text
  assert (ROOT / "jaxdiv" / "py.typed").exists()
  assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["jaxdiv"]
  assert "Typing :: Typed" in project["classifiers"]


def _imported_modules(folder: pathlib.Path) -> set[str]:
  names = set()
  for path in folder.rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        names |= {a.name.split(".")[0] for a in node.names}
      elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        names.add(node.module.split(".")[0])
  return names


def _requirement_name(req: str) -> str:
  for sep in "<>=!~;[ ":
    req = req.split(sep)[0]
  return req.replace("-", "_").lower()


def test_every_runtime_dependency_is_imported_by_the_library():
  used = _imported_modules(ROOT / "jaxdiv")
  for req in PYPROJECT["project"]["dependencies"]:
    assert _requirement_name(req) in used, req
  demo_only = {_requirement_name(r) for r in PYPROJECT["project"]["optional-dependencies"]["demo"]}
  assert {"flax", "optax"} <= demo_only and "flax" in _imported_modules(ROOT / "jaxdiv" / "demo")
