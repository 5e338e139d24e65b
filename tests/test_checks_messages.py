"""Checkify messages point at the likely mistake: the domain as written, `from_logits=True`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jax.experimental import checkify

import jaxdiv
import jaxdiv.parametric as jp


def _error(fn, *args, **kwargs):
  err, _ = checkify.checkify(fn)(*args, **kwargs)
  with pytest.raises(checkify.JaxRuntimeError) as info:
    err.throw()
  return str(info.value)


def test_negative_probabilities_suggest_from_logits():
  msg = _error(jaxdiv.checks.checked(jaxdiv.kl_divergence), jnp.array([1.5, -0.5]),
               jnp.array([0.5, 0.5]))
  assert "negative probabilities" in msg and "from_logits=True" in msg, msg


def test_probabilities_above_one_suggest_from_logits():
  msg = _error(jaxdiv.checks.checked(jaxdiv.binary_entropy), jnp.array([2.0]))
  assert "above 1" in msg and "from_logits=True" in msg, msg


@pytest.mark.parametrize("fn,args,want", [
    (jaxdiv.renyi_divergence, (jnp.array([0.5, 0.5]), jnp.array([0.3, 0.7])),
     "`alpha` must lie in [0, inf]"),
    (jp.normal_renyi_divergence, (0.0, 1.0, 1.0, 2.0), "`alpha` must lie in [0, inf]"),
])
def test_traced_alpha_out_of_domain_names_the_domain(fn, args, want):
  checked = jaxdiv.checks.checked(fn)
  msg = _error(jax.jit(lambda a: checked(*args, alpha=a)), -0.5)
  assert want in msg and "None" not in msg and "0.0" not in msg, msg


def test_traced_beta_out_of_domain_names_the_domain():
  checked = jaxdiv.checks.checked(jaxdiv.js_divergence)
  msg = _error(jax.jit(lambda b: checked(jnp.array([0.5, 0.5]), jnp.array([0.3, 0.7]), beta=b)),
               1.5)
  assert "`beta` must lie in [0, 1]" in msg, msg
