"""Properties drawn by hypothesis: non-negativity, identity, symmetry, bounds, Pinsker,
CE = H + KL, monotonicity of Rényi in alpha, and data processing (merging bins)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from discrete_specs import SPECS
from discrete_specs import call
from hypothesis import given
from hypothesis import strategies as st

import jaxdiv


@st.composite
def distributions(draw, n_min=2, n_max=9, zeros=True, concentrations=(0.05, 0.3, 1.0, 5.0)):
  """A pair of float64 distributions of a common length, possibly with zero entries.

  The length is one of three (the shortest, a middle one, the longest): every new shape
  compiles each primitive again, and the values, not the lengths, are what the properties vary.
  """
  n = draw(st.sampled_from(sorted({n_min, (n_min + n_max) // 2, n_max})))
  seed = draw(st.integers(0, 2**32 - 1))
  conc = draw(st.sampled_from(concentrations))
  rng = np.random.default_rng(seed)
  p, q = rng.dirichlet(np.full(n, conc), size=2)
  if zeros and draw(st.booleans()):
    p = np.where(rng.random(n) < 0.3, 0.0, p)
    p[rng.integers(n)] += 1e-3
    p /= p.sum()
  return p, q


def _f32(x):
  return jnp.asarray(x, jnp.float32)


TOL = 2e-5


# The fast tier runs no case of this property; it costs 23 s.
@pytest.mark.slow
@given(distributions())
def test_nonnegative(pq):
  p, q = (_f32(x) for x in pq)
  for spec in SPECS:
    if spec.nargs == 2:
      v = np.asarray(call(spec, p, q))
      assert v >= -TOL, (spec, v)


# The fast tier runs no case of this property; it costs 7.6 s.
@pytest.mark.slow
@given(distributions())
def test_zero_iff_equal(pq):
  p, q = (_f32(x) for x in pq)
  for spec in SPECS:
    if spec.nargs == 2 and spec.name not in ("cross_entropy",):
      assert abs(float(call(spec, p, p))) <= 1e-5, spec
      # D_0 = -log q(supp p) vanishes whenever the supports agree: not a strict divergence.
      if float(jnp.max(jnp.abs(p - q))) > 1e-2 and spec.name != "renyi_divergence[alpha=0.0]":
        assert float(call(spec, p, q)) > 0, spec


@given(distributions())
def test_symmetry(pq):
  p, q = (_f32(x) for x in pq)
  for spec in SPECS:
    if spec.symmetric:
      a, b = float(call(spec, p, q)), float(call(spec, q, p))
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=spec.name)


@given(distributions())
def test_bounds(pq):
  p, q = (_f32(x) for x in pq)
  assert float(jaxdiv.js_divergence(p, q)) <= np.log(2) + TOL
  assert float(jaxdiv.js_divergence(p, q, base=2)) <= 1 + TOL
  assert float(jaxdiv.total_variation_distance(p, q)) <= 1 + TOL
  assert float(jaxdiv.hellinger_distance(p, q)) <= 1 + TOL
  n = p.shape[-1]
  assert float(jaxdiv.entropy(p)) <= np.log(n) + TOL
  # Le Cam: H^2 <= TV <= sqrt(2) H
  h = float(jaxdiv.hellinger_distance(p, q))
  tv = float(jaxdiv.total_variation_distance(p, q))
  assert h * h <= tv + TOL and tv <= np.sqrt(2) * h + TOL


@given(distributions())
def test_pinsker(pq):
  p, q = (_f32(x) for x in pq)
  tv = float(jaxdiv.total_variation_distance(p, q))
  kl = max(float(jaxdiv.kl_divergence(p, q)), 0.0)  # probabilities: rounding may give -1e-8
  assert tv <= np.sqrt(kl / 2) + TOL


@given(distributions(zeros=False))
def test_cross_entropy_decomposes(pq):
  p, q = (_f32(x) for x in pq)
  np.testing.assert_allclose(
      float(jaxdiv.cross_entropy(p, q)),
      float(jaxdiv.entropy(p)) + float(jaxdiv.kl_divergence(p, q)), rtol=1e-5, atol=1e-5)


@given(distributions(), st.lists(st.floats(0, 20), min_size=2, max_size=5))
def test_renyi_nondecreasing_in_alpha(pq, alphas):
  p, q = (_f32(x) for x in pq)
  alphas = sorted(alphas) + [np.inf]
  vals = [float(jaxdiv.renyi_divergence(p, q, a)) for a in alphas]
  ents = [float(jaxdiv.renyi_entropy(p, a)) for a in alphas]
  for i in range(len(vals) - 1):
    assert vals[i] <= vals[i + 1] + 1e-4 * (1 + abs(vals[i + 1])), (alphas, vals)
    assert ents[i] >= ents[i + 1] - 1e-4 * (1 + abs(ents[i + 1])), (alphas, ents)


# Lengths 3, 6 and 10: merged, 2, 5 and 9, the lengths the other properties compile.
# The fast tier runs no case of this property; it costs 19 s.
@pytest.mark.slow
@given(distributions(n_min=3, n_max=10), st.data())
def test_data_processing(pq, data):
  """Merging two bins (a deterministic channel) never increases an f-divergence or KL/Rényi.

  Every merge of bins is a sequence of merges of two, so this is the general inequality; one
  merged length per length drawn keeps the compilations to three shapes."""
  p, q = pq
  n = p.shape[0]
  i, j = sorted(data.draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2,
                                   unique=True)))
  merge = lambda x: np.concatenate([[x[i] + x[j]], np.delete(x, [i, j])])
  pm, qm = _f32(merge(p)), _f32(merge(q))
  p, q = _f32(p), _f32(q)
  for spec in SPECS:
    if spec.nargs == 2 and spec.name not in ("cross_entropy",):
      before, after = float(call(spec, p, q)), float(call(spec, pm, qm))
      assert after <= before + 1e-4 * (1 + abs(before)), (spec, before, after)


# Concentrations >= 0.3: a generic f evaluated at p/q ~ 1e30 overflows (documented).
@given(distributions(zeros=False, concentrations=(0.3, 1.0, 5.0)))
def test_named_f_divergences_match_generator(pq):
  p, q = (_f32(x) for x in pq)
  pairs = [
      (lambda t: t * jnp.log(t), jaxdiv.kl_divergence(p, q)),
      (lambda t: -jnp.log(t), jaxdiv.kl_divergence(q, p)),
      (lambda t: 0.5 * jnp.abs(t - 1), jaxdiv.total_variation_distance(p, q)),
      (lambda t: (t - 1) ** 2, jaxdiv.chi_squared_divergence(p, q)),
      (lambda t: 0.5 * (jnp.sqrt(t) - 1) ** 2, jaxdiv.hellinger_distance(p, q) ** 2),
  ]
  for f, want in pairs:
    np.testing.assert_allclose(float(jaxdiv.f_divergence(p, q, f)), float(want),
                               rtol=1e-4, atol=1e-5)


def test_f_divergence_limits_with_disjoint_support():
  p = jnp.array([0.6, 0.4, 0.0, 0.0])
  q = jnp.array([0.0, 0.0, 0.5, 0.5])
  # Linear growth generators have finite values: TV = 1, squared Hellinger = 1.
  tv = jaxdiv.f_divergence(p, q, lambda t: 0.5 * jnp.abs(t - 1))
  h2 = jaxdiv.f_divergence(p, q, lambda t: 0.5 * (jnp.sqrt(t) - 1) ** 2)
  np.testing.assert_allclose([float(tv), float(h2)], [1.0, 1.0], rtol=1e-6)
  # Superlinear generators are infinite.
  assert float(jaxdiv.f_divergence(p, q, lambda t: t * jnp.log(t))) == np.inf
  # An explicit slope overrides the estimate.
  got = jaxdiv.f_divergence(p, q, lambda t: 0.5 * jnp.abs(t - 1), f_prime_inf=0.5)
  np.testing.assert_allclose(float(got), 1.0)


@given(distributions(zeros=False))
def test_renyi_special_orders(pq):
  p, q = (_f32(x) for x in pq)
  # D_1/2 = 2 Bhattacharyya; alpha-divergence at 1/2 = 4 Hellinger^2; alpha=2 is chi^2 / 2.
  np.testing.assert_allclose(float(jaxdiv.renyi_divergence(p, q, 0.5)),
                             2 * float(jaxdiv.bhattacharyya_distance(p, q)), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(float(jaxdiv.alpha_divergence(p, q, 0.5)),
                             4 * float(jaxdiv.hellinger_distance(p, q)) ** 2, rtol=1e-3,
                             atol=1e-5)
  np.testing.assert_allclose(float(jaxdiv.alpha_divergence(p, q, 2.0)),
                             0.5 * float(jaxdiv.chi_squared_divergence(p, q)), rtol=1e-4,
                             atol=1e-6)
