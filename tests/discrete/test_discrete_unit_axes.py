"""Batch axes of size 1 (`[1, T, V]`: one sequence; `[B, 1, V]`: one decoding step).

XLA:CPU computes a row reduction over such an array many times slower than over the array
without the axis (`jaxdiv._unit_axes`), so every row function drops them on entry and puts them
back on its result. Checked here: the values against the float64 references and bit for bit
against the same call without the axes, the gradients likewise, with the axes on either side of
the distribution axis, masks, per-row orders, a broadcast `q`, vmap, and the cases that keep the
axes (a mask or order that does not fit, a generator holding an array): the function's own
errors and results.
"""

from __future__ import annotations

import functools

import discrete_specs as ds
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import tiered

import jaxdiv

SHAPES = [((1, 6, 9), -1), ((6, 1, 9), -1), ((9, 1, 6), 0), ((1, 9, 6), 1), ((2, 1, 3, 9), -1)]


def _probs(shape, axis, seed):
  rng = np.random.default_rng(seed)
  batch = [d for i, d in enumerate(shape) if i != axis % len(shape)]
  return np.moveaxis(rng.dirichlet(np.ones(shape[axis]), batch), -1, axis)


def _squeezed(shape, axis):
  """The shape without its size-1 batch axes, the axis there, and the batch positions of the
  dropped axes."""
  ax = axis % len(shape)
  unit = [i for i, d in enumerate(shape) if d == 1 and i != ax]
  return ([d for i, d in enumerate(shape) if i not in unit], ax - sum(i < ax for i in unit),
          tuple(i - (i > ax) for i in unit))


def _summed(spec, p, q, axis):
  return jnp.sum(ds.call(spec, p, q, axis=axis))


# Every spec at two of the shapes, the shapes in turn, so that each shape runs with about 15
# specs: the axes are dropped and put back by one front (`jaxdiv._unit_axes`) for every
# function, so the product of every spec with every shape (185 cases, 4-5 s each, most of it
# compiling two gradients) added little but time; the CI of 2026-12-07 ran past its 90 min. The
# fast tier runs the mechanism specs, each at one shape, the shapes in turn.
_MECHANISM = [sp for sp in ds.SPECS if sp.name in ds.MECHANISM_SPEC_IDS]
_UNIT_FAST = [(sp, i % len(SHAPES)) for i, sp in enumerate(_MECHANISM)]
_UNIT_CASES = [(sp, k) for i, sp in enumerate(ds.SPECS) for k in range(len(SHAPES))
               if k in (i % len(SHAPES), (i + 2) % len(SHAPES)) or (sp, k) in _UNIT_FAST]


@tiered("spec,k", _UNIT_CASES, fast=_UNIT_FAST,
        ids=lambda v: v.name if isinstance(v, ds.Spec) else str(SHAPES[v]))
def test_unit_batch_axes_match_the_reference_and_the_squeezed_call(spec, k, x64):
  shape, axis = SHAPES[k]
  p, q = _probs(shape, axis, 2 * k), _probs(shape, axis, 2 * k + 1)
  got = ds.call(spec, p, q, axis=axis)
  want = ds.reference(spec, np.moveaxis(p, axis, -1), np.moveaxis(q, axis, -1))
  assert got.shape == want.shape, (shape, axis)
  np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=f"{shape} {axis}")
  small, ax, rows = _squeezed(shape, axis)
  flat = ds.call(spec, p.reshape(small), q.reshape(small), axis=ax)
  np.testing.assert_array_equal(got, jnp.expand_dims(flat, rows))
  argnums = (0, 1) if spec.nargs == 2 else 0
  grads = jax.jit(jax.grad(functools.partial(_summed, spec, axis=axis), argnums))(p, q)
  small_grads = jax.jit(jax.grad(functools.partial(_summed, spec, axis=ax), argnums))(
      p.reshape(small), q.reshape(small))
  for g, s in zip(jax.tree.leaves(grads), jax.tree.leaves(small_grads)):
    assert g.shape == shape
    np.testing.assert_array_equal(g, s.reshape(shape))


