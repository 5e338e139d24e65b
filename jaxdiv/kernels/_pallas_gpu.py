"""What the Pallas GPU (Triton) row-block kernels of every op share: the default tile and the
masked load of one vocabulary tile."""

from __future__ import annotations

import jax.numpy as jnp
from jax.experimental.pallas import triton as plgpu

DEFAULT_BLOCK = (4, 2048)  # (rows per program, vocabulary tile): powers of two for Triton


def load_tile(ref, rows, rmask, j, bv, v, other):
  """Tile `j` (float32) of the rows `rows` of `ref` [n, v]; `other` off the edges."""
  cols = j * bv + jnp.arange(bv)
  cmask = cols < v
  tile = plgpu.load(ref.at[rows[:, None], cols[None, :]],
                    mask=rmask[:, None] & cmask[None, :], other=other)
  return tile.astype(jnp.float32), cols, cmask
