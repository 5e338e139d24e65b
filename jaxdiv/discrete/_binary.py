"""Bernoulli forms, elementwise: binary entropy, KL and cross-entropy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxdiv import _numerics
from jaxdiv import _validation
from jaxdiv.discrete import _common


def _unit_interval(x):
  """`x` where it lies in [0, 1], NaN elsewhere (and at NaN)."""
  return jnp.where((x >= 0) & (x <= 1), x, jnp.nan)


def _bernoulli(x, from_logits):
  """(p, 1 - p, log p, log(1 - p)) from probabilities or logits, all without cancellation."""
  if from_logits:
    return (jax.nn.sigmoid(x), jax.nn.sigmoid(-x), jax.nn.log_sigmoid(x),
            jax.nn.log_sigmoid(-x))
  # A value outside [0, 1] is NaN from here on: in H(p, q) and KL each of q's logs meets a
  # weight of p, and where that weight is 0 `mul_log` takes 0 * NaN as 0, so an undefined log
  # alone was dropped (H(0, -0.5) was log(1 / 1.5), clamped to 0) and p's own range never
  # entered H(p, q).
  x = _unit_interval(x)
  # log(1 - p) as log1p(-p): `1 - p` rounds to 1 in float32 for p < 6e-8 (the entropy at
  # p = 1e-9 lost its (1 - p) log(1 - p) ~ p term, 4.6%). Same edges as `safe_log(1 - p)`.
  ok = x < 1
  log_not = jnp.where(ok, _numerics.log1p(-jnp.where(ok, x, 0)),
                      jnp.where(x == 1, -jnp.inf, jnp.nan))
  return x, 1 - x, _numerics.safe_log(x), log_not


def _logistic(x):
  """`(sigmoid x, sigmoid -x, sigmoid -|x|, log1p(exp(-|x|)))`: with s = sigmoid -|x| (XLA's
  logistic), sigmoid |x| = 1 - s (no cancellation: s <= 1/2), and log sigmoid(+-x) =
  -(max(-+x, 0) + log1p(exp(-|x|))). Exact at +-inf. (s as e / (1 + e) from the same exp made
  the binary entropy's median float32 error 1.09x the hand-written line's; this, 0.86x.)"""
  ax = jnp.abs(x)
  small = jax.nn.sigmoid(-ax)
  big = 1 - small
  pos = x >= 0
  return jnp.where(pos, big, small), jnp.where(pos, small, big), small, jnp.log1p(jnp.exp(-ax))


def _logit_slopes(a, b):
  """`(p (1 - p), q - p)` for p = sigmoid a, q = sigmoid b, the pieces of the derivatives of the
  cross-entropy and the KL from logits; q - p as (1 - p) - (1 - q) where both are above 1/2 on
  the whole (no cancellation of two values near 1)."""
  p, not_p, _, _ = _logistic(a)
  q, not_q, _, _ = _logistic(b)
  return p * not_p, jnp.where(a + b > 0, not_p - not_q, q - p)


@jax.custom_jvp
def _entropy_logits(x):
  """Binary entropy of sigmoid(x): log1p(e) + |x| e / (1 + e), e = exp(-|x|), a sum of two
  non-negative terms (the hand-written -(p log p + (1 - p) log(1 - p)) has two sigmoids and
  two log-sigmoids)."""
  _, _, small, soft = _logistic(x)
  return soft + _numerics.mul_log(small, jnp.abs(x))  # 0 where small is, |x| = inf included


@_entropy_logits.defjvp
def _entropy_logits_jvp(primals, tangents):
  (x,), (t,) = primals, tangents
  p, not_p, _, _ = _logistic(x)
  w = p * not_p  # d/dx = -x p (1 - p); 0 where p (1 - p) is, at +-inf included
  return _entropy_logits(x), jnp.where(w == 0, 0, -x * w) * t


@jax.custom_jvp
def _cross_entropy_logits(a, b):
  """H(sigmoid a, sigmoid b) = log1p(exp(-|b|)) + |b| (sigmoid -a where b >= 0, else sigmoid
  a): -p log q - (1 - p) log(1 - q) with log sigmoid(+-b) = -(max(-+b, 0) + log1p(exp(-|b|)))
  and p + (1 - p) = 1, non-negative terms only; one exp and a log1p for b, one exp for a."""
  p, not_p, _, _ = _logistic(a)
  _, _, _, soft = _logistic(b)
  return soft + _numerics.mul_log(jnp.where(b >= 0, not_p, p), jnp.abs(b))


@_cross_entropy_logits.defjvp
def _cross_entropy_logits_jvp(primals, tangents):
  (a, b), (ta, tb) = primals, tangents
  # d/da = -p (1 - p) b (0 where p (1 - p) is: at a = +-inf, where b may be infinite too);
  # d/db = q - p
  w, db = _logit_slopes(a, b)
  da = jnp.where(w == 0, 0, -w * b)
  return _cross_entropy_logits(a, b), da * ta + db * tb


@jax.custom_jvp
def _kl_logits(a, b):
  """KL(sigmoid a || sigmoid b) as p (log p - log q) + (1 - p) (log(1 - p) - log(1 - q)), each
  log sigmoid from :func:`_logistic` (one logistic and one log1p(exp) a logit, where
  `jax.nn.log_sigmoid` of +-a and +-b were four), 0 log 0 = 0."""
  p, not_p, _, soft_a = _logistic(a)
  _, _, _, soft_b = _logistic(b)
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
  da = jnp.where(w == 0, 0, w * (a - b))
  return _kl_logits(a, b), da * ta + db * tb


def _kl_ratios(p, q):
  """(log(p / q) where p > 0, else 0; log((1 - p) / (1 - q)) where p < 1, else 0) as
  log1p((p - q) / q) and log1p((q - p) / (1 - q)): each within a few roundings of itself where
  the difference of two logs (and the log of a rounded ratio near 1) lost digits near p = q,
  and where `1 - p` rounds to 1 (p below 6e-8 in float32). A ratio below the float spacing
  under 1 (p < 6e-8 q in float32) makes log1p's argument round to -1: it is held at the
  largest value above -1, log(2^-24) in float32, an absolute error of at most p |log(p / q)|
  in p log(p / q) (for 1 - p: at most 1 - p, the same bound, as 1 - p >= 2^-24). Where a
  ratio is small the log1p loses relative precision (eps q / p): harmless in p log(p / q),
  not in the log alone, which is why the derivative does not use these."""
  pos, below = p > 0, p < 1
  floor = -1 + jnp.finfo(p.dtype).epsneg
  # |q|: a q of -0.0 made (p - q) / q -inf, held at the floor, and KL(0.3 || -0.0) 0, not inf
  den1 = jnp.where(pos, jnp.abs(q), 1)
  den0 = jnp.where(below, 1 - q, 1)
  x1 = jnp.maximum(jnp.where(pos, p - q, 0) / den1, floor)
  x0 = jnp.maximum(jnp.where(below, q - p, 0) / den0, floor)
  return _numerics.log1p(x1), _numerics.log1p(x0)


@jax.custom_jvp
def _kl_probs(p, q):
  """Bernoulli KL on probabilities in [0, 1] (NaN propagates): p log(p/q) + (1 - p) log((1 -
  p)/(1 - q)) with 0 log 0 = 0, in two logarithms (the hand-written `rel_entr` pair has two
  logarithms and two divisions too; one `log` each of p, q, 1 - p and 1 - q was 1.2-1.6x its
  time)."""
  l1, l0 = _kl_ratios(p, q)
  return p * l1 + (1 - p) * l0


@_kl_probs.defjvp
def _kl_probs_jvp(primals, tangents):
  p, q = primals
  tp, tq = tangents
  pos, below = p > 0, p < 1
  # The value through the function itself: differentiated again, its own rule applies (the
  # ratios' raw derivative holds p / q^2, inf in float32 at q = 1e-20, times a zero tangent).
  out = _kl_probs(p, q)
  # d/dp = log(p/q) - log((1-p)/(1-q)) (+1 - 1), each term's part dropped where its weight is
  # 0 (the divergent p log p convention: at p = 0 the first term gives 0, not -inf). Each log
  # where its ratio is within [0.5, 1.5] as log1p of the ratio minus one (the difference of
  # logs lost 60% of d/dp in float32 at p = 2.3e-4, q an ulp away), elsewhere from logs of p,
  # q, 1 - p and 1 - q (not the value's log1p, whose relative error is eps q / p at small
  # ratios). Every branch's operands are replaced outside it: their own derivatives (1/p,
  # 1/q, ...) overflow only where the true ones do.
  p1, q1 = jnp.where(pos, p, 1), jnp.where(pos, q, 1)
  p0, q0 = jnp.where(below, p, 0), jnp.where(below, q, 0)
  near1 = pos & (jnp.abs(p - q) <= 0.5 * q)
  near0 = below & (jnp.abs(q - p) <= 0.5 * (1 - q))
  l1 = jnp.where(near1, _numerics.log1p(_numerics.quotient(p - q, q, near1)),
                 jnp.where(pos, jnp.log(p1) - jnp.log(q1), 0))
  l0 = jnp.where(near0, _numerics.log1p(_numerics.quotient(q - p, 1 - q, near0)),
                 jnp.where(below, _numerics.log1p(-p0) - _numerics.log1p(-q0), 0))
  dp = l1 - l0 + (pos.astype(p.dtype) - below.astype(p.dtype))
  # d/dq = (1 - p)/(1 - q) - p/q, each ratio 0 where its weight is; where both ratios are
  # within [0.5, 1.5] as (q - p)/(q (1 - q)) (their difference cancelled there: 88% off in
  # float32). Not further out: differentiated again at p = 0 and q = 1e-30 that form cancels.
  near = near1 & near0
  qs = jnp.where(near, q, 0.5)
  ratios = _numerics.quotient(1 - p, 1 - q, below) - _numerics.quotient(p, q, pos)
  dq = jnp.where(near, _numerics.ratio(qs - jnp.where(near, p, 0.5), qs * (1 - qs)), ratios)
  return out, dp * tp + dq * tq


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


def _cross_terms(bp, bq, from_logits):
  """-p log q - (1 - p) log(1 - q) from two `_bernoulli` tuples; the entropy is it at q = p.
  On probabilities p log q's derivative in q is the quotient p / q (`mul_log_of`: its own
  derivative holds no q**-2, which underflows for q < 1e-19 in float32); 1 - q is never
  below the float spacing near 1, so (1 - p) log(1 - q) keeps autodiff."""
  (p1, p0, _, _), (q1, _, lq1, lq0) = bp, bq
  first = _numerics.mul_log(p1, lq1) if from_logits else _numerics.mul_log_of(p1, q1)
  return -(first + _numerics.mul_log(p0, lq0))


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
  if from_logits:
    return _finish(_entropy_logits(x), axes, mask, dtype, base)
  bp = _bernoulli(x, from_logits)
  return _finish(_cross_terms(bp, bp, from_logits), axes, mask, dtype, base, clamp=True)


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
    return _finish(_cross_entropy_logits(*xs), axes, mask, dtype, base)
  bp, bq = (_bernoulli(x, from_logits) for x in xs)
  return _finish(_cross_terms(bp, bq, from_logits), axes, mask, dtype, base, clamp=True)


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
  return _finish(terms, axes, mask, dtype, base, clamp=True)


for _fn, _args in (
    (binary_entropy, "\n    p: probabilities in [0, 1] (or logits), any shape."),
    (binary_cross_entropy, "\n    p: target probabilities in [0, 1] (or logits), any shape."
                           "\n    q: model probabilities (or logits), broadcastable with ``p``."),
    (binary_kl_divergence, "\n    p: first Bernoulli parameter (or logit), any shape."
                           "\n    q: second Bernoulli parameter, broadcastable with ``p``."),
):
  _fn.__doc__ = _fn.__doc__.replace("{args}", _DOC_ARGS.format(args=_args))
