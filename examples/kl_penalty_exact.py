"""The KL penalty to a reference policy, sampled (k1, k3) and exact, from hidden states.

`python examples/kl_penalty_exact.py`. A policy head and a reference head over a 32k
vocabulary: the sampled estimators need only the log-probabilities of the sampled tokens
(`fused_linear_token_log_probs`); the exact per-token KL(π‖π_ref) sums over the whole
vocabulary, blockwise (`fused_linear_distillation_divergence(..., divergence="reverse_kl")`),
and its gradient reaches the policy only. Neither forms the [tokens, vocab] logits.
"""

import jax
import jax.numpy as jnp

from jaxdiv import losses


def main(tokens=256, d=64, vocab=32768, seed=0):
  k = jax.random.split(jax.random.key(seed), 5)
  hidden = jax.random.normal(k[0], (tokens, d))
  w_ref = jax.random.normal(k[1], (d, vocab)) * 0.3
  w_pol = w_ref + 0.05 * jax.random.normal(k[2], (d, vocab))  # a policy near its reference
  ref_hidden = hidden  # the same prompt and completion, through the reference model

  # Sampled tokens y ~ π and their log-probabilities under both models (no [tokens, vocab]
  # logits kept: the sampling itself is done here densely, as a sampler would).
  y = jax.random.categorical(k[3], hidden @ w_pol)
  log_pi, entropy = losses.fused_linear_token_log_probs(hidden, w_pol, y)
  log_ref, _ = losses.fused_linear_token_log_probs(ref_hidden, w_ref, y)
  k1 = losses.kl_penalty(log_pi, log_ref, estimator="k1")
  k3 = losses.kl_penalty(log_pi, log_ref, estimator="k3")

  # The exact penalty, per token, and its gradient with respect to the policy's head.
  def exact(w):
    return losses.fused_linear_distillation_divergence(hidden, w, ref_hidden, w_ref,
                                                       divergence="reverse_kl")
  kl = exact(w_pol)
  grad = jax.grad(lambda w: jnp.mean(exact(w)))(w_pol)
  print(f"mean entropy of π          {float(jnp.mean(entropy)):.4f} nats")
  print(f"sampled k1 (1 sample/token) {float(jnp.mean(k1)):.4f}")
  print(f"sampled k3 (1 sample/token) {float(jnp.mean(k3)):.4f}")
  print(f"exact KL(π‖π_ref)           {float(jnp.mean(kl)):.4f}")
  print(f"|d mean KL / d W_policy|    {float(jnp.linalg.norm(grad)):.4f}")
  return kl, k3


if __name__ == "__main__":
  main()
