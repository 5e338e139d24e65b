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


def test_one_entry_point_for_every_package():
  # The parametric and losses packages register their rules with the same `checked`.
  assert jaxdiv.parametric.checked is jaxdiv.checks.checked
  err, _ = _run(jaxdiv.parametric.gamma_entropy, jnp.float32(-1.0), jnp.float32(1.0))
  with pytest.raises(checkify.JaxRuntimeError, match="`concentration` must be > 0"):
    err.throw()
  err, out = _run(jaxdiv.parametric.categorical_kl_divergence, jnp.array([0.2, 0.8]),
                  jnp.array([0.5, 0.5]))
  err.throw()
  assert out.shape == ()


@pytest.mark.parametrize("fn,args,match", [
    (jaxdiv.losses.kl_divergence, ([0.0, jnp.nan], [0.5, 0.5]), "`log_predictions` contains NaN"),
    (jaxdiv.losses.kl_divergence, ([-1.0, -1.0], [1.5, -0.5]), "`targets` has negative"),
    (jaxdiv.losses.softmax_cross_entropy, ([0.0, jnp.inf], [0.0, 1.0]), "`logits` contains"
     r" \+inf"),
    (jaxdiv.losses.sigmoid_binary_cross_entropy, ([0.0], [2.0]), "`labels` has probabilities"
     " above 1"),
    (jaxdiv.losses.generalized_kl_divergence, ([0.0, 0.0], [1.0, -1.0]), "`targets` must be"
     " >= 0"),
    (jaxdiv.losses.kl_penalty, ([-1.0], [jnp.nan]), "`ref_log_probs` contains NaN"),
])
def test_losses_inputs_are_reported(fn, args, match):
  err, _ = _run(fn, *map(jnp.asarray, args))
  with pytest.raises(checkify.JaxRuntimeError, match=match):
    err.throw()


def test_valid_loss_inputs_pass():
  logits = jnp.array([[0.0, 1.0, -jnp.inf], [2.0, 0.0, 0.0]])
  err, out = _run(jaxdiv.losses.softmax_cross_entropy, logits,
                  jnp.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]))
  err.throw()
  assert out.shape == (2,)


def test_kernel_logits_are_reported_outside_the_token_mask():
  logits = jnp.array([[2.0, 1.0, 0.0], [jnp.nan, 0.0, 0.0]])
  idx, log_p = jnp.array([[0], [1]]), jnp.log(jnp.array([[0.6], [0.5]]))
  err, _ = _run(jaxdiv.kernels.topk_distillation_loss, logits, idx, log_p)
  with pytest.raises(checkify.JaxRuntimeError, match="`student_logits` contains NaN"):
    err.throw()
  # A [tokens] mask (the kernels' `where`) hides the second token's row.
  err, out = _run(jaxdiv.kernels.topk_distillation_loss, logits, idx, log_p,
                  where=jnp.array([True, False]))
  err.throw()
  assert out.shape == (2,)


def test_unknown_function_is_a_type_error():
  with pytest.raises(TypeError, match="`fn` must be a jaxdiv function"):
    jaxdiv.checks.checked(lambda x: x)


def test_the_innermost_registered_package_gives_the_rule(monkeypatch):
  """A rule registered for a package inside another's covers its functions, in either order of
  registration."""
  calls = []
  outer = lambda fn, a, atol=None: calls.append("outer")
  inner = lambda fn, a, atol=None: calls.append("inner")

  def fn(x):
    return x

  fn.__module__ = "zz_pkg.sub.mod"
  for order in ([("zz_pkg", outer), ("zz_pkg.sub", inner)],
                [("zz_pkg.sub", inner), ("zz_pkg", outer)]):
    monkeypatch.setattr(jaxdiv.checks, "_RULES", dict(jaxdiv.checks._RULES))
    for package, rule in order:
      jaxdiv.checks.register(package, rule)
    calls.clear()
    assert jaxdiv.checks.checked(fn)(1.0) == 1.0
    assert calls == ["inner"], order
  fn.__module__ = "zz_pkg.other"
  calls.clear()
  jaxdiv.checks.checked(fn)(1.0)
  assert calls == ["outer"]
