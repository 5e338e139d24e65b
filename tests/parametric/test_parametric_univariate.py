"""Univariate closed forms against scipy.stats entropies and float64 numerical integration."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special as sps
from _helpers import tiered
from jax.experimental import checkify
from jax.test_util import check_grads
from scipy import integrate
from scipy import stats

import jaxdiv
import jaxdiv.parametric as jp

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning:scipy.*")


def _vm_logpdf(loc, kappa):
  return lambda x: kappa * np.cos(x - loc) - np.log(2 * np.pi * sps.i0(kappa))


# name -> (scipy frozen distribution from parameters, support from parameters, parameter sets
# for p and q). The KL references integrate p log(p/q) with scipy's (or an explicit) log-pdf.
FAMILIES = {
    "normal": (lambda m, s: stats.norm(m, s), lambda m, s: (-np.inf, np.inf),
               [((0.3, 1.5), (-1.0, 0.7)), ((0.0, 1.0), (0.0, 1.0)), ((2.0, 0.2), (0.0, 3.0))]),
    "laplace": (lambda m, b: stats.laplace(m, b), lambda m, b: (-np.inf, np.inf),
                [((0.3, 1.5), (-1.0, 0.7)), ((0.0, 1.0), (2.0, 2.0))]),
    "gumbel": (lambda m, b: stats.gumbel_r(m, b), lambda m, b: (-np.inf, np.inf),
               [((0.3, 1.5), (-1.0, 0.7)), ((0.0, 1.0), (1.0, 2.0))]),
    "log_normal": (lambda m, s: stats.lognorm(s=s, scale=np.exp(m)), lambda m, s: (0, np.inf),
                   [((0.3, 0.5), (-0.2, 0.7)), ((0.0, 1.0), (0.5, 1.3))]),
    "gamma": (lambda a, b: stats.gamma(a, scale=1 / b), lambda a, b: (0, np.inf),
              [((2.5, 1.5), (1.2, 0.7)), ((0.8, 2.0), (3.0, 1.0))]),
    "exponential": (lambda b: stats.expon(scale=1 / b), lambda b: (0, np.inf),
                    [((1.5,), (0.4,)), ((0.2,), (3.0,))]),
    "beta": (lambda a, b: stats.beta(a, b), lambda a, b: (0, 1),
             [((2.5, 1.5), (1.2, 3.7)), ((1.5, 1.5), (4.0, 2.0))]),
    "von_mises": (lambda m, k: stats.vonmises(k, loc=m), lambda m, k: (-np.pi, np.pi),
                  [((0.3, 1.5), (-1.0, 0.7)), ((0.0, 4.0), (2.0, 0.5))]),
    "uniform": (lambda lo, hi: stats.uniform(lo, hi - lo), lambda lo, hi: (lo, hi),
                [((0.2, 1.0), (-1.0, 2.0)), ((0.0, 1.0), (0.0, 1.0))]),
}
CASES = [(name, p, q) for name, (_, _, sets) in FAMILIES.items() for p, q in sets]


def _logpdf(name, params):
  if name == "von_mises":
    return _vm_logpdf(*params)
  if name == "laplace":  # scipy's laplace.logpdf underflows to -inf in the far tails
    m, b = params
    return lambda x: -np.log(2 * b) - abs(x - m) / b
  return FAMILIES[name][0](*params).logpdf


def _quad(f, lo, hi):
  return integrate.quad(f, lo, hi, limit=400, epsabs=1e-11, epsrel=1e-10)[0]


def _kl_reference(name, p, q):
  lp, lq = _logpdf(name, p), _logpdf(name, q)
  lo, hi = FAMILIES[name][1](*p)
  def integrand(x):
    a = lp(x)
    return 0.0 if not np.isfinite(a) or np.exp(a) == 0 else np.exp(a) * (a - lq(x))

  return _quad(integrand, lo, hi)


@pytest.mark.parametrize("name,p", [(n, p) for n, p, _ in CASES])
def test_entropy_matches_scipy(name, p, x64):
  got = getattr(jp, f"{name}_entropy")(*[jnp.float64(v) for v in p])
  np.testing.assert_allclose(float(got), FAMILIES[name][0](*p).entropy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,p,q", CASES)
def test_kl_matches_quadrature(name, p, q, x64):
  got = getattr(jp, f"{name}_kl_divergence")(*p, *q)
  np.testing.assert_allclose(float(got), _kl_reference(name, p, q), rtol=1e-7, atol=1e-9)


def test_uniform_kl_outside_support_is_inf():
  assert float(jp.uniform_kl_divergence(0.0, 2.0, 0.5, 3.0)) == np.inf


@pytest.mark.parametrize("name", ["normal", "gamma", "exponential", "beta"])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 0.999, 1.0, 1.7, 3.0])
def test_renyi_matches_quadrature(name, alpha, x64):
  p, q = FAMILIES[name][2][0]
  lp, lq = _logpdf(name, p), _logpdf(name, q)
  lo, hi = FAMILIES[name][1](*p)
  got = float(getattr(jp, f"{name}_renyi_divergence")(*p, *q, alpha=alpha))
  if alpha == 1.0:
    want = _kl_reference(name, p, q)
  else:
    if name == "beta" and alpha * p[1] + (1 - alpha) * q[1] <= 0:
      # p^a q^(1-a) ~ (1 - x)^(b_alpha - 1) near 1 with b_alpha <= 0: not integrable.
      want = np.inf
    else:
      mass = _quad(lambda x: np.exp(alpha * lp(x) + (1 - alpha) * lq(x)), lo, hi)
      want = np.log(mass) / (alpha - 1) if np.isfinite(mass) else np.inf
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


def test_renyi_is_inf_where_interpolation_leaves_the_parameter_space():
  # alpha * 1 + (1 - alpha) * 3 < 0 for alpha = 2: sigma_alpha² = 2·9 - 1 > 0 ... but for the
  # rates: 2 * 0.5 - 1 * 3 < 0.
  assert float(jp.exponential_renyi_divergence(0.5, 3.0, alpha=2.0)) == np.inf
  assert float(jp.normal_renyi_divergence(0.0, 3.0, 0.0, 1.0, alpha=2.0)) == np.inf
  assert float(jp.gamma_renyi_divergence(1.0, 0.5, 1.0, 3.0, alpha=2.0)) == np.inf


def test_poisson_against_sums(x64):
  k = np.arange(400)
  for lam in (1e-3, 0.7, 4.0, 99.9, 100.1, 250.0):
    want = stats.poisson(lam).entropy()
    np.testing.assert_allclose(float(jp.poisson_entropy(lam)), want, rtol=1e-9, atol=1e-12,
                               err_msg=f"rate={lam}")
  for lp, lq in ((0.7, 2.5), (30.0, 12.0), (0.0, 1.0)):
    lpp, lpq = stats.poisson(lp).logpmf(k), stats.poisson(lq).logpmf(k)
    want = np.sum(np.where(lpp > -np.inf, np.exp(lpp) * (lpp - lpq), 0.0))
    if lp == 0:  # scipy has no Poisson(0); it is the point mass at 0: KL = -log q(0).
      want = lq
    np.testing.assert_allclose(float(jp.poisson_kl_divergence(lp, lq)), want, rtol=1e-9,
                               atol=1e-12)
  for alpha in (0.4, 1.0, 2.5):
    lpp, lpq = stats.poisson(0.7).logpmf(k), stats.poisson(2.5).logpmf(k)
    want = (np.sum(np.exp(lpp) * (lpp - lpq)) if alpha == 1
            else sps.logsumexp(alpha * lpp + (1 - alpha) * lpq) / (alpha - 1))
    np.testing.assert_allclose(float(jp.poisson_renyi_divergence(0.7, 2.5, alpha=alpha)), want,
                               rtol=1e-9)


def test_dirichlet_against_scipy_and_integration(x64):
  c = np.array([1.5, 2.0, 3.5])
  np.testing.assert_allclose(float(jp.dirichlet_entropy(c)), stats.dirichlet(c).entropy(),
                             rtol=1e-10)
  cq = np.array([2.5, 1.2, 2.0])

  def logpdf(conc, x):  # the Dirichlet density, written out (scipy's logpdf checks its input
    # at every call, which made the quadrature the cost of this test)
    return (math.lgamma(sum(conc)) - sum(math.lgamma(a) for a in conc)
            + sum((a - 1) * math.log(v) for a, v in zip(conc, x)))

  def integrand(x2, x1):
    x = (x1, x2, max(1 - x1 - x2, 1e-300))
    lp = logpdf(c, x)
    return math.exp(lp) * (lp - logpdf(cq, x))

  want = integrate.dblquad(integrand, 0, 1, 0, lambda x1: 1 - x1, epsabs=1e-10)[0]
  np.testing.assert_allclose(float(jp.dirichlet_kl_divergence(c, cq)), want, rtol=1e-6)
  # Two categories: the Dirichlet is a Beta.
  for alpha in (0.5, 1.0, 2.0):
    np.testing.assert_allclose(
        float(jp.dirichlet_renyi_divergence(c[:2], cq[:2], alpha=alpha)),
        float(jp.beta_renyi_divergence(c[0], c[1], cq[0], cq[1], alpha=alpha)), rtol=1e-12)


def test_bernoulli_and_categorical_match_scipy(x64):
  p, q = np.array([0.1, 0.6, 0.3]), np.array([0.3, 0.3, 0.4])
  np.testing.assert_allclose(float(jp.categorical_entropy(p)), stats.entropy(p), rtol=1e-12)
  np.testing.assert_allclose(float(jp.categorical_kl_divergence(p, q)), stats.entropy(p, q),
                             rtol=1e-12)
  np.testing.assert_allclose(
      float(jp.categorical_kl_divergence(np.log(p), np.log(q), from_logits=True)),
      stats.entropy(p, q), rtol=1e-12)
  np.testing.assert_allclose(float(jp.categorical_renyi_divergence(p, q, alpha=2.0)),
                             np.log(np.sum(p**2 / q)), rtol=1e-12)
  np.testing.assert_allclose(float(jp.bernoulli_entropy(0.3)), stats.bernoulli(0.3).entropy(),
                             rtol=1e-12)
  np.testing.assert_allclose(float(jp.bernoulli_kl_divergence(0.3, 0.8)),
                             stats.entropy([0.3, 0.7], [0.8, 0.2]), rtol=1e-12)
  np.testing.assert_allclose(
      float(jp.bernoulli_renyi_divergence(sps.logit(0.3), sps.logit(0.8), alpha=0.5,
                                          from_logits=True)),
      -2 * np.log(np.sqrt(0.3 * 0.8) + np.sqrt(0.7 * 0.2)), rtol=1e-12)


# ------------------------------------------------------------------ Normal beyond KL


def test_normal_bhattacharyya_hellinger_jeffreys_w2(x64):
  (mp, sp), (mq, sq) = (0.3, 1.5), (-1.0, 0.7)
  lp, lq = stats.norm(mp, sp).logpdf, stats.norm(mq, sq).logpdf
  bc = _quad(lambda x: np.exp(0.5 * (lp(x) + lq(x))), -np.inf, np.inf)
  np.testing.assert_allclose(float(jp.normal_bhattacharyya_distance(mp, sp, mq, sq)),
                             -np.log(bc), rtol=1e-9)
  np.testing.assert_allclose(float(jp.normal_hellinger_distance(mp, sp, mq, sq)),
                             np.sqrt(1 - bc), rtol=1e-9)
  j = _kl_reference("normal", (mp, sp), (mq, sq)) + _kl_reference("normal", (mq, sq), (mp, sp))
  np.testing.assert_allclose(float(jp.normal_jeffreys_divergence(mp, sp, mq, sq)), j, rtol=1e-9)
  # W2 between 1-D laws is the L2 distance of the quantile functions.
  w2 = _quad(lambda t: (stats.norm(mp, sp).ppf(t) - stats.norm(mq, sq).ppf(t)) ** 2, 0, 1)
  np.testing.assert_allclose(float(jp.normal_wasserstein_distance(mp, sp, mq, sq)), np.sqrt(w2),
                             rtol=1e-7)


def test_log_variance_forms_agree(x64):
  m, s, mq, sq = 0.3, 1.5, -1.0, 0.7
  np.testing.assert_allclose(
      float(jp.normal_kl_divergence_from_log_variance(m, 2 * np.log(s), mq, 2 * np.log(sq))),
      float(jp.normal_kl_divergence(m, s, mq, sq)), rtol=1e-13)
  np.testing.assert_allclose(float(jp.normal_vae_kl(m, 2 * np.log(s))),
                             float(jp.normal_kl_divergence(m, s, 0.0, 1.0)), rtol=1e-13)


@pytest.mark.parametrize("sp,sq", [(1e-6, 1e-6), (1e-6, 1e6), (1e6, 1e-6), (1e6, 1.0000001e6),
                                   (1.0, 1.0 + 1e-6)])
def test_normal_stable_across_scales_in_float32(sp, sq):
  got = jp.normal_kl_divergence(jnp.float32(0.0), jnp.float32(sp), jnp.float32(0.0),
                                jnp.float32(sq))
  r = np.float64(np.float32(sp)) / np.float64(np.float32(sq))
  want = 0.5 * (r * r - 1 - 2 * np.log(r)) if abs(r - 1) > 1e-3 else (r - 1) ** 2
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(float(got), want, rtol=1e-4, atol=1e-12)
  v = jp.normal_vae_kl(jnp.float32(0.0), jnp.float32(2 * np.log(sp)))
  np.testing.assert_allclose(float(v), 0.5 * (sp * sp - 1 - 2 * np.log(sp)), rtol=1e-5)


def test_renyi_continuous_in_alpha_near_one(x64):
  a = jnp.array([1 - 1e-6, 1.0, 1 + 1e-6])
  d = jp.normal_renyi_divergence(0.3, 1.5, -1.0, 0.7, alpha=a)
  np.testing.assert_allclose(np.asarray(d), float(d[1]), rtol=1e-5)
  g = jax.grad(lambda al: jp.normal_renyi_divergence(0.3, 1.5, -1.0, 0.7, alpha=al))(1.0)
  assert np.isfinite(g)


# ------------------------------------------------------------------ gradients and transforms

GRAD_CASES = [
    (jp.normal_entropy, (0.3, 1.5)),
    (jp.normal_kl_divergence, (0.3, 1.5, -1.0, 0.7)),
    (jp.normal_kl_divergence_from_log_variance, (0.3, 0.5, -1.0, -0.7)),
    (jp.normal_vae_kl, (0.3, 0.5)),
    (lambda *a: jp.normal_renyi_divergence(*a[:4], alpha=a[4]), (0.3, 1.5, -1.0, 0.7, 0.6)),
    (jp.normal_bhattacharyya_distance, (0.3, 1.5, -1.0, 0.7)),
    (jp.normal_hellinger_distance, (0.3, 1.5, -1.0, 0.7)),
    (jp.normal_jeffreys_divergence, (0.3, 1.5, -1.0, 0.7)),
    (jp.normal_wasserstein_distance, (0.3, 1.5, -1.0, 0.7)),
    (jp.laplace_entropy, (0.3, 1.5)),
    (jp.laplace_kl_divergence, (0.3, 1.5, -1.0, 0.7)),
    (jp.gumbel_entropy, (0.3, 1.5)),
    (jp.gumbel_kl_divergence, (0.3, 1.5, -1.0, 0.7)),
    (jp.log_normal_entropy, (0.3, 1.5)),
    (jp.log_normal_kl_divergence, (0.3, 1.5, -1.0, 0.7)),
    (jp.uniform_entropy, (0.3, 1.5)),
    (jp.uniform_kl_divergence, (0.3, 1.5, -1.0, 2.7)),
    (jp.von_mises_entropy, (0.3, 1.5)),
    (jp.von_mises_kl_divergence, (0.3, 1.5, -1.0, 0.7)),
    (jp.gamma_entropy, (2.5, 1.5)),
    (jp.gamma_kl_divergence, (2.5, 1.5, 1.2, 0.7)),
    (lambda *a: jp.gamma_renyi_divergence(*a[:4], alpha=a[4]), (2.5, 1.5, 1.2, 0.7, 1.4)),
    (jp.exponential_entropy, (1.5,)),
    (jp.exponential_kl_divergence, (1.5, 0.4)),
    (lambda *a: jp.exponential_renyi_divergence(*a[:2], alpha=a[2]), (1.5, 0.4, 0.7)),
    (jp.beta_entropy, (2.5, 1.5)),
    (jp.beta_kl_divergence, (2.5, 1.5, 1.2, 3.7)),
    (lambda *a: jp.beta_renyi_divergence(*a[:4], alpha=a[4]), (2.5, 1.5, 1.2, 3.7, 0.5)),
    (jp.poisson_entropy, (3.0,)),
    (jp.poisson_entropy, (70.0,)),
    (jp.poisson_kl_divergence, (3.0, 1.2)),
    (lambda *a: jp.poisson_renyi_divergence(*a[:2], alpha=a[2]), (3.0, 1.2, 0.5)),
    (jp.bernoulli_entropy, (0.3,)),
    (jp.bernoulli_kl_divergence, (0.3, 0.6)),
    (lambda *a: jp.bernoulli_renyi_divergence(*a[:2], alpha=2.0), (0.3, 0.6)),
    (jp.dirichlet_entropy, (np.array([1.5, 2.0, 3.5]),)),
    (jp.dirichlet_kl_divergence, (np.array([1.5, 2.0, 3.5]), np.array([2.5, 1.2, 2.0]))),
    (lambda a, b: jp.dirichlet_renyi_divergence(a, b, alpha=0.4),
     (np.array([1.5, 2.0, 3.5]), np.array([2.5, 1.2, 2.0]))),
    (jp.categorical_entropy, (np.array([0.2, 0.3, 0.5]),)),
    (jp.categorical_kl_divergence, (np.array([0.2, 0.3, 0.5]), np.array([0.4, 0.4, 0.2]))),
    (lambda a, b: jp.categorical_renyi_divergence(a, b, alpha=0.4),
     (np.array([0.2, 0.3, 0.5]), np.array([0.4, 0.4, 0.2]))),
]


# Fast tier: each family's KL or Rényi divergence (the most involved of its closed forms) but
# Gamma's, Beta's and Dirichlet's (6-8 s each), the other Normal parametrisations, the Hellinger
# distance (a square root at 0), and both branches of the Poisson entropy (3 and 70); the other
# entropies and divergences in the slow tier.
_FAST_GRADS = (2, 3, 4, 6, 10, 12, 14, 16, 18, 24, 28, 29, 31, 34, 40)


@tiered("fn,args", GRAD_CASES, fast=[GRAD_CASES[i] for i in _FAST_GRADS],
        ids=lambda x: getattr(x, "__name__", None))
def test_gradients(fn, args, x64):
  args = tuple(jnp.asarray(a, jnp.float64) for a in args)
  check_grads(fn, args, order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("fn", [jp.normal_hellinger_distance, jp.normal_wasserstein_distance,
                                jp.normal_kl_divergence, jp.laplace_kl_divergence])
def test_gradient_finite_at_p_equals_q(fn):
  g = jax.grad(fn, argnums=(0, 1, 2, 3))(0.5, 1.2, 0.5, 1.2)
  assert np.all(np.isfinite(g)), g


@pytest.mark.slow  # the fast tier runs no case of this test; it costs 7 s
def test_broadcast_vmap_jit(x64):
  rng = np.random.default_rng(0)
  loc, scale = rng.normal(size=(4, 1)), rng.uniform(0.5, 2, size=(1, 3))
  batched = jp.gamma_kl_divergence(scale, 1.0 + loc**2, 2.0, scale)
  assert batched.shape == (4, 3)
  looped = np.array([[float(jp.gamma_kl_divergence(scale[0, j], 1 + loc[i, 0] ** 2, 2.0,
                                                   scale[0, j])) for j in range(3)]
                     for i in range(4)])
  np.testing.assert_allclose(np.asarray(batched), looped, rtol=1e-12)
  vm = jax.vmap(jp.normal_kl_divergence, in_axes=(0, None, None, 0))(loc[:, 0], 1.0, 0.0,
                                                                    scale[0, :1].repeat(4))
  np.testing.assert_allclose(np.asarray(vm), np.asarray(
      jp.normal_kl_divergence(loc[:, 0], 1.0, 0.0, scale[0, 0])), rtol=1e-12)
  np.testing.assert_allclose(np.asarray(jax.jit(jp.beta_kl_divergence)(2.0, 3.0, scale, 1.0)),
                             np.asarray(jp.beta_kl_divergence(2.0, 3.0, scale, 1.0)), rtol=1e-12)


def test_base_and_dtype():
  nats = jp.gamma_kl_divergence(2.0, 1.0, 2.0, 2.0)
  bits = jp.gamma_kl_divergence(2.0, 1.0, 2.0, 2.0, base=2)
  np.testing.assert_allclose(float(bits), float(nats) / math.log(2), rtol=1e-6)
  assert jp.normal_kl_divergence(jnp.bfloat16(0), jnp.bfloat16(1), 0.0, 2.0).dtype == jnp.bfloat16


# ------------------------------------------------------------------ invalid parameters


def test_invalid_parameters_give_nan():
  assert np.isnan(float(jp.normal_kl_divergence(0.0, -1.0, 0.0, 1.0)))
  assert np.isnan(float(jp.gamma_entropy(-1.0, 1.0)))
  assert np.isnan(float(jp.beta_kl_divergence(1.0, 0.0, 1.0, 1.0)))
  assert np.isnan(float(jp.uniform_entropy(1.0, 0.0)))
  assert np.isnan(float(jp.poisson_kl_divergence(-1.0, 1.0)))
  assert np.isnan(float(jp.dirichlet_entropy(jnp.array([1.0, -1.0]))))
  assert np.isnan(float(jp.von_mises_entropy(0.0, -1.0)))
  # The NaN stays where it belongs in a batch; valid entries keep finite gradients.
  g = jax.grad(lambda s: jnp.nansum(jp.normal_entropy(0.0, s)))(jnp.array([1.0, -1.0]))
  assert np.isfinite(g[0])


def test_trace_time_errors():
  with pytest.raises(ValueError, match="loc_p.*scale_p"):
    jp.normal_kl_divergence(jnp.zeros(3), jnp.ones(4), 0.0, 1.0)
  with pytest.raises(ValueError, match="alpha"):
    jp.normal_renyi_divergence(0.0, 1.0, 0.0, 1.0, alpha=-0.5)
  with pytest.raises(TypeError, match="rate"):
    jp.exponential_entropy(jnp.arange(3))
  with pytest.raises(ValueError, match="categories"):
    jp.dirichlet_kl_divergence(jnp.ones(3), jnp.ones(4))


def test_checkify_reports_the_argument():
  fn = checkify.checkify(jaxdiv.checks.checked(jp.normal_kl_divergence))
  err, _ = jax.jit(fn)(0.0, -1.0, 0.0, 1.0)
  with pytest.raises(checkify.JaxRuntimeError, match="scale_p"):
    err.throw()
  err, value = jax.jit(fn)(0.0, 1.0, 0.0, 2.0)
  err.throw()
  assert np.isfinite(value)
  err, _ = checkify.checkify(jaxdiv.checks.checked(jp.uniform_kl_divergence))(1.0, 0.0, 0.0, 2.0)
  with pytest.raises(checkify.JaxRuntimeError, match="high_p"):
    err.throw()
  err, _ = checkify.checkify(jaxdiv.checks.checked(jp.bernoulli_entropy))(1.5)
  with pytest.raises(checkify.JaxRuntimeError, match="probs"):
    err.throw()


def test_categorical_wrappers_are_the_core_functions():
  p = jnp.array([0.2, 0.8])
  assert float(jp.categorical_entropy(p)) == float(jaxdiv.entropy(p))
