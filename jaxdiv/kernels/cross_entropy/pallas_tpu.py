"""Pallas kernels for TPU (Mosaic) for cross-entropy over given logits, and their custom VJP.

Mosaic runs the kernel body once per grid point with that point's blocks in VMEM, so the
vocabulary is a grid axis rather than a loop inside one program as in the Triton kernels. The
forward walks it last and in order ("arbitrary") and keeps the online logsumexp state of its
rows in VMEM scratch; the backward writes each [rows, vocab] gradient tile once from the logits
tile and the row's lse, in parallel over both axes.

Per-row arrays (labels, lse, cotangent, the statistics) travel as [n, 1] columns: a [bn, 1]
block is legal for any bn that is a multiple of 8, where a 1-D block would need multiples of 128.
Edge blocks are not padded copies: their out-of-bounds part holds garbage, so the forward masks
columns past the vocabulary with -inf by their global index, and writes to rows past the end
are dropped by the output BlockSpec.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from jaxdiv.kernels import _blockwise as bw

DEFAULT_BLOCK = (128, 2048)  # (rows, vocabulary): 1 MiB float32 tiles, double-buffered in VMEM
LANES = 128
# TPU interpret mode (simulated VMEM, grid order, uninitialised memory) runs these kernels on
# CPU; jax >= 0.10 has it.
HAS_INTERPRET = hasattr(pltpu, "InterpretParams")


def tile_sizes(shape, dtype, block_size) -> tuple[int, int]:
  """(bn, bv) that Mosaic accepts: each a multiple of the native tile ((8, 128) for 32-bit
  dtypes, (16, 128) for 16-bit) or the whole axis; requested sizes are rounded up."""
  n, v = shape
  bn, bv = bw.tile_sizes(shape, block_size, DEFAULT_BLOCK)
  sublanes = 8 * max(1, 4 // jnp.dtype(dtype).itemsize)
  return _round_up(bn, sublanes, n), _round_up(bv, LANES, v)


def _round_up(b, multiple, full):
  b = -(-b // multiple) * multiple
  return full if b >= full else b


def _row(ref) -> jax.Array:
  """A [bn, 1] column block as the [bn] vector the shared row math takes.

  A no-op in Mosaic: the vector keeps the column's layout (an implicit minor dimension), the
  same as a row reduction's result, and `x[:, None]` turns either back into a column.
  """
  return ref[...][:, 0]


def _cols(bv_index, shape) -> jax.Array:
  """Global column indices of the [bn, bv] tile at vocabulary block `bv_index` (2-D: Mosaic has
  no 1-D iota)."""
  return bv_index * shape[1] + lax.broadcasted_iota(jnp.int32, shape, 1)


def _stats_kernel(z_ref, labels_ref, lse_ref, zl_ref, zs_ref, m_sc, s_sc, zl_sc, zs_sc, *,
                  vocab, smoothing):
  j = pl.program_id(1)
  last = pl.num_programs(1) - 1

  @pl.when(j == 0)
  def _():
    m_sc[...] = jnp.full(m_sc.shape, -jnp.inf, jnp.float32)
    for ref in (s_sc, zl_sc, zs_sc):
      ref[...] = jnp.zeros(ref.shape, jnp.float32)

  tile = z_ref[...].astype(jnp.float32)
  cols = _cols(j, tile.shape)
  cmask = None
  if vocab % tile.shape[1]:  # the last vocabulary block reads past the edge: garbage there
    cmask = cols < vocab
    tile = jnp.where(cmask, tile, -jnp.inf)
  state = bw.lse_update(bw.Lse(_row(m_sc), _row(s_sc)), tile)
  z_label, z_sum = bw.label_and_sum(tile, _row(labels_ref), cols, cmask, sums=smoothing)
  m_sc[...] = state.m[:, None]
  s_sc[...] = state.s[:, None]
  zl_sc[...] += z_label[:, None]
  if smoothing:
    zs_sc[...] += z_sum[:, None]

  @pl.when(j == last)
  def _():
    lse_ref[...] = bw.lse_finish(bw.Lse(_row(m_sc), _row(s_sc)))[:, None]
    zl_ref[...] = zl_sc[...]
    zs_ref[...] = zs_sc[...]


def _grad_kernel(z_ref, labels_ref, lse_ref, g_ref, dz_ref, **cfg):
  # Columns past the vocabulary get garbage gradients that the output BlockSpec drops.
  tile = z_ref[...].astype(jnp.float32)
  cols = _cols(pl.program_id(1), tile.shape)
  d = bw.cross_entropy_dlogits(tile, _row(lse_ref), _row(labels_ref), cols, _row(g_ref), **cfg)
  dz_ref[...] = d.astype(dz_ref.dtype)


def _specs(bn, bv):
  tile = pl.BlockSpec((bn, bv), lambda i, j: (i, j))
  column = pl.BlockSpec((bn, 1), lambda i, j: (i, 0))  # the same block for every j
  return tile, column


def _interpret(interpret):
  """`pallas_call`'s `interpret=`: True means TPU interpret mode with its defaults (buffers
  start as NaN, so an unmasked read of an edge block's padding shows in the result)."""
  if interpret is True:
    if not HAS_INTERPRET:
      raise NotImplementedError("TPU interpret mode needs jax.experimental.pallas.tpu."
                                f"InterpretParams (jax >= 0.10); jax is {jax.__version__}.")
    return pltpu.InterpretParams()
  return interpret


