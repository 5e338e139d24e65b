"""Helpers shared by test modules of several folders (imported as `_helpers`: `tests/` is on
`sys.path` through `tests/conftest.py`).

The multi-device ones: `tests/conftest.py` gives the CPU platform 8 devices before JAX starts.
"""

from __future__ import annotations

import inspect

import jax
import numpy as np
import pytest
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
