"""Pallas kernels (Triton lowering on GPU; interpret mode elsewhere) for cross-entropy over
given logits. One program per block of rows walks the vocabulary in tiles: the forward keeps
the online logsumexp state in registers, the backward writes each gradient tile once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from jaxdiv.kernels import _blockwise as bw
from jaxdiv.kernels._pallas_gpu import load_tile


def _rows(bn):
  rows = pl.program_id(0) * bn + jnp.arange(bn)
  return rows


def _stats_kernel(z_ref, labels_ref, lse_ref, zl_ref, zs_ref, *, bn, bv):
  n, v = z_ref.shape
  rows = _rows(bn)
  rmask = rows < n
  labels = plgpu.load(labels_ref.at[rows], mask=rmask, other=0)

  def body(j, carry):
    state, z_label, z_sum = carry
    tile, cols, cmask = load_tile(z_ref, rows, rmask, j, bv, v, -jnp.inf)
    zl, zs = bw.label_and_sum(tile, labels, cols, cmask)
    return bw.lse_update(state, tile), z_label + zl, z_sum + zs

  zeros = jnp.zeros((bn,), jnp.float32)
  state, z_label, z_sum = lax.fori_loop(0, pl.cdiv(v, bv), body,
                                        (bw.lse_init((bn,)), zeros, zeros))
  plgpu.store(lse_ref.at[rows], bw.lse_finish(state), mask=rmask)
  plgpu.store(zl_ref.at[rows], z_label, mask=rmask)
  plgpu.store(zs_ref.at[rows], z_sum, mask=rmask)


def _grad_kernel(z_ref, labels_ref, lse_ref, g_ref, dz_ref, *, bn, bv, **cfg):
  n, v = z_ref.shape
  rows = _rows(bn)
  rmask = rows < n
  labels = plgpu.load(labels_ref.at[rows], mask=rmask, other=0)
  lse = plgpu.load(lse_ref.at[rows], mask=rmask, other=0.0)
  g = plgpu.load(g_ref.at[rows], mask=rmask, other=0.0)

  @pl.loop(0, pl.cdiv(v, bv))
  def _(j):
    tile, cols, cmask = load_tile(z_ref, rows, rmask, j, bv, v, 0.0)
    d = bw.cross_entropy_dlogits(tile, lse, labels, cols, g, **cfg)
    plgpu.store(dz_ref.at[rows[:, None], cols[None, :]], d.astype(dz_ref.dtype),
                mask=rmask[:, None] & cmask[None, :])


def _call(kernel, out_shape, n, bn, num_warps, interpret):
  return pl.pallas_call(
      kernel, grid=(pl.cdiv(n, bn),), out_shape=out_shape, interpret=interpret,
      compiler_params=plgpu.CompilerParams(num_warps=num_warps, num_stages=2))


@functools.partial(jax.jit, static_argnames=("bn", "bv", "num_warps", "interpret"))
def stats(z, labels, *, bn, bv, num_warps=4, interpret=False):
  """(lse, z[label], sum z) per row of `z` [n, v]."""
  n = z.shape[0]
  out = [jax.ShapeDtypeStruct((n,), jnp.float32)] * 3
  kernel = functools.partial(_stats_kernel, bn=bn, bv=bv)
  return bw.CeStats(*_call(kernel, out, n, bn, num_warps, interpret)(z, labels))


@functools.partial(jax.jit, static_argnames=("bn", "bv", "num_warps", "interpret", "vocab",
                                             "label_smoothing", "z_loss"))
def grad(z, labels, lse, g, *, bn, bv, vocab, label_smoothing, z_loss, num_warps=4,
         interpret=False):
  """g * d cross_entropy / d z, in z's dtype."""
  kernel = functools.partial(_grad_kernel, bn=bn, bv=bv, vocab=vocab,
                             label_smoothing=label_smoothing, z_loss=z_loss)
  out = jax.ShapeDtypeStruct(z.shape, z.dtype)
  return _call(kernel, out, z.shape[0], bn, num_warps, interpret)(z, labels, lse, g)
