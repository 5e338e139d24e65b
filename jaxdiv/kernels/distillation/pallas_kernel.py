"""Pallas row-block kernels (Triton on GPU; interpret mode elsewhere) for distillation
divergences over given logits: one program per block of rows walks the vocabulary once forward
(twice for JS: both logsumexps, then its terms) and once backward."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from jaxdiv.kernels import _blockwise as bw
from jaxdiv.kernels._pallas_gpu import load_tile
from jaxdiv.kernels.distillation import base


def _stats_kernel(zs_ref, zt_ref, lse_s_ref, lse_t_ref, div_ref, c_ref, *, bn, bv, inv_t,
                  **cfg):
  n, v = zs_ref.shape
  rows = pl.program_id(0) * bn + jnp.arange(bn)
  rmask = rows < n
  tiles = lambda j: (load_tile(ref, rows, rmask, j, bv, v, -jnp.inf)[0] * inv_t
                     for ref in (zs_ref, zt_ref))
  divergence = cfg["divergence"]
  if base.kl_one_pass(divergence):  # one read of both inputs
    state = lax.fori_loop(
        0, pl.cdiv(v, bv),
        lambda j, st: base.kl_update(st, *tiles(j), divergence=divergence),
        base.kl_init((bn,)))
    for ref, x in zip((lse_s_ref, lse_t_ref, div_ref, c_ref),
                      base.kl_finish(state, divergence=divergence)):
      plgpu.store(ref.at[rows], x, mask=rmask)
    return

  def lse_body(j, carry):
    return tuple(bw.lse_update(st, t) for st, t in zip(carry, tiles(j)))

  states = lax.fori_loop(0, pl.cdiv(v, bv), lse_body, (bw.lse_init((bn,)), bw.lse_init((bn,))))
  lse_s, lse_t = (bw.lse_finish(st) for st in states)

  def div_body(j, carry):
    terms = base.divergence_terms(*tiles(j), lse_s, lse_t, **cfg)
    return tuple(acc + jnp.sum(t, -1) for acc, t in zip(carry, terms))

  zeros = jnp.zeros((bn,), jnp.float32)
  div, c = lax.fori_loop(0, pl.cdiv(v, bv), div_body, (zeros, zeros))
  for ref, x in ((lse_s_ref, lse_s), (lse_t_ref, lse_t), (div_ref, div), (c_ref, c)):
    plgpu.store(ref.at[rows], x, mask=rmask)


def _grad_kernel(zs_ref, zt_ref, lse_s_ref, lse_t_ref, div_ref, c_ref, g_ref, dz_ref, *, bn,
                 bv, inv_t, **cfg):
  n, v = zs_ref.shape
  rows = pl.program_id(0) * bn + jnp.arange(bn)
  rmask = rows < n
  load_rows = functools.partial(plgpu.load, mask=rmask, other=0.0)
  stats = base.DivStats(*(load_rows(r.at[rows]) for r in (lse_s_ref, lse_t_ref, div_ref, c_ref)))
  g = load_rows(g_ref.at[rows])

  @pl.loop(0, pl.cdiv(v, bv))
  def _(j):
    zs, cols, cmask = load_tile(zs_ref, rows, rmask, j, bv, v, -jnp.inf)
    zt = load_tile(zt_ref, rows, rmask, j, bv, v, -jnp.inf)[0]
    d = base.divergence_dlogits(zs * inv_t, zt * inv_t, stats, g, inv_t=inv_t, **cfg)
    plgpu.store(dz_ref.at[rows[:, None], cols[None, :]], d.astype(dz_ref.dtype),
                mask=rmask[:, None] & cmask[None, :])


def _call(kernel, out_shape, n, bn, interpret):
  return pl.pallas_call(kernel, grid=(pl.cdiv(n, bn),), out_shape=out_shape,
                        interpret=interpret,
                        compiler_params=plgpu.CompilerParams(num_warps=4, num_stages=2))


_STATIC = ("bn", "bv", "divergence", "beta", "inv_t", "interpret")


@functools.partial(jax.jit, static_argnames=_STATIC)
def stats(zs, zt, aux, *, bn, bv, divergence, beta, inv_t, interpret=False):
  del aux
  kernel = functools.partial(_stats_kernel, bn=bn, bv=bv, divergence=divergence, beta=beta,
                             inv_t=inv_t)
  out = [jax.ShapeDtypeStruct((zs.shape[0],), jnp.float32)] * 4
  return base.DivStats(*_call(kernel, out, zs.shape[0], bn, interpret)(zs, zt))


@functools.partial(jax.jit, static_argnames=_STATIC)
def grad(zs, zt, stats, g, *, bn, bv, divergence, beta, inv_t, interpret=False):
  kernel = functools.partial(_grad_kernel, bn=bn, bv=bv, divergence=divergence, beta=beta,
                             inv_t=inv_t)
  out = jax.ShapeDtypeStruct(zs.shape, zs.dtype)
  return _call(kernel, out, zs.shape[0], bn, interpret)(zs, zt, *stats, g)
