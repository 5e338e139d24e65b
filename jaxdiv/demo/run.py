"""`jaxdiv demo`: the main job end to end on built-in data (scikit-learn's digits, no download).

1. trains a small Flax teacher on the digits training split;
2. distils three students from it, with forward KL, reverse KL and Jensen–Shannon losses;
3. evaluates every divergence of the core family between the teacher and each student on the
   held-out split with :func:`jaxdiv.evaluate` (per-row results and exact quantiles);
4. prints a comparison table and writes `summary.json`, `divergences.png` and
   `per_example.png` to the output directory.

Training is done by :mod:`jaxdiv.demo.digits`; this module only orchestrates and reports, and
:func:`report` works on any teacher/student logits (it is what the tests exercise).
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np

# Divergences between two distributions, with the parameters the demo uses.
_PARAMS = {"renyi_divergence": {"alpha": 0.5}, "tsallis_divergence": {"alpha": 0.5},
           "alpha_divergence": {"alpha": 0.5}}


def _pairwise_divergences() -> list[str]:
  from jaxdiv.evaluate import DIVERGENCES

  return [name for name, spec in DIVERGENCES.items()
          if spec.n_inputs == 2 and not name.startswith("binary")]


def report(teacher_logits: np.ndarray, students: dict[str, np.ndarray],
           labels: np.ndarray | None = None, out: str | None = None,
           extra: dict | None = None) -> dict:
  """Compares each student with the teacher on every divergence; writes plots and JSON.

  Args:
    teacher_logits: ``[rows, classes]`` logits of the teacher on the held-out set.
    students: name -> ``[rows, classes]`` logits of each student on the same rows.
    labels: the true classes (for accuracies), optional.
    out: output directory (created); None writes nothing.
    extra: more entries for summary.json (timings, training settings).

  Returns:
    The summary: ``{"divergences": {name: {student: summary}}, "accuracy": ..., ...}``.
  """
  from jaxdiv.evaluate import evaluate

  teacher_logits = np.asarray(teacher_logits, np.float32)
  names = _pairwise_divergences()
  table: dict[str, dict[str, dict]] = {}
  per_row_kl: dict[str, np.ndarray] = {}
  for name in names:
    table[name] = {}
    for student, logits in students.items():
      res = evaluate(name, teacher_logits, np.asarray(logits, np.float32), from_logits=True,
                     reductions=("mean", "std", "quantiles"), quantiles=(0.5, 0.9, 0.99),
                     progress=False, **_PARAMS.get(name, {}))
      table[name][student] = res.summary
      if name == "kl_divergence":
        per_row_kl[student] = np.asarray(res.per_row)
  entropies = {who: evaluate("entropy", np.asarray(lg, np.float32), from_logits=True,
                             progress=False).summary["mean"]
               for who, lg in {"teacher": teacher_logits, **students}.items()}
  summary: dict = {"rows": int(teacher_logits.shape[0]), "classes": int(teacher_logits.shape[1]),
                   "students": list(students), "parameters": _PARAMS,
                   "mean_entropy": entropies, "divergences": table}
  if labels is not None:
    labels = np.asarray(labels)
    summary["accuracy"] = {who: float(np.mean(np.argmax(lg, -1) == labels))
                           for who, lg in {"teacher": teacher_logits, **students}.items()}
  if extra:
    summary.update(extra)
  print(format_table(summary))
  if out is not None:
    os.makedirs(out, exist_ok=True)
    _plots(summary, per_row_kl, out)
    from jaxdiv._json import jsonable
    with open(os.path.join(out, "summary.json"), "w") as f:
      json.dump(jsonable(summary), f, indent=2)
      f.write("\n")
    print(f"wrote {os.path.join(out, 'summary.json')}, divergences.png, per_example.png")
  return summary


def format_table(summary: dict) -> str:
  students = summary["students"]
  w = max(12, *(len(s) for s in students))
  head = f"{'teacher vs student (mean)':<28}" + "".join(f"{s:>{w + 2}}" for s in students)
  lines = [head, "-" * len(head)]
  for name, row in summary["divergences"].items():
    label = name + (f" (a={_PARAMS[name]['alpha']})" if name in _PARAMS else "")
    lines.append(f"{label:<28}" + "".join(f"{row[s]['mean']:>{w + 2}.4g}" for s in students))
  if "accuracy" in summary:
    acc = summary["accuracy"]
    lines.append("-" * len(head))
    lines.append(f"{'test accuracy':<28}" + "".join(f"{acc[s]:>{w + 2}.3f}" for s in students)
                 + f"   (teacher {acc['teacher']:.3f})")
  best = min(students, key=lambda s: summary["divergences"]["kl_divergence"][s]["mean"])
  lines.append(f"closest to the teacher in KL(teacher‖student): {best}")
  return "\n".join(lines)


def _plots(summary: dict, per_row_kl: dict[str, np.ndarray], out: str):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  students = summary["students"]
  names = list(summary["divergences"])
  cols = 4
  rows = math.ceil(len(names) / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for ax, name in zip(axes.flat, names):
    means = [summary["divergences"][name][s]["mean"] for s in students]
    ax.bar(range(len(students)), means, color=colors[:len(students)])
    ax.set_title(name, fontsize=9)
    ax.set_xticks(range(len(students)), students, fontsize=7, rotation=20)
    ax.tick_params(axis="y", labelsize=7)
  for ax in list(axes.flat)[len(names):]:
    ax.axis("off")
  fig.suptitle("Teacher vs each student on the held-out digits (mean over examples)")
  fig.tight_layout()
  fig.savefig(os.path.join(out, "divergences.png"), dpi=110)
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(6, 4))
  finite = np.concatenate([v[np.isfinite(v)] for v in per_row_kl.values()] or [np.zeros(1)])
  hi = float(np.quantile(finite, 0.995)) if finite.size else 1.0
  bins = np.linspace(0, max(hi, 1e-6), 40)
  for s in students:
    ax.hist(np.clip(per_row_kl[s], 0, hi), bins=bins, histtype="step", label=s, linewidth=1.5)
  ax.set_xlabel("KL(teacher ‖ student) per held-out example (nats)")
  ax.set_ylabel("examples")
  ax.set_yscale("log")
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(out, "per_example.png"), dpi=110)
  plt.close(fig)




def _train(seed: int, quick: bool):
  """Teacher and students trained with :mod:`jaxdiv.demo.digits`; returns (teacher logits,
  {student: logits}, labels, info) on the held-out split."""
  from jaxdiv.demo import digits

  epochs = 3 if quick else 30
  data = digits.load_data(seed=seed)
  t0 = time.perf_counter()
  teacher, history = digits.train_teacher(data, epochs=epochs, seed=seed)
  info = {"epochs": epochs, "train_rows": int(len(data.y_train)),
          "test_rows": int(len(data.y_test)), "teacher_hidden": [128, 64],
          "student_hidden": [16], "temperature": 2.0,
          "teacher_final_loss": history[-1], "seconds": {"teacher": time.perf_counter() - t0}}
  print(f"teacher: test accuracy {digits.accuracy(teacher, data.x_test, data.y_test):.3f}"
        f" ({info['seconds']['teacher']:.1f} s)")
  students = {}
  for i, divergence in enumerate(("forward_kl", "reverse_kl", "js")):
    t0 = time.perf_counter()
    student, history = digits.distill_student(teacher, data, divergence=divergence,
                                              epochs=epochs, seed=seed + 1 + i)
    students[divergence] = np.asarray(student(data.x_test))
    info["seconds"][divergence] = time.perf_counter() - t0
    print(f"student ({divergence}): test accuracy"
          f" {digits.accuracy(student, data.x_test, data.y_test):.3f}"
          f" ({info['seconds'][divergence]:.1f} s)")
  return np.asarray(teacher(data.x_test)), students, data.y_test, info


def main(out: str = "jaxdiv-demo", seed: int = 0, quick: bool = False) -> int:
  """Runs the demo; returns the exit status."""
  t0 = time.perf_counter()
  teacher_logits, students, labels, info = _train(seed, quick)
  t_train = time.perf_counter() - t0
  summary = report(teacher_logits, students, labels, out,
                   extra={"seed": seed, "training": info, "seconds_training": t_train})
  seconds = time.perf_counter() - t0
  print(f"demo finished in {seconds:.1f} s (training {t_train:.1f} s)")
  del summary
  return 0
