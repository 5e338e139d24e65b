"""Bernoulli forms against scipy (entr, rel_entr, xlogy) in float64, logits and reductions."""

from __future__ import annotations

import itertools

import discrete_reference as ref
import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import special

import jaxdiv

GRID = np.array([0.0, 1e-30, 1e-6, 0.1, 0.5, 0.9, 1 - 1e-6, 1.0])


def _pairs():
  p, q = np.meshgrid(GRID, GRID, indexing="ij")
  return p.ravel(), q.ravel()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_against_scipy(dtype):
  with jax.enable_x64(dtype == np.float64):
    p, q = (x.astype(dtype) for x in _pairs())
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 0}
    np.testing.assert_allclose(np.asarray(jaxdiv.binary_entropy(jnp.asarray(p))),
                               ref.binary_entropy(p), **tol)
    np.testing.assert_allclose(np.asarray(jaxdiv.binary_cross_entropy(p, q)),
                               ref.binary_cross_entropy(p, q), **tol)
    np.testing.assert_allclose(np.asarray(jaxdiv.binary_kl_divergence(p, q)),
                               ref.binary_kl_divergence(p, q), **tol)


def test_logits_extreme():
  z = np.array([-80.0, -20.0, -1.0, 0.0, 3.0, 30.0, 80.0])
  zp, zq = np.meshgrid(z, z, indexing="ij")
  zp, zq = zp.ravel(), zq.ravel()
  # float64 reference in log space: log sigmoid(z) = -log1p(exp(-z)).
  lp1, lp0 = -np.logaddexp(0, -zp), -np.logaddexp(0, zp)
  lq1, lq0 = -np.logaddexp(0, -zq), -np.logaddexp(0, zq)
  want_kl = np.exp(lp1) * (lp1 - lq1) + np.exp(lp0) * (lp0 - lq0)
  want_ce = -(np.exp(lp1) * lq1 + np.exp(lp0) * lq0)
  got_kl = jaxdiv.binary_kl_divergence(jnp.float32(zp), jnp.float32(zq), from_logits=True)
  got_ce = jaxdiv.binary_cross_entropy(jnp.float32(zp), jnp.float32(zq), from_logits=True)
  np.testing.assert_allclose(np.asarray(got_kl), want_kl, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(got_ce), want_ce, rtol=1e-5, atol=1e-6)
  g = jax.grad(lambda a: jnp.sum(jaxdiv.binary_kl_divergence(a, jnp.float32(zq),
                                                             from_logits=True)))(jnp.float32(zp))
  assert np.all(np.isfinite(np.asarray(g)))


def test_axis_sums_independent_factors():
  rng = np.random.default_rng(0)
  p, q = rng.random((2, 4, 5))
  got = jaxdiv.binary_kl_divergence(jnp.float32(p), jnp.float32(q), axis=-1)
  np.testing.assert_allclose(np.asarray(got), ref.binary_kl_divergence(p, q).sum(-1), rtol=1e-5)
  got2 = jaxdiv.binary_entropy(jnp.float32(p), axis=(0, 1), base=2)
  np.testing.assert_allclose(float(got2), ref.binary_entropy(p).sum() / np.log(2), rtol=1e-5)


def test_where_masks_elements():
  p = jnp.array([0.2, 0.7, 0.4])
  q = jnp.array([0.5, 0.0, 0.4])  # the masked element would be +inf
  got = jaxdiv.binary_kl_divergence(p, q, where=jnp.array([True, False, True]), axis=0)
  want = special.rel_entr(0.2, 0.5) + special.rel_entr(0.8, 0.5)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


