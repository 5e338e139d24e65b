"""The MVN Rényi divergence across its order, near 1 above all, against 40-digit mpmath.

The reference is the textbook form, ``alpha/2 dᵀ Σ_alpha⁻¹ d - log(|Σ_alpha| / (|Σ_p|^(1-alpha)
|Σ_q|^alpha)) / (2 (alpha - 1))`` with mpmath determinants and ``lu_solve`` at 40 digits (the
division by ``alpha - 1 = 1e-8`` costs 8 of them), evaluated on the exact values of the inputs
as they reach jaxdiv (rounded to the dtype under test). Before the log-determinant ratio was
written as a sum of per-eigenvalue terms that vanish smoothly, float32 lost ``1e-7 d / |alpha -
1|`` absolutely near 1 (``alpha = 1 + 1e-6`` was wrong in the first digit).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest
from _helpers import tiered

import jaxdiv.parametric as jp

NEAR = [1 - 1e-2, 1 - 1e-4, 1 - 1e-6, 1 - 1e-8, 1.0, 1 + 1e-8, 1 + 1e-6, 1 + 1e-4, 1 + 1e-2]
FAR = [0.0, 0.3, 1.5, 4.0]
FORMS = ("full", "cholesky", "diag")


def _spd(rng, d, lo, hi):
  q, _ = np.linalg.qr(rng.normal(size=(d, d)))
  return q @ np.diag(np.geomspace(lo, hi, d)) @ q.T


def _cases():
  rng = np.random.default_rng(0)
  out = {"d1": (np.array([0.3]), np.array([[1.7]]), np.array([-0.4]), np.array([[0.6]]))}
  m1, s1, m2, s2 = rng.normal(size=3), _spd(rng, 3, 0.5, 2.0), rng.normal(size=3), _spd(
      rng, 3, 0.3, 3.0)
  out["d3"] = (m1, s1, m2, s2)  # alpha = 4 is +inf here
  # KL 2e-6: the terms are all small, where a divided difference cancels the most.
  out["d3_close"] = (m1, s1, m1 + 1e-3, s1 * 1.001 + 1e-4 * np.eye(3))
  # Condition number 1e6, q a small perturbation of p.
  s1 = _spd(rng, 3, 1e-6, 1.0)
  e = 1e-3 * rng.normal(size=(3, 3))
  out["d3_singular"] = (1e-3 * rng.normal(size=3), s1, 1e-3 * rng.normal(size=3),
                        s1 + e @ e.T + 1e-7 * np.eye(3))
  return out


CASES = _cases()


def _inputs(case, form, dtype):
  """The four arguments in ``dtype`` for ``form``, and the covariances they mean (float64)."""
  m1, s1, m2, s2 = CASES[case]
  if form == "diag":
    c1, c2 = np.diag(s1), np.diag(s2)
  elif form == "cholesky":
    c1, c2 = np.linalg.cholesky(s1), np.linalg.cholesky(s2)
  else:
    c1, c2 = s1, s2
  m1, c1, m2, c2 = (np.asarray(v, dtype).astype(np.float64) for v in (m1, c1, m2, c2))
  if form == "diag":
    cov = np.diag(c1), np.diag(c2)
  elif form == "cholesky":
    cov = c1 @ c1.T, c2 @ c2.T  # exact in float64 for float32 factors; close enough otherwise
  else:
    cov = (c1 + c1.T) / 2, (c2 + c2.T) / 2
  return (m1, c1, m2, c2), (m1, cov[0], m2, cov[1])


@functools.cache
def _mp_renyi(case, form, dtype, alpha):
  """The textbook form at 40 digits; the KL at alpha = 1, +inf where Σ_alpha is not PD."""
  _, (m1, s1, m2, s2) = _inputs(case, form, dtype)
  with mp.workdps(40):
    mat = lambda x: mp.matrix([[mp.mpf(float(v)) for v in row] for row in x])
    s1, s2 = mat(s1), mat(s2)
    d = mp.matrix([mp.mpf(float(v)) for v in m1 - m2])
    a = mp.mpf(alpha)
    n = s1.rows
    if a == 1:
      tr = sum((mp.lu_solve(s2, s1[:, j]))[j] for j in range(n))
      quad = (d.T * mp.lu_solve(s2, d))[0]
      return float((tr + quad - n + mp.log(mp.det(s2) / mp.det(s1))) / 2)
    sa = a * s2 + (1 - a) * s1
    if min(mp.eigsy(sa)[0]) <= 0:
      return np.inf
    quad = (d.T * mp.lu_solve(sa, d))[0]
    log_ratio = mp.log(mp.det(sa)) - (1 - a) * mp.log(mp.det(s1)) - a * mp.log(mp.det(s2))
    return float(a / 2 * quad - log_ratio / (2 * (a - 1)))


def _tolerance(case, form, dtype):
  """``(rtol, atol)``. float32: 1e-5 relative, plus 10 eps sqrt(KL) absolute.

  Rounding the eigenvalues ``r_i`` of ``Σ_q⁻¹ Σ_p`` (the Cholesky factors and the triangular
  solve, relative error ``~eps``) moves ``D`` by ``Σ_i |r_i - 1| eps``, i.e. ``~eps sqrt(KL)``
  when ``p`` and ``q`` are close: the KL of 2e-6 of ``d3_close`` is then known to ``1e-4``
  relative from its float32 inputs, at any order. The same holds, independent of the order, in
  float64 (``2.6e-13`` relative there).
  """
  if dtype == "float64":
    return 1e-10, 0.0
  return 1e-5, 10 * float(np.finfo(np.float32).eps) * np.sqrt(_mp_renyi(case, form, dtype, 1.0))


def _params():
  for case in CASES:
    for form in FORMS:
      for dtype in ("float32", "float64"):
        # Factoring a covariance of condition number 1e6 in float32 is at the limit the module
        # docstring states (the small eigenvalues lose all their digits); its Cholesky factor
        # is given exactly in the "cholesky" form, which is tested instead.
        if not (case == "d3_singular" and form == "full" and dtype == "float32"):
          yield case, form, dtype


# Fast tier: each form and each dtype in some case; the rest (d1 too: 5 s) slow.
@tiered("case,form,dtype", list(_params()),
        fast=[("d3", "cholesky", "float64"), ("d3_close", "diag", "float32"),
              ("d3_singular", "full", "float64")])
def test_renyi_against_mpmath_near_and_far_from_one(case, form, dtype):
  with jax.enable_x64(dtype == "float64"):
    args, _ = _inputs(case, form, dtype)
    args = [jnp.asarray(v, dtype) for v in args]
    alphas = NEAR + FAR
    # One call with an array alpha: batch broadcasting of the order is kept.
    got = np.asarray(jp.mvn_renyi_divergence(*args, alpha=jnp.asarray(alphas, dtype),
                                             covariance=form), np.float64)
    one = float(jp.mvn_renyi_divergence(*args, alpha=1.0, covariance=form))  # concrete 1: KL
  want = np.array([_mp_renyi(case, form, dtype, a) for a in alphas])
  rtol, atol = _tolerance(case, form, dtype)
  assert got.shape == want.shape
  np.testing.assert_array_equal(np.isinf(got), np.isinf(want), err_msg=f"alphas {alphas}")
  fin = np.isfinite(want)
  np.testing.assert_allclose(got[fin], want[fin], rtol=rtol, atol=atol,
                             err_msg=f"alphas {np.asarray(alphas)[fin]}")
  np.testing.assert_allclose(one, _mp_renyi(case, form, dtype, 1.0), rtol=rtol, atol=atol)
  if case == "d3":
    assert np.isinf(want[alphas.index(4.0)])  # the +inf branch is exercised


@tiered("form,dtype", [(f, d) for f in FORMS for d in ("float32", "float64")])
def test_renyi_derivative_in_alpha_against_mpmath(form, dtype):
  """d/dalpha at and around 1 against mpmath's derivative of the 40-digit reference."""
  case = "d3"
  with jax.enable_x64(dtype == "float64"):
    args, _ = _inputs(case, form, dtype)
    args = [jnp.asarray(v, dtype) for v in args]
    grad = jax.jit(jax.vmap(jax.grad(
        lambda a: jp.mvn_renyi_divergence(*args, alpha=a, covariance=form))))
    alphas = [0.5, 1 - 1e-4, 1 - 1e-6, 1.0, 1 + 1e-6, 1 + 1e-4, 1.1]
    got = np.asarray(grad(jnp.asarray(alphas, dtype)), np.float64)
  _, (m1, s1, m2, s2) = _inputs(case, form, dtype)

  def mp_d(a):
    # The textbook form in alpha, differentiated by mpmath at 40 digits (at 1 the two-sided
    # difference straddles the removable singularity, which the step of 1e-12 keeps exact).
    with mp.workdps(40):
      mat = lambda x: mp.matrix([[mp.mpf(float(v)) for v in row] for row in x])
      p, q = mat(s1), mat(s2)
      d = mp.matrix([mp.mpf(float(v)) for v in m1 - m2])
      ld1, ld2 = mp.log(mp.det(p)), mp.log(mp.det(q))

      def f(al):
        sa = al * q + (1 - al) * p
        return (al / 2 * (d.T * mp.lu_solve(sa, d))[0]
                - (mp.log(mp.det(sa)) - (1 - al) * ld1 - al * ld2) / (2 * (al - 1)))
      h = mp.mpf("1e-12")
      a = mp.mpf(a) + (h / 3 if a == 1 else 0)  # never evaluate f at exactly 1
      return float((f(a + h) - f(a - h)) / (2 * h))

  want = np.array([mp_d(a) for a in alphas])
  rtol = 1e-9 if dtype == "float64" else 2e-5
  np.testing.assert_allclose(got, want, rtol=rtol, err_msg=f"alphas {alphas}")


