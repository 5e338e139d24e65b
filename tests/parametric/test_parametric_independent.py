"""The closed forms against independent float64/40-digit references, parameters across scales.

TensorFlow Probability's JAX substrate is optional (its 0.25 release does not import with JAX
0.10; the nightly of the `tfp` extra does, see test_parametric_tfp.py) and torch is not a test
dependency, so the references here are scipy.stats' entropies and the KL closed forms
re-evaluated in 40-digit mpmath (a different formula evaluation: plain textbook forms at high
precision, no log-space tricks). rtol 1e-10, near-degenerate parameters included.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest
from scipy import stats

import jaxdiv.parametric as jp

mp.mp.dps = 40
SCALES = [1e-3, 0.37, 1.0, 5.5, 1e3]
CONC = [1e-3, 0.2, 1.0, 7.5, 1e3]

ENTROPIES = {
    "normal": (lambda s: jp.normal_entropy(0.3, s), lambda s: stats.norm(0.3, s).entropy(),
               SCALES),
    "laplace": (lambda s: jp.laplace_entropy(0.3, s), lambda s: stats.laplace(0.3, s).entropy(),
                SCALES),
    "gumbel": (lambda s: jp.gumbel_entropy(0.3, s), lambda s: stats.gumbel_r(0.3, s).entropy(),
               SCALES),
    "exponential": (lambda r: jp.exponential_entropy(r),
                    lambda r: stats.expon(scale=1 / r).entropy(), SCALES),
    "gamma": (lambda a: jp.gamma_entropy(a, 2.5), lambda a: stats.gamma(a, scale=0.4).entropy(),
              CONC),
    "beta": (lambda a: jp.beta_entropy(a, 3.0), lambda a: stats.beta(a, 3.0).entropy(),
             [1e-2, 0.2, 1.0, 7.5, 1e3]),
}


@pytest.mark.parametrize("family", list(ENTROPIES))
def test_entropy_against_scipy(x64, family):
  ours, ref, params = ENTROPIES[family]
  got = np.array([float(ours(p)) for p in params])
  want = np.array([float(ref(p)) for p in params])
  np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def _mp(*xs):
  return [mp.mpf(float(x)) for x in xs]


def mp_normal_kl(mu_p, s_p, mu_q, s_q):
  mu_p, s_p, mu_q, s_q = _mp(mu_p, s_p, mu_q, s_q)
  return mp.log(s_q / s_p) + (s_p**2 + (mu_p - mu_q)**2) / (2 * s_q**2) - mp.mpf(1) / 2


def mp_gamma_kl(a_p, b_p, a_q, b_q):
  a_p, b_p, a_q, b_q = _mp(a_p, b_p, a_q, b_q)
  return ((a_p - a_q) * mp.digamma(a_p) - mp.loggamma(a_p) + mp.loggamma(a_q)
          + a_q * (mp.log(b_p) - mp.log(b_q)) + a_p * (b_q - b_p) / b_p)


def mp_beta_kl(a_p, b_p, a_q, b_q):
  a_p, b_p, a_q, b_q = _mp(a_p, b_p, a_q, b_q)
  lb = lambda a, b: mp.loggamma(a) + mp.loggamma(b) - mp.loggamma(a + b)
  return (lb(a_q, b_q) - lb(a_p, b_p) + (a_p - a_q) * mp.digamma(a_p)
          + (b_p - b_q) * mp.digamma(b_p) + (a_q - a_p + b_q - b_p) * mp.digamma(a_p + b_p))


def mp_gamma_renyi(ap, bp, aq, bq, al):
  ap, bp, aq, bq, al = _mp(ap, bp, aq, bq, al)
  log_z = lambda a, b: mp.loggamma(a) - a * mp.log(b)
  mixed = log_z(al * ap + (1 - al) * aq, al * bp + (1 - al) * bq)
  return (mixed - al * log_z(ap, bp) - (1 - al) * log_z(aq, bq)) / (al - 1)


def mp_dirichlet_renyi(cp, cq, al):
  """+inf where the mixed concentrations are not all positive."""
  cp, cq, (al,) = _mp(*cp), _mp(*cq), _mp(al)
  log_b = lambda c: sum(mp.loggamma(x) for x in c) - mp.loggamma(sum(c))
  mixed = [al * a + (1 - al) * b for a, b in zip(cp, cq)]
  if min(mixed) <= 0:
    return mp.inf
  return (log_b(mixed) - al * log_b(cp) - (1 - al) * log_b(cq)) / (al - 1)


def mp_laplace_kl(m_p, b_p, m_q, b_q):
  m_p, b_p, m_q, b_q = _mp(m_p, b_p, m_q, b_q)
  d = abs(m_p - m_q)
  return mp.log(b_q / b_p) + d / b_q + b_p / b_q * mp.exp(-d / b_p) - 1


def mp_poisson_kl(l_p, l_q):
  l_p, l_q = _mp(l_p, l_q)
  return l_p * mp.log(l_p / l_q) - l_p + l_q


KLS = {
    "normal": (jp.normal_kl_divergence, mp_normal_kl,
               [(0.3, 1e-3, -0.2, 1e3), (0.3, 1e3, -0.2, 1e-3), (0.0, 1.0, 1e-6, 1.0),
                (1.0, 2.0, 1.0, 2.0 * (1 + 1e-7)), (5.0, 0.5, -3.0, 7.0)]),
    "gamma": (jp.gamma_kl_divergence, mp_gamma_kl,
              [(1e-3, 1.0, 2.0, 3.0), (1e3, 2.0, 1e3 * (1 + 1e-6), 2.0), (2.5, 1e-3, 0.7, 1e3),
               (0.2, 5.0, 0.3, 4.0)]),
    "beta": (jp.beta_kl_divergence, mp_beta_kl,
             [(1e-2, 3.0, 2.0, 2.0), (1e3, 5e2, 9e2, 6e2), (0.5, 0.5, 0.5 * (1 + 1e-6), 0.5),
              (6.5, 2.5, 3.0, 3.0)]),
    "laplace": (jp.laplace_kl_divergence, mp_laplace_kl,
                [(0.0, 1e-3, 1.0, 1e3), (0.0, 1e3, 1.0, 1e-3), (0.0, 1.0, 1e-7, 1.0),
                 (2.0, 0.5, -1.0, 3.0)]),
    "poisson": (jp.poisson_kl_divergence, mp_poisson_kl,
                [(1e-6, 3.0), (1e3, 1e3 * (1 + 1e-6)), (2.0, 7.5), (50.0, 1e-2)]),
}


@pytest.mark.parametrize("family", list(KLS))
def test_kl_against_40_digit_closed_form(x64, family):
  ours, ref, cases = KLS[family]
  for case in cases:
    got = float(ours(*case))
    want = float(ref(*case))
    # Beta at (0.5, 0.5) vs (0.5 (1 + 1e-6), 0.5): 2e-10 (two Bregman remainders subtract).
    rtol = 1e-9 if family == "beta" else 1e-10
    np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-300, err_msg=f"{family}{case}")


# Concentrations 0.3% to 3x apart, from 0.05 to 2e4: the log Γ terms of the KL cancel there
# (float32 lost up to 0.85% on the Gamma KL, a factor 27 on the Beta KL at 2e4 against 2.5).
NEAR = [(a, r) for a in (0.05, 0.7, 3.0, 40.0, 900.0, 2e4) for r in (1.003, 1.02, 1.1, 0.95,
                                                                     0.7, 3.0)]


def _batched(fn, *columns, dtype):
  """`fn` on every case at once, jitted (eager scalar calls compiled each primitive anew and
  took tens of seconds): one float64 array of results."""
  cols = [jnp.asarray(np.asarray(c, np.float64).astype(dtype)) for c in columns]
  return np.asarray(jax.jit(fn)(*cols), np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gamma_kl_near_equal_concentrations(dtype):
  # equal rates last: the log Γ remainder alone
  cases = ([(a, 1.3, a * r, 1.3 * (1 + (r - 1) / 3)) for a, r in NEAR]
           + [(a, 2.0, a * r, 2.0) for a, r in NEAR[::5]])
  rtol = 2e-6 if dtype == np.float32 else 1e-14
  with jax.enable_x64(dtype == np.float64):
    got = _batched(jp.gamma_kl_divergence, *zip(*cases), dtype=dtype)
  for case, g in zip(cases, got):
    want = float(mp_gamma_kl(*(dtype(x) for x in case)))
    np.testing.assert_allclose(g, want, rtol=rtol, err_msg=str(case))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_beta_kl_near_equal_concentrations(dtype):
  # The Beta KL is B(a) + B(b) - B(a + b) of Bregman remainders of log Γ; where one
  # concentration is much larger than the other those cancelled (float32: 0.2% at a = 2e4
  # against b = 2.5, after the remainders themselves were made exact).
  cases = [(a, b, a * r, b * rb) for a, r in NEAR
           for b, rb in ((2.5, 1 + (r - 1) / 2), (2.5, 1.0), (a * 0.8, r))]
  rtol = 1e-5 if dtype == np.float32 else 2e-14
  with jax.enable_x64(dtype == np.float64):
    got = _batched(jp.beta_kl_divergence, *zip(*cases), dtype=dtype)
  for case, g in zip(cases, got):
    want = float(mp_beta_kl(*(dtype(x) for x in case)))
    np.testing.assert_allclose(g, want, rtol=rtol, err_msg=str(case))


def mp_dirichlet_kl(cp, cq):
  cp, cq = _mp(*cp), _mp(*cq)
  sp, sq = sum(cp), sum(cq)
  return (mp.loggamma(sp) - mp.loggamma(sq) + sum(mp.loggamma(b) - mp.loggamma(a)
                                                  for a, b in zip(cp, cq))
          + sum((a - b) * (mp.digamma(a) - mp.digamma(sp)) for a, b in zip(cp, cq)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dirichlet_kl_near_equal_and_mixed_scales(dtype):
  rng = np.random.default_rng(11)
  with jax.enable_x64(dtype == np.float64):
    for scale in (1e-2, 1.0, 1e2, 1e4):
      for spread in (1e-3, 3e-2, 0.5):
        cp = (scale * rng.gamma(1.0, 1.0, (6, 4)) * np.array([1, 1, 1e2, 1e-2])).astype(dtype)
        cq = (cp * np.exp(spread * rng.standard_normal(cp.shape))).astype(dtype)
        got = np.asarray(jp.dirichlet_kl_divergence(cp, cq))
        want = np.array([float(mp_dirichlet_kl(a, b)) for a, b in zip(cp, cq)])
        rtol = 2e-5 if dtype == np.float32 else 5e-13
        np.testing.assert_allclose(got, want, rtol=rtol, err_msg=f"{scale}, {spread}")


def test_gamma_kl_means_close_shapes_apart_float32():
  # The mean and shape terms (both >= 0) replace rate and log Γ terms that offset each other
  # here (float32 lost 1e-4 relative at 1e4 against 1.3e4, rates 1.3 and 1.7). What is left:
  # the means' log ratio z is a difference of two logarithms, an absolute error of eps times
  # theirs (7e-6 at 1e4 against 1.01e4, rates 1.3 and 1.313: z = 1e-4, the logarithms 1e-2).
  for a in (0.3, 7.0, 9.0, 1e2, 1e4, 1e6):
    for r, rb in ((1.3, 1.3 / 1.7 * 1.3), (0.7, 0.7 * 1.01), (3.0, 2.9), (1.01, 1.0101)):
      args = [np.float32(x) for x in (a, 1.3, a * r, 1.3 * rb)]
      np.testing.assert_allclose(float(jp.gamma_kl_divergence(*args)),
                                 float(mp_gamma_kl(*args)), rtol=2e-5,
                                 err_msg=f"{a}, {r}, {rb}")


def test_gamma_kl_gradient_near_equal(x64):
  # d/d a_p = (a_p - a_q) ψ'(a_p) + (b_q - b_p)/b_p, d/d a_q = ψ(a_q) - ψ(a_p) + log(b_p/b_q)
  cases = [(a, 1.3, a * r, 1.3 * (1 + (r - 1) / 3)) for a, r in NEAR[::2]]
  grad = jax.vmap(jax.grad(jp.gamma_kl_divergence, argnums=(0, 2)))
  g_ap, g_aq = (np.asarray(g) for g in jax.jit(grad)(*(jnp.asarray(c) for c in zip(*cases))))
  for case, ga, gq in zip(cases, g_ap, g_aq):
    m = _mp(*case)
    want = ((m[0] - m[2]) * mp.psi(1, m[0]) + (m[3] - m[1]) / m[1],
            mp.digamma(m[2]) - mp.digamma(m[0]) + mp.log(m[1] / m[3]))
    np.testing.assert_allclose([ga, gq], [float(w) for w in want], rtol=1e-9, atol=1e-15,
                               err_msg=str(case))


def test_gamma_renyi_near_equal_concentrations_float32():
  # Orders in (0, 1) and above 1 go through KLs between Gammas (van Erven & Harremoës eq. 10):
  # float32 lost up to 0.55% here before the log Γ remainder was summed without cancellation.
  for alpha in (0.3, 0.5, 2.0):
    # above 1, r >= alpha / (alpha - 1) leaves a mixed concentration that is not positive
    cases = [(a, 1.3, a * r, 1.3) for a, r in NEAR
             if not (alpha > 1 and r >= alpha / (alpha - 1))]
    got = _batched(lambda *x, alpha=alpha: jp.gamma_renyi_divergence(*x, alpha=alpha),
                   *zip(*cases), dtype=np.float32)
    for case, g in zip(cases, got):
      want = float(mp_gamma_renyi(*(np.float32(x) for x in case), np.float32(alpha)))
      np.testing.assert_allclose(g, want, rtol=2e-6, err_msg=f"{case}, {alpha}")


@pytest.mark.slow  # 14 s; fast: test_kl_with_concentrations_far_apart_and_matched_means
def test_gamma_kl_extreme_concentrations():
  # Concentrations decades apart (review reproducers): NaN values and gradients where the
  # Stirling terms over- or underflowed, and gradients formed as differences of 1e15.
  kl = jp.gamma_kl_divergence
  f32 = np.float32
  for args in ((1e8, 1.0, 8.0, 1.0), (1.0, 1.0, 1e21, 1.0), (1e-6, 1.0, 1e30, 1.0),
               (3.2e6, 1.0, 0.32, 1.0)):
    args32 = [f32(x) for x in args]
    np.testing.assert_allclose(float(kl(*args32)), float(mp_gamma_kl(*args32)), rtol=2e-6)
  m = _mp(1e6, 1.0, 3.0, 1.0)
  d_aq = jax.grad(kl, argnums=2)(f32(1e6), f32(1.0), f32(3.0), f32(1.0))
  np.testing.assert_allclose(float(d_aq), float(mp.digamma(m[2]) - mp.digamma(m[0])), rtol=1e-6)
  d_ap = jax.grad(kl)(f32(1e7), f32(1.0), f32(1.0), f32(1.0))  # (a_p - a_q) ψ'(a_p)
  np.testing.assert_allclose(float(d_ap), float((1e7 - 1) * mp.psi(1, mp.mpf(1e7))), rtol=1e-6)
  with jax.enable_x64(True):
    np.testing.assert_allclose(float(kl(1.0, 1.0, 1e156, 1.0)),
                               float(mp_gamma_kl(1.0, 1.0, 1e156, 1.0)), rtol=1e-13)
    d_aq = jax.grad(kl, argnums=2)(1e16, 1.0, 10.0, 1.0)
    np.testing.assert_allclose(float(d_aq), float(mp.digamma(10) - mp.digamma(mp.mpf(1e16))),
                               rtol=1e-13)


@pytest.mark.slow  # 5-11 s a case; fast: test_gamma_kl_gradient_at_tiny_concentrations[float64]
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gamma_kl_grid_of_decades_is_finite_where_the_value_is(dtype):
  with jax.enable_x64(dtype == np.float64):
    top = 38 if dtype == np.float32 else 300
    ap, aq = np.meshgrid(10.0 ** np.arange(-6, top, 2), 10.0 ** np.arange(-6, top, 2),
                         indexing="ij")
    ap, aq = jnp.asarray(ap.ravel(), dtype), jnp.asarray(aq.ravel(), dtype)
    fn = lambda p, q: jp.gamma_kl_divergence(p, 1.0, q, 1.0)
    v = np.asarray(jax.jit(fn)(ap, aq), np.float64)
    g = jax.jit(jax.vmap(jax.grad(fn, argnums=(0, 1))))(ap, aq)
    want = np.array([float(mp_gamma_kl(a, 1.0, b, 1.0)) for a, b in zip(ap, aq)])
    fits = want < np.finfo(dtype).max
    np.testing.assert_allclose(v[fits], want[fits], rtol=2e-6 if dtype == np.float32 else 1e-13)
    assert np.all(v[~fits] == np.inf)
    # d/d a_p = (a_p - a_q) ψ'(a_p), d/d a_q = ψ(a_q) - ψ(a_p): finite where they fit too
    m = [_mp(a, b) for a, b in zip(ap, aq)]
    d_ap = np.array([float((a - b) * mp.psi(1, a)) for a, b in m])
    d_aq = np.array([float(mp.digamma(b) - mp.digamma(a)) for a, b in m])
    for gi, wi in zip(g, (d_ap, d_aq)):
      gi, ok = np.asarray(gi, np.float64), fits & (np.abs(wi) < np.finfo(dtype).max)
      np.testing.assert_allclose(gi[ok], wi[ok], rtol=1e-4 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kl_with_concentrations_far_apart_and_matched_means(dtype):
  # Matched means leave the shapes' log-gamma remainder alone (G, in `_lgamma_bregman_g`). With
  # one concentration below the shift K and the other far above, its x log x - x parts were
  # dominated by the step δ and cancelled: float32 Gamma KL(8e5 || 3.3) 1% off, Beta(0.0195,
  # 818) against Beta(0.0154, 0.119) 2.5e-4.
  rng = np.random.default_rng(7)
  a = np.exp(rng.uniform(np.log(1e-2), np.log(1e6), 200))
  b = a * np.exp(rng.uniform(-14, 14, 200))
  # The review's: concentrations below 1e-18, where the far form was not used (G 12.3 for 58.4).
  tiny = 1e-20 if dtype == np.float32 else 1e-200
  a, b = (np.concatenate([x, y]).astype(dtype)
          for x, y in ((a, [8.4e5, 3.3, 1e12, tiny]), (b, [3.3, 8.4e5, tiny, 1e12])))
  rtol = 2e-5 if dtype == np.float32 else 1e-12
  with jax.enable_x64(dtype == np.float64):
    got = np.asarray(jp.gamma_kl_divergence(a, a, b, b), np.float64)
    want = np.array([float(mp_gamma_kl(x, x, y, y)) for x, y in zip(a, b)])
    np.testing.assert_allclose(got, want, rtol=rtol)
    args = [np.array(x, dtype) for x in ((0.0195, 5.55, 0.5, 1e12), (818.0, 0.0154, 600.0, 2.0),
                                         (0.0154, 546.0, 11.3, 1e-20), (0.119, 0.063, 0.0147, 3.0))]
    got = np.asarray(jp.beta_kl_divergence(*args), np.float64)
    want = np.array([float(mp_beta_kl(*x)) for x in zip(*args)])
    np.testing.assert_allclose(got, want, rtol=rtol)


# float32 (5 s) slow; float64 runs the same code in the fast tier.
@pytest.mark.parametrize("dtype", [pytest.param(np.float32, marks=pytest.mark.slow),
                                   np.float64])
def test_gamma_kl_gradient_at_tiny_concentrations(dtype):
  # Autodiff's quotient rule formed x^-2 of a concentration: 1e40 = inf in float32 at 1e-20,
  # and a NaN gradient where the true one (-9e20 at 1e-20 against 1e-19) fits.
  with jax.enable_x64(dtype == np.float64):
    lows = np.arange(-36, 4, 3) if dtype == np.float32 else np.arange(-300, 4, 23)
    ap, aq = np.meshgrid(10.0 ** lows, 10.0 ** lows, indexing="ij")
    ap = np.concatenate([ap.ravel(), [1e-20, 1e-19]]).astype(dtype)
    aq = np.concatenate([aq.ravel(), [1e-19, 1e-20]]).astype(dtype)
    fn = lambda p, q: jp.gamma_kl_divergence(p, 1.3, q, 0.7)
    g = jax.jit(jax.vmap(jax.grad(fn, argnums=(0, 1))))(jnp.asarray(ap), jnp.asarray(aq))
    v = np.asarray(jax.jit(fn)(jnp.asarray(ap), jnp.asarray(aq)), np.float64)
    m = [_mp(a, b) for a, b in zip(ap, aq)]
    d_ap = [(a - b) * mp.psi(1, a) + (mp.mpf(0.7) - mp.mpf(1.3)) / mp.mpf(1.3) for a, b in m]
    d_aq = [mp.digamma(b) - mp.digamma(a) + mp.log(mp.mpf(1.3) / mp.mpf(0.7)) for a, b in m]
    big = np.finfo(dtype).max
    for gi, wi in zip(g, (d_ap, d_aq)):
      gi = np.asarray(gi, np.float64)
      wi = np.array([float(w) for w in wi])
      fits = np.abs(wi) < big / 2
      nan = np.isnan(gi) & np.isfinite(v)
      assert not np.any(nan), (ap[nan], aq[nan])
      ok = fits & np.isfinite(v)
      np.testing.assert_allclose(gi[ok], wi[ok], rtol=1e-4 if dtype == np.float32 else 1e-10)
      over = ~fits & np.isfinite(v)
      np.testing.assert_array_equal(gi[over], np.sign(wi[over]) * np.inf)


# beta (5 s) slow; fast: test_hyperparameter_grads' beta_renyi rows at alpha 0.999 to 1.001.
@pytest.mark.parametrize("family", [pytest.param("beta", marks=pytest.mark.slow), "gamma"])
def test_renyi_near_order_one_float32(family):
  # Within 0.05 of alpha = 1 a series in alpha - 1 took over, whose cumulants cancel at large
  # concentrations: float32 Beta(0.02, 5.1e4) against Beta(0.021, 5.4e4) 2.6e-3 off at 0.97.
  cases = {"beta": [((0.020253, 51302.3), (0.0206294, 54151.7)),
                    ((0.0147, 3.15e5), (0.0149, 3.04e5)), ((1e4, 2e4), (1.001e4, 2e4)),
                    ((0.5, 0.7), (0.52, 0.69))],
           "gamma": [((3e4, 2.0), (3.1e4, 2.1)), ((0.02, 1.0), (0.021, 0.9)),
                     ((5e5, 5e5), (4.9e5, 4.8e5))]}
  fn = jp.beta_renyi_divergence if family == "beta" else jp.gamma_renyi_divergence
  for p, q in cases[family]:
    p, q = [np.float32(x) for x in p], [np.float32(x) for x in q]
    f = jax.jit(lambda a, p=p, q=q: fn(*p, *q, alpha=a))
    for alpha in (0.97, 0.999, 1 - 5e-5, 1 + 5e-5, 1.001, 1.02):
      al = np.float32(alpha)
      if family == "beta":
        want = mp_dirichlet_renyi(p, q, al)
      else:
        want = mp_gamma_renyi(*p, *q, al)
      got = float(f(np.float32(alpha)))
      np.testing.assert_allclose(got, float(want), rtol=1e-5, err_msg=f"{p}, {q}, {alpha}")


@pytest.mark.slow  # the fast tier runs no case of this test; it costs 6 s
def test_beta_kl_gradient_at_tiny_concentrations():
  # s_q m_p as c_p (s_q / s_p): the quotient's derivative formed s_p^-2, 0 in float32 at 2e-20.
  g = jax.grad(jp.beta_kl_divergence, argnums=(0, 1, 2, 3))(
      *(np.float32(x) for x in (1e-20, 1e-20, 1e-19, 1e-19)))
  np.testing.assert_allclose(np.asarray(g, np.float64), [-4.5e20, -4.5e20, 4.5e19, 4.5e19],
                             rtol=1e-5)  # mpmath: d/da_p = -4.5e20, d/da_q = 4.5e19


@pytest.mark.slow  # the fast tier runs no case of this test; it costs 5-7 s a case
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [2, 3])
def test_dirichlet_and_beta_renyi_near_equal_concentrations(k, dtype):
  # Through KLs between Dirichlets, not a difference of log-partitions: float32 at
  # concentrations 1e4 and 0.1% apart gave 68x the true value at alpha = 1.5.
  rng = np.random.default_rng(k)
  rtol = 2e-6 if dtype == np.float32 else 1e-12
  pairs = []
  for scale in (0.1, 3.0, 100.0, 1e4):
    for spread in (1e-3, 3e-2, 0.3):
      cp = (scale * rng.gamma(2, 1, k)).astype(dtype)
      pairs.append((cp, (cp * np.exp(spread * rng.standard_normal(k))).astype(dtype)))
  cp, cq = (np.stack(x) for x in zip(*pairs))
  with jax.enable_x64(dtype == np.float64):
    for alpha in (0.3, 0.9, 0.999, 1.03, 2.0):
      if k == 2:
        fn = lambda p, q, alpha=alpha: jp.beta_renyi_divergence(*p.T, *q.T, alpha=alpha)
      else:
        fn = lambda p, q, alpha=alpha: jp.dirichlet_renyi_divergence(p, q, alpha=alpha)
      got = _batched(fn, cp, cq, dtype=dtype)
      for p, q, g in zip(cp, cq, got):
        want = float(mp_dirichlet_renyi(p, q, alpha))
        if not np.isfinite(want):
          assert g == np.inf
          continue
        np.testing.assert_allclose(g, want, rtol=rtol, err_msg=f"{p}, {q}, {alpha}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_beta_kl_large_concentration_shrinking(dtype):
  # s_q taken as s_p + Δ kept an ulp of s_p, huge against s_q (float32: 3e15 for 0.0105).
  with jax.enable_x64(dtype == np.float64):
    for case in ((1e-3, 7.4e25, 1e-3, 7.4e20), (1e-3, 1e7, 1e-3, 1e2), (0.1, 1e7, 0.1, 1e3)):
      args = [dtype(x) for x in case]
      np.testing.assert_allclose(float(jp.beta_kl_divergence(*args)), float(mp_beta_kl(*args)),
                                 rtol=5e-5 if dtype == np.float32 else 1e-10, err_msg=str(case))
