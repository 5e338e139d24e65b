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

from jaxdiv import _checks
from jaxdiv import _numerics
from jaxdiv.losses import _common


def _prepare(log_predictions, targets, axis, where, names):
  log_predictions = _checks.as_float_array(log_predictions, names[0])
  targets = _checks.as_float_array(targets, names[1])
  shape = _common.broadcast_shapes(log_predictions, targets, names)
  ax = _common.axes(axis, len(shape))
  mask = _common.expand_where(where, shape, ax, expand=False)
  result_dtype, acc = _checks.compute_dtype(log_predictions, targets)
  return (jnp.broadcast_to(log_predictions, shape).astype(acc),
          jnp.broadcast_to(targets, shape).astype(acc), ax, mask, result_dtype)


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
  # log p - log q is NaN at p = 0, log q = -inf; `mul_log` drops the term there.
  terms = _numerics.mul_log(p, _numerics.safe_log(p) - log_q)
  return _numerics.psum(_numerics.masked_sum(terms, ax, mask), axis_name).astype(dtype)


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
  terms = _numerics.mul_log(jnp.exp(log_p), log_p - log_q)
  return _numerics.psum(_numerics.masked_sum(terms, ax, mask), axis_name).astype(dtype)


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
  kl = _numerics.masked_sum(_numerics.mul_log(p, _numerics.safe_log(p) - log_q), ax, mask)
  mass = _numerics.masked_sum(jnp.exp(log_q) - p, ax, mask)
  return _numerics.psum(kl + mass, axis_name).astype(dtype)


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

