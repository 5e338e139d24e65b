"""jit, vmap, grad/jacfwd, masks, axes, broadcasting and dtypes for every categorical divergence."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from discrete_specs import MECHANISM_SPEC_IDS
from discrete_specs import SPECS
from discrete_specs import TWO_ARG
from discrete_specs import call
from discrete_specs import over_specs
from discrete_specs import reference
from jax.test_util import check_grads

N = 6


def _pq(seed=0, shape=(3,), n=N, dtype=np.float32, conc=1.0):
  rng = np.random.default_rng(seed)
  p = rng.dirichlet(np.full(n, conc), size=shape).astype(dtype)
  q = rng.dirichlet(np.full(n, conc), size=shape).astype(dtype)
  return jnp.asarray(p), jnp.asarray(q)


def _mechanisms_but(*slow):
  """`MECHANISM_SPEC_IDS` less the specs of a test that cost 5 s or more there (slow tier)."""
  assert set(slow) <= set(MECHANISM_SPEC_IDS), slow
  return tuple(i for i in MECHANISM_SPEC_IDS if i not in slow)


def _logits(seed=0, shape=(3,), n=N, dtype=np.float32):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.normal(size=shape + (n,)), dtype),
          jnp.asarray(rng.normal(size=shape + (n,)), dtype))


@over_specs(fast_ids=MECHANISM_SPEC_IDS)
def test_jit_equals_eager(spec):
  p, q = _pq()
  eager = call(spec, p, q)
  jitted = jax.jit(lambda a, b: call(spec, a, b))(p, q)
  np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-6, atol=1e-7)


# js_distance (6 s) in the slow tier; the other mechanisms keep vmap fast.
@over_specs(fast_ids=_mechanisms_but("js_distance"))
def test_vmap_equals_loop(spec):
  zp, zq = _logits(shape=(4, 2))
  fn = lambda a, b: call(spec, a, b, from_logits=True)
  batched = jax.vmap(fn)(zp, zq)
  looped = np.stack([np.asarray(fn(zp[i], zq[i])) for i in range(zp.shape[0])])
  assert batched.shape == (4, 2)
  np.testing.assert_allclose(np.asarray(batched), looped, rtol=1e-5, atol=1e-6)


# js_distance (5.5 s) in the slow tier; the other mechanisms keep the axis fast.
@over_specs(fast_ids=_mechanisms_but("js_distance"))
def test_axis_equals_moveaxis(spec):
  p, q = _pq(shape=(2, 3))
  want = call(spec, p, q, axis=-1)
  # Another layout reduces in another order: float32 rounding, ~1 ulp of 1 for values near 0.
  got = call(spec, jnp.moveaxis(p, -1, 1), jnp.moveaxis(q, -1, 1), axis=1)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)
  got0 = call(spec, jnp.moveaxis(p, -1, 0), jnp.moveaxis(q, -1, 0), axis=0)
  np.testing.assert_allclose(np.asarray(got0), np.asarray(want), rtol=1e-6, atol=1e-6)


@over_specs(TWO_ARG, fast_ids=MECHANISM_SPEC_IDS)
def test_batch_broadcasting(spec):
  p, _ = _pq(shape=(4, 1))
  _, q = _pq(seed=1, shape=(3,))
  got = call(spec, p, q)
  assert got.shape == (4, 3)
  want = reference(spec, np.broadcast_to(np.asarray(p), (4, 3, N)),
                   np.broadcast_to(np.asarray(q), (4, 3, N)))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("from_logits", [False, True])
@over_specs(fast_ids=MECHANISM_SPEC_IDS)
def test_mask_equals_slice(spec, from_logits):
  zp, zq = _logits(shape=(3,), n=8)
  if not from_logits:
    # Probabilities are not renormalised by a mask: give the kept block total mass 1.
    zp = jnp.concatenate([jax.nn.softmax(zp[:, :5]), jax.nn.softmax(zp[:, 5:])], -1)
    zq = jnp.concatenate([jax.nn.softmax(zq[:, :5]), jax.nn.softmax(zq[:, 5:])], -1)
  keep = jnp.arange(8) < 5
  masked = call(spec, zp, zq, where=keep, from_logits=from_logits)
  sliced = call(spec, zp[:, :5], zq[:, :5], from_logits=from_logits)
  np.testing.assert_allclose(np.asarray(masked), np.asarray(sliced), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("from_logits", [False, True])
@over_specs(fast_ids=MECHANISM_SPEC_IDS)
def test_all_masked_row_is_zero_with_finite_grad(spec, from_logits):
  zp, zq = _logits(shape=(2,))
  if not from_logits:
    zp, zq = jax.nn.softmax(zp), jax.nn.softmax(zq)
  where = jnp.array([[True] * N, [False] * N])
  out = call(spec, zp, zq, where=where, from_logits=from_logits)
  assert float(out[1]) == 0.0
  g = jax.grad(lambda a, b: jnp.sum(call(spec, a, b, where=where, from_logits=from_logits)),
               argnums=(0, 1))(zp, zq)
  for gi in g:
    assert np.all(np.isfinite(np.asarray(gi))), gi
    np.testing.assert_array_equal(np.asarray(gi[1]), 0.0)


# entropy (6.7 s; kl_divergence stays) and Renyi 0.5 (8 s: the guarded mean, whose second
# order no other fast case checks here) in the slow tier.
@over_specs([s for s in SPECS if s.smooth],
            fast_ids=_mechanisms_but("entropy", "renyi_divergence[alpha=0.5]"))
def test_check_grads_logits(spec, x64):
  zp, zq = _logits(shape=(2,), dtype=np.float64)
  fn = lambda a, b: call(spec, a, b, from_logits=True)
  if spec.nargs == 2 and 0 < spec.kwargs.get("alpha", -1) < 1:
    # The guarded power mean (two inputs, 0 < alpha < 1): its second order dispatched eagerly
    # compiles hundreds of single ops (Renyi 0.5: 28 CPU-s, 8 jitted). Not the fast-path
    # specs: jitted, their `cond` compiles both branches at every order (Renyi 2: 4 -> 16).
    fn = jax.jit(fn)
  check_grads(fn, (zp, zq), order=2, modes=("fwd", "rev"), atol=1e-5, rtol=1e-5)


@over_specs(fast_ids=MECHANISM_SPEC_IDS)
def test_check_grads_probabilities_interior(spec, x64):
  # Concentrated Dirichlet: no tiny entries, whose large third derivatives would dominate
  # the finite differences' error.
  p, q = _pq(shape=(2,), dtype=np.float64, conc=5.0)
  fn = lambda a, b: call(spec, a, b)
  # First order here (second order is checked on logits, where the map is smooth everywhere);
  # eps small enough that perturbations stay inside the simplex's interior.
  check_grads(fn, (p, q), order=1, modes=("fwd", "rev"), eps=1e-6, atol=1e-6, rtol=1e-6)


# js_distance's jacfwd (10 s of one-op compilations) runs in the slow tier only; the fast tier
# keeps jacfwd of the other mechanisms and js_distance's other transformations.
@over_specs(fast_ids=tuple(i for i in MECHANISM_SPEC_IDS if i != "js_distance"))
def test_jacfwd_equals_grad(spec):
  zp, zq = _logits(shape=(), n=N)
  fn = lambda a: call(spec, a, zq, from_logits=True)
  np.testing.assert_allclose(np.asarray(jax.jacfwd(fn)(zp)), np.asarray(jax.grad(fn)(zp)),
                             rtol=1e-5, atol=1e-6)


def _boundary_inputs():
  """Zeros, one-hot rows and disjoint supports: the value is finite for every function here."""
  p = jnp.array([[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.2, 0.3, 0.5, 0.0],
                 [0.5, 0.5, 0.0, 0.0]])
  q = jnp.array([[0.25, 0.25, 0.25, 0.25], [0.4, 0.6, 0.0, 0.0], [0.2, 0.3, 0.4, 0.1],
                 [0.3, 0.7, 0.0, 0.0]])
  return p, q


# Renyi 2 and alpha -1 (10 s each) in the slow tier; the order family keeps Renyi 0.5 and
# Tsallis entropy 3 fast.
@over_specs(fast_ids=_mechanisms_but("renyi_divergence[alpha=2.0]",
                                     "alpha_divergence[alpha=-1.0]"))
def test_finite_gradients_at_zero_probabilities(spec):
  p, q = _boundary_inputs()
  finite = np.isfinite(np.asarray(call(spec, p, q)))
  assert finite.any()
  p, q = p[finite], q[finite]  # rows whose value is finite: their gradient must be too
  for argnum in (0, 1) if spec.nargs == 2 else (0,):
    g = jax.grad(lambda a, b: jnp.sum(call(spec, a, b)), argnums=argnum)(p, q)
    assert np.all(np.isfinite(np.asarray(g))), (argnum, g)


@over_specs(fast_ids=MECHANISM_SPEC_IDS)
def test_neg_inf_logits_have_zero_gradient(spec):
  # The same class is impossible under both: every value stays finite.
  zp = jnp.array([0.3, -jnp.inf, 1.0, -0.5, 2.0])
  zq = jnp.array([-0.2, -jnp.inf, 0.4, 0.1, 0.0])
  val = call(spec, zp, zq, from_logits=True)
  assert np.isfinite(float(val))
  for argnum in (0, 1) if spec.nargs == 2 else (0,):
    g = np.asarray(jax.grad(lambda a, b: call(spec, a, b, from_logits=True),
                            argnums=argnum)(zp, zq))
    assert np.all(np.isfinite(g)), g
    assert g[1] == 0.0


@over_specs(fast_ids=MECHANISM_SPEC_IDS)
def test_gradient_at_equal_distributions_is_finite(spec):
  p, _ = _pq(shape=(2,))
  for argnum in (0, 1) if spec.nargs == 2 else (0,):
    g = jax.grad(lambda a, b: jnp.sum(call(spec, a, b)), argnums=argnum)(p, p)
    assert np.all(np.isfinite(np.asarray(g))), g


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@over_specs(fast_ids=MECHANISM_SPEC_IDS)
def test_low_precision_inputs(spec, dtype):
  zp, zq = _logits(shape=(3,), n=N)
  zp_lo, zq_lo = zp.astype(dtype), zq.astype(dtype)
  got = call(spec, zp_lo, zq_lo, from_logits=True)
  assert got.dtype == dtype
  # Accumulation is float32: the result is the float32 one on the rounded inputs, rounded once.
  want = call(spec, zp_lo.astype(jnp.float32), zq_lo.astype(jnp.float32), from_logits=True)
  np.testing.assert_allclose(np.asarray(got.astype(jnp.float32)), np.asarray(want),
                             rtol=1e-2 if dtype == jnp.bfloat16 else 2e-3, atol=1e-3)


@over_specs(fast_ids=MECHANISM_SPEC_IDS)
def test_scalar_and_batched(spec):
  p, q = _pq(shape=(3,))
  batched = call(spec, p, q)
  single = call(spec, p[1], q[1])
  assert single.shape == () and batched.shape == (3,)
  np.testing.assert_allclose(float(single), float(batched[1]), rtol=1e-6, atol=1e-6)


@pytest.mark.slow  # d/dalpha from logits at these orders: tests/test_hyperparameter_grads.py
def test_renyi_alpha_gradient_matches_finite_difference(x64):
  import jaxdiv

  p, q = _pq(shape=(), dtype=np.float64)
  fn = functools.partial(jaxdiv.renyi_divergence, p, q)
  def central(a, h):
    return (float(fn(jnp.asarray(a + h))) - float(fn(jnp.asarray(a - h)))) / (2 * h)

  for a in (0.5, 1.0, 2.0):
    g = jax.grad(fn)(jnp.asarray(a))
    # Richardson-extrapolated central differences (error O(h^4)); steps large enough that
    # the points straddling alpha = 1 do not cancel in D_alpha = log(S) / (alpha - 1).
    fd = (4 * central(a, 5e-3) - central(a, 1e-2)) / 3
    np.testing.assert_allclose(float(g), fd, rtol=1e-7, err_msg=f"alpha={a}")


# 9.5 s; test_discrete_edges.py's test_traced_alpha_equals_static_on_boundary_rows stays fast.
@pytest.mark.slow
def test_traced_alpha_matches_static(x64):
  import jaxdiv

  p, q = _pq(shape=(2,), dtype=np.float64)
  for fn in (jaxdiv.renyi_divergence, jaxdiv.tsallis_divergence, jaxdiv.alpha_divergence):
    for a in (-1.0, 0.0, 0.3, 1.0, 1 + 1e-9, 2.0, np.inf):
      if a < 0 and fn is not jaxdiv.alpha_divergence:
        continue
      static = fn(p, q, alpha=a)
      traced = jax.jit(lambda a_, fn=fn: fn(p, q, alpha=a_))(jnp.asarray(a))
      np.testing.assert_allclose(np.asarray(traced), np.asarray(static), rtol=1e-9,
                                 err_msg=f"{fn.__name__} alpha={a}")


def test_alpha_as_batch_array():
  import jaxdiv

  p, q = _pq(shape=(3,))
  alphas = jnp.array([0.5, 1.0, 3.0])
  got = jaxdiv.renyi_divergence(p, q, alphas)
  want = [float(jaxdiv.renyi_divergence(p[i], q[i], float(alphas[i]))) for i in range(3)]
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)
