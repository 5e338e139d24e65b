"""Every categorical divergence against its float64 reference, on the inputs that break things:
Dirichlet draws of several concentrations, sparse supports, one-hot rows, disjoint supports,
and extreme or -inf logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from discrete_reference import softmax64
from discrete_specs import SPEC_IDS
from discrete_specs import SPECS
from discrete_specs import call
from discrete_specs import logits_reference
from discrete_specs import reference

N = 7


def _dirichlet(rng, conc, shape=(5,)):
  return rng.dirichlet(np.full(N, conc), size=shape)


def _with_zeros(rng, x, frac=0.4):
  x = np.where(rng.random(x.shape) < frac, 0.0, x)
  x[..., 0] += (x.sum(-1) == 0)  # keep every row a distribution
  return x / x.sum(-1, keepdims=True)


def _cases():
  rng = np.random.default_rng(0)
  cases = {}
  for conc in (0.1, 1.0, 10.0):
    cases[f"dirichlet{conc}"] = (_dirichlet(rng, conc), _dirichlet(rng, conc))
  cases["sparse_p"] = (_with_zeros(rng, _dirichlet(rng, 1.0)), _dirichlet(rng, 1.0))
  cases["sparse_both"] = (_with_zeros(rng, _dirichlet(rng, 1.0)),
                          _with_zeros(rng, _dirichlet(rng, 1.0)))
  onehot = np.eye(N)[rng.integers(0, N, 5)]
  cases["one_hot"] = (onehot, _dirichlet(rng, 1.0))
  cases["one_hot_both"] = (onehot, np.eye(N)[rng.integers(0, N, 5)])
  disjoint_p = np.zeros((5, N))
  disjoint_p[:, :3] = _dirichlet(rng, 1.0)[:, :3]
  disjoint_q = np.zeros((5, N))
  disjoint_q[:, 3:] = _dirichlet(rng, 1.0)[:, 3:]
  cases["disjoint"] = (disjoint_p / disjoint_p.sum(-1, keepdims=True),
                       disjoint_q / disjoint_q.sum(-1, keepdims=True))
  cases["equal"] = (cases["dirichlet1.0"][0], cases["dirichlet1.0"][0])
  return cases


CASES = _cases()


def _tol(dtype, n=N):
  scale = np.sqrt(n)
  return {"rtol": 3e-5 * scale, "atol": 3e-6 * scale} if dtype == np.float32 else {
      "rtol": 1e-10, "atol": 1e-12}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_probabilities_float32(spec, case, device):
  p, q = (x.astype(np.float32) for x in CASES[case])
  got = call(spec, jnp.asarray(p), jnp.asarray(q))
  want = reference(spec, p, q)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), want, **_tol(np.float32))


@pytest.mark.parametrize("case", ["dirichlet0.1", "dirichlet10.0", "sparse_both", "one_hot"])
@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_probabilities_float64(spec, case, x64):
  p, q = CASES[case]
  got = call(spec, jnp.asarray(p), jnp.asarray(q))
  assert got.dtype == jnp.float64
  np.testing.assert_allclose(np.asarray(got), reference(spec, p, q), **_tol(np.float64))


def _logit_cases():
  rng = np.random.default_rng(1)
  z = {
      "moderate": (rng.normal(size=(4, N)) * 3, rng.normal(size=(4, N)) * 3),
      "extreme": (rng.normal(size=(4, N)) * 1e4, rng.normal(size=(4, N)) * 1e4),
  }
  zp, zq = (rng.normal(size=(4, N)) for _ in range(2))
  zp[:, 1] = -np.inf
  zq[:, 2] = -np.inf
  zp[0, 4:] = -np.inf
  z["neg_inf"] = (zp, zq)
  return z


LOGITS = _logit_cases()


@pytest.mark.parametrize("case", sorted(LOGITS))
@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_logits(spec, case, device):
  if case == "extreme" and not spec.extreme_logits:
    pytest.skip("documented limitation: a generic generator f is evaluated on exp(log ratio)")
  zp, zq = LOGITS[case]
  got = call(spec, jnp.asarray(zp, jnp.float32), jnp.asarray(zq, jnp.float32), from_logits=True)
  # The reference sees the exact softmax of the float32 logits, in float64.
  p = softmax64(zp.astype(np.float32))
  q = softmax64(zq.astype(np.float32))
  want = reference(spec, p, q)
  got = np.asarray(got)
  if case == "extreme" and spec.logits_ref is not None:
    want = logits_reference(spec, zp.astype(np.float32), zq.astype(np.float32))
    # Values reach 1e4 nats and beyond; float32 logits of size 1e4 carry an absolute rounding
    # of ~1e-3 that the result inherits.
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-2 * np.sqrt(N))
    return
  if case == "extreme":
    # Finite logits put mass on every class, so the exact value is finite; a float64 softmax
    # underflows (exp(-1e4) = 0) and turns it into inf. Compare where float64 can represent it.
    assert np.all(np.isfinite(got)), got
    finite = np.isfinite(want)
    got, want = got[finite], want[finite]
  np.testing.assert_allclose(got, want, **_tol(np.float32))


@pytest.mark.parametrize("spec", [s for s in SPECS if s.has_base], ids=lambda s: s.name)
def test_base(spec):
  p, q = (jnp.asarray(x, jnp.float32) for x in CASES["dirichlet1.0"])
  scale = np.log(2.0) ** (0.5 if spec.name == "js_distance" else 1.0)
  np.testing.assert_allclose(
      np.asarray(call(spec, p, q, base=2.0)),
      reference(spec, np.asarray(p), np.asarray(q)) / scale, rtol=1e-5, atol=1e-6)


def test_js_distance_matches_scipy_base2():
  from scipy.spatial import distance

  p, q = CASES["dirichlet0.1"]
  np.testing.assert_allclose(
      np.asarray(jax.jit(lambda a, b: __import__("jaxdiv").js_distance(a, b, base=2))(
          jnp.asarray(p, jnp.float32), jnp.asarray(q, jnp.float32))),
      distance.jensenshannon(p, q, base=2, axis=-1), rtol=1e-5)
