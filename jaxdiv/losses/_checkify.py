"""The checkify rule of the losses, registered with :func:`jaxdiv.checks.checked`.

Logits and log-probabilities must not be NaN or ``+inf`` (``-inf`` is a zero probability);
target probabilities must lie in [0, 1], the unnormalised targets of the generalized KL be
non-negative. Integer labels are checked at trace time (their dtype) by the losses themselves.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxdiv import checks

# Argument -> the losses in which it holds probabilities; then, non-negative measures.
_PROBABILITIES = {"targets": {"kl_divergence"},
                  "labels": {"softmax_cross_entropy", "safe_softmax_cross_entropy",
                             "poly_loss_cross_entropy", "sigmoid_binary_cross_entropy",
                             "sigmoid_focal_loss"}}
_NONNEGATIVE = {"targets": {"generalized_kl_divergence", "convex_kl_divergence"}}


def check_arguments(fn, a, *, atol: float | None = None) -> None:
  """Checks the inputs of one call of a ``jaxdiv.losses`` function (`atol` unused: the losses
  take no rows that must sum to 1)."""
  del atol
  checks.check_log_space(fn, a)
  name = fn.__name__
  for pname, value in a.items():
    if value is None:
      continue
    if name in _PROBABILITIES.get(pname, ()):
      x = jnp.asarray(value)
      checks.check_probabilities(x, name=pname, axis=None,
                                 where=checks.mask_for(a.get("where"), x.shape))
    elif name in _NONNEGATIVE.get(pname, ()):
      checks.check_positive(value, pname, allow_zero=True)
