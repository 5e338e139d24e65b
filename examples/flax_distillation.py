"""Train a teacher on scikit-learn's digits with Flax NNX, then distil a smaller student with
each jaxdiv distillation loss.

    python examples/flax_distillation.py            # full run (about a minute on a CPU)
    python examples/flax_distillation.py --quick    # a few epochs, for a smoke test

The training loop itself lives in ``jaxdiv.demo.digits`` (``train_teacher``,
``distill_student``); this script is the readable tour of it.
"""

from __future__ import annotations

import argparse

import optax

from jaxdiv.demo import digits

DIVERGENCES = ("forward_kl", "reverse_kl", "js", "skew_kl", "skew_reverse_kl", "tv")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="a few epochs only")
  parser.add_argument("--temperature", type=float, default=2.0)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--divergences", nargs="*", default=list(DIVERGENCES))
  args = parser.parse_args(argv)
  teacher_epochs, student_epochs = (5, 8) if args.quick else (30, 40)

  data = digits.load_data(seed=args.seed)
  print(f"digits: {len(data.y_train)} train, {len(data.y_test)} test, 10 classes")

  # The teacher, trained with jaxdiv's cross-entropy; optax's gives the same trajectory.
  teacher, history = digits.train_teacher(data, epochs=teacher_epochs, seed=args.seed)
  _, optax_history = digits.train_teacher(
      data, epochs=1, seed=args.seed,
      loss_fn=optax.losses.softmax_cross_entropy_with_integer_labels)
  same = all(abs(a - b) <= 1e-5 * abs(b) for a, b in zip(history, optax_history))
  print(f"teacher (128-64 MLP): loss {history[0]:.3f} -> {history[-1]:.3f},"
        f" test accuracy {digits.accuracy(teacher, data.x_test, data.y_test):.3f};"
        f" optax's loss gives the same first epoch: {same}")

  print(f"students (16-unit MLP), temperature {args.temperature}:")
  for divergence in args.divergences:
    student, history = digits.distill_student(
        teacher, data, divergence=divergence, temperature=args.temperature,
        epochs=student_epochs, seed=args.seed + 1)
    acc = digits.accuracy(student, data.x_test, data.y_test)
    print(f"  {divergence:16s} loss {history[0]:.3f} -> {history[-1]:.3f},"
          f" test accuracy {acc:.3f}")


if __name__ == "__main__":
  main()
