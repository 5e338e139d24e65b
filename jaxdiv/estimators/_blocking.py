"""Row-blocked pairwise computations: memory ``O(block_size * m)`` instead of ``O(n * m)``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxdiv import _validation


def as_samples(x, name: str) -> jax.Array:
  """A sample set ``[n, d]`` (a 1-D array is ``n`` scalar samples), floating point."""
  x = _validation.as_float_array(x, name)
  if x.ndim == 1:
    x = x[:, None]
  if x.ndim != 2:
    raise ValueError(f"`{name}` must be a sample set of shape [n, d] (or [n]); got {x.shape}.")
  if x.shape[0] == 0:
    raise ValueError(f"`{name}` has no samples.")
  return x


def check_dims(x, y, names=("x", "y")):
  if x.shape[1] != y.shape[1]:
    raise ValueError(f"`{names[0]}` and `{names[1]}` must have the same dimension d; got shapes"
                     f" {x.shape} and {y.shape}.")


def check_block_size(block_size):
  if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 1:
    raise ValueError(f"`block_size` must be a positive int; got {block_size!r}.")
  return block_size


def sq_distances(a: jax.Array, b: jax.Array) -> jax.Array:
  """``||a_i - b_j||²`` by the Gram expansion, clamped at 0 (rounding can make it negative).

  Callers centre the data first: the expansion cancels catastrophically when ``||a||`` is
  large compared with the distances.
  """
  aa = jnp.sum(a * a, axis=-1)[:, None]
  bb = jnp.sum(b * b, axis=-1)[None, :]
  return jnp.maximum(aa + bb - 2 * (a @ b.T), 0.0)


def map_row_blocks(fn, x: jax.Array, block_size: int):
  """Applies ``fn(x_block, row_index, row_valid)`` to row blocks of ``x`` with ``lax.map``.

  ``x`` is padded to a multiple of the block; ``fn`` returns per-row arrays ``[B, ...]``; the
  result is ``[n, ...]`` (padding removed). Only one ``[B, m]`` block is live at a time.
  """
  n = x.shape[0]
  b = min(block_size, n)
  nb = -(-n // b)
  pad = nb * b - n
  xp = jnp.pad(x, ((0, pad), (0, 0)))
  idx = jnp.arange(nb * b)
  blocks = (xp.reshape(nb, b, -1), idx.reshape(nb, b), (idx < n).reshape(nb, b))
  out = lax.map(lambda args: fn(*args), blocks)
  return jax.tree.map(lambda o: o.reshape((nb * b,) + o.shape[2:])[:n], out)
