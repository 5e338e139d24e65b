"""The Flax NNX client: a teacher on digits, students distilled with every divergence."""

from __future__ import annotations

import numpy as np
import optax
import pytest
from _helpers import tiered

pytest.importorskip("flax")
pytest.importorskip("sklearn")

from jaxdiv import losses
from jaxdiv.demo import digits

DIVERGENCES = ("forward_kl", "reverse_kl", "js", "skew_kl", "skew_reverse_kl", "tv")


@pytest.fixture(scope="module")
def data():
  return digits.load_data(seed=0)


@pytest.fixture(scope="module")
def teacher(data):
  model, history = digits.train_teacher(data, epochs=5, seed=0)
  return model, history


def test_teacher_learns(data, teacher):
  model, history = teacher
  assert np.mean(history[-5:]) < 0.25 * np.mean(history[:5])
  assert digits.accuracy(model, data.x_test, data.y_test) > 0.85


# Each student trains a model of its own: forward_kl (the default) stays fast, and the example
# script's run below distils with js; the other divergences are checked on every path by
# test_losses_distillation.py, and train here in the slow tier.
@tiered("divergence", DIVERGENCES, fast=["forward_kl"])
def test_student_distils(data, teacher, divergence):
  student, history = digits.distill_student(teacher[0], data, divergence=divergence, epochs=6,
                                            seed=1)
  assert np.all(np.isfinite(history))
  assert np.mean(history[-5:]) < 0.7 * np.mean(history[:5]), history
  # Chance is 0.1.
  assert digits.accuracy(student, data.x_test, data.y_test) > 0.5


def test_optax_and_jaxdiv_give_the_same_trajectory(data):
  kwargs = dict(epochs=2, seed=0, hidden=(32,))
  _, ours = digits.train_teacher(
      data, loss_fn=losses.softmax_cross_entropy_with_integer_labels, **kwargs)
  _, theirs = digits.train_teacher(
      data, loss_fn=optax.losses.softmax_cross_entropy_with_integer_labels, **kwargs)
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_example_script_runs(capsys):
  import importlib.util
  import pathlib

  path = pathlib.Path(__file__).parents[2] / "examples" / "flax_distillation.py"
  spec = importlib.util.spec_from_file_location("flax_distillation", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  module.main(["--quick", "--divergences", "js"])
  out = capsys.readouterr().out
  assert "same first epoch: True" in out and "js" in out