@pytest.mark.slow  # 11 s; fast: test_gaussian_renyi_infinite_is_inf_with_nan_free_gradient
def test_renyi_infinite_with_finite_gradients_all_forms(x64):
  """Σ_alpha not positive definite: +inf, gradients in alpha and every parameter not NaN."""
  m1, m2 = jnp.zeros(2), jnp.ones(2)
  s1, s2 = jnp.array([[4.0, 0.5], [0.5, 1.0]]), jnp.eye(2)
  for form, (c1, c2) in {"full": (s1, s2), "cholesky": (jnp.linalg.cholesky(s1), s2),
                         "diag": (jnp.diag(s1), jnp.diag(s2))}.items():
    f = lambda *a, form=form: jp.mvn_renyi_divergence(*a[1:], alpha=a[0], covariance=form)

    # A batch mixing finite and infinite orders keeps the finite entries' gradients.
    def finite_sum(a, c1, c2, form=form):
      v = jp.mvn_renyi_divergence(m1, c1, m2, c2, alpha=a, covariance=form)
      return jnp.sum(jnp.where(jnp.isfinite(v), v, 0.0))

    # One jitted function per form (alpha = 3 stays a concrete value where it was one): one
    # compilation instead of op-by-op dispatch of three eager calls.
    value, grads, g = jax.jit(lambda c1, c2, f=f, finite_sum=finite_sum: (
        f(3.0, m1, c1, m2, c2), jax.grad(f, argnums=(0, 1, 2, 3, 4))(3.0, m1, c1, m2, c2),
        jax.grad(finite_sum)(jnp.array([0.5, 3.0]), c1, c2)))(c1, c2)
    assert float(value) == np.inf, form
    assert not any(np.any(np.isnan(np.asarray(g))) for g in grads), (form, grads)
    assert np.isfinite(np.asarray(g)).all() and float(g[1]) == 0.0, (form, g)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("alpha", [0.3, 0.5, 0.9])
