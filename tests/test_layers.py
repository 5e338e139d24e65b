"""The layering of `jaxdiv/_layers.py`, checked on every module's imports (read with `ast`).

Fails when an import points up a layer (or sideways to another package of the same layer), or
reaches into another package's private module or private name. The table is the documentation:
change `jaxdiv/_layers.py`, not this test, when the architecture changes.
"""

from __future__ import annotations

import ast
import pathlib

from jaxdiv import _layers

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxdiv"


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(ROOT).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_package(name: str) -> bool:
  return MODULES.get(name, pathlib.Path()).name == "__init__.py"


def _package_of(module: str) -> str:
  """The package that holds `module` (a package holds itself)."""
  return module if _is_package(module) else module.rpartition(".")[0]


def _private(part: str) -> bool:
  return part.startswith("_") and not part.startswith("__")


def _within(module: str, package: str) -> bool:
  return module == package or module.startswith(package + ".")


def _imports(module: str, tree: ast.AST):
  """Yields (line, target module, imported name or None) for every jaxdiv import, and the
  private attributes read from an imported jaxdiv module (`_validation._concrete`)."""
  aliases = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for a in node.names:
        if a.name.split(".")[0] == "jaxdiv":
          aliases[a.asname or a.name] = a.name
          yield node.lineno, a.name, None
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = module if _is_package(module) else module.rpartition(".")[0]
        for _ in range(node.level - 1):
          base = base.rpartition(".")[0]
        source = ".".join(filter(None, [base, node.module]))
      else:
        source = node.module or ""
      if source.split(".")[0] != "jaxdiv":
        continue
      for a in node.names:
        sub = f"{source}.{a.name}"
        if sub in MODULES:
          aliases[a.asname or a.name] = sub
          yield node.lineno, sub, None
        else:
          yield node.lineno, source, a.name
  for node in ast.walk(tree):
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        and node.value.id in aliases and _private(node.attr)):
      yield node.lineno, aliases[node.value.id], node.attr


def _layer(module: str, table) -> tuple[int, str] | None:
  """(index, entry) of the table entry that holds `module`, the longest match."""
  found = None
  for i, entries in enumerate(table):
    for entry in entries:
      if _within(module, entry) and (found is None or len(entry) > len(found[1])):
        found = (i, entry)
  return found


def _layer_problem(importer: str, target: str, table, what: str) -> str | None:
  here, there = _layer(importer, table), _layer(target, table)
  if here is None:
    return f"{importer} is in no layer of {what}: add it there"
  if there is None:
    return f"imports {target}, which is in no layer of {what} (a layer above every other)"
  if here[1] == there[1] or there[0] < here[0]:
    return None
  way = "sideways (the same layer)" if there[0] == here[0] else "up"
  return f"imports {target} ({there[1]}), {way} from {here[1]} in {what}"


def _problems(importer: str, target: str, name: str | None) -> list[str]:
  if (importer, target) in _layers.ALLOWED:
    return []
  problems = []
  if importer not in _layers.TOP:
    problem = _layer_problem(importer, target, _layers.LAYERS, "LAYERS")
    if (problem is None and _within(importer, "jaxdiv.kernels") and importer != "jaxdiv.kernels"
        and _within(target, "jaxdiv.kernels")):
      problem = _layer_problem(importer, target, _layers.KERNEL_LAYERS, "KERNEL_LAYERS")
    if problem:
      problems.append(problem)
  parts = target.split(".")
  for i, part in enumerate(parts):
    if _private(part):
      owner = ".".join(parts[:i])
      if not _within(importer, owner):
        problems.append(f"imports {target}, private to {owner}")
      break
  if name is not None and _private(name) and not _within(importer, _package_of(target)):
    problems.append(f"uses {target}.{name}, private to {_package_of(target)}")
  return problems


def test_every_module_is_in_a_layer_and_imports_point_down():
  assert len(MODULES) > 50, sorted(MODULES)
  found = [f"{m} is in no layer of LAYERS: add it there" for m in MODULES
           if m not in _layers.TOP and _layer(m, _layers.LAYERS) is None]
  found += [f"{m} is in no layer of KERNEL_LAYERS: add it there" for m in MODULES
            if _within(m, "jaxdiv.kernels") and m != "jaxdiv.kernels"
            and _layer(m, _layers.KERNEL_LAYERS) is None]
  for module, path in MODULES.items():
    tree = ast.parse(path.read_text(), filename=str(path))
    for line, target, name in _imports(module, tree):
      for problem in _problems(module, target, name):
        found.append(f"{path.relative_to(ROOT)}:{line}: {problem}")
  assert not found, "layering broken (see jaxdiv/_layers.py):\n" + "\n".join(sorted(set(found)))


def test_the_checker_sees_upward_imports_and_private_reaches():
  """The rules themselves, on imports that must fail (and one that must pass)."""
  assert _problems("jaxdiv.discrete._shannon", "jaxdiv.kernels", None)  # up
  assert _problems("jaxdiv.losses._kl", "jaxdiv.parametric", None)  # sideways
  assert _problems("jaxdiv.cli", "jaxdiv.evaluate._reduce", None)  # private module
  assert _problems("jaxdiv.parametric._common", "jaxdiv.estimators", "_helper")  # private name
  assert _problems("jaxdiv.kernels.cross_entropy.api", "jaxdiv.kernels.distillation.base",
                   None)  # up between kernel ops
  assert _problems("jaxdiv.kernels.new_op.api", "jaxdiv.kernels._blockwise", None)  # unlisted
  assert not _problems("jaxdiv.losses._kl", "jaxdiv._numerics", None)
  assert not _problems("jaxdiv.kernels.distillation.api", "jaxdiv.kernels._args", None)


def test_allowed_exceptions_are_still_needed():
  """An exception that no import needs any more is removed from `ALLOWED`."""
  used = set()
  for module, path in MODULES.items():
    for _, target, _ in _imports(module, ast.parse(path.read_text())):
      used.add((module, target))
  stale = sorted(set(_layers.ALLOWED) - used)
  assert not stale, f"remove from jaxdiv/_layers.py ALLOWED: {stale}"
