"""Rows with NaN or infinite inputs: what lets `evaluate` flag them only where a value is not
finite (`DivergenceSpec.nonfinite_on_bad_rows`), and the counts it reports either way."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import tiered

from jaxdiv.evaluation import DIVERGENCES
from jaxdiv.evaluation import NonFiniteInputError
from jaxdiv.evaluation import evaluate

N = 7


def _hyperparameters(spec):
  if "alpha" in spec.params:
    alphas = [0.0, 0.3, 0.5, 1.0, 2.0, 3.5, np.inf]
    if spec.name == "alpha_divergence":
      alphas += [-1.5, -1.0]
    return [{"alpha": a} for a in alphas]
  if "beta" in spec.params:
    return [{"beta": b} for b in (0.0, 0.3, 0.5, 1.0)]
  return [{}]


def _rows(spec, from_logits, bad_input, bad, rng):
  """Rows of valid inputs, each with one bad entry in input `bad_input`: in a row of full
  support, where the other input has no mass, and as the only entry of its row with mass."""
  binary = spec.inputs == "bernoulli"
  zero = -np.inf if from_logits else 0.0

  def valid(rows):
    x = rng.standard_normal((rows, N))
    if from_logits:
      return x
    if binary:
      return 1 / (1 + np.exp(-x))
    return np.exp(x) / np.exp(x).sum(-1, keepdims=True)

  xs = [valid(3 * N) for _ in range(spec.n_inputs)]
  for j in range(N):
    full, no_mass, alone = j, N + j, 2 * N + j
    for i in (full, no_mass, alone):
      xs[bad_input][i, j] = bad
    for k in range(spec.n_inputs):
      if k != bad_input:
        xs[k][no_mass, j] = zero
        if not (from_logits or binary):
          xs[k][no_mass] /= xs[k][no_mass].sum()
    xs[bad_input][alone, np.arange(N) != j] = zero
  return [x.astype(np.float32) for x in xs]


@tiered("name", sorted(DIVERGENCES), fast=["kl_divergence", "js_divergence", "renyi_entropy",
                                           "alpha_divergence", "binary_kl_divergence"])
def test_a_bad_input_row_has_a_non_finite_value(name):
  spec = DIVERGENCES[name]
  rng = np.random.default_rng(0)
  for from_logits in (False, True):
    for params in _hyperparameters(spec):
      kwargs = dict(params, from_logits=from_logits)
      if not spec.nonfinite_on_bad_rows(kwargs):
        continue
      for k in range(spec.n_inputs):
        for bad in (np.nan, np.inf) + (() if from_logits else (-np.inf,)):
          xs = _rows(spec, from_logits, k, bad, rng)
          v = np.asarray(spec.fn(*(jnp.asarray(x) for x in xs), axis=-1, **kwargs))
          finite = np.flatnonzero(np.isfinite(v))
          assert finite.size == 0, (kwargs, f"input {k}", bad, finite, v[finite])


def test_where_the_promise_does_not_hold_the_step_flags_every_row():
  # A +inf logit is a Bernoulli probability of 1: a finite value, so the binary forms from
  # logits keep the flag pass; so does a mask (a masked NaN does not enter the value) and a
  # callable (nothing is known of it).
  spec = DIVERGENCES["binary_entropy"]
  assert not spec.nonfinite_on_bad_rows({"from_logits": True})
  assert spec.nonfinite_on_bad_rows({"from_logits": False})
  assert not DIVERGENCES["kl_divergence"].nonfinite_on_bad_rows({"where": None})
  x = np.zeros((300, 4), np.float32)
  x[[5, 260], 1] = np.inf
  assert np.isfinite(np.asarray(spec.fn(jnp.asarray(x), axis=-1, from_logits=True))).all()
  with pytest.raises(NonFiniteInputError, match=r"2 rows of p \(2 of 300 rows; first at row 5\)"):
    evaluate("binary_entropy", x, from_logits=True, batch_size=64)

  def nan_blind(p, q, *, axis):
    return jnp.nansum(jnp.abs(p - q), axis=axis)

  p = np.full((300, 4), 0.25, np.float32)
  q = p.copy()
  q[[7, 8, 299], 2] = np.nan
  res = evaluate(nan_blind, p, q, nan_policy="skip", batch_size=64)
  assert res.summary["nonfinite_input_rows"] == {"p": 0, "q": 3}
  assert np.isnan(res.per_row[[7, 8, 299]]).all() and np.isfinite(res.per_row).sum() == 297


@pytest.mark.parametrize("batch_size", [64, 1000, 4096])
def test_flags_from_values_count_what_a_full_pass_counts(batch_size):
  # Logits with NaN, +inf and -inf (not bad) spread over rows and blocks; the counts and the
  # skipped rows are those of a NumPy pass over the inputs, whatever the batch.
  rng = np.random.default_rng(1)
  p, q = (rng.standard_normal((5000, 16)).astype(np.float32) for _ in range(2))
  for x, rows, value in ((p, [0, 17, 4095, 4999], np.nan), (q, [17, 2500], np.inf),
                         (q, [3, 4000], -np.inf), (p, [1234], -np.inf)):
    x[rows, rng.integers(0, 16, len(rows))] = value
  bad_p = np.isnan(p).any(-1) | (p == np.inf).any(-1)
  bad_q = np.isnan(q).any(-1) | (q == np.inf).any(-1)
  res = evaluate("kl_divergence", p, q, from_logits=True, nan_policy="skip",
                 batch_size=batch_size)
  assert res.summary["nonfinite_input_rows"] == {"p": int(bad_p.sum()), "q": int(bad_q.sum())}
  assert res.summary["skipped_rows"] == int((bad_p | bad_q).sum())
  np.testing.assert_array_equal(np.isnan(res.per_row), bad_p | bad_q)
  with pytest.raises(NonFiniteInputError, match=r"first at row 0\)"):
    evaluate("kl_divergence", p, q, from_logits=True, batch_size=batch_size)
