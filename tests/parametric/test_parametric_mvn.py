"""Multivariate Normal closed forms: float64 numpy formulas, 2-D integration, three forms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from _helpers import tiered
from jax.experimental import checkify
from jax.test_util import check_grads
from scipy import integrate
from scipy import stats

import jaxdiv
import jaxdiv.parametric as jp


def _spd(rng, d, cond=10.0):
  q, _ = np.linalg.qr(rng.normal(size=(d, d)))
  return q @ np.diag(np.geomspace(1, cond, d)) @ q.T * 0.5


def _params(d=3, seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=d), _spd(rng, d), rng.normal(size=d), _spd(rng, d, 30.0)


def _np_kl(m1, s1, m2, s2):
  i2 = np.linalg.inv(s2)
  d = m2 - m1
  return 0.5 * (np.trace(i2 @ s1) + d @ i2 @ d - len(m1)
                + np.linalg.slogdet(s2)[1] - np.linalg.slogdet(s1)[1])


def _np_renyi(m1, s1, m2, s2, a):
  sa = a * s2 + (1 - a) * s1
  if np.linalg.eigvalsh(sa)[0] <= 0:  # p^a q^(1-a) is not integrable
    return np.inf
  d = m1 - m2
  return (0.5 * a * d @ np.linalg.inv(sa) @ d
          - (np.linalg.slogdet(sa)[1] - (1 - a) * np.linalg.slogdet(s1)[1]
             - a * np.linalg.slogdet(s2)[1]) / (2 * (a - 1)))


def _forms(cov):
  """The same covariance in the three parameterisations."""
  return {"full": cov, "cholesky": np.linalg.cholesky(cov)}


def test_entropy_and_kl_against_numpy(x64):
  m1, s1, m2, s2 = _params()
  for form, (c1, c2) in {k: (v, _forms(s2)[k]) for k, v in _forms(s1).items()}.items():
    np.testing.assert_allclose(float(jp.mvn_entropy(m1, c1, covariance=form)),
                               stats.multivariate_normal(m1, s1).entropy(), rtol=1e-12)
    np.testing.assert_allclose(float(jp.mvn_kl_divergence(m1, c1, m2, c2, covariance=form)),
                               _np_kl(m1, s1, m2, s2), rtol=1e-11)
    for a in (0.0, 0.3, 0.5, 1.1, 1.5):
      np.testing.assert_allclose(
          float(jp.mvn_renyi_divergence(m1, c1, m2, c2, alpha=a, covariance=form)),
          _np_renyi(m1, s1, m2, s2, a) if a else 0.0, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        float(jp.mvn_renyi_divergence(m1, c1, m2, c2, alpha=1.0, covariance=form)),
        _np_kl(m1, s1, m2, s2), rtol=1e-11)


@pytest.mark.slow  # 7 s; fast: test_entropy_and_kl_against_numpy (closed-form references)
def test_kl_and_bhattacharyya_by_2d_integration(x64):
  m1, s1, m2, s2 = _params(d=2, seed=1)
  p, q = stats.multivariate_normal(m1, s1), stats.multivariate_normal(m2, s2)
  lim = 25.0

  def kl(y, x):
    lp = p.logpdf([x, y])
    return np.exp(lp) * (lp - q.logpdf([x, y]))

  def bc(y, x):
    return np.exp(0.5 * (p.logpdf([x, y]) + q.logpdf([x, y])))

  want = integrate.dblquad(kl, -lim, lim, -lim, lim, epsabs=1e-10)[0]
  np.testing.assert_allclose(float(jp.mvn_kl_divergence(m1, s1, m2, s2)), want, rtol=1e-6)
  want_bc = integrate.dblquad(bc, -lim, lim, -lim, lim, epsabs=1e-12)[0]
  np.testing.assert_allclose(float(jp.mvn_bhattacharyya_distance(m1, s1, m2, s2)),
                             -np.log(want_bc), rtol=1e-6)
  np.testing.assert_allclose(float(jp.mvn_hellinger_distance(m1, s1, m2, s2)),
                             np.sqrt(1 - want_bc), rtol=1e-6)


def test_wasserstein_against_sqrtm(x64):
  m1, s1, m2, s2 = _params()
  r2 = scipy.linalg.sqrtm(s2)
  cross = np.real(scipy.linalg.sqrtm(r2 @ s1 @ r2))
  want = np.sqrt(np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * cross))
  for form, c1 in _forms(s1).items():
    got = jp.mvn_wasserstein_distance(m1, c1, m2, _forms(s2)[form], covariance=form)
    np.testing.assert_allclose(float(got), want, rtol=1e-9)
  np.testing.assert_allclose(float(jp.mvn_jeffreys_divergence(m1, s1, m2, s2)),
                             _np_kl(m1, s1, m2, s2) + _np_kl(m2, s2, m1, s1), rtol=1e-11)


def test_diag_form_is_a_product_of_normals(x64):
  rng = np.random.default_rng(3)
  m1, m2 = rng.normal(size=4), rng.normal(size=4)
  v1, v2 = rng.uniform(0.3, 2, 4), rng.uniform(0.3, 2, 4)
  s1, s2 = np.sqrt(v1), np.sqrt(v2)
  for mvn_fn, normal_fn in ((jp.mvn_kl_divergence, jp.normal_kl_divergence),
                            (jp.mvn_jeffreys_divergence, jp.normal_jeffreys_divergence),
                            (jp.mvn_bhattacharyya_distance, jp.normal_bhattacharyya_distance)):
    want = float(jnp.sum(normal_fn(m1, s1, m2, s2)))
    np.testing.assert_allclose(float(mvn_fn(m1, v1, m2, v2, covariance="diag")), want, rtol=1e-12)
    np.testing.assert_allclose(float(mvn_fn(m1, np.diag(v1), m2, np.diag(v2))), want, rtol=1e-12)
  for a in (0.4, 1.0, 2.0):
    want = float(jnp.sum(jp.normal_renyi_divergence(m1, s1, m2, s2, alpha=a)))
    np.testing.assert_allclose(
        float(jp.mvn_renyi_divergence(m1, v1, m2, v2, alpha=a, covariance="diag")), want,
        rtol=1e-11)
  w = jp.mvn_wasserstein_distance(m1, v1, m2, v2, covariance="diag")
  np.testing.assert_allclose(float(w), np.sqrt(np.sum((m1 - m2) ** 2 + (s1 - s2) ** 2)),
                             rtol=1e-12)
  np.testing.assert_allclose(float(jp.mvn_entropy(m1, v1, covariance="diag")),
                             float(jnp.sum(jp.normal_entropy(m1, s1))), rtol=1e-12)


def test_renyi_is_inf_when_sigma_alpha_not_positive_definite():
  d = jp.mvn_renyi_divergence(jnp.zeros(2), 4 * jnp.eye(2), jnp.zeros(2), jnp.eye(2), alpha=2.0)
  assert float(d) == np.inf


def test_near_singular_covariance():
  # Condition numbers 1e5 in float32 and 1e9 in float64 both factor and agree.
  rng = np.random.default_rng(4)
  q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
  for dtype, cond, rtol in ((np.float32, 1e5, 2e-3), (np.float64, 1e9, 1e-5)):
    s1 = q @ np.diag(np.geomspace(1 / cond, 1, 4)) @ q.T
    s2 = q @ np.diag(np.geomspace(2 / cond, 1.5, 4)) @ q.T
    # Shared eigenvectors: the exact KL is a sum over the eigenvalues.
    l1, l2 = np.geomspace(1 / cond, 1, 4), np.geomspace(2 / cond, 1.5, 4)
    z = q.T @ np.full(4, 1e-3)
    want = 0.5 * np.sum(l1 / l2 - 1 - np.log(l1 / l2) + z * z / l2)
    with jax.enable_x64(dtype == np.float64):
      got = jp.mvn_kl_divergence(jnp.zeros(4, dtype), jnp.asarray(s1, dtype),
                                 jnp.full(4, 1e-3, dtype), jnp.asarray(s2, dtype))
      np.testing.assert_allclose(float(got), want, rtol=rtol)


# Fast tier: each function and each form once (a covering set); the rest slow.
@tiered("name,form", [(n, f) for n in ("entropy", "kl_divergence", "renyi_divergence",
                                        "bhattacharyya_distance", "hellinger_distance",
                                        "jeffreys_divergence", "wasserstein_distance")
                      for f in ("full", "cholesky", "diag")])
def test_gradients(name, form, x64):
  m1, s1, m2, s2 = _params()
  if form == "cholesky":
    s1, s2 = np.linalg.cholesky(s1), np.linalg.cholesky(s2)
  elif form == "diag":
    s1, s2 = np.diag(s1), np.diag(s2)
  fn = getattr(jp, f"mvn_{name}")
  kw = {"covariance": form, **({"alpha": 0.7} if name == "renyi_divergence" else {})}
  if name == "entropy":
    args, f = (m1, s1), lambda m, s: fn(m, s, **kw)
  else:
    args, f = (m1, s1, m2, s2), lambda *a: fn(*a, **kw)
  # Symmetric perturbations of a full covariance: differentiate through (S + Sᵀ)/2.
  if form == "full":
    sym = lambda s: (s + s.T) / 2
    g = f
    f = (lambda m, s: g(m, sym(s))) if name == "entropy" else (
        lambda a, b, c, e: g(a, sym(b), c, sym(e)))
  # Jitted: one compilation of the function and of its VJP instead of op-by-op dispatch.
  check_grads(jax.jit(f), tuple(jnp.asarray(a) for a in args), order=1, modes=("rev",),
              atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("fn", [jp.mvn_hellinger_distance, jp.mvn_wasserstein_distance,
                                jp.mvn_kl_divergence])
def test_gradient_finite_at_p_equals_q_with_repeated_eigenvalues(fn):
  g = jax.jit(jax.grad(fn, argnums=(0, 1, 2, 3)))(jnp.zeros(3), jnp.eye(3), jnp.zeros(3),
                                                  jnp.eye(3))
  assert all(np.all(np.isfinite(x)) for x in g), g


def test_batching_vmap_jit():
  rng = np.random.default_rng(5)
  m = rng.normal(size=(5, 3)).astype(np.float32)
  s = np.stack([_spd(rng, 3) for _ in range(5)]).astype(np.float32)
  batched = jp.mvn_kl_divergence(m, s, jnp.zeros(3), jnp.eye(3))
  assert batched.shape == (5,)
  vm = jax.vmap(lambda a, b: jp.mvn_kl_divergence(a, b, jnp.zeros(3), jnp.eye(3)))(m, s)
  np.testing.assert_allclose(np.asarray(vm), np.asarray(batched), rtol=1e-5)
  jt = jax.jit(jp.mvn_kl_divergence, static_argnames="covariance")(m, s, m[0], s[0])
  assert jt.shape == (5,)


def test_invalid_inputs():
  assert np.isnan(float(jp.mvn_kl_divergence(jnp.zeros(2), -jnp.eye(2), jnp.zeros(2),
                                             jnp.eye(2))))
  with pytest.raises(ValueError, match="event dimensions"):
    jp.mvn_kl_divergence(jnp.zeros(2), jnp.eye(3), jnp.zeros(3), jnp.eye(3))
  with pytest.raises(ValueError, match="square"):
    jp.mvn_entropy(jnp.zeros(2), jnp.ones((2, 3)))
  with pytest.raises(ValueError, match="covariance"):
    jp.mvn_entropy(jnp.zeros(2), jnp.eye(2), covariance="tril")
  err, _ = checkify.checkify(jaxdiv.checks.checked(jp.mvn_kl_divergence))(
      jnp.zeros(2), jnp.array([[1.0, 2.0], [2.0, 1.0]]), jnp.zeros(2), jnp.eye(2))
  with pytest.raises(checkify.JaxRuntimeError, match="cov_p.*positive definite"):
    err.throw()
