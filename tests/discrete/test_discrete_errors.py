"""Bad input: a clear error at trace time that names the argument and the shapes or value."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from discrete_specs import SPEC_IDS
from discrete_specs import SPECS
from discrete_specs import call
from discrete_specs import over_specs

import jaxdiv

P = jnp.array([0.2, 0.3, 0.5])


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_integer_and_boolean_inputs(spec):
  for bad in (jnp.array([1, 0, 0]), jnp.array([True, False, False])):
    with pytest.raises(TypeError, match="`p` must be a floating-point array"):
      call(spec, bad, P)
  if spec.nargs == 2:
    with pytest.raises(TypeError, match="`q` must be a floating-point array"):
      call(spec, P, jnp.array([1, 0, 0]))


@pytest.mark.parametrize("spec", [s for s in SPECS if s.nargs == 2], ids=lambda s: s.name)
def test_distribution_axis_sizes_differ(spec):
  with pytest.raises(ValueError, match=r"same size along the distribution axis.*\(3,\).*\(4,\)"):
    call(spec, P, jnp.ones(4) / 4)
  # ...also under jit, where it is known at trace time.
  with pytest.raises(ValueError, match="distribution axis"):
    jax.jit(lambda a, b: call(spec, a, b))(P, jnp.ones(4) / 4)


@pytest.mark.parametrize("spec", [s for s in SPECS if s.nargs == 2], ids=lambda s: s.name)
def test_batch_shapes_that_do_not_broadcast(spec):
  with pytest.raises(ValueError, match=r"cannot be broadcast.*\(2, 3\).*\(4, 3\)"):
    call(spec, jnp.ones((2, 3)) / 3, jnp.ones((4, 3)) / 3)


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_bad_axis_and_mask(spec):
  with pytest.raises(ValueError, match="axis=3"):
    call(spec, P, P, axis=3)
  with pytest.raises(ValueError, match=r"`where` of shape \(4,\)"):
    call(spec, P, P, where=jnp.ones(4, bool))
  with pytest.raises(TypeError, match="`where` must be a boolean mask"):
    call(spec, P, P, where=jnp.ones(3))


@pytest.mark.parametrize("spec", [s for s in SPECS if s.has_base], ids=lambda s: s.name)
@pytest.mark.parametrize("base", [0.0, -2.0, 1.0])
def test_bad_base(spec, base):
  with pytest.raises(ValueError, match="`base`"):
    call(spec, P, P, base=base)


@pytest.mark.parametrize("fn", [jaxdiv.renyi_divergence, jaxdiv.tsallis_divergence])
def test_negative_alpha(fn):
  with pytest.raises(ValueError, match=r"`alpha` must lie in \[0, inf\]; got -0.5"):
    fn(P, P, alpha=-0.5)


@pytest.mark.parametrize("fn", [jaxdiv.renyi_entropy, jaxdiv.tsallis_entropy])
def test_negative_alpha_entropy(fn):
  with pytest.raises(ValueError, match="`alpha`"):
    fn(P, alpha=-1.0)
  with pytest.raises(ValueError, match="`alpha`"):
    fn(P, alpha=np.nan)


@pytest.mark.parametrize("beta", [-0.1, 1.5])
def test_beta_out_of_range(beta):
  with pytest.raises(ValueError, match=r"`beta` must lie in \[0, 1\]"):
    jaxdiv.js_divergence(P, P, beta=beta)
  with pytest.raises(ValueError, match="`beta`"):
    jaxdiv.js_distance(P, P, beta=beta)


def test_f_must_be_callable():
  with pytest.raises(TypeError, match="`f` must be a callable"):
    jaxdiv.f_divergence(P, P, 3.0)


def test_from_logits_must_be_bool():
  with pytest.raises(TypeError, match="`from_logits`"):
    jaxdiv.kl_divergence(P, P, from_logits="yes")


def test_scalar_input_for_distribution_axis():
  with pytest.raises(ValueError, match="axis"):
    jaxdiv.kl_divergence(jnp.float32(0.3), jnp.float32(0.3), axis=1)


def test_binary_shapes_and_dtypes():
  with pytest.raises(ValueError, match=r"cannot be broadcast together.*\(2,\).*\(3,\)"):
    jaxdiv.binary_kl_divergence(jnp.ones(2) / 2, jnp.ones(3) / 2)
  with pytest.raises(TypeError, match="`q` must be a floating-point"):
    jaxdiv.binary_cross_entropy(jnp.ones(2) / 2, jnp.ones(2, int))


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_nan_and_pos_inf_inputs_are_never_silently_numbers(spec):
  z = jnp.array([0.3, -0.1, 0.7])
  for bad in (jnp.array([0.3, jnp.nan, 0.7]), jnp.array([0.3, jnp.inf, 0.7])):
    assert np.isnan(float(call(spec, bad, z, from_logits=True))), (spec, bad)
  assert np.isnan(float(call(spec, jnp.array([0.3, jnp.nan, 0.7]), P)))


@over_specs()
def test_nan_logit_row_is_nan_in_a_vectorised_batch(spec):
  # XLA:CPU's vectorised row max skips NaN at such widths (it gave -inf for a row of NaNs,
  # which read as an empty row and came out 0); the NaN row must stay NaN, the others exact.
  rng = np.random.default_rng(0)
  a = rng.normal(size=(256, 40)).astype(np.float32)
  b = rng.normal(size=(256, 40)).astype(np.float32)
  a[1, 2] = np.nan
  fn = jax.jit(lambda x, y: call(spec, x, y, from_logits=True))
  out = np.asarray(fn(a, b))
  assert np.isnan(out[1]), (spec, out[:3])
  keep = np.arange(256) != 1
  np.testing.assert_allclose(out[keep], np.asarray(fn(a[keep], b[keep])), rtol=1e-6, atol=1e-7)