def test_logits_a_mask_and_a_broadcast_q(x64):
  """Logits of one sequence with a mask of the same shape, and against one `q` for every row:
  the float64 values of the masked, renormalised rows."""
  rng = np.random.default_rng(3)
  a, b = 3 * rng.normal(size=(1, 6, 9)), 3 * rng.normal(size=(9,))
  mask = rng.random((1, 6, 9)) > 0.3
  mask[..., 0] = True
  got = jaxdiv.kl_divergence(a, b, from_logits=True, where=mask)
  la = np.where(mask, a, -np.inf)
  la = la - np.log(np.sum(np.exp(la), -1, keepdims=True))
  lb = np.where(mask, b, -np.inf)
  lb = lb - np.log(np.sum(np.exp(lb), -1, keepdims=True))
  want = np.sum(np.where(mask, np.exp(la) * (la - lb), 0), -1)
  assert got.shape == (1, 6)
  np.testing.assert_allclose(got, want, rtol=1e-12)
  # A mask broadcast along the batch.
  got = jaxdiv.kl_divergence(a, b, from_logits=True, where=mask[0, 0])
  want = jaxdiv.kl_divergence(a[0], b, from_logits=True, where=mask[0, 0])
  np.testing.assert_array_equal(got, want[None])


def test_orders_per_row(x64):
  """An order a row, shaped like the batch with its size-1 axis or without it: the float64
  values; an order that would widen the batch is the function's own error."""
  from discrete_reference import js_divergence
  from discrete_reference import renyi_divergence
  p, q = _probs((6, 1, 9), -1, 4), _probs((6, 1, 9), -1, 5)
  alpha = np.linspace(0.3, 3.0, 6)
  for a in (alpha[:, None], alpha[:, None, None][..., 0]):
    got = jaxdiv.renyi_divergence(p, q, a)
    want = [renyi_divergence(p[i, 0], q[i, 0], alpha[i]) for i in range(6)]
    assert got.shape == (6, 1)
    np.testing.assert_allclose(got[:, 0], want, rtol=1e-10)
  beta = np.linspace(0.1, 0.9, 6)
  got = jaxdiv.js_divergence(p.reshape(1, 6, 9), q.reshape(1, 6, 9), beta)
  want = [js_divergence(p[i, 0], q[i, 0], beta[i]) for i in range(6)]
  np.testing.assert_allclose(got[0], want, rtol=1e-10)
  with pytest.raises(ValueError, match=r"\(6, 3\) must broadcast to the batch shape \(6, 1\)"):
    jaxdiv.renyi_divergence(p, q, np.full((6, 3), 2.0))
  with pytest.raises(ValueError, match=r"\(1, 6, 8\) cannot be broadcast to the inputs' shape "
                                       r"\(1, 6, 9\)"):
    jaxdiv.kl_divergence(p.reshape(1, 6, 9), q.reshape(1, 6, 9), where=np.ones((1, 6, 8), bool))


def test_generator_holding_an_array_keeps_the_axes(x64):
  """A generator that closes over a weight a row computes on the inputs as given; one that
  closes over scalars only takes the squeezed rows: both give the float64 values."""
  p, q = _probs((1, 6, 9), -1, 6), _probs((1, 6, 9), -1, 7)
  w = np.linspace(1.0, 2.0, 6).reshape(1, 6, 1)
  got = jaxdiv.f_divergence(p, q, lambda t: w * (t - 1) ** 2, f_prime_inf=np.inf)
  np.testing.assert_allclose(got, np.sum(w * q * (p / q - 1) ** 2, -1), rtol=1e-12)
  c = 0.5
  got = jaxdiv.f_divergence(p, q, lambda t: c * (t - 1) ** 2, f_prime_inf=np.inf)
  np.testing.assert_allclose(got, np.sum(c * q * (p / q - 1) ** 2, -1), rtol=1e-12)
  # One value, but an array of rank 3: it would broadcast squeezed rows back to rank 3.
  c3 = jnp.full((1, 1, 1), 2.0)
  f3 = lambda c: jaxdiv.f_divergence(p, q, lambda t: c * (t - 1) ** 2, f_prime_inf=np.inf)
  got = f3(c3)
  assert got.shape == (1, 6)
  np.testing.assert_allclose(got, np.sum(2.0 * q * (p / q - 1) ** 2, -1), rtol=1e-12)
  np.testing.assert_allclose(jax.grad(lambda c: jnp.sum(f3(c)))(c3),
                             [[[np.sum(q * (p / q - 1) ** 2)]]], rtol=1e-12)
  # A limit at infinity a row: the function's own broadcasting.
  tv = jaxdiv.f_divergence(p, q, lambda t: 0.5 * jnp.abs(t - 1),
                           f_prime_inf=np.full((1, 6, 1), 0.5))
  np.testing.assert_allclose(tv, 0.5 * np.abs(p - q).sum(-1), rtol=1e-12)


