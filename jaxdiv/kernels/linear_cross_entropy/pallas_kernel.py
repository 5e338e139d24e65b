"""Pallas kernels for the fused linear cross-entropy (Triton on GPU; interpret mode elsewhere).

`stats`: each program owns a block of tokens and a contiguous split of the vocabulary; it forms
one [bn, bv] logits tile at a time from `hidden @ weight` (a loop over the model dimension) and
folds it into an online logsumexp in registers. The partial states of the splits are merged
outside. `dlogits`: the same tile, turned into its softmax gradient and stored in the
activation dtype, for the XLA matmuls of the backward pass.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from jaxdiv.kernels import _blockwise as bw
from jaxdiv.kernels import _pallas_gpu as pg
from jaxdiv.kernels import _softcap


def _stats_kernel(h_ref, w_ref, labels_ref, m_ref, s_ref, zl_ref, zs_ref, *, bn, bv, bk,
                  splits, vd, softcap=None):
  v = w_ref.shape[0 if vd else 1]
  rows, rmask = pg.row_block(h_ref.shape[0], bn)
  labels = plgpu.load(labels_ref.at[rows], mask=rmask, other=0)

  def body(j, carry):
    state, z_label, z_sum = carry
    cols, cmask = pg.vocab_tile(j, bv, v)
    x = pg.logits_tile(h_ref, w_ref, rows, rmask, cols, cmask, bk=bk, vd=vd)
    z = _softcap.apply(x, softcap)
    zl, zs = bw.label_and_sum(z, labels, cols, cmask)
    return bw.lse_update(state, z, cmask[None, :]), z_label + zl, z_sum + zs

  zeros = jnp.zeros((bn,), jnp.float32)
  state, z_label, z_sum = lax.fori_loop(*pg.split_range(v, bv, splits), body,
                                        (bw.lse_init((bn,)), zeros, zeros))
  pg.store_split((m_ref, s_ref, zl_ref, zs_ref), (state.m, state.s, z_label, z_sum), rows, rmask)


def _dlogits_kernel(h_ref, w_ref, labels_ref, lse_ref, g_ref, cols_ref, out_ref, *, bn, bv,
                    bk, vd, softcap=None, **cfg):
  rows, rmask, local, cmask = pg.grad_tile(out_ref, bn, bv)
  x = pg.logits_tile(h_ref, w_ref, rows, rmask, local, cmask, bk=bk, vd=vd)
  z = _softcap.apply(x, softcap)
  load_rows = functools.partial(plgpu.load, mask=rmask, other=0)
  cols = plgpu.load(cols_ref.at[local], mask=cmask, other=-1)
  d = bw.cross_entropy_dlogits(z, load_rows(lse_ref.at[rows]), load_rows(labels_ref.at[rows]),
                               cols, load_rows(g_ref.at[rows]), **cfg)
  if softcap is not None:
    d = d * _softcap.derivative(x, softcap)
  pg.store_tile(out_ref, rows, rmask, local, cmask, d)


@functools.partial(jax.jit, static_argnames=("bn", "bv", "bk", "splits", "vd", "num_warps",
                                             "num_stages", "interpret", "softcap"))
def stats(hidden, weight, labels, *, bn, bv, bk, splits, vd, num_warps=4, num_stages=3,
          interpret=False, softcap=None):
  """Per-token (lse, z[y], sum z) of hidden @ weight, never storing a logits tile."""
  n = hidden.shape[0]
  out = [pg.out_like((splits, n), jnp.float32, hidden)] * 4
  kernel = functools.partial(_stats_kernel, bn=bn, bv=bv, bk=bk, splits=splits, vd=vd,
                             softcap=softcap)
  m, s, z_label, z_sum = pl.pallas_call(
      kernel, grid=(pl.cdiv(n, bn), splits), out_shape=out, interpret=interpret,
      compiler_params=pg.compiler_params(num_warps, num_stages))(hidden, weight, labels)
  state = bw.Lse(m[0], s[0])
  for k in range(1, splits):
    state = bw.lse_merge(state, bw.Lse(m[k], s[k]))
  return bw.CeStats(bw.lse_finish(state), z_label.sum(0), z_sum.sum(0))


@functools.partial(jax.jit, static_argnames=("bn", "bv", "bk", "vd", "vocab", "label_smoothing",
                                             "z_loss", "num_warps", "num_stages", "interpret",
                                             "softcap"))
def dlogits(hidden, w_blk, labels, lse, g, cols, *, bn, bv, bk, vd, vocab, label_smoothing,
            z_loss, num_warps=4, num_stages=3, interpret=False, softcap=None):
  """[tokens, len(cols)] gradient of the logits of one weight block, in hidden's dtype."""
  n, vc = hidden.shape[0], cols.shape[0]
  kernel = functools.partial(_dlogits_kernel, bn=bn, bv=bv, bk=bk, vd=vd, vocab=vocab,
                             label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap)
  return pl.pallas_call(
      kernel, grid=(pl.cdiv(n, bn), pl.cdiv(vc, bv)),
      out_shape=pg.out_like((n, vc), hidden.dtype, hidden), interpret=interpret,
      compiler_params=pg.compiler_params(num_warps, num_stages))(
          hidden, w_blk, labels, lse, g, cols)