@functools.partial(jax.jit, static_argnames=("bn", "bv", "smoothing", "interpret"))
def stats(z, labels, *, bn, bv, smoothing=True, interpret=False):
  """(lse, z[label], sum z) per row of `z` [n, v] (sum z only with `smoothing`, else 0)."""
  n, v = z.shape
  tile, column = _specs(bn, bv)
  column_out = jax.ShapeDtypeStruct((n, 1), jnp.float32)
  kernel = functools.partial(_stats_kernel, vocab=v, smoothing=smoothing)
  out = pl.pallas_call(
      kernel, grid=(pl.cdiv(n, bn), pl.cdiv(v, bv)), in_specs=[tile, column],
      out_specs=[column] * 3, out_shape=[column_out] * 3,
      scratch_shapes=[pltpu.VMEM((bn, 1), jnp.float32)] * 4,
      compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "arbitrary")),
      interpret=_interpret(interpret),
  )(z, labels[:, None])
  return bw.CeStats(*(o[:, 0] for o in out))


@functools.partial(jax.jit, static_argnames=("bn", "bv", "vocab", "label_smoothing", "z_loss",
                                             "interpret"))
def grad(z, labels, lse, g, *, bn, bv, vocab, label_smoothing, z_loss, interpret=False):
  """g * d cross_entropy / d z, in z's dtype."""
  n, v = z.shape
  tile, column = _specs(bn, bv)
  kernel = functools.partial(_grad_kernel, vocab=vocab, label_smoothing=label_smoothing,
                             z_loss=z_loss)
  return pl.pallas_call(
      kernel, grid=(pl.cdiv(n, bn), pl.cdiv(v, bv)), in_specs=[tile] + [column] * 3,
      out_specs=tile, out_shape=jax.ShapeDtypeStruct(z.shape, z.dtype),
      compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel")),
      interpret=_interpret(interpret),
  )(z, labels[:, None], lse[:, None], g[:, None])


def cross_entropy(logits, labels, valid, *, label_smoothing=0.0, z_loss=0.0, block_size=None,
                  interpret=False):
  """Per-token cross-entropy [n] of `logits` [n, v] through the Mosaic kernels.

  `interpret`: False (compiled for TPU), True (TPU interpret mode, on any backend) or a
  `pltpu.InterpretParams`.
  """
  bn, bv = tile_sizes(logits.shape, logits.dtype, block_size)
  cfg = dict(vocab=logits.shape[-1], label_smoothing=label_smoothing, z_loss=z_loss)
  kw = dict(bn=bn, bv=bv, interpret=interpret)
  f = bw.masked_loss_vjp(
      functools.partial(stats, smoothing=bool(label_smoothing), **kw),
      lambda z, labels, stats, g: (grad(z, labels, stats.lse, g, **kw, **cfg),),
      functools.partial(bw.cross_entropy_from_stats, **cfg))
  return f((logits,), labels.astype(jnp.int32), valid)
