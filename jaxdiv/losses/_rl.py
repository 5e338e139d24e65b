"""Per-token KL penalties for RL fine-tuning (PPO, GRPO) from sampled tokens' log-probabilities."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from jaxdiv import _validation
from jaxdiv.estimators import kl_estimate_terms
from jaxdiv.losses import _common


def kl_penalty(
    log_probs: ArrayLike,
    ref_log_probs: ArrayLike,
    *,
    estimator: str = "k3",
    where: ArrayLike | None = None,
) -> jax.Array:
  r"""Per-token Monte Carlo estimate of KL(π‖π_ref) from tokens sampled from the policy π.

  With the log-ratio :math:`l = \log \pi_\mathrm{ref}(x) - \log \pi(x)` of a sampled token
  :math:`x \sim \pi`, and :math:`r = e^l`:

  .. math::
    k_1 = -l, \qquad k_2 = \tfrac12 l^2, \qquad k_3 = (r - 1) - l.

  Their sample means estimate KL(π‖π_ref):

  * ``k1`` is unbiased but has high variance and is negative on many tokens.
  * ``k2`` is biased (exact only to second order in :math:`l`) with low variance.
  * ``k3`` is unbiased, non-negative per token, and has low variance when π and π_ref are
    close: the estimator of GRPO (DeepSeekMath) and the usual default.

  As a *loss* differentiated with respect to the policy (samples held fixed), the expected
  gradients differ from the values' targets: ``k1`` gives 0 in expectation (it is the score
  function), ``k2`` gives the gradient of KL(π‖π_ref), and ``k3`` the gradient of the forward
  KL(π_ref‖π). Use ``k1`` or ``k3`` as a reward penalty (PPO-style, no gradient), ``k2`` or
  ``k3`` as a loss term, knowing which KL the gradient follows.

  The exact penalty needs no sample: with the policy's and the reference's hidden states and
  heads, ``fused_linear_distillation_divergence(h, W, h_ref, W_ref, divergence="reverse_kl")``
  is KL(π‖π_ref) per token over the whole vocabulary, blockwise (no [tokens, vocab] logits),
  with its gradient (that of the reverse KL) reaching the policy only; the sampled tokens'
  log-probabilities for k1/k2/k3 come from ``fused_linear_token_log_probs``. Both are shown in
  ``examples/kl_penalty_exact.py``, and the mean of k3 over samples converges to the exact
  value (``tests/losses/test_losses_post_training.py``).

  The reference is held constant (``stop_gradient``); masked tokens (padding, prompt) give 0
  and a zero gradient, whatever their log-probabilities hold (``-inf`` included).

  Args:
    log_probs: the policy's log-probabilities of the sampled tokens, e.g. ``[batch, seq]``.
    ref_log_probs: the reference model's log-probabilities of the same tokens,
      broadcastable with ``log_probs``.
    estimator: ``"k1"``, ``"k2"`` or ``"k3"``.
    where: mask of the tokens to include, broadcastable to the inputs.

  Returns:
    The per-token penalty, the broadcast shape; reduce it with :func:`reduce_loss`.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxdiv.losses import kl_penalty
    >>> lp = jnp.log(jnp.array([0.5, 0.2])); ref = jnp.log(jnp.array([0.25, 0.2]))
    >>> print(kl_penalty(lp, ref))
    [0.1931 0.    ]

  References:
    Schulman, Approximating KL Divergence, 2020 (blog note); Shao et al., DeepSeekMath, 2024
    (GRPO); Tang & Munos, On a few pitfalls in KL divergence gradient estimation for RL, 2025.
  """
  log_probs = _validation.as_float_array(log_probs, "log_probs")
  ref_log_probs = _validation.as_float_array(ref_log_probs, "ref_log_probs")
  shape = _common.broadcast_shapes(log_probs, ref_log_probs, ("log_probs", "ref_log_probs"))
  mask = _validation.broadcast_where(where, shape)
  ref_log_probs = lax.stop_gradient(ref_log_probs)
  if mask is not None:
    # Padding may hold -inf or garbage: replace it before the exp inside k3, not only after.
    log_probs = jnp.where(mask, log_probs, 0)
    ref_log_probs = jnp.where(mask, ref_log_probs, 0)
  out = kl_estimate_terms(log_probs, ref_log_probs, estimator=estimator)
  if mask is not None:
    out = jnp.where(mask, out, 0)
  return out
