"""Teacher training and distillation on scikit-learn's digits with Flax NNX and optax.

The pieces a training script (``examples/flax_distillation.py``) or the ``jaxdiv demo`` command
put together: a fixed train/test split, a small MLP, a teacher trained with a cross-entropy
(jaxdiv's or optax's: same values, so the same trajectory), a student distilled from it with
any :func:`jaxdiv.losses.distillation_loss` divergence, and held-out accuracy. Needs ``flax``
and ``scikit-learn`` (the ``demo`` extra); the digits ship with scikit-learn, no download.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxdiv import losses

NUM_FEATURES = 64
NUM_CLASSES = 10


class Data(NamedTuple):
  """Digits split into train and test sets; pixels scaled to [0, 1]."""

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray


def load_data(*, test_fraction: float = 0.25, seed: int = 0) -> Data:
  """The 1797 8x8 digits of scikit-learn, shuffled with `seed` and split."""
  from sklearn.datasets import load_digits

  digits = load_digits()
  x = (digits.data / 16.0).astype(np.float32)
  y = digits.target.astype(np.int32)
  order = np.random.default_rng(seed).permutation(len(y))
  n_test = int(round(test_fraction * len(y)))
  test, train = order[:n_test], order[n_test:]
  return Data(x[train], y[train], x[test], y[test])


class MLP(nnx.Module):
  """A ReLU multilayer perceptron: `in_features -> hidden... -> out_features` logits."""

  def __init__(self, in_features: int, hidden: Sequence[int], out_features: int, *,
               rngs: nnx.Rngs):
    sizes = (in_features, *hidden)
    self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
    self.out = nnx.Linear(sizes[-1], out_features, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    for layer in self.hidden:
      x = nnx.relu(layer(x))
    return self.out(x)


def accuracy(model: nnx.Module, x, y) -> float:
  """Fraction of `x` whose arg-max logit is the label `y`."""
  return float(jnp.mean(jnp.argmax(model(jnp.asarray(x)), axis=-1) == jnp.asarray(y)))


def _batches(n: int, batch_size: int, epochs: int, seed: int):
  rng = np.random.default_rng(seed)
  for _ in range(epochs):
    order = rng.permutation(n)
    for start in range(0, n - batch_size + 1, batch_size):
      yield order[start:start + batch_size]


def _fit(model, loss_of_model, batches, learning_rate):
  """Adam on `loss_of_model(model, batch_indices)`; returns the per-step losses."""
  optimizer = nnx.Optimizer(model, optax.adam(learning_rate), wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer, idx):
    loss, grads = nnx.value_and_grad(loss_of_model)(model, idx)
    optimizer.update(model, grads)
    return loss

  return [float(step(model, optimizer, jnp.asarray(idx))) for idx in batches]


def train_teacher(
    data: Data,
    *,
    hidden: Sequence[int] = (128, 64),
    epochs: int = 30,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    seed: int = 0,
    loss_fn: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
) -> tuple[MLP, list[float]]:
  """Trains an MLP on the labels with `loss_fn(logits, labels)` (per-example, then averaged).

  `loss_fn` defaults to :func:`jaxdiv.losses.softmax_cross_entropy_with_integer_labels`;
  ``optax.losses.softmax_cross_entropy_with_integer_labels`` gives the same trajectory.
  Returns the model and the loss of every step.
  """
  loss_fn = losses.softmax_cross_entropy_with_integer_labels if loss_fn is None else loss_fn
  model = MLP(NUM_FEATURES, hidden, NUM_CLASSES, rngs=nnx.Rngs(seed))
  x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)

  def loss_of_model(model, idx):
    return jnp.mean(loss_fn(model(x[idx]), y[idx]))

  history = _fit(model, loss_of_model, _batches(len(y), batch_size, epochs, seed),
                 learning_rate)
  return model, history


def distill_student(
    teacher: nnx.Module,
    data: Data,
    *,
    divergence: str = "forward_kl",
    temperature: float = 2.0,
    hard_label_weight: float = 0.0,
    hidden: Sequence[int] = (16,),
    epochs: int = 30,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    seed: int = 1,
) -> tuple[MLP, list[float]]:
  """Distils `teacher` into a smaller MLP with :func:`jaxdiv.losses.distillation_loss`.

  The loss per batch is ``distillation_loss(student, teacher, divergence=..., temperature=T,
  temperature_scaling=True, reduction="mean")`` plus ``hard_label_weight`` times the
  cross-entropy on the true labels. The teacher's logits are computed once (it is frozen).
  Returns the student and the loss of every step.
  """
  student = MLP(NUM_FEATURES, hidden, NUM_CLASSES, rngs=nnx.Rngs(seed))
  x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
  teacher_logits = teacher(x)

  def loss_of_model(student, idx):
    logits = student(x[idx])
    loss = losses.distillation_loss(
        logits, teacher_logits[idx], divergence=divergence, temperature=temperature,
        temperature_scaling=True, reduction="mean")
    if hard_label_weight:
      loss = loss + hard_label_weight * jnp.mean(
          losses.softmax_cross_entropy_with_integer_labels(logits, y[idx]))
    return loss

  history = _fit(student, loss_of_model, _batches(len(y), batch_size, epochs, seed),
                 learning_rate)
  return student, history
