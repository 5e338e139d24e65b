"""Fused linear distillation: the student's logits `hidden @ weight` (and the teacher's, when
given as hidden states and a head) are formed one vocabulary block at a time.

Forward: one walk over the vocabulary for both logsumexps and the forward or reverse KL
(2·N·D·V FLOPs per model with a head); JS walks twice, as its terms need the lses. Backward:
each block's student (and teacher) logits are recomputed, the student's gradient is cast to the
activation dtype, and d_hidden / d_weight follow as in the fused cross-entropy
(`_linear_blocks.backward`). Nothing of size [tokens, vocab] and no [d, vocab] accumulator
exists.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from jaxdiv.kernels import _blockwise as bw
from jaxdiv.kernels import _linear_blocks as lb
from jaxdiv.kernels import _softcap
from jaxdiv.kernels.distillation import base
from jaxdiv.kernels.distillation import reference
from jaxdiv.kernels.linear_cross_entropy import reference as lce_reference


def _teacher_block(teacher, c0, bv, teacher_vd):
  if len(teacher) == 1:  # given logits [tokens, vocab]
    return lax.dynamic_slice_in_dim(teacher[0], c0, bv, axis=1).astype(jnp.float32)
  hidden, weight = teacher
  return lb.block_logits(hidden, lb.weight_block(weight, c0, bv, teacher_vd), teacher_vd)


def _walk(hidden, weight, teacher, *, bv, vd, teacher_vd, inv_t, body, init, softcap=None):
  """Folds `body(carry, zs, zt, own)` over the vocabulary blocks (tiles capped, scaled by
  1/T)."""
  def step(carry, zs, c0, own):
    zt = _softcap.apply(_teacher_block(teacher, c0, bv, teacher_vd), softcap, inv_t)
    return body(carry, zs, zt, own)

  return lb.fold(hidden, weight, step, init, bv=bv, vd=vd, softcap=softcap, inv_t=inv_t)


def _stats(hidden, weight, teacher, *, divergence, beta, **walk):
  n = hidden.shape[0]
  if base.kl_one_pass(divergence):  # each block's logits formed once
    state = _walk(hidden, weight, teacher, **walk, init=base.kl_init((n,)),
                  body=lambda st, zs, zt, own: base.kl_update(st, zs, zt, own,
                                                            divergence=divergence))
    return base.kl_finish(state, divergence=divergence)
  states = _walk(hidden, weight, teacher, **walk,
                 body=lambda c, zs, zt, own: (bw.lse_update(c[0], zs, own),
                                              bw.lse_update(c[1], zt, own)),
                 init=(bw.lse_init((n,)), bw.lse_init((n,))))
  lse_s, lse_t = (bw.lse_finish(st) for st in states)

  def body(carry, zs, zt, own):
    terms = base.divergence_terms(zs, zt, lse_s, lse_t, divergence=divergence, beta=beta)
    return tuple(acc + jnp.sum(jnp.where(own, t, 0.0), -1) for acc, t in zip(carry, terms))

  zeros = jnp.zeros((n,), jnp.float32)
  div, c = _walk(hidden, weight, teacher, **walk, body=body, init=(zeros, zeros))
  return base.DivStats(lse_s, lse_t, div, c)


def _dlogits(hidden, w_blk, teacher, stats, g, cols, *, vd, teacher_vd, inv_t, divergence,
             beta, softcap=None):
  xs = lb.block_logits(hidden, w_blk, vd)
  zt = _teacher_block(teacher, cols[0], cols.shape[0], teacher_vd)
  d = base.divergence_dlogits(_softcap.apply(xs, softcap, inv_t),
                              _softcap.apply(zt, softcap, inv_t), stats, g,
                              divergence=divergence, beta=beta, inv_t=inv_t)
  return d if softcap is None else d * _softcap.derivative(xs, softcap)


def linear_divergence(hidden, weight, teacher, valid, *, vd, teacher_vd, divergence, beta,
                      inv_t, block_size=None, softcap=None):
  """Per-token divergence; `teacher` is `(teacher_logits,)` or `(hidden, weight)`."""
  teacher = tuple(lax.stop_gradient(t) for t in teacher)
  v = lb.vocab_size(weight, vd)
  bv = bw.pick_block(v, block_size, lb.default_block(hidden.shape[0], v, jax.default_backend()))
  cfg = dict(divergence=divergence, beta=beta)
  walk = dict(bv=bv, vd=vd, teacher_vd=teacher_vd, inv_t=inv_t, softcap=softcap)
  dlogits = functools.partial(_dlogits, teacher_vd=teacher_vd, inv_t=inv_t, softcap=softcap,
                              **cfg)
  f = bw.masked_loss_vjp(
      functools.partial(_stats, **walk, **cfg),
      lambda h, w, t, stats, g: lb.backward(h, w, t, stats, g, bv=bv, vd=vd,
                                             dlogits_fn=functools.partial(dlogits, vd=vd)),
      lambda stats: stats.div)
  return f((hidden, weight), teacher, valid)


def linear_divergence_xla(hidden, weight, teacher, valid, *, vd, teacher_vd, divergence, beta,
                          inv_t, block_size=None, softcap=None):
  """The materialising version: full logits, then the plain reference (autodiff). float64
  inputs get float64 products (`block_logits` accumulates in float32)."""
  del block_size
  f64 = any(x.dtype == jnp.float64 for x in (hidden, weight, *teacher))
  mat = (lambda h, w, vd: lce_reference.logits(h, w, vd=vd)) if f64 else lb.block_logits
  zs = _softcap.apply(mat(hidden, weight, vd), softcap)
  zt = teacher[0] if len(teacher) == 1 else mat(*teacher, teacher_vd)
  zt = _softcap.apply(zt, softcap)
  return reference.divergence(zs, zt, valid, divergence=divergence, beta=beta,
                              temperature=1.0 / inv_t)
