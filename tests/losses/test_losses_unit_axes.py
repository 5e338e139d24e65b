"""The row losses on a batch with a size-1 axis (`[1, T, V]`, `[B, 1, V]`): computed without it
(`jaxdiv._unit_axes`), the same values and gradients as optax's on the same arrays, and bit for
bit those of the call without the axis."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import tiered

import jaxdiv.losses as L


def _case(name, rng, shape):
  z = 3 * rng.normal(size=shape)
  t = rng.dirichlet(np.ones(shape[-1]), shape[:-1])
  lt = np.log(t)
  lp = jax.nn.log_softmax(z)
  labels = rng.integers(0, shape[-1], shape[:-1])
  return {
      "kl_divergence": ((lp, t), {}),
      "kl_divergence_with_log_targets": ((lp, lt), {}),
      "convex_kl_divergence": ((lp, t), {}),
      "generalized_kl_divergence": ((lp, t), {}),
      "softmax_cross_entropy": ((z, t), {}),
      "softmax_cross_entropy_with_integer_labels": ((z, labels), {}),
      "poly_loss_cross_entropy": ((z, t), {"epsilon": 1.5}),
  }[name]


NAMES = ["kl_divergence", "kl_divergence_with_log_targets", "convex_kl_divergence",
         "generalized_kl_divergence", "softmax_cross_entropy",
         "softmax_cross_entropy_with_integer_labels", "poly_loss_cross_entropy"]


SHAPES = [(1, 6, 9), (6, 1, 9)]
_UNIT_CASES = [(name, shape) for name in NAMES for shape in SHAPES]


# Integer labels with the leading unit axis (7 s) are slow; with the other unit axis, fast.
@tiered("name, shape", _UNIT_CASES,
        fast=[c for c in _UNIT_CASES
              if c != ("softmax_cross_entropy_with_integer_labels", (1, 6, 9))],
        ids=[f"{name}-shape{SHAPES.index(shape)}" for name, shape in _UNIT_CASES])
def test_losses_with_a_size_one_batch_axis(x64, name, shape):
  args, kw = _case(name, np.random.default_rng(NAMES.index(name)), shape)
  ours, peer = getattr(L, name), getattr(optax.losses, name)
  got = ours(*args, **kw)
  assert got.shape == shape[:-1]
  np.testing.assert_allclose(got, peer(*args, **kw), rtol=1e-12, atol=1e-14)
  unit = shape.index(1)
  small = [np.squeeze(np.asarray(a), unit) for a in args]
  np.testing.assert_array_equal(got, np.expand_dims(ours(*small, **kw), unit))
  grad = jax.grad(lambda x: jnp.sum(ours(x, *args[1:], **kw)))(args[0])
  np.testing.assert_allclose(grad, jax.grad(lambda x: jnp.sum(peer(x, *args[1:], **kw)))(
      args[0]), rtol=1e-10, atol=1e-13)
  small_grad = jax.grad(lambda x: jnp.sum(ours(x, *small[1:], **kw)))(small[0])
  np.testing.assert_array_equal(grad, np.expand_dims(small_grad, unit))


def test_a_mask_and_an_ignored_label(x64):
  """A mask of the inputs' shape (optax's `where`) and an ignored label on a sequence."""
  rng = np.random.default_rng(11)
  z, t = 3 * rng.normal(size=(1, 6, 9)), rng.dirichlet(np.ones(9), (1, 6))
  mask = rng.random((1, 6, 9)) > 0.3
  mask[..., 0] = True
  lp = jax.nn.log_softmax(z)
  np.testing.assert_allclose(L.kl_divergence(lp, t, where=mask),
                             optax.losses.kl_divergence(lp, t, where=mask), rtol=1e-12)
  labels = rng.integers(0, 9, (1, 6))
  labels[0, 2] = -100
  got = L.softmax_cross_entropy_with_integer_labels(z, labels, ignore_index=-100)
  want = optax.losses.softmax_cross_entropy_with_integer_labels(z, np.maximum(labels, 0))
  assert got[0, 2] == 0
  np.testing.assert_allclose(np.delete(got[0], 2), np.delete(want[0], 2), rtol=1e-12)


@pytest.mark.parametrize("name", ["softmax_cross_entropy",
                                  "softmax_cross_entropy_with_integer_labels",
                                  "poly_loss_cross_entropy"])
def test_a_per_example_mask_stays_per_example(x64, name):
  """These losses read `where` by its rank (optax's rule): the logits' rank masks classes, one
  axis fewer masks examples. A per-example mask of a sequence `[1, T]` with T equal to the
  number of classes stays per example (it was read as a class mask once the batch axis was
  dropped), and masks of neither rank are the function's own errors."""
  rng = np.random.default_rng(12)
  args, kw = _case(name, rng, (1, 4, 4))
  fn = getattr(L, name)
  keep = np.array([[True, False, True, True]])
  got = fn(*args, **kw, where=keep)
  want = getattr(optax.losses, name)(*args, **kw)
  np.testing.assert_allclose(got, np.where(keep, want, 0), rtol=1e-12, atol=1e-14)
  args, kw = _case(name, rng, (1, 3, 5))
  for bad in (np.ones(5, bool), np.ones((3, 1), bool)):
    with pytest.raises(ValueError) as own:
      fn.__wrapped__(*args, **kw, where=bad)
    with pytest.raises(ValueError, match=re.escape(str(own.value))):
      fn(*args, **kw, where=bad)


def test_coefficients_a_row(x64):
  """A traced z-loss or label smoothing a row (documented as scalars, taken as arrays under
  `jit`) keeps the axes: the values of the call on the inputs as given."""
  rng = np.random.default_rng(13)
  z, t = 3 * rng.normal(size=(1, 3, 5)), rng.dirichlet(np.ones(5), (1, 3))
  ours = L.softmax_cross_entropy
  for kw in ({"z_loss": np.array([[1e-3, 2e-3, 3e-3]])},
             {"label_smoothing": np.array([[[0.1], [0.2], [0.3]]])}):
    got = jax.jit(ours)(z, t, **kw)
    want = jax.jit(ours.__wrapped__)(z, t, **kw)
    assert got.shape == (1, 3)
    np.testing.assert_array_equal(got, want)
