"""Distillation divergences as fused XLA passes with a per-token-statistics custom VJP."""

from __future__ import annotations

import functools

import jax.numpy as jnp

from jaxdiv import _numerics
from jaxdiv.kernels import _blockwise as bw
from jaxdiv.kernels.distillation import base


def make(stats_fn, grad_fn, **cfg):
  """`f((student, teacher), None, valid)` from a stats pass and a gradient pass; the teacher
  gets no gradient. Shared by the XLA, chunked and Pallas implementations."""
  return bw.masked_loss_vjp(
      stats_fn,
      lambda zs, zt, aux, stats, g: (grad_fn(zs, zt, stats, g, **cfg), None),
      lambda stats: stats.div)


def _stats(zs, zt, aux, *, divergence, beta, inv_t):
  zs, zt = zs.astype(jnp.float32) * inv_t, zt.astype(jnp.float32) * inv_t
  lse_s, lse_t = _numerics.logsumexp(zs), _numerics.logsumexp(zt)
  div, c = base.divergence_terms(zs, zt, lse_s, lse_t, divergence=divergence, beta=beta)
  return base.DivStats(lse_s, lse_t, div.sum(-1), c.sum(-1))


def _grad(zs, zt, stats, g, *, inv_t, **cfg):
  d = base.divergence_dlogits(zs.astype(jnp.float32) * inv_t, zt.astype(jnp.float32) * inv_t,
                            stats, g, inv_t=inv_t, **cfg)
  return d.astype(zs.dtype)


def divergence(student_logits, teacher_logits, valid, *, divergence, beta, inv_t,
               block_size=None):
  del block_size
  cfg = dict(divergence=divergence, beta=beta)
  f = make(functools.partial(_stats, inv_t=inv_t, **cfg), _grad, inv_t=inv_t, **cfg)
  return f((student_logits, teacher_logits), None, valid)
