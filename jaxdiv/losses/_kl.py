"""KL losses in optax's form: model log-probabilities first, targets second, no normalisation.

These take what optax takes (``log_predictions`` already normalised by the caller, targets as
given) and compute the same sums, term by term, with :func:`jaxdiv._numerics.mul_log`: a zero
target contributes 0 in value and gradient, whatever the prediction (optax: NaN when the
prediction is ``-inf``, and a NaN gradient with respect to a zero target).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxdiv import _fallback
from jaxdiv import _numerics
from jaxdiv import _unit_axes
from jaxdiv import _validation
from jaxdiv.losses import _common


def _prepare(log_predictions, targets, axis, where, names):
  log_predictions = _validation.as_float_array(log_predictions, names[0])
  targets = _validation.as_float_array(targets, names[1])
  shape = _common.broadcast_shapes(log_predictions, targets, names)
  ax = _common.axes(axis, len(shape))
  mask = _common.expand_where(where, shape, ax, expand=False)
  result_dtype, acc = _validation.compute_dtype(log_predictions, targets)
  return (jnp.broadcast_to(log_predictions, shape).astype(acc),
          jnp.broadcast_to(targets, shape).astype(acc), ax, mask, result_dtype)


def _kl_sum(x, log_x, log_q, ax, mask, *, log_target: bool):
  """`sum(x * (log_x - log_q))` over `ax` (`mul_log`'s 0 * log 0 = 0), with a hand-written
  derivative: d/d log_q is `-x`, the target itself, so the backward pass is one multiply and
  never re-runs the guards (which autodiff of `mul_log` did).

  `x` is the target (probabilities) and `log_x` its log; with `log_target` the primal input
  is `log_x` and `x = exp(log_x)`.
  """

  def terms(x, log_x, log_q):
    d = log_x - log_q
    keep = (x != 0) | jnp.isfinite(d)
    return keep, d

  @jax.custom_jvp
  def f(target, log_q):
    # The value alone (the rule below differentiates): x * where(x == 0, 0, log x - log_q) is
    # the term above entry for entry (a zero target is 0 whatever log_q; a negative one is NaN),
    # with a plain log: two selects and two compares fewer a term than the guarded form, which
    # made the forward 1.3-1.4x optax's time (4096x4096, 2048x32768), and the multiply outside
    # the select, where XLA:CPU fuses it into the vectorised reduction.
    x, log_x = (jnp.exp(target), target) if log_target else (target, jnp.log(target))
    return _numerics.masked_sum(x * jnp.where(x == 0, 0, log_x - log_q), ax, mask)

  @f.defjvp
  def f_jvp(primals, tangents):
    t_target, t_log_q = tangents

    def parts(target, log_q):
      x, log_x = ((jnp.exp(target), target) if log_target
                  else (target, _numerics.safe_log(target)))
      keep, d = terms(x, log_x, log_q)
      return x, keep, jnp.where(keep, d, 0)

    def coefs(target, log_q):
      x, keep, dk = parts(target, log_q)
      # d/dx of x (log x - log_q) is (log x - log_q) + 1 where x > 0, and its finite part at 0.
      if log_target:
        c_target = x * (dk + keep.astype(x.dtype))
      else:
        c_target = dk + (x > 0).astype(x.dtype)
      c_log_q = -x
      if mask is not None:  # masked entries may hold inf or NaN: a zero coefficient, not 0 * NaN
        c_target, c_log_q = jnp.where(mask, c_target, 0), jnp.where(mask, c_log_q, 0)
      return c_target, c_log_q

    x, _, dk = parts(*primals)
    out = _numerics.masked_sum(x * dk, ax, mask)
    # Partials that are not finite are 0 (`finite_coefs` says why).
    c_target, c_log_q = _fallback.finite_coefs(coefs, *primals)
    tangent = jnp.sum(c_target * t_target + c_log_q * t_log_q, axis=ax)
    return out, tangent

  return f(x if not log_target else log_x, log_q)


@_unit_axes.dropped(dists=("log_predictions", "targets"))
def kl_divergence(
    log_predictions: ArrayLike,
    targets: ArrayLike,
    axis: int | tuple[int, ...] | None = -1,
    where: ArrayLike | None = None,
    *,
    axis_name: str | None = None,
) -> jax.Array:
  r"""KL(targets‖predictions) from log-predictions and target probabilities (optax's order).

  .. math::
    \mathrm{KL}(p \,\|\, q) = \sum_i p_i (\log p_i - \log q_i),
    \qquad p = \text{targets},\ \log q = \text{log\_predictions},

  with ``0 log(0/q) = 0`` for every ``q``, ``-inf`` included, in value and gradient (optax gives
  NaN there, and a NaN gradient in ``targets`` wherever a target is 0).

  Args:
    log_predictions: log-probabilities of the model, shape ``[..., dim]``.
    targets: target probabilities, broadcastable with ``log_predictions``.
    axis: axis or axes summed over (``None``: all).
    where: mask of the terms to include, broadcastable to the inputs.
    axis_name: inside ``shard_map``, the mesh axis over which ``axis`` is split (a vocabulary
      sharded across devices); the sum is reduced across it, so every shard gets the global
      value and the gradient equals the unsharded one.

  Returns:
    KL(targets‖predictions), the broadcast shape without ``axis``.

  Example:
    >>> import jax.numpy as jnp, jaxdiv.losses
    >>> log_q = jnp.log(jnp.array([0.9, 0.1])); p = jnp.array([0.5, 0.5])
    >>> print(jaxdiv.losses.kl_divergence(log_q, p))
    0.5108

  References:
    Kullback & Leibler, On Information and Sufficiency, 1951.
  """
  log_q, p, ax, mask, dtype = _prepare(log_predictions, targets, axis, where,
                                       ("log_predictions", "targets"))
  # log p - log q is NaN at p = 0, log q = -inf; the term is dropped there (`mul_log`).
  if mask is None:
    out = _kl_probs_fast(p, log_q, ax)
  else:
    out = _kl_sum(p, None, log_q, ax, mask, log_target=False)
  return _numerics.psum(out, axis_name).astype(dtype)


def _kl_probs_fast(p, log_q, ax, *, generalized: bool = False):
  """`sum(p * (log(p + tiny) - log_q))` where every row is finite; `_kl_sum`'s guarded terms
  on the rows that are not (a zero target beside a -inf log-prediction, 0 * inf there; a
  negative target, whose log is NaN; a KL of +inf). `generalized`: plus `sum(exp(log_q) - p)`
  in the same sum (:func:`generalized_kl_divergence`).

  With `tiny` (the dtype's smallest normal number) the log of a zero target is finite, and its
  term is 0 where the log-prediction is: no select, which XLA:CPU cannot fuse into its
  vectorised reduction. The term of a target below about 2**24 tiny is changed by at most tiny
  (1.2e-38 in float32); XLA:CPU flushes subnormal targets to zero anyway. The derivative is
  `_kl_sum`'s closed form, right on every row, and only for the inputs being differentiated."""
  tiny = jnp.finfo(p.dtype).tiny

  def unguarded(x, lq):
    t = x * (jnp.log(x + tiny) - lq)
    return jnp.sum(t + jnp.exp(lq) - x if generalized else t, axis=ax)

  def careful(x, lq):
    if generalized:
      return _generalized_guarded(x, lq, ax, None)
    return _kl_sum(x, None, lq, ax, None, log_target=False)

  def coefs(need, x, lq):
    # d/dx of x (log x - log_q) is (log x - log_q) + 1 where x > 0, and its finite part, 0,
    # at x = 0; NaN at a NaN or negative target. `safe_log` reads the log only where x > 0,
    # so that no second derivative reads it at those (helper-55: a NaN target's Hessian row
    # was NaN, a negative one's 1 / x, where the guarded terms give 0).
    if need[0]:
      d_x = jnp.where(x != 0, _numerics.safe_log(x) - lq, 0) + (x > 0)
    else:
      d_x = None
    if generalized:
      return (None if d_x is None else d_x - 1), jnp.exp(lq) - x
    return d_x, -x

  return _fallback.finite_rows_with_coefs(unguarded, careful, coefs, p, log_q, axis=ax)


@_unit_axes.dropped(dists=("log_predictions", "log_targets"))
def kl_divergence_with_log_targets(
    log_predictions: ArrayLike,
    log_targets: ArrayLike,
    axis: int | tuple[int, ...] | None = -1,
    where: ArrayLike | None = None,
    *,
    axis_name: str | None = None,
) -> jax.Array:
  r"""KL(targets‖predictions) with both arguments as log-probabilities (optax's order).

  .. math::
    \mathrm{KL}(p \,\|\, q) = \sum_i e^{\log p_i} (\log p_i - \log q_i),

  where a ``-inf`` log-target contributes 0 in value and gradient (optax: NaN).

  Args:
    log_predictions: log-probabilities of the model, shape ``[..., dim]``.
    log_targets: log-probabilities of the target, broadcastable with ``log_predictions``.
    axis: axis or axes summed over (``None``: all).
    where: mask of the terms to include, broadcastable to the inputs.
    axis_name: inside ``shard_map``, the mesh axis over which ``axis`` is split (a vocabulary
      sharded across devices); the sum is reduced across it, so every shard gets the global
      value and the gradient equals the unsharded one.

  Returns:
    KL(targets‖predictions), the broadcast shape without ``axis``.

  Example:
    >>> import jax.numpy as jnp, jaxdiv.losses
    >>> log_q = jnp.log(jnp.array([0.9, 0.1])); log_p = jnp.array([0.0, -jnp.inf])
    >>> print(jaxdiv.losses.kl_divergence_with_log_targets(log_q, log_p))
    0.1053
  """
  log_q, log_p, ax, mask, dtype = _prepare(log_predictions, log_targets, axis, where,
                                           ("log_predictions", "log_targets"))
  if mask is None:
    out = _kl_log_targets_fast(log_p, log_q, ax)
  else:
    out = _kl_sum(None, log_p, log_q, ax, mask, log_target=True)
  return _numerics.psum(out, axis_name).astype(dtype)


def _kl_log_targets_fast(log_p, log_q, ax):
  """optax's line, `sum(exp(log_p) * (log_p - log_q))`, where every row is finite; `_kl_sum`'s
  guarded terms on the rows that are not (a -inf log-target, 0 * inf there; a KL of +inf).
  The derivative is `_kl_sum`'s closed form, right on every row, and only for the inputs
  being differentiated.

  The guard's select kept XLA:CPU from compiling the sum as one loop: 1.7x optax's forward
  time at 4096x4096 (`python bench/losses.py`)."""
  unguarded = lambda lp, lq: jnp.sum(jnp.exp(lp) * (lp - lq), axis=ax)
  careful = lambda lp, lq: _kl_sum(None, lp, lq, ax, None, log_target=True)

  def coefs(need, lp, lq):
    x = jnp.exp(lp)
    # d/d log_p of e^{log_p} (log_p - log_q) is e^{log_p} (log_p - log_q + 1); its finite
    # part, 0, where e^{log_p} = 0 (the select on the log-ratio keeps second derivatives
    # finite there).
    d_lp = x * (jnp.where(x != 0, lp - lq, 0) + 1) if need[0] else None
    return d_lp, -x

  return _fallback.finite_rows_with_coefs(unguarded, careful, coefs, log_p, log_q, axis=ax)


@_unit_axes.dropped(dists=("log_predictions", "targets"))
def generalized_kl_divergence(
    log_predictions: ArrayLike,
    targets: ArrayLike,
    axis: int | tuple[int, ...] | None = -1,
    where: ArrayLike | None = None,
    *,
    axis_name: str | None = None,
) -> jax.Array:
  r"""Generalised KL divergence between positive measures (optax's, NaN-free).

  .. math::
    D(p \,\|\, q) = \sum_i p_i \log \frac{p_i}{q_i} - p_i + q_i,

  the Bregman divergence of :math:`x \log x - x`; it equals KL(p‖q) when both sum to 1 and is
  non-negative for any non-negative ``p`` and ``q``, normalised or not.

  Args:
    log_predictions: log of the predicted measure ``q``, shape ``[..., dim]``.
    targets: the target measure ``p`` (non-negative), broadcastable with ``log_predictions``.
    axis: axis or axes summed over (``None``: all).
    where: mask of the terms to include, broadcastable to the inputs.
    axis_name: inside ``shard_map``, the mesh axis over which ``axis`` is split (a vocabulary
      sharded across devices); the sum is reduced across it, so every shard gets the global
      value and the gradient equals the unsharded one.

  Returns:
    D(p‖q), the broadcast shape without ``axis``.

  Example:
    >>> import jax.numpy as jnp, jaxdiv.losses
    >>> log_q = jnp.log(jnp.array([1.0, 2.0])); p = jnp.array([1.0, 1.0])
    >>> print(jaxdiv.losses.generalized_kl_divergence(log_q, p))
    0.3068

  References:
    Bregman, The relaxation method of finding the common point of convex sets, 1967;
    Lee & Seung, Algorithms for Non-negative Matrix Factorization, 2001.
  """
  log_q, p, ax, mask, dtype = _prepare(log_predictions, targets, axis, where,
                                       ("log_predictions", "targets"))
  if mask is None:
    out = _kl_probs_fast(p, log_q, ax, generalized=True)
  else:
    out = _generalized_guarded(p, log_q, ax, mask)
  return _numerics.psum(out, axis_name).astype(dtype)


def _generalized_guarded(p, log_q, ax, mask):
  """The generalised KL from `_kl_sum`'s guarded terms and the masses' difference."""
  kl = _kl_sum(p, None, log_q, ax, mask, log_target=False)
  return kl + _numerics.masked_sum(jnp.exp(log_q) - p, ax, mask)


@_unit_axes.dropped(dists=("log_predictions", "targets"))
def convex_kl_divergence(
    log_predictions: ArrayLike,
    targets: ArrayLike,
    axis: int | tuple[int, ...] | None = -1,
    where: ArrayLike | None = None,
    *,
    axis_name: str | None = None,
) -> jax.Array:
  """Deprecated alias of :func:`generalized_kl_divergence` (optax deprecates it too).

  Kept so that code written against ``optax.losses.convex_kl_divergence`` runs unchanged; it
  warns with a ``DeprecationWarning``, as optax does.
  """
  warnings.warn(
      "convex_kl_divergence is deprecated (as in optax); use generalized_kl_divergence.",
      DeprecationWarning, stacklevel=2)
  return generalized_kl_divergence(log_predictions, targets, axis=axis, where=where,
                                   axis_name=axis_name)