def test_renyi_float32_covariances_beyond_float32_range_of_their_ratio(form, alpha):
  """Cholesky factors near 1e10 against 1e-10 (variance ratio 1e40, past float32's 3.4e38):
  whitened, A Aᵀ overflowed and the form was +inf although it is finite (39 at alpha 0.3).
  Against the 40-digit textbook form on the same float32 inputs."""
  m1, m2 = np.array([0.3, -0.2], np.float32), np.array([-0.5, 0.4], np.float32)
  l1 = np.array([[1e10, 0.0], [2e9, 1e10]], np.float32)
  l2 = np.array([[1e-10, 0.0], [3e-11, 1e-10]], np.float32)
  if form == "diag":
    c1, c2 = np.diag(l1) ** 2, np.diag(l2) ** 2
  elif form == "cholesky":
    c1, c2 = l1, l2
  else:
    c1, c2 = l1 @ l1.T, l2 @ l2.T
  got = float(jp.mvn_renyi_divergence(*map(jnp.asarray, (m1, c1, m2, c2)), alpha=alpha,
                                      covariance=form))
  with mp.workdps(40):
    mat = lambda x: mp.matrix([[mp.mpf(float(v)) for v in row] for row in x])
    if form == "diag":
      s1, s2 = mp.diag([mp.mpf(float(v)) for v in c1]), mp.diag([mp.mpf(float(v)) for v in c2])
    elif form == "cholesky":
      s1, s2 = mat(c1) * mat(c1).T, mat(c2) * mat(c2).T
    else:
      s1, s2 = mat((c1 + c1.T) / 2), mat((c2 + c2.T) / 2)
    d = mp.matrix([mp.mpf(float(v)) for v in m1 - m2])
    a = mp.mpf(alpha)
    sa = a * s2 + (1 - a) * s1
    log_ratio = mp.log(mp.det(sa)) - (1 - a) * mp.log(mp.det(s1)) - a * mp.log(mp.det(s2))
    want = float(a / 2 * (d.T * mp.lu_solve(sa, d))[0] - log_ratio / (2 * (a - 1)))
  np.testing.assert_allclose(got, want, rtol=1e-5)