# 6 s (three second-order check_grads); test_hessians_over_the_decades keeps second orders fast.
@pytest.mark.slow
def test_gradients(x64):
  p = jnp.array([0.1, 0.5, 0.8])
  q = jnp.array([0.3, 0.6, 0.2])
  check_grads(lambda a, b: jaxdiv.binary_kl_divergence(a, b), (p, q), order=2, eps=1e-6)
  check_grads(lambda a: jaxdiv.binary_entropy(a), (p,), order=2, eps=1e-6)
  zp, zq = jnp.array([-2.0, 0.5, 3.0]), jnp.array([1.0, -0.5, 0.0])
  check_grads(lambda a, b: jaxdiv.binary_cross_entropy(a, b, from_logits=True), (zp, zq),
              order=2, eps=1e-6)


def test_finite_gradient_at_0_and_1():
  p = jnp.array([0.0, 1.0, 0.0, 1.0])
  q = jnp.array([0.3, 0.3, 0.0, 1.0])
  for fn in (jaxdiv.binary_kl_divergence, jaxdiv.binary_cross_entropy):
    g = jax.grad(lambda a, b, fn=fn: jnp.sum(fn(a, b)), argnums=(0, 1))(p, q)
    for gi in g:
      assert np.all(np.isfinite(np.asarray(gi))), (fn.__name__, g)
  g = jax.grad(lambda a: jnp.sum(jaxdiv.binary_entropy(a)))(p)
  assert np.all(np.isfinite(np.asarray(g)))


def test_low_precision_dtype():
  p = jnp.array([0.1, 0.5], jnp.bfloat16)
  out = jaxdiv.binary_entropy(p)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out, np.float32),
                             ref.binary_entropy(np.asarray(p, np.float32)), rtol=1e-2)


@pytest.mark.parametrize("p,q", [(0.0, -0.5), (0.0, -1e-30), (0.0, -np.inf), (1.0, 1.5),
                                 (1.0, 1 + 1e-6), (1.0, np.inf), (0.3, -0.5), (0.3, 1.5)])
def test_probability_outside_the_unit_interval_is_nan(p, q):
  # Bernoulli(q) does not exist for q outside [0, 1]; at p = 0 (or 1) the term whose log is
  # undefined has weight 0, so only the other one can carry the NaN.
  # The gradient is NaN there too, in both inputs (it was 0 in the one outside, NaN in the
  # other): a NaN loss never reports a zero slope.
  for args in ((p, q), (q, p)):
    a, b = (jnp.float32(x) for x in args)
    for fn in (jaxdiv.binary_kl_divergence, jaxdiv.binary_cross_entropy):
      assert np.isnan(float(fn(a, b))), (fn.__name__, args)
      grads = jax.grad(fn, argnums=(0, 1))(a, b)
      assert all(np.isnan(float(g)) for g in grads), (fn.__name__, args, grads)
  assert np.isnan(float(jaxdiv.binary_entropy(jnp.float32(q))))
  assert np.isnan(float(jax.grad(jaxdiv.binary_entropy)(jnp.float32(q))))
  # Inside the interval the boundary values keep scipy's finite edges; a NaN from p too.
  assert float(jaxdiv.binary_kl_divergence(jnp.float32(p), jnp.float32(p))) == 0.0


def _near_pairs(n, seed):
  """p over [1e-6, 1 - 1e-6] (both ends' decades), q a relative step of 1e-6 to 3 from it."""
  rng = np.random.default_rng(seed)
  p = 10 ** rng.uniform(-6, 0, n)
  p = np.clip(np.where(rng.random(n) < 0.5, p, 1 - p), 1e-6, 1 - 1e-6)
  q = p * np.exp(10 ** rng.uniform(-6, 0.5, n) * rng.choice([-1, 1], n))
  return p, np.clip(q, 1e-6, 1 - 1e-6)


