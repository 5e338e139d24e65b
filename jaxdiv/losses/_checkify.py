"""The checkify rule of the losses, registered with :func:`jaxdiv.checks.checked`.

Logits and log-probabilities must not be NaN or ``+inf`` (``-inf`` is a zero probability);
target probabilities must lie in [0, 1], the unnormalised targets of the generalized KL be
non-negative. Integer labels are checked at trace time (their dtype) by the losses themselves.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxdiv import checks

_LOG_SPACE = ("logits", "student_logits", "teacher_logits", "log_predictions", "log_targets",
              "log_probs", "ref_log_probs")
# Argument -> the losses where it holds probabilities (or, second, non-negative weights).
_PROBABILITIES = {"targets": {"kl_divergence"},
                  "labels": {"softmax_cross_entropy", "safe_softmax_cross_entropy",
                             "poly_loss_cross_entropy", "sigmoid_binary_cross_entropy",
                             "sigmoid_focal_loss"}}
_NONNEGATIVE = {"targets": {"generalized_kl_divergence", "convex_kl_divergence"}}


def _mask(where, shape):
  """``where`` broadcast to ``shape``, or None where it is per example (the loss applies it)."""
  if where is None:
    return None
  try:
    if jnp.broadcast_shapes(jnp.shape(where), shape) == shape:
      return jnp.broadcast_to(where, shape)
  except ValueError:
    pass
  return None


def check_arguments(fn, a, *, atol: float | None = None) -> None:
  """Checks the inputs of one call of a ``jaxdiv.losses`` function."""
  del atol  # the losses take no normalised rows whose sums would be checked
  name = fn.__name__
  where = a.get("where")
  for pname, value in a.items():
    if value is None:
      continue
    if pname in _LOG_SPACE:
      x = jnp.asarray(value)
      checks.check_logits(x, name=pname, where=_mask(where, x.shape))
    elif name in _PROBABILITIES.get(pname, ()):
      x = jnp.asarray(value)
      checks.check_probabilities(x, name=pname, axis=None, where=_mask(where, x.shape))
    elif name in _NONNEGATIVE.get(pname, ()):
      checks.check_positive(value, pname, allow_zero=True)
