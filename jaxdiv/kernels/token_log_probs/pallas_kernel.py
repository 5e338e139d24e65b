"""Pallas kernels for the fused token log-probabilities (Triton on GPU; interpret mode
elsewhere).

`stats`: each program owns a block of tokens and a split of the vocabulary; it forms one
[bn, bv] logits tile at a time (`kernels._pallas_gpu.logits_tile`), caps and
scales it, and folds it into a running `EntState` and the label's logit in registers; the
splits' states merge outside. `dlogits`: the same tile turned into the gradient of
g_lp log p_y + g_ent H, stored in the activation dtype for the XLA matmuls of the backward.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from jaxdiv.kernels import _pallas_gpu as pg
from jaxdiv.kernels import _softcap
from jaxdiv.kernels.token_log_probs import chunked_xla as tlp


def _stats_kernel(h_ref, w_ref, labels_ref, m_ref, s_ref, a_ref, zl_ref, *, bn, bv, bk, splits,
                  vd, softcap, inv_t):
  v = w_ref.shape[0 if vd else 1]
  rows, rmask = pg.row_block(h_ref.shape[0], bn)
  labels = plgpu.load(labels_ref.at[rows], mask=rmask, other=0)

  def body(j, carry):
    st, z_label = carry
    cols, cmask = pg.vocab_tile(j, bv, v)
    x = pg.logits_tile(h_ref, w_ref, rows, rmask, cols, cmask, bk=bk, vd=vd)
    z = _softcap.apply(x, softcap, inv_t)
    hit = (labels[:, None] == cols[None, :]) & cmask[None, :]
    return (tlp.state_update(st, z, cmask[None, :]),
            z_label + jnp.sum(jnp.where(hit, z, 0.0), axis=-1))

  zeros = jnp.zeros((bn,), jnp.float32)
  st, z_label = lax.fori_loop(*pg.split_range(v, bv, splits), body,
                              (tlp.state_init(bn, jnp.float32), zeros))
  pg.store_split((m_ref, s_ref, a_ref, zl_ref), (st.m, st.s, st.a, z_label), rows, rmask)


def _dlogits_kernel(h_ref, w_ref, labels_ref, lse_ref, ent_ref, glp_ref, gent_ref, cols_ref,
                    out_ref, *, bn, bv, bk, vd, softcap, inv_t):
  rows, rmask, local, cmask = pg.grad_tile(out_ref, bn, bv)
  x = pg.logits_tile(h_ref, w_ref, rows, rmask, local, cmask, bk=bk, vd=vd)
  load_rows = functools.partial(plgpu.load, mask=rmask, other=0)
  cols = plgpu.load(cols_ref.at[local], mask=cmask, other=-1)
  stats = tlp.Stats(load_rows(lse_ref.at[rows]), load_rows(ent_ref.at[rows]), None)
  g = (load_rows(glp_ref.at[rows]), load_rows(gent_ref.at[rows]))
  d = tlp.dlogits(x, cols, load_rows(labels_ref.at[rows]), stats, g, softcap=softcap,
                  inv_t=inv_t)
  pg.store_tile(out_ref, rows, rmask, local, cmask, d)


@functools.partial(jax.jit, static_argnames=("bn", "bv", "bk", "splits", "vd", "softcap",
                                             "inv_t", "num_warps", "num_stages", "interpret"))
def stats(hidden, weight, labels, *, bn, bv, bk, splits, vd, softcap, inv_t, num_warps=4,
          num_stages=3, interpret=False):
  """(EntState, z_label) of this device's vocabulary, never storing a logits tile."""
  n = hidden.shape[0]
  out = [pg.out_like((splits, n), jnp.float32, hidden)] * 4
  kernel = functools.partial(_stats_kernel, bn=bn, bv=bv, bk=bk, splits=splits, vd=vd,
                             softcap=softcap, inv_t=inv_t)
  m, s, a, z_label = pl.pallas_call(
      kernel, grid=(pl.cdiv(n, bn), splits), out_shape=out, interpret=interpret,
      compiler_params=pg.compiler_params(num_warps, num_stages))(hidden, weight, labels)
  st = tlp.EntState(m[0], s[0], a[0])
  for k in range(1, splits):
    st = tlp.state_merge(st, tlp.EntState(m[k], s[k], a[k]))
  return st, z_label.sum(0)


@functools.partial(jax.jit, static_argnames=("bn", "bv", "bk", "vd", "softcap", "inv_t",
                                             "num_warps", "num_stages", "interpret"))
def dlogits(hidden, w_blk, labels, lse, entropy, g_lp, g_ent, cols, *, bn, bv, bk, vd, softcap,
            inv_t, num_warps=4, num_stages=3, interpret=False):
  """[tokens, len(cols)] gradient of one weight block's raw logits, in hidden's dtype."""
  n, vc = hidden.shape[0], cols.shape[0]
  kernel = functools.partial(_dlogits_kernel, bn=bn, bv=bv, bk=bk, vd=vd, softcap=softcap,
                             inv_t=inv_t)
  return pl.pallas_call(
      kernel, grid=(pl.cdiv(n, bn), pl.cdiv(vc, bv)),
      out_shape=pg.out_like((n, vc), hidden.dtype, hidden), interpret=interpret,
      compiler_params=pg.compiler_params(num_warps, num_stages))(
          hidden, w_blk, labels, lse, entropy, g_lp, g_ent, cols)
