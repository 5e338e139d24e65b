"""Bernoulli forms, elementwise: binary entropy, KL and cross-entropy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxdiv import _numerics
from jaxdiv import _validation


def _bernoulli(x, from_logits):
  """(p, 1 - p, log p, log(1 - p)) from probabilities or logits, all without cancellation."""
  if from_logits:
    return (jax.nn.sigmoid(x), jax.nn.sigmoid(-x), jax.nn.log_sigmoid(x),
            jax.nn.log_sigmoid(-x))
  # A value outside [0, 1] is NaN from here on: in H(p, q) and KL each of q's logs meets a
  # weight of p, and where that weight is 0 `mul_log` takes 0 * NaN as 0, so an undefined log
  # alone was dropped (H(0, -0.5) was log(1 / 1.5), clamped to 0) and p's own range never
  # entered H(p, q).
  x = jnp.where((x >= 0) & (x <= 1), x, jnp.nan)
  # log(1 - p) as log1p(-p): `1 - p` rounds to 1 in float32 for p < 6e-8 (the entropy at
  # p = 1e-9 lost its (1 - p) log(1 - p) ~ p term, 4.6%). Same edges as `safe_log(1 - p)`.
  ok = x < 1
  log_not = jnp.where(ok, jnp.log1p(-jnp.where(ok, x, 0)), jnp.where(x == 1, -jnp.inf, jnp.nan))
  return x, 1 - x, _numerics.safe_log(x), log_not


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
  return [_bernoulli(x, from_logits) for x in xs], axes, mask, result_dtype


def _finish(terms, axes, mask, result_dtype, base, *, clamp=False):
  if mask is not None:
    terms = jnp.where(mask, terms, 0)
  if axes is not None:
    terms = jnp.sum(terms, axis=axes)
  terms = _numerics.to_base(terms, base)
  if clamp:
    # Exact Bernoulli KL is non-negative; only rounding can push it below 0.
    terms = jnp.where(terms < 0, jnp.zeros_like(terms), terms)
  return terms.astype(result_dtype)


def _cross_terms(bp, bq):
  """-p log q - (1 - p) log(1 - q) from two `_bernoulli` tuples; the entropy is it at q = p."""
  (p1, p0, _, _), (_, _, lq1, lq0) = bp, bq
  return -(_numerics.mul_log(p1, lq1) + _numerics.mul_log(p0, lq0))


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
  [bp, _], axes, mask, dtype = _prepare((p, p), ("p", "p"), axis, where, from_logits)
  return _finish(_cross_terms(bp, bp), axes, mask, dtype, base, clamp=True)


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
  [bp, bq], axes, mask, dtype = _prepare((p, q), ("p", "q"), axis, where, from_logits)
  return _finish(_cross_terms(bp, bq), axes, mask, dtype, base, clamp=True)


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
  [(p1, p0, lp1, lp0), (_, _, lq1, lq0)], axes, mask, dtype = _prepare(
      (p, q), ("p", "q"), axis, where, from_logits)
  terms = _numerics.mul_log(p1, lp1 - lq1) + _numerics.mul_log(p0, lp0 - lq0)
  return _finish(terms, axes, mask, dtype, base, clamp=True)


for _fn, _args in (
    (binary_entropy, "\n    p: probabilities in [0, 1] (or logits), any shape."),
    (binary_cross_entropy, "\n    p: target probabilities in [0, 1] (or logits), any shape."
                           "\n    q: model probabilities (or logits), broadcastable with ``p``."),
    (binary_kl_divergence, "\n    p: first Bernoulli parameter (or logit), any shape."
                           "\n    q: second Bernoulli parameter, broadcastable with ``p``."),
):
  _fn.__doc__ = _fn.__doc__.replace("{args}", _DOC_ARGS.format(args=_args))
