"""Regressions of issue 14 for the sample-based estimators, against independent references."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import cdist
from scipy.special import digamma

import jaxdiv.estimators as je


@pytest.mark.parametrize("d", [1, 2])
def test_knn_entropy_float32_uses_the_exact_kth_neighbour(d):
  """4000 float32 draws of N(0.7, 2.2²): the estimate from the exact k-th neighbours of the
  same float32 points (float64 distances, scipy). The Gram expansion picked a wrong neighbour
  for 5.7% of the 1-D points (1.79729 against 1.80658)."""
  rng = np.random.default_rng(0)
  x = (0.7 + 2.2 * rng.normal(size=(4000, d))).astype(np.float32)
  k, n = 3, x.shape[0]
  dist = cdist(x.astype(np.float64), x.astype(np.float64))
  np.fill_diagonal(dist, np.inf)
  rho = np.partition(dist, k - 1, axis=1)[:, k - 1]
  log_vd = 0.5 * d * np.log(np.pi) - math.lgamma(0.5 * d + 1)
  want = digamma(n) - digamma(k) + log_vd + d * np.mean(np.log(rho))
  got = float(je.knn_entropy(jnp.asarray(x), k=k))
  np.testing.assert_allclose(got, want, rtol=2e-6)


def test_knn_far_from_origin_float32():
  """Samples at 1e4 with spacing ~1e-2: the expansion rounds at 1e8 * eps = 6, the
  differences do not."""
  rng = np.random.default_rng(1)
  x = (1e4 + rng.normal(size=(500, 1))).astype(np.float32)
  dist = np.abs(x.astype(np.float64) - x.astype(np.float64).T)
  np.fill_diagonal(dist, np.inf)
  rho = np.min(dist, axis=1)
  want = digamma(500) - digamma(1) + np.log(2.0) + np.mean(np.log(rho))
  np.testing.assert_allclose(float(je.knn_entropy(jnp.asarray(x), k=1)), want, rtol=2e-6)


def test_knn_high_dimension_refines_candidates(x64):
  """Above the exact-difference dimension the Gram candidates are re-ranked exactly."""
  rng = np.random.default_rng(2)
  x = rng.normal(size=(300, 12)) + 50.0
  dist = cdist(x, x)
  np.fill_diagonal(dist, np.inf)
  rho = np.partition(dist, 1, axis=1)[:, 1]
  d = 12
  log_vd = 0.5 * d * np.log(np.pi) - math.lgamma(0.5 * d + 1)
  want = digamma(300) - digamma(2) + log_vd + d * np.mean(np.log(rho))
  np.testing.assert_allclose(float(je.knn_entropy(jnp.asarray(x), k=2)), want, rtol=1e-10)


def test_sinkhorn_default_epsilon_is_ott_jax_std_rule(x64):
  """ott-jax (Geometry.epsilon without relative_epsilon): 0.05 x the std of the cost matrix."""
  rng = np.random.default_rng(3)
  x, y = rng.normal(size=(20, 2)), rng.normal(size=(25, 2)) + 1.0
  # One jitted function for the six divergences (epsilon traced): one compilation instead of a
  # fresh trace of the three Sinkhorn loops at every eager call.
  costs = {p: cdist(x, y) ** p for p in (1, 2)}
  eps = {p: (0.05 * np.std(c), 0.05 * np.mean(c)) for p, c in costs.items()}
  run = lambda x, y, e, p: je.sinkhorn_divergence(x, y, p=p, epsilon=e, tol=1e-12,
                                                  max_iterations=10_000)
  values = jax.jit(lambda x, y, eps: {
      p: (run(x, y, None, p), run(x, y, eps[p][0], p), run(x, y, eps[p][1], p))
      for p in (1, 2)})(x, y, eps)
  for p in (1, 2):
    got, want, mean_rule = values[p]  # default; given the std rule's epsilon; the mean rule's
    np.testing.assert_allclose(float(got), float(want), rtol=1e-10)
    assert abs(float(mean_rule) - float(got)) > 1e-6


def test_linear_mmd_pairs_first_half_with_second_half(x64):
  """The docstring's pairing, written out with numpy (odd sample counts drop the last)."""
  rng = np.random.default_rng(4)
  x, y = rng.normal(size=(9, 2)), rng.normal(size=(11, 2)) + 0.3
  s = 0.8
  k = lambda a, b: np.exp(-np.sum((a - b) ** 2, axis=-1) / (2 * s * s))
  h = 4
  x1, x2, y1, y2 = x[:h], x[h:2 * h], y[:h], y[h:2 * h]
  want = np.mean(k(x1, x2) + k(y1, y2) - k(x1, y2) - k(x2, y1))
  got = je.mmd2(x, y, bandwidth=s, estimator="linear")
  np.testing.assert_allclose(float(got), want, rtol=1e-12)


def test_sinkhorn_tolerance_may_be_traced():
  """helper-62: a jit of the Sinkhorn loop with `tol` static rejected a traced or array `tol`
  (a non-hashable static argument); the value is the Python float's."""
  x = jnp.linspace(0.0, 1.0, 8)[:, None]
  y = x + 0.3
  want = float(je.sinkhorn_divergence(x, y, epsilon=0.1, tol=1e-5))
  for got in (je.sinkhorn_divergence(x, y, epsilon=0.1, tol=jnp.array(1e-5)),
              jax.jit(lambda t: je.sinkhorn_divergence(x, y, epsilon=0.1, tol=t))(1e-5)):
    np.testing.assert_allclose(float(got), want, rtol=1e-6)
  # the closed form: 1-D point clouds shifted by 0.3 (p = 2): W_2^2 = 0.09, which the debiased
  # divergence approaches at this epsilon
  np.testing.assert_allclose(want, 0.09, rtol=1e-3)
