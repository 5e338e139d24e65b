"""The closed forms against TensorFlow Probability's JAX substrate, where TFP registers them.

Optional: TFP is not a test dependency (``pip install -e .[tfp]``; the 0.25 release does not
import with JAX 0.10, the pinned nightly does), so the module is skipped without it. Both sides
are closed forms in float64 (rtol 1e-10). Parameters span scales from 1e-3 to 1e3 and include
near-degenerate ones (scales 1e-3, concentrations 1e-3, probabilities 1e-6 from an edge); pairs
whose KL is a small difference of large terms are left to the 40-digit mpmath tests in
``test_parametric_independent.py``: there the textbook form that TFP evaluates loses digits, not
the one under test.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiv.parametric as jp

tfp = pytest.importorskip("tensorflow_probability.substrates.jax")
tfd = tfp.distributions

SCALE = [1e-3, 0.37, 1.0, 5.5, 1e3]
CONC = [1e-3, 0.2, 1.0, 7.5, 1e3]
PROB = [1e-6, 0.1, 0.5, 0.9, 1 - 1e-6]
LOC = [-2.0, 0.3]

# name -> (jaxdiv entropy, jaxdiv KL, TFP distribution, parameter grid of one distribution).
FAMILIES = {
    "normal": (jp.normal_entropy, jp.normal_kl_divergence, tfd.Normal,
               list(itertools.product(LOC, SCALE))),
    "laplace": (jp.laplace_entropy, jp.laplace_kl_divergence, tfd.Laplace,
                list(itertools.product(LOC, SCALE))),
    "gumbel": (jp.gumbel_entropy, jp.gumbel_kl_divergence, tfd.Gumbel,
               list(itertools.product(LOC, SCALE))),
    "log_normal": (jp.log_normal_entropy, jp.log_normal_kl_divergence, tfd.LogNormal,
                   list(itertools.product(LOC, SCALE))),
    "uniform": (jp.uniform_entropy, jp.uniform_kl_divergence, tfd.Uniform,
                [(-1.0, 1.0), (0.0, 1e-3), (-1e3, 1e3), (0.2, 0.5)]),
    "von_mises": (jp.von_mises_entropy, jp.von_mises_kl_divergence, tfd.VonMises,
                  list(itertools.product([-2.0, 0.3], [1e-3, 0.5, 2.0, 50.0]))),
    "gamma": (jp.gamma_entropy, jp.gamma_kl_divergence, tfd.Gamma,
              list(itertools.product(CONC, [1e-3, 1.0, 1e3]))),
    "beta": (jp.beta_entropy, jp.beta_kl_divergence, tfd.Beta,
             list(itertools.product(CONC, [1e-3, 1.0, 1e3]))),
    "exponential": (jp.exponential_entropy, jp.exponential_kl_divergence, tfd.Exponential,
                    [(r,) for r in SCALE]),
    "bernoulli": (jp.bernoulli_entropy, jp.bernoulli_kl_divergence,
                  lambda p: tfd.Bernoulli(probs=p), [(p,) for p in PROB]),
}


def _tfp(fn, *args):
  return float(fn(*[jnp.asarray(a, jnp.float64) for a in args]))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_entropy_and_kl_against_tfp(x64, name):
  entropy, kl, dist, grid = FAMILIES[name]
  rows = []
  for theta in grid:
    want = _tfp(lambda *a: dist(*a).entropy(), *theta)
    rows.append(("entropy", theta, float(entropy(*theta)), want))
  for tp, tq in itertools.product(grid, grid):
    if name == "von_mises" and tp == tq:
      continue  # see test_von_mises_kl_is_zero_at_p_equals_q
    n = len(tp)
    want = _tfp(lambda *a, n=n: tfd.kl_divergence(dist(*a[:n]), dist(*a[n:])), *tp, *tq)
    rows.append(("kl", tp + tq, float(kl(*tp, *tq)), want))
  bad = [r for r in rows if not _close(r[2], r[3])]
  assert not bad, f"{len(bad)} of {len(rows)} disagree (what, params, jaxdiv, tfp): {bad[:8]}"


def _close(got, want, rtol=1e-10, atol=1e-12):
  """rtol 1e-10, and 1e-12 absolute: a KL that is a difference of terms of size 1e4 (Beta
  (1000, 1e-3) against (7.5, 1e-3): 0.00397) is known to eps times those terms by any closed
  form (jaxdiv 1.9e-10 relative, TFP 3.8e-11, against 40-digit mpmath)."""
  if np.isinf(want) or np.isinf(got):
    return got == want
  return abs(got - want) <= atol + rtol * abs(want)


def test_von_mises_kl_is_zero_at_p_equals_q(x64):
  got = [float(jp.von_mises_kl_divergence(m, k, m, k))
         for m, k in itertools.product([-2.0, 0.3], [1e-3, 0.5, 2.0, 50.0])]
  want = [_tfp(lambda m, k: tfd.kl_divergence(tfd.VonMises(m, k), tfd.VonMises(m, k)), m, k)
          for m, k in itertools.product([-2.0, 0.3], [1e-3, 0.5, 2.0, 50.0])]
  assert want == [0.0] * len(want)
  assert got == want


def test_categorical_and_dirichlet_against_tfp(x64):
  probs = np.array([[0.2, 0.5, 0.3], [1e-6, 0.5, 0.5 - 1e-6], [0.98, 0.01, 0.01]])
  conc = np.array([[2.0, 3.0, 1.5], [1e-3, 0.2, 1.0], [7.5, 1e3, 1e3]])
  for i, j in itertools.product(range(3), range(3)):
    p, q = tfd.Categorical(probs=jnp.asarray(probs[i])), tfd.Categorical(probs=jnp.asarray(
        probs[j]))
    np.testing.assert_allclose(float(jp.categorical_kl_divergence(probs[i], probs[j])),
                               float(tfd.kl_divergence(p, q)), rtol=1e-10, err_msg=f"{i},{j}")
    p, q = tfd.Dirichlet(jnp.asarray(conc[i])), tfd.Dirichlet(jnp.asarray(conc[j]))
    np.testing.assert_allclose(float(jp.dirichlet_kl_divergence(conc[i], conc[j])),
                               float(tfd.kl_divergence(p, q)), rtol=1e-10, err_msg=f"{i},{j}")
  for i in range(3):
    np.testing.assert_allclose(float(jp.categorical_entropy(probs[i])),
                               float(tfd.Categorical(probs=jnp.asarray(probs[i])).entropy()),
                               rtol=1e-10)
    np.testing.assert_allclose(float(jp.dirichlet_entropy(conc[i])),
                               float(tfd.Dirichlet(jnp.asarray(conc[i])).entropy()), rtol=1e-10)


def _spd(rng, d, lo, hi):
  q, _ = np.linalg.qr(rng.normal(size=(d, d)))
  return q @ np.diag(np.geomspace(lo, hi, d)) @ q.T


def test_mvn_against_tfp(x64):
  rng = np.random.default_rng(0)
  covs = [_spd(rng, 3, 0.5, 2.0), _spd(rng, 3, 1e-3, 1e3), _spd(rng, 3, 1e-6, 1.0)]
  locs = [rng.normal(size=3), 1e-3 * rng.normal(size=3), 10 * rng.normal(size=3)]
  dist = lambda m, s: tfd.MultivariateNormalTriL(jnp.asarray(m), jnp.linalg.cholesky(s))
  diag = lambda m, v: tfd.MultivariateNormalDiag(jnp.asarray(m), jnp.sqrt(jnp.asarray(v)))
  for (mp_, sp), (mq, sq) in itertools.product(zip(locs, covs), zip(locs, covs)):
    want = float(tfd.kl_divergence(dist(mp_, sp), dist(mq, sq)))
    np.testing.assert_allclose(float(jp.mvn_kl_divergence(mp_, sp, mq, sq)), want, rtol=1e-10)
    vp, vq = np.diag(sp), np.diag(sq)
    want = float(tfd.kl_divergence(diag(mp_, vp), diag(mq, vq)))
    np.testing.assert_allclose(float(jp.mvn_kl_divergence(mp_, vp, mq, vq, covariance="diag")),
                               want, rtol=1e-10)
  for m, s in zip(locs, covs):
    np.testing.assert_allclose(float(jp.mvn_entropy(m, s)), float(dist(m, s).entropy()),
                               rtol=1e-10)
  assert jax.config.jax_enable_x64
