"""What the Pallas GPU (Triton) kernels of every op share: the default tile, the masked loads
and stores of tiles, the logits tile of a fused linear head, the vocabulary splits of a grid, and
the typing of outputs under shard_map.

The kernels run on a grid of (token blocks, vocabulary splits or chunks): program (i, j) owns
the rows `row_block` and walks or writes the vocabulary tiles `vocab_tile`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from jaxdiv.kernels import _blockwise as bw
from jaxdiv.kernels import _linear_blocks as lb

DEFAULT_BLOCK = (4, 2048)  # (rows per program, vocabulary tile): powers of two for Triton


def load_tile(ref, rows, rmask, j, bv, v, other):
  """Tile `j` (float32) of the rows `rows` of `ref` [n, v]; `other` off the edges."""
  cols = j * bv + jnp.arange(bv)
  cmask = cols < v
  tile = plgpu.load(ref.at[rows[:, None], cols[None, :]],
                    mask=rmask[:, None] & cmask[None, :], other=other)
  return tile.astype(jnp.float32), cols, cmask


def row_block(n: int, bn: int):
  """(rows, rmask): the [bn] rows of this program (grid axis 0) and which exist (< n)."""
  rows = pl.program_id(0) * bn + jnp.arange(bn)
  return rows, rows < n


def vocab_tile(j, bv: int, v: int):
  """(cols, cmask): the [bv] columns of vocabulary tile `j` and which exist (< v)."""
  cols = j * bv + jnp.arange(bv)
  return cols, cols < v


def grad_tile(out_ref, bn: int, bv: int):
  """(rows, rmask, cols, cmask) of this program's [bn, bv] tile of the [n, chunk] output of a
  gradient kernel (grid: token blocks x tiles of the chunk)."""
  n, vc = out_ref.shape
  return (*row_block(n, bn), *vocab_tile(pl.program_id(1), bv, vc))


def store_tile(out_ref, rows, rmask, cols, cmask, x):
  """Stores the [bn, bv] tile `x` (in `out_ref`'s dtype) at (rows, cols), masked."""
  plgpu.store(out_ref.at[rows[:, None], cols[None, :]], x.astype(out_ref.dtype),
              mask=rmask[:, None] & cmask[None, :])


def store_split(refs, values, rows, rmask):
  """Stores each per-row value at this program's split (grid axis 1) of its [splits, n] ref."""
  split = pl.program_id(1)
  for ref, x in zip(refs, values, strict=True):
    plgpu.store(ref.at[split, rows], x, mask=rmask)


def logits_tile(h_ref, w_ref, rows, rmask, cols, cmask, *, bk, vd):
  """[bn, bv] float32 tile of hidden[rows] @ weight[:, cols] (weight[cols, :].T if vd)."""
  d = h_ref.shape[1]
  f32 = h_ref.dtype == jnp.float32 and w_ref.dtype == jnp.float32

  def body(k, acc):
    ks = k * bk + jnp.arange(bk)
    kmask = ks < d
    h = plgpu.load(h_ref.at[rows[:, None], ks[None, :]], mask=rmask[:, None] & kmask[None, :],
                   other=0.0)
    if vd:
      w = plgpu.load(w_ref.at[cols[:, None], ks[None, :]],
                     mask=cmask[:, None] & kmask[None, :], other=0.0)
    else:
      w = plgpu.load(w_ref.at[ks[:, None], cols[None, :]],
                     mask=kmask[:, None] & cmask[None, :], other=0.0)
    # float32 inputs: full-precision products (Triton would otherwise use tf32).
    return acc + plgpu.dot(h, w, trans_b=vd, allow_tf32=False if f32 else None)

  acc = jnp.zeros((rows.shape[0], cols.shape[0]), jnp.float32)
  return lax.fori_loop(0, pl.cdiv(d, bk), body, acc)


def split_range(v: int, bv: int, splits: int):
  """The vocabulary tiles [lo, hi) of this program's split (grid axis 1); possibly none."""
  per_split = pl.cdiv(pl.cdiv(v, bv), splits)
  lo = pl.program_id(1) * per_split
  return lo, jnp.minimum(lo + per_split, pl.cdiv(v, bv))


def tile_dims(tile, sizes) -> tuple[int, ...]:
  """The (tokens, vocabulary, model dimension) tile for arrays of these `sizes`: no larger than
  needed (a power of two), and at least 16, Triton's smallest dot."""
  return tuple(max(min(t, bw.pow2(s)), 16) for t, s in zip(tile, sizes))


def walk(hidden, weight, labels, *, vd: bool, tile, chunk: int, block_size, axis_name,
         interpret: bool):
  """(labels local to this shard, the whole vocabulary's size, the (bn, bv, bk) tile, the
  backward's vocabulary chunk) of a fused linear op's Pallas kernels (`_linear_blocks.walk` for
  the XLA walk); first refuses interpret mode under shard_map's replication checks."""
  refuse_interpret_under_vma(interpret, hidden, weight)
  v = lb.vocab_size(weight, vd)
  labels, vocab = lb.shard_labels(labels, weight, vd, axis_name)
  dims = tile_dims(tile, (hidden.shape[0], v, hidden.shape[1]))
  return labels, vocab, dims, bw.pick_block(v, block_size, chunk)


def refuse_interpret_under_vma(interpret: bool, *arrays):
  """Raises the clear error for interpret mode inside shard_map with replication checks.

  jax's Pallas interpreter evaluates the kernels with these types and rejects a gather that
  mixes varying refs with (invariant) program-id indices.
  """
  if interpret and any(map(varies_over_mesh, arrays)):
    raise ValueError(
        'implementation="pallas" runs in Pallas interpret mode off GPU, which jax cannot run'
        " inside shard_map with replication checks: pass check_vma=False to shard_map"
        ' (check_rep=False in jax.experimental.shard_map) or use implementation="chunked".')


def out_like(shape, dtype, like) -> jax.ShapeDtypeStruct:
  """An output typed like `like` across shard_map's mesh axes.

  Under shard_map's replication checks (check_vma) a `pallas_call` must be told how its outputs
  vary over the mesh; here as the inputs do (`like` is `hidden`, typed like the weight too by
  `_linear_blocks.typed_alike`). The field is `manual_axis_type` in jax 0.10 and was `vma` before.
  """
  aval = jax.typeof(like)
  for field in ("manual_axis_type", "vma"):
    if getattr(aval, field, None) is not None:
      try:
        return jax.ShapeDtypeStruct(shape, dtype, **{field: getattr(aval, field)})
      except TypeError:  # a jax whose ShapeDtypeStruct names it otherwise
        pass
  return jax.ShapeDtypeStruct(shape, dtype)


def varies_over_mesh(x) -> bool:
  """Whether `x` is typed as varying over a mesh axis (inside shard_map with check_vma)."""
  aval = jax.typeof(x)
  mat = getattr(aval, "manual_axis_type", None)
  return bool(getattr(mat, "varying", None) or getattr(aval, "vma", None))


def compiler_params(num_warps, num_stages):
  return plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages)
