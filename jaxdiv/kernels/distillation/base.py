"""The distillation maths over vocabulary tiles: per-entry divergence terms, the one-pass KL
state, and the student's logits gradient, shared by every distillation implementation (plain
XLA, blockwise XLA, Pallas, and the fused linear heads). The tiling and the online logsumexp
they build on are `jaxdiv.kernels._blockwise`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxdiv import _numerics
from jaxdiv.kernels import _blockwise as bw

DIVERGENCES = ("forward_kl", "reverse_kl", "js")


class DivStats(NamedTuple):
  """Per-token statistics of a distillation divergence: both lses, the value, and `c` (the
  sum that the student's softmax gradient subtracts; 0 for the forward KL)."""

  lse_s: jax.Array
  lse_t: jax.Array
  div: jax.Array
  c: jax.Array


def _log_probs(zs, zt, lse_s, lse_t):
  return zs - bw.lse_shift(lse_s)[:, None], zt - bw.lse_shift(lse_t)[:, None]


def _log_mixture(ls, lt, beta):
  """log(beta p_t + (1 - beta) p_s), -inf where both are 0."""
  return _numerics.log_add_exp(lt, ls, jnp.float32(beta), jnp.float32(1.0 - beta))


def _plogp(p, log_p, log_q):
  """p (log p - log q) with 0 where p = 0 (the scipy `rel_entr` convention)."""
  return jnp.where(p == 0, 0.0, p * (log_p - log_q))


def divergence_terms(zs, zt, lse_s, lse_t, *, divergence, beta):
  """Per-entry (divergence, c) terms of [rows, b] tiles (already divided by the temperature).

  forward_kl: KL(p_t || p_s); reverse_kl: KL(p_s || p_t); js: beta KL(p_t || m) +
  (1 - beta) KL(p_s || m) with m = beta p_t + (1 - beta) p_s.
  """
  ls, lt = _log_probs(zs, zt, lse_s, lse_t)
  ps, pt = jnp.exp(ls), jnp.exp(lt)
  if divergence == "forward_kl":
    term = _plogp(pt, lt, ls)
    return term, jnp.zeros_like(term)
  if divergence == "reverse_kl":
    term = _plogp(ps, ls, lt)
    return term, term
  lm = _log_mixture(ls, lt, beta)
  student = (1.0 - beta) * _plogp(ps, ls, lm)
  return beta * _plogp(pt, lt, lm) + student, student


class KlState(NamedTuple):
  """Running state of a KL divergence over vocabulary blocks, in one pass.

  Both logsumexps, and `a` = sum exp(z_w - m_w) (z_w - z_o) over the blocks seen, at the running
  max m_w of the weighting side w (the teacher for the forward KL, the student for the reverse
  KL; o is the other side). KL(p_w || p_o) = a / s_w - lse_w + lse_o.
  """

  s: bw.Lse
  t: bw.Lse
  a: jax.Array


def kl_one_pass(divergence: str) -> bool:
  """Whether `divergence` folds into a `KlState` (JS needs the lses before its terms)."""
  return divergence in ("forward_kl", "reverse_kl")


def _sides(divergence, s, t):
  return (t, s) if divergence == "forward_kl" else (s, t)


def _rescale(a, m_old, shift):
  """`a` moved from the shift `m_old` to `shift` (an infinite `a` stays infinite)."""
  return jnp.where(jnp.abs(a) < jnp.inf, a * jnp.exp(m_old - shift), a)


def kl_init(shape) -> KlState:
  return KlState(bw.lse_init(shape), bw.lse_init(shape), jnp.zeros(shape, jnp.float32))


def kl_update(state: KlState, zs: jax.Array, zt: jax.Array, mask=None, *,
              divergence: str) -> KlState:
  """Folds [..., b] tiles (divided by the temperature) into the state."""
  if mask is not None:
    zs, zt = jnp.where(mask, zs, -jnp.inf), jnp.where(mask, zt, -jnp.inf)
  (w_old, o_old), (zw, zo) = _sides(divergence, state.s, state.t), _sides(divergence, zs, zt)
  w, shift, e = bw.lse_step(w_old, zw)
  o = bw.lse_update(o_old, zo)
  # e = 0 where z_w = -inf (no mass, whatever z_o); z_o = -inf under mass makes the KL infinite.
  term = jnp.where(e == 0, 0.0, e * (zw - zo))
  a = _rescale(state.a, w_old.m, shift) + jnp.sum(term, axis=-1)
  return KlState(*_sides(divergence, w, o), a)


def kl_merge(x: KlState, y: KlState, *, divergence: str) -> KlState:
  """Combines two partial states (vocabulary splits computed apart)."""
  s, t = bw.lse_merge(x.s, y.s), bw.lse_merge(x.t, y.t)
  shift = bw.finite_or_zero(_sides(divergence, s, t)[0].m)
  wx, wy = _sides(divergence, x.s, x.t)[0], _sides(divergence, y.s, y.t)[0]
  return KlState(s, t, _rescale(x.a, wx.m, shift) + _rescale(y.a, wy.m, shift))


def kl_finish(state: KlState, *, divergence: str) -> DivStats:
  """`DivStats` of a forward or reverse KL from its one-pass state."""
  lse_s, lse_t = bw.lse_finish(state.s), bw.lse_finish(state.t)
  (w, _), (lse_w, lse_o) = _sides(divergence, state.s, state.t), _sides(divergence, lse_s, lse_t)
  empty = w.s <= 0  # (a NaN sum is not empty: NaN stays NaN)
  mean = state.a / jnp.where(empty, 1.0, w.s)  # E_{p_w}[z_w - z_o]
  div = jnp.where(empty, 0.0, mean - bw.lse_shift(lse_w) + bw.lse_shift(lse_o))
  return DivStats(lse_s, lse_t, div, div if divergence == "reverse_kl" else jnp.zeros_like(div))


def divergence_dlogits(zs, zt, stats: DivStats, g, *, divergence, beta, inv_t):
  """g / T · d divergence / d z_s for a tile (the teacher gets no gradient).

  With a_j the derivative with respect to log p_s[j], the softmax chain rule gives
  p_s (a - sum p_s a): a = log(p_s/p_t) for the reverse KL, (1-beta) log(p_s/m) for JS (the
  sums are `stats.c`); for the forward KL it reduces to p_s - p_t.
  """
  ls, lt = _log_probs(zs, zt, stats.lse_s, stats.lse_t)
  ps = jnp.exp(ls)
  if divergence == "forward_kl":
    d = ps - jnp.exp(lt)
  else:
    a = ls - lt if divergence == "reverse_kl" else (1.0 - beta) * (ls - _log_mixture(ls, lt, beta))
    d = jnp.where(ps == 0, 0.0, ps * (a - stats.c[:, None]))
  # A token with a zero cotangent (masked, or a row without mass: `valid` False) gets 0, not
  # 0 * NaN (log p_t is NaN on a teacher row of -inf logits).
  return jnp.where((g != 0)[:, None], (g * inv_t)[:, None] * d, 0.0)