def test_errors_name_the_callers_arguments(x64):
  """Arguments the function rejects give its error with the shapes, axis and values the caller
  passed, not those of the call without the size-1 axes."""
  p = _probs((1, 3, 4), -1, 11)
  for call, message in (
      (lambda: jaxdiv.kl_divergence(p, p[..., :1]), r"\(axis=-1\); got shapes \(1, 3, 4\) and"
                                                    r" \(1, 3, 1\)"),
      (lambda: jaxdiv.kl_divergence(p, 0.2), r"\(1, 3, 4\) and \(\)"),
      (lambda: jaxdiv.kl_divergence(p, p[:, :1], axis=1), r"\(axis=1\)"),
      (lambda: jaxdiv.renyi_entropy(p, -np.ones((1, 3))), r"\[\[-1\., -1\., -1\.\]\]")):
    with pytest.raises(ValueError, match=message):
      call()


def test_vmap_over_sequences(x64):
  """`jax.vmap` over a batch of `[1, T, V]` examples: each is one sequence inside the map."""
  a = 3 * np.random.default_rng(8).normal(size=(4, 1, 6, 9))
  b = a + np.random.default_rng(9).normal(size=a.shape)
  got = jax.vmap(lambda x, y: jaxdiv.js_divergence(x, y, from_logits=True))(a, b)
  assert got.shape == (4, 1, 6)
  np.testing.assert_allclose(got, jaxdiv.js_divergence(a.reshape(24, 9), b.reshape(24, 9),
                                                       from_logits=True).reshape(4, 1, 6),
                             rtol=1e-13)


@pytest.mark.parametrize("from_logits", [False, True])
def test_the_computation_runs_without_the_axes(x64, from_logits):
  """No operation of the traced program (its nested ones included) holds the batch shape with
  its size-1 axis, apart from the inputs: the rows are computed as `[T, V]` (before this, the
  program of `kl_divergence` at `[1, 6, 9]` named that shape 60 times)."""
  p = _probs((1, 6, 9), -1, 10)
  for fn in (jaxdiv.kl_divergence, jaxdiv.js_divergence, jaxdiv.total_variation_distance):
    text = str(jax.make_jaxpr(functools.partial(fn, from_logits=from_logits))(p, p))
    assert text.count("[1,6,9]") == 2, fn.__name__  # the two inputs' binders


def test_one_pass_on_probabilities_drops_only_leading_axes(x64):
  """The one pass of the probability forms runs at the 2-D speed with any batch axes, and its
  gradient over `[B, V]` reshaped to `[B, 1, V]` took an extra copy: on probabilities those
  forms drop only leading size-1 axes (`[1, T, V]`); on logits every one."""
  p = _probs((6, 1, 9), -1, 12)
  probs = str(jax.make_jaxpr(jaxdiv.total_variation_distance)(p, p))
  logits = str(jax.make_jaxpr(functools.partial(jaxdiv.total_variation_distance,
                                                from_logits=True))(p, p))
  assert probs.count("[6,1,9]") > 2 and logits.count("[6,1,9]") == 2
  lead = _probs((1, 6, 9), -1, 13)
  assert str(jax.make_jaxpr(jaxdiv.total_variation_distance)(lead, lead)).count("[1,6,9]") == 2