def _assert_kl_within_roundings(p32, q32):
  """float32 KL within 8 eps (|p - q| + KL) of float64 on the same inputs: KL near p = q is a
  difference of two terms of size |p - q| (it is ~(p - q)^2), so that is a few roundings of
  each; exactly 0 where p == q; inf where the reference is."""
  want = ref.binary_kl_divergence(p32, q32)  # float64 on the float32 inputs
  got = np.asarray(jaxdiv.binary_kl_divergence(p32, q32), np.float64)
  np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
  fin = np.isfinite(want)
  scale = np.finfo(np.float32).eps * (np.abs(p32.astype(np.float64) - q32) + want)
  np.testing.assert_array_equal(got[fin & (scale == 0)], want[fin & (scale == 0)])
  on = fin & (scale > 0)
  worst = np.max(np.abs(got[on] - want[on]) / scale[on])
  assert worst < 8, worst


def test_kl_float32_error_is_a_few_roundings_of_its_terms():
  # The difference of logs, log p - log q, was 8e6 times this bound here (KL(0.3 || 0.3 (1 +
  # 1e-5)) off by 100%); rel_entr's log of a rounded ratio 2e9 times.
  p, q = _near_pairs(30000, 3)
  _assert_kl_within_roundings(p.astype(np.float32), q.astype(np.float32))


def test_kl_float32_at_extreme_ratios():
  # Ratios p / q (and (1 - p) / (1 - q)) from 1e-37 to 1e37: the log1p of a ratio minus one
  # is held above -1 where the ratio is below float32's spacing under 1 (an absolute error of
  # at most p |log(p / q)|, against the KL's q - p), and the derivative takes the true log there.
  g = np.r_[0, 10 ** np.linspace(-37, -0.01, 60), 0.5, 1 - 10 ** np.linspace(-1, -7.2, 30), 1]
  _assert_kl_within_roundings(*(x.ravel().astype(np.float32)
                                for x in np.meshgrid(g, g, indexing="ij")))
  with jax.enable_x64(True):
    p64, q64 = np.array([1e-300, 1e-300, 1 - 1e-16]), np.array([0.5, 1e-20, 1e-20])
    dp, dq = jax.vmap(jax.grad(jaxdiv.binary_kl_divergence, argnums=(0, 1)))(p64, q64)
    # d/dp = log(p / q) - log((1 - p) / (1 - q)), d/dq = (1 - p) / (1 - q) - p / q
    want_dp = np.log(p64 / q64) - (np.log1p(-p64) - np.log1p(-q64))
    want_dq = (1 - p64) / (1 - q64) - p64 / q64
    np.testing.assert_allclose(np.asarray(dp), want_dp, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(dq), want_dq, rtol=1e-12)


# 5.6 s; test_kl_derivatives_near_equal_and_at_the_edges keeps these vmapped gradients and
# Hessians fast.
@pytest.mark.slow
def test_kl_derivatives_where_a_ratio_is_small():
  # The value's log1p((p - q) / q) has a relative error of eps q / p there, harmless in
  # p log(p / q); the derivative, log(p / q) - log((1 - p) / (1 - q)), once took it (5% off
  # in float32 at p / q from 5e-8 to 1e-3, and d²/dp² 12% off).
  rng = np.random.default_rng(5)
  q = rng.uniform(0.05, 0.95, 400)
  p = q * 10 ** rng.uniform(-7.3, -3, 400)
  p, q = (np.concatenate([x, 1 - x]).astype(np.float32) for x in (p, q))
  p, q = p[p < 1], q[p < 1]  # 1 - p below 6e-8 rounds to 1
  dp, dq = jax.vmap(jax.grad(jaxdiv.binary_kl_divergence, argnums=(0, 1)))(p, q)
  p64, q64 = p.astype(np.float64), q.astype(np.float64)
  np.testing.assert_allclose(np.asarray(dp), np.log(p64 / q64) - np.log((1 - p64) / (1 - q64)),
                             rtol=2e-6)
  np.testing.assert_allclose(np.asarray(dq), (1 - p64) / (1 - q64) - p64 / q64, rtol=2e-6)
  for pq in ((1e-7, 0.3), (0.5, 1e-20), (1 - 2**-23, 0.3)):
    x = np.array(pq, np.float32)
    h = np.asarray(jax.hessian(lambda x: jaxdiv.binary_kl_divergence(x[0], x[1]))(x))
    a, b = x.astype(np.float64)
    # d²/dp² = 1/p + 1/(1 - p); d²/dp dq = -1/q - 1/(1 - q)
    np.testing.assert_allclose(h[0, 0], 1 / a + 1 / (1 - a), rtol=1e-5, err_msg=str(pq))
    np.testing.assert_allclose(h[0, 1], -1 / b - 1 / (1 - b), rtol=1e-5, err_msg=str(pq))
    np.testing.assert_allclose(h[1, 0], h[0, 1], rtol=1e-5, err_msg=str(pq))


