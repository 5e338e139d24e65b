"""checkify-based validation of data-dependent problems."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jax.experimental import checkify

import jaxdiv


def _run(fn, *args, **kwargs):
  # Keyword options (from_logits, where) are closed over: they are static configuration.
  checked = checkify.checkify(lambda *a: jaxdiv.checks.checked(fn)(*a, **kwargs))
  return jax.jit(checked)(*args)


def test_valid_inputs_pass():
  p = jnp.array([[0.2, 0.8], [0.5, 0.5]])
  err, out = _run(jaxdiv.kl_divergence, p, p[::-1])
  err.throw()  # no error
  assert out.shape == (2,)


def test_negative_probability_is_reported():
  err, _ = _run(jaxdiv.kl_divergence, jnp.array([1.2, -0.2]), jnp.array([0.5, 0.5]))
  with pytest.raises(checkify.JaxRuntimeError, match="`p` has negative probabilities"):
    err.throw()


def test_rows_not_summing_to_one_are_reported():
  err, _ = _run(jaxdiv.entropy, jnp.array([[0.5, 0.5], [0.3, 0.3]]))
  with pytest.raises(checkify.JaxRuntimeError, match="`p` rows do not sum to 1"):
    err.throw()


def test_nan_logits_are_reported():
  err, _ = _run(jaxdiv.js_divergence, jnp.array([0.0, jnp.nan]), jnp.array([0.0, 1.0]),
                from_logits=True)
  with pytest.raises(checkify.JaxRuntimeError, match="`p` contains NaN"):
    err.throw()


def test_traced_alpha_out_of_domain_is_reported():
  p = jnp.array([0.5, 0.5])
  err, _ = jax.jit(checkify.checkify(jaxdiv.checks.checked(jaxdiv.renyi_divergence)))(
      p, p, jnp.float32(-1.0))
  with pytest.raises(checkify.JaxRuntimeError, match="`alpha` must lie in"):
    err.throw()


def test_masked_entries_are_not_checked():
  p = jnp.array([0.4, 0.6, -5.0])
  err, _ = _run(jaxdiv.entropy, p, where=jnp.array([True, True, False]))
  err.throw()


def test_bernoulli_range():
  err, _ = _run(jaxdiv.binary_entropy, jnp.array([0.5, 1.5]))
  with pytest.raises(checkify.JaxRuntimeError, match="above 1"):
    err.throw()
