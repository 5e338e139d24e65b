"""Fused token log-probabilities and entropy, blockwise over the vocabulary.

Forward: each vocabulary block's logits `x = hidden @ W_block` (accumulated in float32, or
float64 for float64 inputs) are mapped to z = softcap(x) / T and folded into a running
`EntState` (max, shifted sum, shifted first moment), with the label's logit picked on the way;
only the per-token lse and entropy survive. Backward: each block's logits are recomputed, and

.. math::
  \\frac{\\partial}{\\partial z_j}(g_1 \\log p_y + g_2 H)
    = g_1 (\\mathbb{1}[j = y] - p_j) - g_2\\, p_j (z_j - \\mathbb{E}_p[z]),
  \\qquad \\mathbb{E}_p[z] = \\mathrm{lse} - H,

times dz/dx, is cast to the activation dtype and multiplied into d hidden (accumulated) and the
block of d weight (written in place). Nothing of size [tokens, vocab] exists.

With `axis_name` (inside `shard_map`, the weight's vocabulary split over that axis) each shard
folds its own slice; the states merge across shards through pmax and psum of [tokens] vectors.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxdiv import _numerics
from jaxdiv.kernels import _blockwise as bw
from jaxdiv.kernels import _linear_blocks as lb
from jaxdiv.kernels import _softcap


class EntState(NamedTuple):
  """Running softmax statistics of a row: m (max so far), s = sum exp(z - m) and
  a = sum exp(z - m) (z - m), so that lse = m + log s and H = log s - a / s. Keeping `a`
  relative to the max avoids the cancellation of lse - E[z] for large logits."""

  m: jax.Array
  s: jax.Array
  a: jax.Array


class Stats(NamedTuple):
  lse: jax.Array
  entropy: jax.Array
  z_label: jax.Array


def state_init(n: int, dtype) -> EntState:
  return EntState(jnp.full((n,), -jnp.inf, dtype), jnp.zeros((n,), dtype),
                  jnp.zeros((n,), dtype))


def _moved(st: EntState, shift):
  """(s, a) of `st` re-expressed at the max `shift` (0 where the state is empty)."""
  empty = st.s <= 0
  r = jnp.where(empty, 0.0, jnp.exp(st.m - shift))
  d = jnp.where(empty, 0.0, st.m - shift)
  return st.s * r, jnp.where(empty, 0.0, r * (st.a + st.s * d))


def state_update(st: EntState, z, mask=None) -> EntState:
  """Folds the block `z` [rows, b] (masked entries excluded) into the state."""
  if mask is not None:
    z = jnp.where(mask, z, -jnp.inf)
  m = jnp.maximum(st.m, jnp.max(z, axis=-1))
  shift = bw.finite_or_zero(m)
  e = jnp.exp(z - shift[:, None])
  s, a = _moved(st, shift)
  term = jnp.where(e == 0, 0.0, e * (z - shift[:, None]))
  return EntState(m, s + jnp.sum(e, axis=-1), a + jnp.sum(term, axis=-1))


def state_merge(x: EntState, y: EntState) -> EntState:
  m = jnp.maximum(x.m, y.m)
  shift = bw.finite_or_zero(m)
  (sx, ax), (sy, ay) = _moved(x, shift), _moved(y, shift)
  return EntState(m, sx + sy, ax + ay)


def state_psum(st: EntState, axis_name) -> EntState:
  """The whole vocabulary's state from each shard's (max through pmax, sums through psum)."""
  m = _numerics.pmax(st.m, axis_name)
  s, a = _moved(st, bw.finite_or_zero(m))
  return EntState(m, _numerics.psum(s, axis_name), _numerics.psum(a, axis_name))


def state_finish(st: EntState, z_label) -> Stats:
  empty = st.s <= 0
  log_s = jnp.log(jnp.where(empty, 1.0, st.s))
  lse = jnp.where(empty, -jnp.inf, log_s + st.m)
  entropy = jnp.where(empty, 0.0, log_s - st.a / jnp.where(empty, 1.0, st.s))
  return Stats(lse, entropy, z_label)


def _stats(hidden, weight, labels, *, bv, vd, softcap, inv_t):
  acc = lb.acc_dtype(hidden, weight)

  def body(carry, z, c0, own):
    st, z_label = carry
    hit = (labels[:, None] == c0 + jnp.arange(bv)) & own
    return state_update(st, z, own), z_label + jnp.sum(jnp.where(hit, z, 0.0), axis=-1)

  zeros = jnp.zeros_like(hidden[:, 0], acc)  # typed like `hidden` under check_vma
  return lb.fold(hidden, weight, body, (EntState(zeros - jnp.inf, zeros, zeros), zeros), bv=bv,
                 vd=vd, acc=acc, softcap=softcap, inv_t=inv_t)


def dlogits(x, cols, labels, stats: Stats, g, *, softcap, inv_t):
  """d (g_lp log p_y + g_ent H) / d x for raw block logits `x` [rows, b] at columns `cols`."""
  g_lp, g_ent = g
  z = _softcap.apply(x, softcap, inv_t)
  lse = bw.lse_shift(stats.lse)[:, None]
  p = jnp.exp(z - lse)
  centred = z - (lse - stats.entropy[:, None])
  d = jnp.where(labels[:, None] == cols, g_lp[:, None], 0.0) - p * g_lp[:, None]
  d = d - jnp.where(p == 0, 0.0, p * centred) * g_ent[:, None]
  return d * _softcap.derivative(x, softcap, inv_t)


def xla_dlogits(hidden, w_blk, labels, stats, g, cols, *, vd, softcap, inv_t):
  x = lb.block_logits(hidden, w_blk, vd, lb.acc_dtype(hidden, w_blk))
  return dlogits(x, cols, labels, stats, g, softcap=softcap, inv_t=inv_t)


def make(stats_fn, dlogits_fn, *, bv, vd, axis_name=None):
  """`f((hidden, weight), labels, valid) -> (log_probs, entropy)` with a custom VJP whose
  residuals are the inputs and three [tokens] statistics.

  `stats_fn(hidden, weight, labels) -> (EntState, z_label)` over this shard's slice;
  `dlogits_fn(hidden, w_blk, labels, stats, (g_lp, g_ent), cols)` one block's gradient.
  With `axis_name` the outputs are formed on shard 0 and psummed (as in
  `_linear_blocks.on_first_shard`), so every shard's backward sees the cotangents.
  """

  def stats(hidden, weight, labels):
    st, z_label = stats_fn(hidden, weight, labels)
    if axis_name is not None:
      st, z_label = state_psum(st, axis_name), _numerics.psum(z_label, axis_name)
    return state_finish(st, z_label)

  def outputs(st: Stats, valid):
    lp = jnp.where(valid, st.z_label - st.lse, 0.0)
    return lb.on_first_shard((lp, jnp.where(valid, st.entropy, 0.0)), axis_name)

  @jax.custom_vjp
  def f(x, labels, valid):
    return outputs(stats(*x, labels), valid)

  def fwd(x, labels, valid):
    st = stats(*x, labels)
    return outputs(st, valid), (x, labels, valid, st)

  def bwd(res, g):
    x, labels, valid, st = res
    acc = st.lse.dtype
    g = tuple(jnp.where(valid, gi.astype(acc), 0.0) for gi in g)
    grads = lb.backward(*x, labels, st, g, bv=bv, vd=vd, acc=lb.acc_dtype(*x),
                        dlogits_fn=functools.partial(dlogits_fn, vd=vd))
    return grads, None, None

  f.defvjp(fwd, bwd)
  return lb.psum_outputs(f, axis_name)


def token_log_probs(hidden, weight, labels, valid, *, vd: bool, softcap=None, inv_t=1.0,
                    block_size=None, axis_name=None):
  return lb.run_xla(make, _stats, xla_dlogits, hidden, weight, labels, valid, vd=vd,
                    block_size=block_size, axis_name=axis_name, softcap=softcap, inv_t=inv_t)
