"""Per-token KL penalties (k1, k2, k3) and the masked reductions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiv.losses as jl


def _log_probs(seed=0, shape=(4, 6)):
  rng = np.random.default_rng(seed)
  lp = np.log(rng.uniform(0.05, 0.9, size=shape)).astype(np.float32)
  ref = (lp + 0.3 * rng.normal(size=shape)).astype(np.float32)
  return lp, ref


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_kl_penalty_formulas(estimator):
  lp, ref = _log_probs()
  lr = ref.astype(np.float64) - lp
  want = {"k1": -lr, "k2": 0.5 * lr**2, "k3": np.expm1(lr) - lr}[estimator]
  np.testing.assert_allclose(jl.kl_penalty(lp, ref, estimator=estimator), want, rtol=1e-5,
                             atol=1e-7)


def test_k1_and_k3_are_unbiased_k2_is_not():
  # KL(p || r) between two categoricals, estimated from samples of p.
  p = np.array([0.5, 0.3, 0.15, 0.05])
  r = np.array([0.25, 0.25, 0.25, 0.25])
  kl = np.sum(p * np.log(p / r))
  x = np.random.default_rng(0).choice(4, size=200_000, p=p)
  lp, ref = np.log(p[x]).astype(np.float32), np.log(r[x]).astype(np.float32)
  est = {k: float(jnp.mean(jl.kl_penalty(lp, ref, estimator=k))) for k in ("k1", "k2", "k3")}
  assert abs(est["k1"] - kl) < 5e-3 and abs(est["k3"] - kl) < 5e-3, (est, kl)
  assert abs(est["k2"] - kl) > 1e-2, (est, kl)
  k3 = jl.kl_penalty(lp, ref, estimator="k3")
  k1 = jl.kl_penalty(lp, ref, estimator="k1")
  assert np.all(k3 >= 0) and np.any(k1 < 0)
  assert np.var(k3) < np.var(k1)


def test_kl_penalty_masks_and_reference_constant():
  lp, ref = _log_probs(1)
  mask = np.ones(lp.shape, bool)
  mask[:, -2:] = False
  lp, ref = lp.copy(), ref.copy()
  lp[:, -2:] = -np.inf  # padding
  ref[:, -2:] = np.nan
  for estimator in ("k1", "k2", "k3"):
    def fn(a, b, estimator=estimator):
      return jl.reduce_loss(jl.kl_penalty(a, b, estimator=estimator, where=mask), mask)

    out = jl.kl_penalty(lp, ref, estimator=estimator, where=mask)
    np.testing.assert_array_equal(np.asarray(out)[~mask], 0)
    g_lp, g_ref = jax.grad(fn, argnums=(0, 1))(lp, ref)
    assert np.all(np.isfinite(g_lp))
    np.testing.assert_array_equal(np.asarray(g_lp)[~mask], 0)
    np.testing.assert_array_equal(g_ref, 0)


def test_k3_gradient_is_forward_kl_gradient():
  # E_{x~pi}[grad k3] = grad KL(ref || pi): check exactly by summing over the support.
  logits = jnp.array([0.3, -0.2, 1.0, 0.1])
  ref = jax.nn.log_softmax(jnp.array([0.0, 0.5, -0.5, 0.2]))
  pi = jax.nn.softmax(logits)

  def expected_k3(z):
    return jnp.sum(jax.lax.stop_gradient(pi) * jl.kl_penalty(jax.nn.log_softmax(z), ref))

  def forward_kl(z):
    return jnp.sum(jnp.exp(ref) * (ref - jax.nn.log_softmax(z)))

  np.testing.assert_allclose(jax.grad(expected_k3)(logits), jax.grad(forward_kl)(logits),
                             rtol=1e-5, atol=1e-7)


def test_kl_penalty_bad_input():
  lp, ref = _log_probs()
  with pytest.raises(ValueError, match="estimator"):
    jl.kl_penalty(lp, ref, estimator="k4")
  with pytest.raises(ValueError, match="broadcast"):
    jl.kl_penalty(lp, ref[:, :3])
  with pytest.raises(TypeError, match="floating-point"):
    jl.kl_penalty(lp.astype(np.int32), ref)


def test_reductions():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(3, 5)).astype(np.float32)
  mask = rng.uniform(size=(3, 5)) < 0.6
  mask[1] = False
  mask[0, 0] = True
  xm = np.where(mask, x, 0.0)
  np.testing.assert_allclose(jl.reduce_loss(x, mask), xm.sum() / mask.sum(), rtol=1e-6)
  np.testing.assert_allclose(jl.reduce_loss(x, mask, reduction="sum"), xm.sum(), rtol=1e-6)
  rows = [r for r in range(3) if mask[r].any()]
  want = np.mean([xm[r].sum() / mask[r].sum() for r in rows])
  np.testing.assert_allclose(jl.reduce_loss(x, mask, reduction="sequence_mean"), want,
                             rtol=1e-6)
  np.testing.assert_allclose(jl.reduce_loss(x, mask, reduction="none"), xm)
  np.testing.assert_allclose(jl.reduce_loss(x), x.mean(), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(jl.reduce_loss(x.T, mask.T, reduction="sequence_mean", axis=0),
                             want, rtol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "sequence_mean", "none"])
def test_reduction_with_nothing_valid_and_nan_padding(reduction):
  x = np.full((2, 3), np.nan, np.float32)
  mask = np.zeros((2, 3), bool)
  out = jl.reduce_loss(x, mask, reduction=reduction)
  np.testing.assert_array_equal(out, 0)
  g = jax.grad(lambda a: jnp.sum(jl.reduce_loss(a, mask, reduction=reduction)))(x)
  np.testing.assert_array_equal(g, 0)
  assert jl.reduce_loss(jnp.ones((2, 3), jnp.bfloat16), reduction=reduction).dtype == \
      jnp.bfloat16


def test_reduction_bad_input():
  with pytest.raises(ValueError, match="reduction"):
    jl.reduce_loss(np.ones(3, np.float32), reduction="avg")
  with pytest.raises(ValueError, match="where"):
    jl.reduce_loss(np.ones((2, 3), np.float32), np.ones((4,), bool))
