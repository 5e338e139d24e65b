"""Sample-based estimators on Gaussian samples whose true value is known in closed form."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import stats
from scipy.optimize import linear_sum_assignment

import jaxdiv.estimators as je
import jaxdiv.parametric as jp

MU = 0.8  # mean shift of Q in each of its first dimension


def _gauss(seed, n, d, shift=0.0, scale=1.0):
  x = np.random.default_rng(seed).normal(size=(n, d)) * scale
  x[:, 0] += shift
  return x.astype(np.float32)


def _mmd2_true(d, shift, s2x=1.0, s2y=1.0, bw=1.0):
  """Gaussian-kernel MMD² between N(0, s2x I) and N(shift e1, s2y I) in closed form."""
  def ek(s2, delta2):
    v = bw**2 + s2
    return (bw**2 / v) ** (d / 2) * math.exp(-delta2 / (2 * v))
  return ek(2 * s2x, 0) + ek(2 * s2y, 0) - 2 * ek(s2x + s2y, shift**2)


def _mean_abs_error(fn, truth, n, seeds):
  return float(np.mean([abs(fn(s, n) - truth) for s in seeds]))


# ------------------------------------------------------------------ Monte Carlo KL


def test_kl_estimate_unbiased_and_consistent():
  p, q = stats.norm(0, 1), stats.norm(MU, 1.3)
  truth = float(jp.normal_kl_divergence(0.0, 1.0, MU, 1.3))
  rng = np.random.default_rng(0)
  x = rng.normal(size=(400, 200))  # 400 repetitions of n = 200
  lp, lq = p.logpdf(x), q.logpdf(x)
  for est in ("k1", "k3"):
    per_rep = np.asarray(je.kl_estimate(lp, lq, estimator=est, axis=1))
    se = per_rep.std() / np.sqrt(per_rep.size)
    assert abs(per_rep.mean() - truth) < 4 * se, (est, per_rep.mean(), truth, se)
  k2 = float(je.kl_estimate(lp, lq, estimator="k2"))
  assert abs(k2 - truth) > 0.01  # biased (by design; documented)
  masked = je.kl_estimate(lp, lq, where=np.arange(200) < 100, axis=1)
  np.testing.assert_allclose(np.asarray(masked),
                             np.asarray(je.kl_estimate(lp[:, :100], lq[:, :100], axis=1)),
                             rtol=1e-5)
  assert float(je.kl_estimate(lp[0], lq[0], where=np.zeros(200, bool))) == 0.0


# ------------------------------------------------------------------ MMD


def test_mmd2_blocked_equals_dense_and_kernels():
  x, y = _gauss(0, 203, 3), _gauss(1, 150, 3, MU)
  # One jitted function for the 12 variants: one compilation instead of 12 eager traces.
  variants = jax.jit(lambda x, y: {
      (kernel, est, bs): je.mmd2(x, y, kernel=kernel, estimator=est, block_size=bs,
                                 bandwidth=1.3)
      for kernel in ("gaussian", "laplace", "inverse_multiquadric")
      for est in ("unbiased", "biased") for bs in (4096, 37)})(x, y)
  for kernel in ("gaussian", "laplace", "inverse_multiquadric"):
    for est in ("unbiased", "biased"):
      dense, blocked = variants[kernel, est, 4096], variants[kernel, est, 37]
      np.testing.assert_allclose(float(blocked), float(dense), rtol=1e-4, atol=1e-6)
  # Independent float64 reference for one kernel.
  xx, yy = x.astype(np.float64), y.astype(np.float64)
  k = lambda a, b: np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * 1.3**2))
  kxx, kyy, kxy = k(xx, xx), k(yy, yy), k(xx, yy)
  n, m = len(xx), len(yy)
  want = ((kxx.sum() - n) / (n * (n - 1)) + (kyy.sum() - m) / (m * (m - 1)) - 2 * kxy.mean())
  np.testing.assert_allclose(float(je.mmd2(x, y, bandwidth=1.3, block_size=64)), want,
                             rtol=1e-4)


@pytest.mark.slow  # consistency: many draws, up to n = 2000 (the slow tier)
def test_mmd2_unbiasedness_and_consistency():
  d, truth = 2, _mmd2_true(2, MU)
  draws = {}
  for est in ("unbiased", "biased", "linear"):
    fn = jax.jit(lambda x, y, e=est: je.mmd2(x, y, bandwidth=1.0, estimator=e))
    draws[est] = np.array([float(fn(_gauss(2 * s, 100, d), _gauss(2 * s + 1, 100, d, MU)))
                           for s in range(60)])
  for est in ("unbiased", "linear"):
    se = draws[est].std() / np.sqrt(60)
    assert abs(draws[est].mean() - truth) < 4 * se, (est, draws[est].mean(), truth, se)
  # The V-statistic is biased upward by O(1/n): paired with the U-statistic on the same draws.
  excess = draws["biased"] - draws["unbiased"]
  assert excess.mean() > 4 * excess.std() / np.sqrt(60) and excess.mean() > 0.004
  err = lambda n: _mean_abs_error(
      lambda s, n: float(je.mmd2(_gauss(s, n, d), _gauss(s + 100, n, d, MU), bandwidth=1.0)),
      truth, n, range(4))
  assert err(2000) < err(125) / 2


@pytest.mark.slow  # 6 s; fast: test_hyperparameter_grads' mmd2 rows (a gradient of each kernel)
def test_mmd2_median_heuristic_and_gradient(x64):
  x, y = _gauss(0, 40, 2).astype(np.float64), _gauss(1, 30, 2, MU).astype(np.float64)
  bw = float(jax.jit(je.median_bandwidth)(x, y))
  z = np.concatenate([x, y])
  dist = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))[np.triu_indices(len(z), 1)]
  np.testing.assert_allclose(bw, np.median(dist), rtol=1e-10)
  for kernel in ("gaussian", "laplace", "inverse_multiquadric"):
    # A fixed bandwidth: the median heuristic is deliberately held constant (stop_gradient).
    # Jitted: check_grads then compiles the function and its VJP instead of dispatching the
    # blocked loop op by op.
    check_grads(jax.jit(lambda a, b, k=kernel: je.mmd2(a, b, kernel=k, bandwidth=bw,
                                                       block_size=16)),
                (x, y), order=1,
                modes=("rev",), atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ energy distance


def _energy_true_1d(mu, s1=1.0, s2=1.0):
  def e_abs(delta, s):  # E|Z| for Z ~ N(delta, s²): folded normal mean
    return s * math.sqrt(2 / math.pi) * math.exp(-delta**2 / (2 * s * s)) + delta * (
        1 - 2 * stats.norm.cdf(-delta / s))
  return (2 * e_abs(mu, math.hypot(s1, s2)) - e_abs(0, math.sqrt(2) * s1)
          - e_abs(0, math.sqrt(2) * s2))


def test_energy_distance_against_scipy_and_truth(x64):
  x, y = _gauss(0, 300, 1)[:, 0], _gauss(1, 200, 1, MU)[:, 0]
  biased = jax.jit(lambda x, y: je.energy_distance(x, y, estimator="biased", block_size=64))
  np.testing.assert_allclose(float(biased(x, y)), stats.energy_distance(x, y) ** 2, rtol=1e-5)
  truth = _energy_true_1d(MU)
  fn = jax.jit(je.energy_distance)
  draws = np.array([float(fn(_gauss(s, 80, 1), _gauss(s + 500, 80, 1, MU))) for s in range(60)])
  assert abs(draws.mean() - truth) < 4 * draws.std() / np.sqrt(60)
  check_grads(jax.jit(je.energy_distance), (np.float64(x[:30]), np.float64(y[:20])),
              order=1, modes=("rev",),
              atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ sliced Wasserstein


def test_sliced_wasserstein():
  # jitted: one compilation each instead of op-by-op dispatch (the key is closed over).
  two_point = jax.jit(lambda x, y, b: je.sliced_wasserstein_distance(
      x, y, key=jax.random.key(0), p=1, b=b))
  # Two-point example, unequal sizes and weights: W_1 in 1-D by hand.
  got = two_point(np.array([0.0, 1.0]), np.array([0.0, 0.0, 3.0]), np.array([1.0, 1.0, 2.0]))
  # Quantiles: x = 0 on [0, .5), 1 on [.5, 1); y = 0 on [0, .5), 3 on [.5, 1).
  np.testing.assert_allclose(float(got), 1.0, rtol=1e-6)
  x1, y1 = _gauss(0, 300, 1)[:, 0], _gauss(1, 200, 1, MU)[:, 0]
  sw1 = jax.jit(lambda x, y: je.sliced_wasserstein_distance(x, y, key=jax.random.key(0), p=1))
  np.testing.assert_allclose(float(sw1(x1, y1)), stats.wasserstein_distance(x1, y1), rtol=1e-5)
  # Isotropic Gaussians at small n (the large-n half is test_sliced_wasserstein_consistency):
  # SW_2² = |delta|²/d + (s_x - s_y)² = 0.46; over 4 draws of n = 100 the mean error is 0.09.
  e_small = _mean_abs_error(lambda s, n: float(_sw_gauss(n, s)) ** 2, _SW_TRUTH, 100, range(4))
  assert e_small < 0.15, e_small


_SW_D = 3
_SW_TRUTH = MU**2 / _SW_D + 0.5**2  # SW_2² between N(0, I) and N(MU e1, 1.5² I) in d = 3


@jax.jit
def _sw_500(x, y):
  return je.sliced_wasserstein_distance(x, y, key=jax.random.key(1), num_projections=500)


def _sw_gauss(n, seed):
  return _sw_500(_gauss(seed, n, _SW_D), _gauss(seed + 100, n, _SW_D, MU, 1.5))


@pytest.mark.slow  # consistency up to n = 3000 (sorts of 3000 x 500); n = 100 runs in the fast tier
def test_sliced_wasserstein_consistency():
  err = lambda n: _mean_abs_error(lambda s, n: float(_sw_gauss(n, s)) ** 2, _SW_TRUTH, n,
                                  range(4))
  e_small, e_large = err(100), err(3000)
  assert e_large < e_small / 2 and e_large < 0.05, (e_small, e_large)


# ------------------------------------------------------------------ kNN


@pytest.mark.slow  # consistency: many draws, up to n = 2000 (the slow tier)
def test_knn_entropy_and_kl_consistency():
  d = 2
  h_true = float(jp.mvn_entropy(np.zeros(d), np.ones(d), covariance="diag"))
  kl_true = MU**2 / 2
  ent = jax.jit(lambda x: je.knn_entropy(x, k=3))
  kl = jax.jit(lambda x, y: je.knn_kl_divergence(x, y, k=5))
  h_err = lambda n: _mean_abs_error(lambda s, n: float(ent(_gauss(s, n, d))), h_true, n,
                                    range(4))
  kl_err = lambda n: _mean_abs_error(
      lambda s, n: float(kl(_gauss(s, n, d), _gauss(s + 50, n, d, MU))), kl_true, n, range(4))
  assert h_err(2000) < h_err(125) and h_err(2000) < 0.04
  assert kl_err(2000) < kl_err(125) and kl_err(2000) < 0.06


def test_knn_blocking_and_exclusion():
  x = _gauss(3, 257, 3)
  a = je.knn_entropy(x, k=2, block_size=10_000)
  b = je.knn_entropy(x, k=2, block_size=32)
  np.testing.assert_allclose(float(a), float(b), rtol=1e-5)
  # Brute-force float64 reference.
  xx = x.astype(np.float64)
  dist = np.sqrt(((xx[:, None] - xx[None]) ** 2).sum(-1))
  np.fill_diagonal(dist, np.inf)
  rho = np.sort(dist, axis=1)[:, 1]
  from scipy.special import digamma
  from scipy.special import gammaln
  want = (digamma(257) - digamma(2) + 1.5 * np.log(np.pi) - gammaln(2.5)
          + 3 * np.mean(np.log(rho)))
  np.testing.assert_allclose(float(a), want, rtol=1e-5)
  with pytest.raises(ValueError, match="k=300"):
    je.knn_entropy(x, k=300)


# ------------------------------------------------------------------ Sinkhorn


def test_sinkhorn_small_epsilon_matches_assignment(x64):
  x, y = _gauss(0, 20, 2).astype(np.float64), _gauss(1, 20, 2, MU).astype(np.float64)
  c = ((x[:, None] - y[None]) ** 2).sum(-1)
  r, cidx = linear_sum_assignment(c)
  w2 = c[r, cidx].mean()
  # Both divergences in one jitted function: one compilation instead of two eager traces.
  got, self_div = jax.jit(lambda x, y: (
      je.sinkhorn_divergence(x, y, epsilon=1e-3, tol=1e-9, max_iterations=50_000),
      je.sinkhorn_divergence(x, x, epsilon=0.1)))(x, y)
  np.testing.assert_allclose(float(got), w2, rtol=2e-2)
  assert abs(float(self_div)) < 1e-9


def _numpy_sinkhorn_ot(x, y, eps, iters=5000):
  """Log-domain Sinkhorn in float64, up to `iters` sweeps or a fixed point of the potentials
  (a sweep that changes no potential by more than 1e-15: further sweeps change nothing)."""
  from scipy.special import logsumexp
  c = ((x[:, None] - y[None]) ** 2).sum(-1)
  la, lb = np.full(len(x), -np.log(len(x))), np.full(len(y), -np.log(len(y)))
  f, g = np.zeros(len(x)), np.zeros(len(y))
  for _ in range(iters):
    f_old, g_old = f, g
    g = -eps * logsumexp(la[:, None] + (f[:, None] - c) / eps, axis=0)
    f = -eps * logsumexp(lb[None] + (g[None] - c) / eps, axis=1)
    if max(np.abs(f - f_old).max(), np.abs(g - g_old).max()) <= 1e-15:
      break
  return np.exp(la) @ f + np.exp(lb) @ g


@pytest.mark.slow  # 6 s; fast: test_hyperparameter_grads' sinkhorn_divergence rows (a gradient)
def test_sinkhorn_against_numpy_reference_and_gradient(x64):
  x, y = _gauss(4, 15, 2).astype(np.float64), _gauss(5, 11, 2, MU).astype(np.float64)
  eps = 0.5
  want = (_numpy_sinkhorn_ot(x, y, eps) - 0.5 * _numpy_sinkhorn_ot(x, x, eps)
          - 0.5 * _numpy_sinkhorn_ot(y, y, eps))
  got = jax.jit(lambda u, v: je.sinkhorn_divergence(u, v, epsilon=eps, tol=1e-12,
                                                     max_iterations=10_000))(x, y)
  np.testing.assert_allclose(float(got), want, rtol=1e-8)
  # Envelope-theorem gradients agree with finite differences at convergence.
  a = np.random.default_rng(0).uniform(0.5, 1.5, 15)
  fn = jax.jit(lambda u, v, w: je.sinkhorn_divergence(u, v, a=w, epsilon=eps, tol=1e-13,
                                                      max_iterations=20_000))
  check_grads(fn, (x, y, a), order=1, modes=("rev",), atol=1e-5, rtol=1e-5)



@pytest.mark.slow  # 23 s; the fast tier runs no second derivative of the Sinkhorn divergence
def test_sinkhorn_second_derivatives_match_finite_differences(x64):
  """Hessians in the points, the weights and epsilon, reverse and forward mode, against finite
  differences of the (envelope-theorem) first derivatives. Before the potentials had implicit
  derivatives, d²/d(eps)² at eps = 1 on the clouds of tests/test_hyperparameter_grads.py was
  0.76 against 0.13."""
  x, y = _gauss(6, 6, 2).astype(np.float64), _gauss(7, 7, 2, MU).astype(np.float64)
  a = np.random.default_rng(1).uniform(0.5, 1.5, 6)
  fn = jax.jit(lambda u, v, w, e: je.sinkhorn_divergence(u, v, a=w, epsilon=e, tol=1e-13,
                                                         max_iterations=20_000))
  check_grads(fn, (x, y, a, 1.0), order=2, modes=("rev", "fwd"), atol=1e-5, rtol=1e-5)
  # A point of zero weight: its potential is the c-transform, and the Hessian in the weights is
  # the one-sided limit (forward difference in that weight, central in the others).
  a0 = a.copy()
  a0[2] = 0.0
  f = jax.jit(lambda w: je.sinkhorn_divergence(x, y, a=w, epsilon=1.0, tol=1e-14,
                                               max_iterations=20_000))
  grad = jax.jit(jax.grad(f))
  h = 1e-6
  want = np.stack([(grad(a0 + h * e) - grad(a0)) / h if k == 2 else
                   (grad(a0 + h * e) - grad(a0 - h * e)) / (2 * h)
                   for k, e in enumerate(np.eye(6))], axis=1)
  np.testing.assert_allclose(jax.hessian(f)(a0), want, rtol=1e-4, atol=1e-4)

@pytest.mark.slow  # consistency: many draws, up to n = 2000 (the slow tier)
def test_sinkhorn_consistency_towards_w2():
  # 1-D Gaussians: W_2² = mu² + (s_x - s_y)²; the divergence at small eps approaches it.
  truth = MU**2 + 0.5**2
  fn = jax.jit(lambda x, y: je.sinkhorn_divergence(x, y, epsilon=0.02))
  err = lambda n: _mean_abs_error(
      lambda s, n: float(fn(_gauss(s, n, 1), _gauss(s + 9, n, 1, MU, 1.5))), truth, n, range(3))
  assert err(400) < err(25)


def test_estimator_argument_errors():
  with pytest.raises(ValueError, match="same dimension"):
    je.mmd2(np.zeros((4, 2)), np.zeros((4, 3)))
  with pytest.raises(ValueError, match="kernel"):
    je.mmd2(np.zeros((4, 2)), np.zeros((4, 2)), kernel="rbf")
  with pytest.raises(ValueError, match="shape"):
    je.sliced_wasserstein_distance(np.zeros((4, 2)), np.zeros((3, 2)), key=jax.random.key(0),
                                   a=np.ones(3))
  with pytest.raises(TypeError):
    je.knn_entropy(np.zeros((4, 2), np.int32))
