"""Top-k distillation statistics with Pallas kernels for the whole-vocabulary lse.

The student's lse over the vocabulary runs through the token log-probabilities' Triton kernels
(`token_log_probs.pallas_kernel`: the forward's online state, and in the backward each chunk's
g_lse softmax(z) dz/dx, there the gradient of -g_lse log p_y with no label). The k gathered
logits are few ([tokens, k]): they are formed in XLA from the k weight columns of each token,
`token_chunk` tokens at a time under `jax.checkpoint`, so that the gathered [chunk, k, d]
weights are the largest temporary and are recomputed in the backward (whose scatter-add into
d weight is XLA's). With `axis_name`, each shard gathers the indices it holds and the results
are psummed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxdiv import _numerics
from jaxdiv.kernels import _blockwise as bw
from jaxdiv.kernels import _linear_blocks as lb
from jaxdiv.kernels import _pallas_gpu as pg
from jaxdiv.kernels import _softcap
from jaxdiv.kernels.linear_cross_entropy import pallas_gpu as lce_pallas
from jaxdiv.kernels.token_log_probs import chunked_xla as tlp
from jaxdiv.kernels.token_log_probs import pallas_kernel as tlp_kernel

TOKEN_CHUNK = 256


def gathered_logits(hidden, weight, indices, *, vd: bool, token_chunk=TOKEN_CHUNK):
  """[tokens, k] raw logits hidden[n] . weight[:, indices[n, j]] (float32+ accumulation);
  0 for indices outside [0, local vocabulary)."""
  v = lb.vocab_size(weight, vd)
  acc = lb.acc_dtype(hidden, weight)

  @jax.checkpoint
  def one(h, idx):
    cols = jnp.take(weight, jnp.clip(idx, 0, v - 1), axis=0 if vd else 1)  # [k, d] or [d, k]
    u = jnp.dot(cols, h, preferred_element_type=acc, precision=lax.Precision.HIGHEST) if vd \
        else jnp.dot(h, cols, preferred_element_type=acc, precision=lax.Precision.HIGHEST)
    return jnp.where((idx >= 0) & (idx < v), u, 0.0)

  return lax.map(lambda a: one(*a), (hidden, indices),
                 batch_size=min(token_chunk, hidden.shape[0]))


def _lse_fn(*, vd, bv, chunk, axis_name, kw):
  """`f((hidden, weight)) -> lse` with a custom VJP through the Pallas kernels."""

  def stats(hidden, weight):
    labels = jnp.full(hidden.shape[:1], -1, jnp.int32)
    st, _ = tlp_kernel.stats(hidden, weight, labels, vd=vd, bv=bv, **kw)
    return bw.lse_finish(bw.lse_psum(bw.Lse(st.m, st.s), axis_name))

  @jax.custom_vjp
  def f(x):
    return lb.on_first_shard(stats(*x), axis_name)

  def fwd(x):
    lse = stats(*x)
    return lb.on_first_shard(lse, axis_name), (x, lse)

  def bwd(res, g):
    x, lse = res
    labels = jnp.full(lse.shape, -1, jnp.int32)
    # -g log p_y without a label is g softmax(z): the kernel's g_lp = -g, g_ent = 0.
    g = (-g.astype(lse.dtype), jnp.zeros_like(lse))

    def block_grad(hidden, w_blk, labels, stats, g, cols):
      return tlp_kernel.dlogits(hidden, w_blk, labels, stats.lse, stats.entropy, *g, cols,
                                vd=vd, bv=bv, **{k: a for k, a in kw.items() if k != "splits"})

    stats_ = tlp.Stats(lse, jnp.zeros_like(lse), None)
    return (lb.backward(*x, labels, stats_, g, bv=chunk, vd=vd, dlogits_fn=block_grad,
                        acc=lb.acc_dtype(*x)),)

  f.defvjp(fwd, bwd)
  return lb.psum_outputs(f, axis_name)


def student_stats(hidden, weight, indices, *, vd: bool, softcap=None, inv_t=1.0,
                  block_size=None, axis_name=None, interpret=False, tile=lce_pallas.TILE,
                  splits=lce_pallas.SPLITS, num_warps=lce_pallas.NUM_WARPS):
  """(lse [tokens], u [tokens, k]) of z = softcap(hidden @ weight) / T."""
  local, _, (bn, bv, bk), chunk = pg.walk(
      hidden, weight, indices, vd=vd, tile=tile, chunk=lce_pallas.CHUNK, block_size=block_size,
      axis_name=axis_name, interpret=interpret)
  v = lb.vocab_size(weight, vd)
  kw = dict(bn=bn, bk=bk, num_warps=num_warps, interpret=interpret, softcap=softcap,
            inv_t=inv_t)
  lse = _lse_fn(vd=vd, bv=bv, chunk=chunk, axis_name=axis_name,
                kw=dict(kw, splits=splits))((hidden, weight))
  x = gathered_logits(hidden, weight, local, vd=vd)
  u = _softcap.apply(x, softcap, inv_t)
  u = jnp.where((local >= 0) & (local < v), u, 0.0)
  if axis_name is not None:
    u = _numerics.psum(u, axis_name)
  return lse, u