def test_kl_float64_error_is_a_few_roundings_of_its_terms(x64):
  # Against 40-digit mpmath: XLA:CPU's float64 log1p is up to 128 ulp off for arguments in
  # [-0.45, -0.35) (KL(0.3 || 0.5) was 119 ulp off through it).
  rng = np.random.default_rng(8)
  p, q = _near_pairs(150, 9)
  p, q = np.r_[p, rng.random(150), 0.3], np.r_[q, rng.random(150), 0.5]
  got = np.asarray(jaxdiv.binary_kl_divergence(p, q))
  with mp.workdps(40):
    want = np.array([float(a * mp.log(a / b) + (1 - a) * mp.log((1 - a) / (1 - b)))
                     for a, b in ((mp.mpf(x), mp.mpf(y)) for x, y in zip(p, q))])
  scale = np.finfo(np.float64).eps * (np.abs(p - q) + want)
  assert np.max(np.abs(got - want) / scale) < 8


def test_kl_derivatives_near_equal_and_at_the_edges():
  # Near p = q, d/dp = log(p/q) - log((1-p)/(1-q)) and d/dq = (1-p)/(1-q) - p/q are
  # differences of nearly equal terms (60% and 88% off in float32 as written).
  p, q = _near_pairs(4000, 12)
  p, q = p.astype(np.float32), q.astype(np.float32)
  p, q = p[p != q], q[p != q]
  dp, dq = jax.jit(jax.vmap(jax.grad(jaxdiv.binary_kl_divergence, argnums=(0, 1))))(p, q)
  p64, q64 = p.astype(np.float64), q.astype(np.float64)
  # (rtol: where a ratio is outside [0.5, 1.5], d/dp is a difference of logs of p and q, an
  # error of eps |log p| against |d/dp| >= log 1.5)
  np.testing.assert_allclose(np.asarray(dp), np.log1p((p64 - q64) / q64)
                             - np.log1p((q64 - p64) / (1 - q64)), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(dq), (q64 - p64) / (q64 * (1 - q64)), rtol=1e-5)
  # The edges' conventions (README: the divergent p log p term's part of d/dp is 0 at p = 0;
  # each term's part drops where its weight is 0): at p = 0 only (1 - p) log((1-p)/(1-q))
  # moves, d/dp = log(1 - q) - 1, d/dq = 1/(1 - q); at p = 1 only p log(p/q): d/dp =
  # -log q + 1, d/dq = -1/q. A q of -0.0 is 0 (KL = inf where p > 0).
  p = np.array([0.0, 0.0, 1.0, 1.0, 0.0, 1.0], np.float32)
  q = np.array([0.3, 0.0, 0.3, 1.0, 0.9, 0.9], np.float32)
  dp, dq = jax.vmap(jax.grad(jaxdiv.binary_kl_divergence, argnums=(0, 1)))(p, q)
  q64 = q.astype(np.float64)
  with np.errstate(divide="ignore"):  # np.where evaluates both sides
    want_dp = np.where(p == 0, np.log1p(-q64) - 1, 1 - np.log(q64))
    want_dq = np.where(p == 0, 1 / (1 - q64), -1 / q64)
  np.testing.assert_allclose(np.asarray(dp), want_dp, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(dq), want_dq, rtol=1e-6)
  assert float(jaxdiv.binary_kl_divergence(np.float32(0.3), np.float32(-0.0))) == np.inf
  assert float(jaxdiv.binary_kl_divergence(np.float32(-0.0), np.float32(0.3))) == pytest.approx(
      -np.log1p(-0.3), rel=1e-6)
  # Differentiated twice through a function of it: the rule's value goes through the
  # function's own rule (the raw ratio's derivative p / q^2 is inf at q = 1e-20 in float32).
  h = jax.hessian(lambda x: jaxdiv.binary_kl_divergence(x[0], x[1]) ** 2)(
      np.array([0.5, 1e-20], np.float32))
  kl = 0.5 * np.log(0.5 / 1e-20) + 0.5 * np.log(0.5 / (1 - 1e-20))
  d1 = np.log(0.5 / 1e-20) - np.log(0.5 / (1 - 1e-20))
  np.testing.assert_allclose(float(h[0, 0]), 2 * d1 ** 2 + 2 * kl * 4.0, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hessians_over_the_decades(dtype):
  """Second derivatives on probabilities down to the smallest normal numbers, against the
  closed forms (+-inf where those overflow): no inf or NaN where the true value fits. Once
  d²/dq² = p / q^2 was formed with q^2, which underflows (float32 q < 1e-19) where p / q^2
  need not: KL and cross-entropy had d²/dq² inf and d²/dp dq NaN at p = 1e-37, q = 1e-20
  (true 1e3 and -1e20), and the entropy's d²/dp² was inf or -inf below p = 1e-19."""
  low = -300 if dtype == np.float64 else -37  # subnormals are flushed to 0 on CPU
  grid = np.r_[10.0 ** np.arange(low, 0, 3 if dtype == np.float64 else 1), 0.3, 0.5, 0.9,
               1 - 1e-6]
  p, q = (x.ravel().astype(dtype) for x in np.meshgrid(grid, grid, indexing="ij"))
  near = p[(p > 10.0 ** (low + 1)) & (p < 0.5)]  # pairs 10% apart: near-equal forms
  p, q = np.r_[p, near * 1.1], np.r_[q, near]
  a, b = p.astype(np.float64), q.astype(np.float64)
  d_pq = -1 / b - 1 / (1 - b)
  with np.errstate(over="ignore"):  # beyond float64 too: +inf, as it should come out
    d_qq = (a / b) / b + (1 - a) / (1 - b) ** 2
  zero = np.zeros_like(a)
  wants = {
      "kl": (1 / a + 1 / (1 - a), d_pq, d_qq),
      "cross_entropy": (zero, d_pq, d_qq),
      "entropy": (-1 / a - 1 / (1 - a), zero, zero),
  }
  fns = {
      "kl": jaxdiv.binary_kl_divergence,
      "cross_entropy": jaxdiv.binary_cross_entropy,
      "entropy": lambda x, y: jaxdiv.binary_entropy(x) + 0 * y,
  }
  big = np.finfo(dtype).max
  # Every mode. A forward-mode rule that multiplied an overflowing p / q^2 by a zero tangent
  # made jacfwd(jacfwd)'s d²/dp² NaN at p = 1e-8, q = 1e-30 where jax.hessian was right. Where
  # d²/dq² itself overflows, the other entries of the nested modes are inf * 0 in jax's own
  # product rule (the outer derivative of the inner tangent's `d/dq * 0`): only d²/dp² is
  # checked in those rows.
  modes = {"hessian": jax.hessian, "fwd-fwd": lambda f: jax.jacfwd(jax.jacfwd(f)),
           "rev-rev": lambda f: jax.jacrev(jax.jacrev(f))}
  with jax.enable_x64(dtype == np.float64):
    for (name, f), (mode, hess) in itertools.product(fns.items(), modes.items()):
      h = jax.jit(jax.vmap(hess(lambda x, f=f: f(x[0], x[1]))))(np.stack([p, q], 1))
      h = np.asarray(h, np.float64)
      d_pp, d_pq_, d_qq_ = (np.where(np.abs(w) > big, np.copysign(np.inf, w), w)
                            for w in wants[name])
      want = np.stack([np.stack([d_pp, d_pq_], -1), np.stack([d_pq_, d_qq_], -1)], -2)
      if mode != "hessian":
        keep = np.isfinite(want).all((1, 2))[:, None, None] | (np.arange(4) == 0).reshape(2, 2)
        h, want = h[np.broadcast_to(keep, h.shape)], want[np.broadcast_to(keep, h.shape)]
      np.testing.assert_allclose(h, want, rtol=1e-4 if dtype == np.float32 else 1e-10,
                                 atol=0, err_msg=f"{name} {mode}")


def test_slopes_near_one_half_keep_their_relative_precision():
  """d/dp of the entropy, log((1 - p) / p), and of the cross-entropy, log((1 - q) / q), are 0
  at 1/2: as log(1 - p) - log p (two logs near -0.69) they were 85 ulp off in float32 at p =
  0.49804688; one log1p of |1 - 2p| / min(p, 1 - p) keeps 2 ulp."""
  k = np.r_[-np.arange(1, 2000), np.arange(1, 2000), -(2.0 ** np.arange(11, 22)),
            2.0 ** np.arange(11, 22)]
  x = (0.5 + k * 2.0 ** -24).astype(np.float32)
  x64 = x.astype(np.float64)
  want = np.log((1 - x64) / x64)
  dh = jax.jit(jax.vmap(jax.grad(jaxdiv.binary_entropy)))(x)
  dp = jax.jit(jax.vmap(jax.grad(jaxdiv.binary_cross_entropy)))(np.float32(0.3) + 0 * x, x)
  for got in (dh, dp):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=4 * 2.0 ** -23, atol=0)


