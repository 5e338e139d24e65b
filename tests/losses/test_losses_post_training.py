"""The exact KL penalty to a reference policy (fused distillation, reverse KL) against a
float64 dense KL, its gradient reaching the policy only, and the sampled k3 estimate averaging
to it; the example that shows both."""

from __future__ import annotations

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiv import losses

N, D, V = 6, 16, 50


def _heads(seed):
  rng = np.random.default_rng(seed)
  h = rng.normal(size=(N, D))
  w_ref = rng.normal(size=(D, V)) * 0.5
  w_pol = w_ref + 0.3 * rng.normal(size=(D, V))
  h_ref = h + 0.1 * rng.normal(size=(N, D))
  return h, w_pol, h_ref, w_ref


def _exact(h, w, h_ref, w_ref):
  return losses.fused_linear_distillation_divergence(h, w, h_ref, w_ref, divergence="reverse_kl",
                                                     block_size=16)


def test_exact_penalty_is_kl_policy_reference_with_gradient_to_the_policy_only():
  h, w, h_ref, w_ref = _heads(0)
  cot = np.linspace(0.5, 1.5, N)
  with jax.enable_x64(True):
    def dense(h, w):  # KL(π ‖ π_ref) = Σ π (log π - log π_ref), float64
      lp, lr = jax.nn.log_softmax(h @ w), jax.nn.log_softmax(jnp.asarray(h_ref @ w_ref))
      return jnp.sum(jnp.exp(lp) * (lp - lr), -1)
    want = [dense(h, w), *jax.grad(lambda h, w: jnp.sum(cot * dense(h, w)), (0, 1))(h, w)]
  args = [jnp.asarray(a, jnp.float32) for a in (h, w, h_ref, w_ref)]
  got = [_exact(*args), *jax.grad(lambda *a: jnp.sum(cot * _exact(*a)), (0, 1, 2, 3))(*args)]
  for a, b in zip(got[:3], want):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5 * np.abs(b).max())
  assert not np.any(got[3]) and not np.any(got[4])  # the reference is a constant


# Slow tier: the fast tier runs no case of this test; it costs 5 s.
@pytest.mark.slow
def test_sampled_k3_averages_to_the_exact_penalty():
  """M samples y ~ π per token: mean k3 within 4 standard errors of the exact KL."""
  h, w, h_ref, w_ref = (jnp.asarray(a, jnp.float32) for a in _heads(1))
  m = 20000
  y = jax.random.categorical(jax.random.key(0), h @ w, shape=(m, N))  # [m, N]
  rep = lambda x: jnp.broadcast_to(x, (m, *x.shape))
  log_pi, _ = losses.fused_linear_token_log_probs(rep(h), w, y)
  log_ref, _ = losses.fused_linear_token_log_probs(rep(h_ref), w_ref, y)
  k3 = np.asarray(losses.kl_penalty(log_pi, log_ref, estimator="k3"), np.float64)
  exact = np.asarray(_exact(h, w, h_ref, w_ref), np.float64)
  err = k3.std(0) / np.sqrt(m)
  assert np.all(np.abs(k3.mean(0) - exact) < 4 * err + 1e-6), (k3.mean(0), exact, err)
  assert np.all(exact > 10 * err)  # the test can tell the KL from 0


@pytest.mark.slow  # compiles the example's three fused ops (about 15 s on a shared 2-core CPU)
def test_example_runs():
  path = pathlib.Path(__file__).parents[2] / "examples" / "kl_penalty_exact.py"
  if not path.exists():
    pytest.skip("examples/ not shipped")
  spec = importlib.util.spec_from_file_location("kl_penalty_exact", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  kl, k3 = module.main(tokens=64, d=16, vocab=1000)
  assert kl.shape == k3.shape == (64,) and np.all(np.asarray(kl) > 0)
