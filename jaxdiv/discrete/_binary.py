"""Bernoulli forms, elementwise: binary entropy, KL and cross-entropy."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxdiv import _numerics
from jaxdiv import _validation
from jaxdiv.discrete import _common


@jax.custom_jvp
def _unit_interval(x):
  """`x` where it lies in [0, 1], NaN elsewhere (and at NaN), with a NaN derivative there too:
  the select's derivative 0 made the gradient in that input 0 (in the other one NaN) where the
  value was NaN. The rule multiplies the tangent (linear in it, so reverse mode gets the same):
  `where(ok, x, x * nan)` sent the unselected branch's zero cotangent through `* nan`, NaN on
  every entry. (Masked entries are filled in before this.)"""
  return jnp.where(_in_unit_interval(x), x, jnp.nan)


def _in_unit_interval(x):
  return (x >= 0) & (x <= 1)


@_unit_interval.defjvp
def _unit_interval_jvp(primals, tangents):
  (x,), (t,) = primals, tangents
  return _unit_interval(x), t * jnp.where(_in_unit_interval(x), 1, jnp.nan).astype(t.dtype)


def _logit_slopes(a, b):
  """`(p (1 - p), q - p)` for p = sigmoid a, q = sigmoid b, the pieces of the derivatives of the
  cross-entropy and the KL from logits; q - p as (1 - p) - (1 - q) where both are above 1/2 on
  the whole (no cancellation of two values near 1)."""
  p, not_p, _, _ = _numerics.logistic(a)
  q, not_q, _, _ = _numerics.logistic(b)
  return p * not_p, jnp.where(a + b > 0, not_p - not_q, q - p)


def _where_weighted(w, x):
  """`x` where its weight `w` is not 0, else 0, with no derivative there: `w x` is then 0 and
  so is its derivative in x, where `jnp.where(w == 0, 0, w x)` sent a zero cotangent through
  the unselected `x w'` (inf * 0 at an infinite logit: a NaN second derivative in reverse
  mode, helper-60)."""
  return jnp.where(w == 0, 0, x)


@jax.custom_jvp
def _entropy_logits(x):
  """Binary entropy of sigmoid(x): log1p(e) + |x| e / (1 + e), e = exp(-|x|), a sum of two
  non-negative terms (the hand-written -(p log p + (1 - p) log(1 - p)) has two sigmoids and
  two log-sigmoids)."""
  _, _, small, soft = _numerics.logistic(x)
  return soft + _numerics.mul_log(small, jnp.abs(x))  # 0 where small is, |x| = inf included


@_entropy_logits.defjvp
def _entropy_logits_jvp(primals, tangents):
  (x,), (t,) = primals, tangents
  p, not_p, _, _ = _numerics.logistic(x)
  w = p * not_p  # d/dx = -x p (1 - p); 0 where p (1 - p) is, at +-inf included
  return _entropy_logits(x), -_where_weighted(w, x) * w * t


@jax.custom_jvp
def _cross_entropy_logits(a, b):
  """H(sigmoid a, sigmoid b) = log1p(exp(-|b|)) + |b| (sigmoid -a where b >= 0, else sigmoid
  a): -p log q - (1 - p) log(1 - q) with log sigmoid(+-b) = -(max(-+b, 0) + log1p(exp(-|b|)))
  and p + (1 - p) = 1, non-negative terms only; one exp and a log1p for b, one exp for a."""
  p, not_p, _, _ = _numerics.logistic(a)
  _, _, _, soft = _numerics.logistic(b)
  return soft + _numerics.mul_log(jnp.where(b >= 0, not_p, p), jnp.abs(b))


@_cross_entropy_logits.defjvp
def _cross_entropy_logits_jvp(primals, tangents):
  (a, b), (ta, tb) = primals, tangents
  # d/da = -p (1 - p) b (0 where p (1 - p) is: at a = +-inf, where b may be infinite too);
  # d/db = q - p
  w, db = _logit_slopes(a, b)
  da = -w * _where_weighted(w, b)
  return _cross_entropy_logits(a, b), da * ta + db * tb


@jax.custom_jvp
def _kl_logits(a, b):
  """KL(sigmoid a || sigmoid b) as p (log p - log q) + (1 - p) (log(1 - p) - log(1 - q)), each
  log sigmoid from :func:`jaxdiv._numerics.logistic` (one logistic and one log1p(exp) a logit, where
  `jax.nn.log_sigmoid` of +-a and +-b were four), 0 log 0 = 0."""
  p, not_p, _, soft_a = _numerics.logistic(a)
  _, _, _, soft_b = _numerics.logistic(b)
  # log sigmoid(a) - log sigmoid(b) = max(-b, 0) - max(-a, 0) + soft_b - soft_a; at -a, -b the same
  # with max(b, 0) - max(a, 0).
  d_soft = soft_b - soft_a
  l1 = jnp.maximum(-b, 0) - jnp.maximum(-a, 0) + d_soft
  l0 = jnp.maximum(b, 0) - jnp.maximum(a, 0) + d_soft
  return _numerics.mul_log(p, l1) + _numerics.mul_log(not_p, l0)


@_kl_logits.defjvp
def _kl_logits_jvp(primals, tangents):
  (a, b), (ta, tb) = primals, tangents
  # d/da = p (1 - p) (a - b) (0 where p (1 - p) is: at a = +-inf, where b may be too); d/db =
  # q - p, as the cross-entropy's
  w, db = _logit_slopes(a, b)
  da = w * _where_weighted(w, a - b)
  return _kl_logits(a, b), da * ta + db * tb


# p and q scaled by 2^64 (exact for p, q in [0, 1], `_unit_interval`'s range) before their
# difference: unscaled, p - q flushed to 0 (XLA:CPU) where p != q are both near 1.2e-38, and
# log(p / q) (as log1p(|p - q| / min)) and d/dq ((q - p) / (q (1 - q))) were 0 against 0.05
# (helper-61). Two products, where a select on the flushed entries took the KL's forward from
# 0.92x to 1.01x the hand-written line's time (bench/hand.py, two interleaved runs each).
_UNFLUSH = 2.0 ** 64


def _reciprocal(x, ok):
  """1 / x where `ok`, 0 elsewhere (`_numerics.quotient`: no inf reaches a derivative)."""
  return _numerics.quotient(jnp.ones_like(x), x, ok)


@jax.custom_jvp
def _log_ratio(a, b, diff):
  """log(a / b) for a, b >= 0 with diff = a - b (formed by the caller without the rounding of
  a and b, e.g. q - p for a = 1 - p, b = 1 - q), as +-log1p(|diff| / min(a, b)): its argument is
  never negative, so 1 + it rounds by at most half an ulp of itself (the log of a rounded a / b
  lost the relative precision of a value near 0, and log1p((a - b) / b) the absolute precision
  of a ratio near 0). One division and one log. The derivative is da / a - db / b (0 where a,
  resp. b, is 0: the callers weight that log by 0 there)."""
  # a reciprocal and a product: `log1p` reads its argument twice, and XLA:CPU does not fuse a
  # division read twice (it writes it to memory). |min|: a -0.0 made the reciprocal -inf.
  return jnp.sign(diff) * _numerics.fast_log1p(jnp.abs(diff) * (1 / jnp.abs(jnp.minimum(a, b))))


@_log_ratio.defjvp
def _log_ratio_jvp(primals, tangents):
  (a, b, diff), (ta, tb, _) = primals, tangents
  return _log_ratio(a, b, diff), _reciprocal(a, a > 0) * ta - _reciprocal(b, b > 0) * tb


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _q_slope(p, q, weighted_terms):
  """d/dq of the Bernoulli KL and cross-entropy, (1 - p) / (1 - q) - p / q, as the one quotient
  (q - p) / (q (1 - q)) (the difference of the two cancelled near p = q: 88% off in float32);
  at p = q = 0 it is 1 and at p = q = 1 -1, each quotient 0 where its weight is.

  Its own derivatives are those of the two quotients (differentiating the one quotient cancels
  where p / q is far from 1): -1 / (1 - q) - 1 / q in p and (1 - p) / (1 - q)^2 + p / q^2 in
  q, a term dropped where it is infinite (q = 0 or 1) and, with `weighted_terms` (the KL, whose
  terms p log(p / q) and (1 - p) log((1 - p) / (1 - q)) are dropped whole where their weight is
  0, derivatives included), also where p, resp. 1 - p, is 0: the KL's Hessian stays symmetric.
  """
  del weighted_terms
  corner = (p == q) & ((p == 0) | (p == 1))
  # |q|: at q = -0.0 the quotient's sign flipped (+inf for -inf)
  return jnp.where(corner, jnp.where(p == 0, 1, -1).astype(p.dtype),
                   _numerics.ratio(q * _UNFLUSH - p * _UNFLUSH,
                                   jnp.abs(q) * (1 - q) * _UNFLUSH))


@_q_slope.defjvp
def _q_slope_jvp(weighted_terms, primals, tangents):
  (p, q), (tp, tq) = primals, tangents
  pos, below = (p > 0, p < 1) if weighted_terms else (True, True)
  r1 = _reciprocal(q, pos & (q > 0))
  r0 = _reciprocal(1 - q, below & (q < 1))
  u1 = _numerics.quotient(p, q, (p > 0) & (q > 0))
  u0 = _numerics.quotient(1 - p, 1 - q, (p < 1) & (q < 1))
  # p / q^2 as (p / q) (tq / q): it may overflow, and times a zero tangent it was NaN
  return (_q_slope(p, q, weighted_terms),
          u1 * (r1 * tq) + u0 * (r0 * tq) - (r1 * tp + r0 * tp))


def _weighted(p, l1, l0):
  """p l1 + (1 - p) l0, each term 0 where its weight is (0 log 0 = 0), NaN where p is. The
  selects are on the logs, not the products: XLA:CPU then fuses the first product into the sum
  (one rounding fewer; the cross-entropy's median float32 error fell from 1.01x the
  hand-written line's to 0.91x)."""
  return p * jnp.where(p == 0, 0, l1) + (1 - p) * jnp.where(p == 1, 0, l0)


def _log_odds_against(x):
  """`(inside, log((1 - x) / x))`: whether x is in (0, 1), and there the log by
  :func:`_log_ratio` (1 - 2x formed from x, no cancellation near 1/2); outside, x is replaced
  by 1/2 (0, with no derivative to meet a zero cotangent). The entropy's d/dp and the
  cross-entropy's d/dp (in q)."""
  inside = (x > 0) & (x < 1)
  xc = jnp.where(inside, x, 0.5)
  return inside, _log_ratio(1 - xc, xc, 1 - 2 * xc)


def _kl_logs(p, q):
  ps, qs = p * _UNFLUSH, q * _UNFLUSH
  return _log_ratio(ps, qs, ps - qs), _log_ratio(1 - p, 1 - q, q - p)


@jax.custom_jvp
def _kl_probs(p, q):
  """Bernoulli KL on probabilities in [0, 1] (NaN propagates): p log(p / q) + (1 - p) log((1 -
  p) / (1 - q)), 0 log 0 = 0, each log from :func:`_log_ratio` (two divisions and two logs, as
  the hand-written `rel_entr` pair's). Rounding below 0 is clamped (the clamp is also the
  select on top that :func:`_unreduced` describes); the derivative is the rule's."""
  out = _weighted(p, *_kl_logs(p, q))
  return jnp.where(out < 0, 0, out)


@_kl_probs.defjvp
def _kl_probs_jvp(primals, tangents):
  (p, q), (tp, tq) = primals, tangents
  l1, l0 = _kl_logs(p, q)
  # d/dp = log(p / q) - log((1 - p) / (1 - q)) (+1 - 1), each term's part dropped where its
  # weight is 0 (the divergent p log p convention: at p = 0 the first term gives 0, not -inf).
  # The two logs have opposite signs: no cancellation. d/dq: `_q_slope`.
  dp = jnp.where(p > 0, l1, -1) - jnp.where(p < 1, l0, -1)
  return _kl_probs(p, q), dp * tp + _q_slope(p, q, True) * tq


def _unreduced(ok, x):
  """`x` where `ok`, NaN elsewhere, with `ok` true wherever `x` is a number: a no-op select on
  top of an elementwise form, so that a sum of it is one fused loop and a reduction. Without it
  XLA:CPU 0.10 handed the form's last add (a sum of two products) to a YNNPACK reduction, which
  wrote each product, and its operands, to memory first (a sum of the binary entropy took 1.35x
  the hand-written line's time, 0.71x with it)."""
  return jnp.where(ok, x, jnp.nan)


@jax.custom_jvp
def _entropy_probs(p):
  """-(m log m + (1 - m) log(1 - m)), m = min(p, 1 - p) (h is symmetric, and 1 - p is exact
  above 1/2, so the log1p's argument is never below -1/2 and both logs' arguments are exact):
  two non-positive products (no clamp), 0 at p = 0 and 1; NaN outside [0, 1] (a log is)."""
  m = jnp.minimum(p, 1 - p)
  # the logs negated, not the sum: -(0 + 0) is -0.0 at p = 0 and 1 (1 / h was -inf there)
  return _unreduced(m <= 0.5, _weighted(m, -jnp.log(m), -_numerics.fast_log1p(-m)))


@_entropy_probs.defjvp
def _entropy_probs_jvp(primals, tangents):
  (p,), (t,) = primals, tangents
  # d/dp = log((1 - p) / p), one log (log(1 - p) - log p has two, and was 85 ulp off in
  # float32 near p = 1/2); at p = 0 and 1 the finite part of each term's derivative, 1 and -1,
  # with second derivative -1 (the terms' 1 + log(1 - p) and -(1 + log p) there).
  inside, odds = _log_odds_against(p)
  slope = jnp.where(inside, odds,
                    jnp.where(p == 0, 1 - p, jnp.where(p == 1, -p, jnp.nan)))
  return _entropy_probs(p), slope * t


@jax.custom_jvp
def _cross_entropy_probs(p, q):
  """-(p log q + (1 - p) log(1 - q)) for p, q in [0, 1] or NaN (`_unit_interval`): two
  non-positive products (no clamp), a term 0 where its weight is."""
  # the logs negated, not the sum (+0.0 at p = q = 0 and 1)
  return _unreduced(p <= 1, _weighted(p, -jnp.log(q), -_numerics.fast_log1p(-q)))


@_cross_entropy_probs.defjvp
def _cross_entropy_probs_jvp(primals, tangents):
  (p, q), (tp, tq) = primals, tangents
  # d/dp = log((1 - q) / q), one log. At q = 0 and 1: +-inf, or 0 where the weight of the
  # infinite log is 0 too (p = q); its derivative in q there the finite part, -1 (-1 / (1 - q)
  # at q = 0, -1 / q at 1). d/dq: the KL's (`_q_slope`), without its dropped terms.
  inside, odds = _log_odds_against(q)
  edge = jnp.where(p == q, 0, jnp.where(q == 0, jnp.inf, -jnp.inf)).astype(q.dtype)
  edge = jnp.where(q == 0, edge - q, jnp.where(q == 1, edge + (1 - q), jnp.nan))
  dp = jnp.where(inside, odds, edge)
  return _cross_entropy_probs(p, q), dp * tp + _q_slope(p, q, False) * tq


def _prepare(arrays, names, axis, where, from_logits):
  from_logits = _validation.check_bool(from_logits, "from_logits")
  xs = [_validation.as_float_array(x, n) for x, n in zip(arrays, names)]
  result_dtype, acc_dtype = _validation.compute_dtype(*xs)
  try:
    shape = jnp.broadcast_shapes(*(x.shape for x in xs))
  except ValueError:
    raise ValueError(
        f"`{names[0]}` and `{names[1]}` cannot be broadcast together: shapes "
        f"{xs[0].shape} and {xs[1].shape}."
    ) from None
  xs = [jnp.broadcast_to(x, shape).astype(acc_dtype) for x in xs]
  axes = None if axis is None else _validation.normalize_axes(axis, len(shape))
  mask = _validation.broadcast_where(where, shape)
  if mask is not None:
    # Masked elements never enter the terms (a NaN there would poison the gradient).
    filler = 0.0 if from_logits else 0.5
    xs = [jnp.where(mask, x, filler) for x in xs]
  return xs, axes, mask, result_dtype


def _finish(terms, axes, mask, result_dtype, base, *, clamp=False):
  if mask is not None:
    terms = jnp.where(mask, terms, 0)
  if axes is not None:
    terms = jnp.sum(terms, axis=axes)
  terms = _numerics.to_base(terms, base)
  if clamp:
    # Exact Bernoulli KL is non-negative; only rounding can push it below 0. The gradient
    # passes (a `where` zeroed it: d/dp of KL(p || q) was 0 where p and q are an ulp apart and
    # the value rounded to -4e-16, -2.8e-7 where it rounded to +0).
    terms = _common.clamp_nonnegative(terms)
  return terms.astype(result_dtype)


_DOC_ARGS = """
  Args:{args}
    axis: ``None`` (default) keeps every element; an int or tuple sums over those axes (the
      divergence between products of independent Bernoullis).
    where: boolean mask broadcastable to the inputs; masked elements contribute 0.
    from_logits: the inputs are logits (log-odds), evaluated with ``log_sigmoid``.
    base: logarithm base of the result (``None``: nats).
"""


def binary_entropy(
    p: ArrayLike, *, axis=None, where: ArrayLike | None = None, from_logits: bool = False,
    base: float | None = None,
) -> jax.Array:
  r"""Entropy of Bernoulli(p), elementwise.

  .. math::
    h(p) = -p \log p - (1 - p) \log (1 - p).
  {args}
  Returns:
    h(p), the shape of ``p`` (without ``axis`` when given).

  Example:
    >>> import jax.numpy as jnp, jaxdiv
    >>> print(jaxdiv.binary_entropy(jnp.array([0., 0.5, 1.]), base=2))
    [0. 1. 0.]
  """
  _validation.check_base(base)
  from_logits = _validation.check_bool(from_logits, "from_logits")
  p = _validation.as_float_array(p, "p")
  [x, _], axes, mask, dtype = _prepare((p, p), ("p", "p"), axis, where, from_logits)
  terms = _entropy_logits(x) if from_logits else _entropy_probs(x)
  return _finish(terms, axes, mask, dtype, base)


def binary_cross_entropy(
    p: ArrayLike, q: ArrayLike, *, axis=None, where: ArrayLike | None = None,
    from_logits: bool = False, base: float | None = None,
) -> jax.Array:
  r"""Cross-entropy of Bernoulli(q) relative to Bernoulli(p), elementwise.

  .. math::
    H(p, q) = -p \log q - (1 - p) \log (1 - q).
  {args}
  Returns:
    H(p, q), the broadcast shape (without ``axis`` when given).

  Example:
    >>> import jax.numpy as jnp, jaxdiv
    >>> print(round(float(jaxdiv.binary_cross_entropy(jnp.array(1.), jnp.array(0.5))), 4))
    0.6931
  """
  _validation.check_base(base)
  xs, axes, mask, dtype = _prepare((p, q), ("p", "q"), axis, where, from_logits)
  if from_logits:
    terms = _cross_entropy_logits(*xs)
  else:
    terms = _cross_entropy_probs(*(_unit_interval(x) for x in xs))
  return _finish(terms, axes, mask, dtype, base)


def binary_kl_divergence(
    p: ArrayLike, q: ArrayLike, *, axis=None, where: ArrayLike | None = None,
    from_logits: bool = False, base: float | None = None,
) -> jax.Array:
  r"""KL(Bernoulli(p)‖Bernoulli(q)), elementwise.

  .. math::
    \mathrm{KL}(p \,\|\, q) = p \log \frac{p}{q} + (1 - p) \log \frac{1 - p}{1 - q}.
  {args}
  Returns:
    The divergence, the broadcast shape (without ``axis`` when given).

  Example:
    >>> import jax.numpy as jnp, jaxdiv
    >>> print(round(float(jaxdiv.binary_kl_divergence(jnp.array(0.5), jnp.array(0.9))), 4))
    0.5108
  """
  _validation.check_base(base)
  xs, axes, mask, dtype = _prepare((p, q), ("p", "q"), axis, where, from_logits)
  if from_logits:
    terms = _kl_logits(*xs)
  else:
    terms = _kl_probs(*(_unit_interval(x) for x in xs))
  return _finish(terms, axes, mask, dtype, base, clamp=from_logits)


for _fn, _args in (
    (binary_entropy, "\n    p: probabilities in [0, 1] (or logits), any shape."),
    (binary_cross_entropy, "\n    p: target probabilities in [0, 1] (or logits), any shape."
                           "\n    q: model probabilities (or logits), broadcastable with ``p``."),
    (binary_kl_divergence, "\n    p: first Bernoulli parameter (or logit), any shape."
                           "\n    q: second Bernoulli parameter, broadcastable with ``p``."),
):
  _fn.__doc__ = _fn.__doc__.replace("{args}", _DOC_ARGS.format(args=_args))