def test_zero_is_positive_zero():
  """At p = 0 and 1 the entropy and cross-entropy (p = q) are +0.0, as scipy's: the negated sum
  of two zero products was -0.0 (1 / h = -inf)."""
  x = np.array([0.0, 1.0], np.float32)
  for got in (jaxdiv.binary_entropy(x), jaxdiv.binary_cross_entropy(x, x),
              jaxdiv.binary_kl_divergence(x, x), jaxdiv.binary_entropy(x, axis=0)):
    got = np.asarray(got)
    np.testing.assert_array_equal(got, 0.0)
    assert not np.signbit(got).any(), got


def test_gradient_in_q_where_the_value_is_infinite():
  """KL and cross-entropy are +inf at q = 0 < p and at q = 1 > p: d/dq is then -inf and +inf,
  the sign of the true derivative (-p / q and (1 - p) / (1 - q)), also at q = -0.0 (once +inf
  there for the KL, and the cross-entropy dropped the infinite quotient: 0.7 at p = 0.3, q =
  0). Where p = q = 0 or 1 the value is 0 and d/dq the finite 1 and -1."""
  p = np.array([0.3, 0.3, 1.0, 0.3, 0.0, 0.0, 1.0], np.float32)
  q = np.array([0.0, -0.0, 0.0, 1.0, 1.0, 0.0, 1.0], np.float32)
  for fn in (jaxdiv.binary_kl_divergence, jaxdiv.binary_cross_entropy):
    value = np.asarray(fn(p, q))
    dq = np.asarray(jax.vmap(jax.grad(fn, argnums=1))(p, q))
    np.testing.assert_array_equal(value, [np.inf] * 5 + [0, 0], err_msg=fn.__name__)
    np.testing.assert_array_equal(dq, [-np.inf] * 3 + [np.inf] * 2 + [1, -1],
                                  err_msg=fn.__name__)


