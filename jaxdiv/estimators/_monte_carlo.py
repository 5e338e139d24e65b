"""Monte Carlo KL estimators from log-densities of samples (Schulman's k1, k2, k3).

Shared by :mod:`jaxdiv.losses` (per-token KL penalties in PPO/GRPO) and by users who only have
samples and log-densities.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxdiv import _numerics
from jaxdiv import _validation

ESTIMATORS = ("k1", "k2", "k3")


def kl_estimate_terms(
    log_p: ArrayLike, log_q: ArrayLike, *, estimator: str = "k3",
) -> jax.Array:
  r"""Per-sample Monte Carlo estimates of KL(p‖q) from samples ``x ~ p``.

  With the log-ratio ``l = log q(x) - log p(x)`` (so ``r = exp(l) = q(x)/p(x)``):

  .. math::
    k_1 = -l, \qquad k_2 = \tfrac12 l^2, \qquad k_3 = (r - 1) - l.

  ``k1`` is unbiased but has high variance and takes negative values; ``k2`` is biased (its mean
  is KL only to second order in ``l``) with low variance; ``k3`` is unbiased, non-negative and
  has low variance when ``p`` and ``q`` are close: the usual choice for RL KL penalties (GRPO).

  Args:
    log_p: ``log p(x)`` of samples drawn from ``p``, any shape.
    log_q: ``log q(x)`` of the same samples, broadcastable with ``log_p``.
    estimator: ``"k1"``, ``"k2"`` or ``"k3"``.

  Returns:
    The per-sample estimates, the broadcast shape; their mean estimates KL(p‖q).

  Example:
    >>> import jax.numpy as jnp, jaxdiv
    >>> from jaxdiv.estimators import kl_estimate_terms
    >>> print(kl_estimate_terms(jnp.array([0.0]), jnp.array([0.0])))
    [0.]

  References:
    Schulman, Approximating KL Divergence, 2020 (blog note).
  """
  if estimator not in ESTIMATORS:
    raise ValueError(f"`estimator` must be one of {ESTIMATORS}; got {estimator!r}.")
  log_p = _validation.as_float_array(log_p, "log_p")
  log_q = _validation.as_float_array(log_q, "log_q")
  try:
    jnp.broadcast_shapes(log_p.shape, log_q.shape)
  except ValueError:
    raise ValueError(
        f"`log_p` and `log_q` cannot be broadcast together: shapes {log_p.shape} and"
        f" {log_q.shape}."
    ) from None
  dtype, acc = _validation.compute_dtype(log_p, log_q)
  lr = log_q.astype(acc) - log_p.astype(acc)
  if estimator == "k1":
    out = -lr
  elif estimator == "k2":
    out = 0.5 * lr * lr
  else:
    out = _numerics.expm1_minus_x(lr)
  return out.astype(dtype)


def kl_estimate(
    log_p: ArrayLike, log_q: ArrayLike, *, estimator: str = "k3", where: ArrayLike | None = None,
    axis=None,
) -> jax.Array:
  r"""Monte Carlo estimate of KL(p‖q): the mean of :func:`kl_estimate_terms` over samples.

  .. math::
    \widehat{\mathrm{KL}} = \frac{1}{|S|} \sum_{x \in S} k(x), \qquad x \sim p.

  ``k1`` and ``k3`` give unbiased estimates, ``k2`` a biased one (see
  :func:`kl_estimate_terms`).

  Args:
    log_p: ``log p(x)`` of samples drawn from ``p``.
    log_q: ``log q(x)`` of the same samples, broadcastable.
    estimator: ``"k1"``, ``"k2"`` or ``"k3"``.
    where: mask of the samples to average (e.g. padding excluded); a slice with nothing left
      gives 0.
    axis: the sample axis or axes; ``None`` averages over all.

  Returns:
    The estimate, the broadcast shape without ``axis``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxdiv.estimators import kl_estimate
    >>> print(kl_estimate(jnp.array([0.0, 0.0]), jnp.array([0.0, 0.0])))
    0.0

  References:
    Schulman, Approximating KL Divergence, 2020 (blog note).
  """
  terms = kl_estimate_terms(log_p, log_q, estimator=estimator)
  axes = _validation.normalize_axes(axis, terms.ndim) if terms.ndim else ()
  acc = jnp.promote_types(terms.dtype, jnp.float32)
  t = terms.astype(acc)
  if where is None:
    out = jnp.mean(t, axis=axes) if axes else t
  else:
    mask = _validation.broadcast_where(where, terms.shape)
    total = jnp.sum(jnp.where(mask, t, 0), axis=axes)
    count = jnp.sum(mask, axis=axes)
    out = jnp.where(count > 0, total / jnp.maximum(count, 1), 0)
  return out.astype(terms.dtype)
