"""Helpers shared by test modules of several folders (imported as `_helpers`: `tests/` is on
`sys.path` through `tests/conftest.py`).

The multi-device ones: `tests/conftest.py` gives the CPU platform 8 devices before JAX starts.
"""

from __future__ import annotations

import inspect

import jax
import numpy as np
import pytest
from _pytest.mark.structures import ParameterSet
from jax.sharding import Mesh

try:
  from jax import shard_map
except ImportError:  # jax < 0.7
  from jax.experimental.shard_map import shard_map

N_DEVICES = 8
HAVE_8 = len(jax.devices("cpu")) >= N_DEVICES
needs_8 = pytest.mark.skipif(not HAVE_8, reason="needs 8 CPU devices (set in tests/conftest.py)")
# shard_map's replication checks: `check_vma` since jax 0.7, `check_rep` before.
CHECK_FLAG = "check_vma" if "check_vma" in inspect.signature(shard_map).parameters else "check_rep"


def cpu_mesh(k: int, name: str = "data") -> Mesh:
  """A one-axis mesh over the first `k` CPU devices."""
  return Mesh(np.array(jax.devices("cpu")[:k]), (name,))


def write_normal_npys(folder, names, rows: int, n: int, seed: int) -> None:
  """`<name>.npy` in `folder` for each of `names`: [rows, n] float32 standard normals (one
  generator seeded with `seed`, in that order), written 4096 rows at a time through a memory
  map, so that the files may be larger than the memory a test should take."""
  rng = np.random.default_rng(seed)
  for name in names:
    m = np.lib.format.open_memmap(folder / f"{name}.npy", "w+", np.float32, (rows, n))
    for i in range(0, rows, 4096):
      m[i:i + 4096] = rng.standard_normal((min(4096, rows - i), n), dtype=np.float32)
    m.flush()
    del m


def _values(case, n_args: int) -> tuple:
  """The argument values of one parametrize case (a tuple, a single value or a pytest.param)."""
  if isinstance(case, ParameterSet):  # pytest.param(...)
    return tuple(case.values)
  return tuple(case) if n_args > 1 else (case,)


def covering_cases(cases, n_args: int) -> list[int]:
  """Indices of a small subset of `cases` in which every value of every argument occurs.

  Greedy: take the case that covers most values not yet seen, until none is left. Values are
  compared by `repr`, so that floats, strings, dtypes and small tuples compare as written.
  """
  seen = [set() for _ in range(n_args)]
  keys = [[repr(v) for v in _values(c, n_args)] for c in cases]
  chosen = []
  while True:
    gains = [sum(k[j] not in seen[j] for j in range(n_args)) for k in keys]
    best = max(range(len(cases)), key=lambda i: gains[i], default=None)
    if best is None or gains[best] == 0:
      return sorted(chosen)
    chosen.append(best)
    for j in range(n_args):
      seen[j].add(keys[best][j])


def tiered(names: str, cases, fast=None, ids=None):
  """`pytest.mark.parametrize(names, cases)` with the cases outside `fast` in the slow tier.

  The fast tier (the README's test command) runs `fast`; `.ci/run` runs the others after it
  (`pytest -m slow`), so every case still runs on every submission. `fast` is a list of cases
  (as written in `cases`); by default the small covering set that `covering_cases` finds: each
  value of each argument is exercised in the fast tier, in some combination. Use it where a case
  costs a compilation of seconds and the product of the axes adds little that one case per value
  does not.
  """
  cases = list(cases)
  n_args = len([n for n in names.split(",") if n.strip()])
  if fast is None:
    keep = set(covering_cases(cases, n_args))
  else:
    want = [_values(f, n_args) for f in fast]
    keep = {i for i, c in enumerate(cases) if _values(c, n_args) in want}
    if len(keep) != len(fast):
      raise ValueError(f"tiered({names!r}): fast cases {fast} are not all among the cases")
  params = []
  for i, c in enumerate(cases):
    if i in keep:
      params.append(c)
    elif isinstance(c, ParameterSet):
      params.append(pytest.param(*c.values, marks=(*c.marks, pytest.mark.slow), id=c.id))
    else:
      params.append(pytest.param(*_values(c, n_args), marks=pytest.mark.slow))
  return pytest.mark.parametrize(names, params, ids=ids)