LOGIT_GRID = np.array([-np.inf, -200.0, -80.0, -20.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 20.0, 80.0,
                       200.0, np.inf])


def _logit_closed_forms(a, b):
  """Binary entropy of sigmoid(a), cross-entropy H(sigmoid a, sigmoid b) and their first and
  second derivatives in the logits, float64 closed forms (scipy's expit / log_expit; a weight
  of 0 takes its log term to 0)."""
  p, q = special.expit(a), special.expit(b)
  not_p, not_q = special.expit(-a), special.expit(-b)  # 1 - p would cancel
  lq1, lq0 = special.log_expit(b), special.log_expit(-b)
  lp1, lp0 = special.log_expit(a), special.log_expit(-a)
  with np.errstate(invalid="ignore"):
    times = lambda w, log: np.where(w == 0, 0.0, w * log)
    h = -(times(p, lp1) + times(not_p, lp0))
    ce = -(times(p, lq1) + times(not_p, lq0))
    w = p * not_p
    h1 = np.where(w == 0, 0.0, -a * w)
    h2 = -w - np.where(w == 0, 0.0, a * w * (not_p - p))
    ce_a = np.where(w == 0, 0.0, -w * b)
    ce_b = np.where(a + b > 0, not_p - not_q, q - p)
    ce_aa = np.where(w == 0, 0.0, -b * w * (not_p - p))
    ce_ab = -w
    ce_bb = q * not_q
    kl = times(p, lp1 - lq1) + times(not_p, lp0 - lq0)
    kl_a = np.where(w == 0, 0.0, w * (a - b))
    kl_aa = np.where(w == 0, 0.0, w + w * (not_p - p) * (a - b))
  return h, (h1, h2), ce, (ce_a, ce_b), (ce_aa, ce_ab, ce_bb), kl, (kl_a, kl_aa)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logits_forms_against_closed_forms(dtype):
  """Binary entropy, cross-entropy and KL from logits over [-inf, inf] x [-inf, inf]: values,
  gradients and Hessians against float64 closed forms, wherever the value is finite; a NaN
  logit gives NaN. Derivatives to a few roundings of their terms' scale (|b| p (1 - p) beside
  1 - 2 p, which cancels near a = 0 in any form)."""
  a, b = (x.ravel() for x in np.meshgrid(LOGIT_GRID, LOGIT_GRID, indexing="ij"))
  h, (h1, h2), ce, (ce_a, ce_b), (ce_aa, ce_ab, ce_bb), kl, (kl_a, kl_aa) = (
      _logit_closed_forms(a, b))
  eps, tiny = float(np.finfo(dtype).eps), float(np.finfo(dtype).tiny)
  fin = np.isfinite(ce)

  def close(got, want, scale, mask=True):
    got = np.asarray(got, np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf outside the mask
      err = np.where(mask, np.abs(got - want), 0)
    bound = np.where(mask, 8 * eps * (np.abs(want) + scale) + tiny, 0)  # tiny: underflow
    bad = np.argwhere(err > bound).ravel()[:5]
    assert not bad.size, (bad, a[bad], b[bad], got[bad], want[bad])

  with jax.enable_x64(dtype == np.float64):
    x, y = jnp.asarray(a, dtype), jnp.asarray(b, dtype)
    ent = lambda x: jaxdiv.binary_entropy(x, from_logits=True)
    cross = lambda x, y: jaxdiv.binary_cross_entropy(x, y, from_logits=True)
    close(jax.jit(ent)(x), h, 0.0)
    got = jax.jit(cross)(x, y)
    close(got, ce, 0.0, fin)
    # +inf at an infinite b, except where the weight of its log underflows in `dtype` (float32:
    # sigmoid(-200) = 0, so the 0 log 0 convention applies there)
    weight = np.where(b >= 0, special.expit(-a), special.expit(a)).astype(dtype)
    inf = ~fin & (weight > 0)
    assert np.array_equal(np.asarray(got)[inf], ce[inf])
    assert np.all(np.asarray(got)[~fin & ~inf] == 0)
    w = special.expit(a) * special.expit(-a)
    scale = w * (1 + np.where(np.isfinite(a), np.abs(a), 0))
    close(jax.jit(jax.vmap(jax.grad(ent)))(x), h1, scale)
    close(jax.jit(jax.vmap(jax.hessian(ent)))(x), h2, scale)
    ga, gb = jax.jit(jax.vmap(jax.grad(cross, (0, 1))))(x, y)
    hs = jax.jit(jax.vmap(jax.hessian(cross, (0, 1))))(x, y)
    scale = w * (1 + np.where(np.isfinite(b), np.abs(b), 0))
    for got, want in zip((ga, gb, hs[0][0], hs[0][1], hs[1][1]),
                         (ce_a, ce_b, ce_aa, ce_ab, ce_bb)):
      close(got, want, scale, fin)
    div = lambda x, y: jaxdiv.binary_kl_divergence(x, y, from_logits=True)
    fin = np.isfinite(kl)
    got = jax.jit(div)(x, y)
    # the value's terms are differences of log-sigmoids, as the hand-written line's (scale 1 +
    # |a| + |b| where they cancel near a = b)
    finite_abs = lambda x: np.where(np.isfinite(x), np.abs(x), 0)
    logit_scale = 1 + finite_abs(a) + finite_abs(b)
    close(got, kl, 0.5 * logit_scale * np.maximum(w, special.expit(-np.abs(a))), fin)
    inf = ~fin & (weight > 0)  # the cross-entropy's weights: the same logs are infinite
    assert np.array_equal(np.asarray(got)[inf], kl[inf])
    assert np.all(np.asarray(got)[~fin & ~inf] == 0)
    ga, gb = jax.jit(jax.vmap(jax.grad(div, (0, 1))))(x, y)
    hs = jax.jit(jax.vmap(jax.hessian(div, (0, 1))))(x, y)
    scale = w * logit_scale
    for got, want in zip((ga, gb, hs[0][0], hs[0][1], hs[1][1]),
                         (kl_a, ce_b, kl_aa, ce_ab, ce_bb)):
      close(got, want, scale, fin)
    nan = jnp.asarray([np.nan, 0.0], dtype)
    assert np.isnan(ent(nan)[0]) and np.isnan(cross(nan, nan[::-1])[0])
    assert np.isnan(cross(nan[::-1], nan)[1])


@pytest.mark.parametrize("name,a,b", [
    ("binary_entropy", -np.inf, None), ("binary_entropy", np.inf, None),
    ("binary_kl_divergence", -np.inf, -20.0), ("binary_kl_divergence", -np.inf, 3.0),
    ("binary_kl_divergence", np.inf, 20.0),
    ("binary_cross_entropy", np.inf, np.inf), ("binary_cross_entropy", -np.inf, -np.inf),
    ("binary_cross_entropy", -np.inf, 2.0)])
def test_reverse_over_reverse_second_derivative_at_an_infinite_logit(name, a, b):
  """d²/da² by `grad(grad)` where the value is finite and the logit a is infinite: 0, the
  limit of p (1 - p) times a polynomial in a (p = sigmoid a), as `jax.hessian` (forward over
  reverse) gives. The derivative's `where(w == 0, 0, w x)` sent the zero cotangent through
  `x w'` = inf * 0 in reverse mode: NaN (helper-60)."""
  fn = getattr(jaxdiv, name)
  f = ((lambda x: fn(x, from_logits=True)) if b is None
       else (lambda x: fn(x, jnp.float32(b), from_logits=True)))
  x = jnp.float32(a)
  assert np.isfinite(float(f(x)))
  assert float(jax.grad(jax.grad(f))(x)) == 0.0
  assert float(jax.hessian(f)(x)) == 0.0
