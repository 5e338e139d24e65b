"""Distillation divergences over [token, vocabulary] tiles: one pass for both logsumexps and
the divergence (forward and reverse KL; JS takes a second pass for its terms, which need the
lses), one (backward) writing the student's gradient tile by tile."""

from __future__ import annotations

import functools

import jax.numpy as jnp

from jaxdiv.kernels import _blockwise as bw
from jaxdiv.kernels.distillation import base
from jaxdiv.kernels.distillation import xla

DEFAULT_BLOCK = (256, 4096)


def _stats(zs, zt, aux, *, bn, bv, divergence, beta, inv_t):
  if base.kl_one_pass(divergence):  # one read of both inputs
    return base.DivStats(*bw.tiled_reduce(
        (zs, zt), (), bn=bn, bv=bv, init=base.kl_init,
        body=lambda st, tiles, rows, cols, own: base.kl_update(
            st, tiles[0] * inv_t, tiles[1] * inv_t, own, divergence=divergence),
        finish=lambda st, rows: base.kl_finish(st, divergence=divergence)))
  zeros = lambda b: jnp.zeros((b,), jnp.float32)

  def lse_body(carry, tiles, rows, cols, own):
    return tuple(bw.lse_update(st, t * inv_t, own) for st, t in zip(carry, tiles))

  lse_s, lse_t = bw.tiled_reduce(
      (zs, zt), (), bn=bn, bv=bv, init=lambda b: (bw.lse_init((b,)), bw.lse_init((b,))),
      body=lse_body, finish=lambda carry, rows: tuple(bw.lse_finish(st) for st in carry))

  def div_body(carry, tiles, rows, cols, own):
    terms = base.divergence_terms(tiles[0] * inv_t, tiles[1] * inv_t, *rows,
                                divergence=divergence, beta=beta)
    return tuple(acc + jnp.sum(jnp.where(own, t, 0.0), -1) for acc, t in zip(carry, terms))

  div, c = bw.tiled_reduce((zs, zt), (lse_s, lse_t), bn=bn, bv=bv,
                           init=lambda b: (zeros(b), zeros(b)), body=div_body,
                           finish=lambda carry, rows: carry)
  return base.DivStats(lse_s, lse_t, div, c)


def _grad(zs, zt, stats, g, *, bn, bv, inv_t, **cfg):
  def fn(tiles, rows, cols):
    return base.divergence_dlogits(tiles[0] * inv_t, tiles[1] * inv_t, base.DivStats(*rows[:4]),
                                 rows[4], inv_t=inv_t, **cfg)

  return bw.tiled_map((zs, zt), (*stats, g), zs.dtype, bn=bn, bv=bv, fn=fn)


def divergence(student_logits, teacher_logits, valid, *, divergence, beta, inv_t,
               block_size=None):
  bn, bv = bw.tile_sizes(student_logits.shape, block_size, DEFAULT_BLOCK)
  cfg = dict(divergence=divergence, beta=beta, inv_t=inv_t)
  f = xla.make(functools.partial(_stats, bn=bn, bv=bv, **cfg),
               functools.partial(_grad, bn=bn, bv=bv), **cfg)
  return f((student_logits, teacher_logits), None, valid)
