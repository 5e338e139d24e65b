"""jaxdiv beside its peers, every group in one process, one table of ratios.

    python bench/run.py --quick     # small shapes: 1.3-1.5 min warm, 3.4 min cold, 2 CPU cores
    python bench/run.py             # the full shapes
    python bench/run.py --groups core,losses

    python bench/run.py --quick --markdown     # also the Markdown tables README.md quotes
    python bench/run.py --from bench/results/run-quick-cpu-<date>.json   # those tables again

Groups: `hand` (bench/hand.py: every core function against the jnp / optax line a user would
write, with the floors), `evaluate` (bench/evaluate.py: `jaxdiv eval` from files against the
same jitted divergence on in-memory blocks),
`core` (bench/core.py: core divergences against scipy, torch on the CPU and optax),
`losses` (bench/losses.py: jaxdiv.losses against optax.losses), `kernels` (bench/kernels.py:
large-vocabulary kernels against optax; Liger-Kernel and Cut Cross-Entropy on a GPU where they
are installed). A group whose module does not import is reported and skipped.

Each group writes bench/results/<group>[-quick]-<backend>-<date>.json (with the machine, device
and versions) and a PNG of its ratios next to it; the summary table printed at the end is also
written as bench/results/run[-quick]-<backend>-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common

SUMMARY = ["group", "case", "mode", "shape", "vs", "jaxdiv_ms", "peer_ms", "ratio", "temp_ratio",
           "roofline", "floor_read_ms", "floor_exp_ms"]


def _summary_core(rows):
  out = []
  for r in rows:
    s = {k: r.get(k, "") for k in SUMMARY}
    pt, jt = r.get("peer_temp_MiB"), r.get("jaxdiv_temp_MiB")
    if isinstance(pt, float) and isinstance(jt, float):
      s["temp_ratio"] = jt / pt if pt > 0 else ("0/0" if jt == 0 else f"{jt:.3g} MiB/0")
    out.append(s)
  return out


def _summary_kernels(sections, bw_GBps):
  out = []
  for rows in sections.values():
    base = {}
    for r in rows:
      if not r.get("impl", "").startswith("jaxdiv"):
        base.setdefault(r["case"], r)
        continue
      b = base.get(r["case"], {})
      s = dict(group="kernels", case=f"{r['case']} [{r['impl'][7:]}]", mode="fwd+vjp",
               vs=b.get("impl", ""), ratio=r.get("time_ratio", r.get("error", "")),
               temp_ratio=r.get("temp_ratio", ""))
      if isinstance(r.get("time_s"), float):
        s["jaxdiv_ms"] = 1e3 * r["time_s"]
      if isinstance(b.get("time_s"), float):
        s["peer_ms"] = 1e3 * b["time_s"]
      if isinstance(r.get("GBps_at_floor"), float):
        s["roofline"] = r["GBps_at_floor"] / bw_GBps
      out.append(s)
  return out


def run_core(quick, bw):
  import core
  result = core.bench(quick, bw=bw)
  return result, _summary_core(result["rows"])


def run_hand(quick, bw):
  import hand
  result = hand.bench(quick, bw=bw)
  return result, _summary_core(result["rows"])


def run_losses(quick, bw):
  import losses
  result = losses.bench(quick, bw=bw)
  return result, _summary_core(result["rows"])


def run_kernels(quick, bw):
  import kernels
  sections = dict(memory=kernels.bench_memory, ce=lambda: kernels.bench_cross_entropy(quick),
                  fused=lambda: kernels.bench_fused(quick),
                  distill=lambda: kernels.bench_distillation(quick))
  if jax.default_backend() == "gpu":
    sections["gpu"] = kernels.bench_gpu
    sections["peers"] = kernels.bench_peers  # Liger-Kernel and Cut Cross-Entropy, if installed
  results = {}
  for name, fn in sections.items():
    try:
      results[name] = fn()
    except Exception as e:  # one failing section is reported, the others still run
      results[name] = [dict(case=name, impl="jaxdiv", error=repr(e)[:300])]
    print(f"  kernels {name}: done", flush=True)
  return dict(sections=results, quick=quick), _summary_kernels(results, bw["GBps"])


def run_evaluate(quick, bw):
  import evaluate
  result = evaluate.bench(quick, bw=bw)
  # Its throughputs and floors stay in the summary: `markdown` prints them.
  return result, [dict(r, **s) for r, s in zip(result["rows"], _summary_core(result["rows"]))]


GROUPS = dict(hand=run_hand, core=run_core, losses=run_losses, kernels=run_kernels,
              evaluate=run_evaluate)


def _x(v, digits=2) -> str:
  return f"{v:.{digits}f}x" if isinstance(v, float) else str(v or "")


def markdown(rows: list[dict], accuracy: list[dict]) -> str:
  """The summary as Markdown tables, as README.md quotes them: group `hand` as one row per case
  with a column per shape and mode, `evaluate` with its throughputs and floors, then the other
  groups' ratios, then the accuracy."""
  out = []
  hand = [r for r in rows if r.get("group") == "hand"]
  if hand:
    shapes = list(dict.fromkeys(r["shape"] for r in hand))
    cells = {}
    for r in hand:
      cell = _x(r.get("ratio"))
      t, fe, fr = r.get("jaxdiv_ms"), r.get("floor_exp_ms"), r.get("floor_read_ms")
      if all(isinstance(v, float) and v > 0 for v in (t, fe, fr)):
        cell += f" ({t / fe:.1f} / {t / fr:.1f})"
      cells.setdefault(r["case"], {})[r["shape"], r["mode"]] = cell
    out.append("jaxdiv time / hand-written time (< 1: jaxdiv faster); in brackets jaxdiv's time"
               " over the two floors timed beside it: the `exp`s (for probabilities the `log`s)"
               " the maths needs / one read of the inputs.\n")
    head = [f"{s} {m}" for s in shapes for m in ("fwd", "value+grad")]
    out.append("| case | " + " | ".join(head) + " |")
    out.append("|---" * (len(head) + 1) + "|")
    for case, c in cells.items():
      out.append(f"| {case} | " + " | ".join(c.get((s, m), "") for s in shapes
                                           for m in ("fwd", "fwd+vjp")) + " |")
  ev = [r for r in rows if r.get("group") == "evaluate"]
  if ev:
    gb = lambda r, k: f"{r[k]:.2f}" if isinstance(r.get(k), float) else ""
    out.append("\n`jaxdiv eval` from .npy files (page cache) against the same jitted divergence on"
               " the same rows held in memory, in blocks of the evaluation's batch; GB/s of"
               " both inputs:\n")
    out.append("| case | shape | batch | eval GB/s | in-memory GB/s | in-memory, compiled block"
               " | floor: one read in memory | floor: one read of the files | eval / in-memory"
               " throughput |")
    out.append("|---" * 9 + "|")
    for r in ev:
      blocks = (f"{r['bytes'] / r['peer_blocks_ms'] / 1e6:.2f} ({r['block_rows']} rows)"
                if isinstance(r.get("peer_blocks_ms"), float) else "")
      out.append(f"| {r['case']} | {r['shape']} | {r.get('batch', '')} | {gb(r, 'GBps')} |"
                 f" {gb(r, 'peer_GBps')} | {blocks} | {gb(r, 'floor_GBps')} |"
                 f" {gb(r, 'floor_file_GBps')} | {_x(r.get('throughput_ratio'))} |")
  other = [r for r in rows if r.get("group") not in ("hand", "evaluate")]
  if other:
    out.append("\nThe other groups: jaxdiv time / the peer's (< 1: jaxdiv faster); temp: XLA's"
               " temporary bytes, jaxdiv / peer; roofline: the time to move the minimum bytes /"
               " jaxdiv's time.\n")
    out.append("| group | case | mode | shape | vs | ratio | temp | roofline |")
    out.append("|---" * 8 + "|")
    for r in other:
      temp = r.get("temp_ratio", "")
      temp = f"{temp:.2f}" if isinstance(temp, float) else str(temp)
      roof = f"{r['roofline']:.3g}" if isinstance(r.get("roofline"), float) else ""
      out.append(f"| {r['group']} | {r['case']} | {r.get('mode', '')} | {r.get('shape', '')} |"
                 f" {r.get('vs', '')} | {_x(r.get('ratio'), 3) or r.get('peer_ms', '')} |"
                 f" {temp} | {roof} |")
  if accuracy:
    out.append("\nfloat32 absolute error against float64 (scipy), jaxdiv / the hand-written"
               " line:\n")
    out.append("| case | rows | median error ratio | max error ratio |")
    out.append("|---" * 4 + "|")
    for r in accuracy:
      out.append(f"| {r['case']} | {r['shape']} | {_x(r.get('med_ratio'))} |"
                 f" {_x(r.get('max_ratio'))} |")
  return "\n".join(out)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="smaller shapes (a few minutes)")
  parser.add_argument("--groups", default=",".join(GROUPS), help="comma-separated groups")
  parser.add_argument("--markdown", action="store_true",
                      help="also print the summary as the Markdown tables README.md quotes")
  parser.add_argument("--from", dest="source", nargs="+", metavar="JSON",
                      help="run nothing: print the Markdown tables of a saved run-*.json; a"
                      " group's own JSON after it replaces that group's rows by its full ones")
  args = parser.parse_args(argv)
  if args.source:
    with open(args.source[0]) as f:
      saved = json.load(f)
    rows = saved["rows"]
    for path in args.source[1:]:
      with open(path) as f:
        group_rows = json.load(f)["rows"]
      names = {r.get("group") for r in group_rows}
      rows = [r for r in rows if r.get("group") not in names] + group_rows
    print(markdown(rows, saved.get("accuracy", [])))
    return 0
  import core  # the bandwidth measurement is shared by every group's roofline

  start = time.perf_counter()
  env = _common.environment()
  print(f"{env['machine']} | {env['processor']} x{env['cpu_count']} | {env['backend']} "
        f"{env['device']} | jax {env['jax']} | {env['date']}", flush=True)
  bw = core.bandwidth(64 * core.MiB if args.quick else 256 * core.MiB)
  print(f"memory bandwidth {bw['GBps']:.1f} GB/s (XLA {bw['xla_GBps']:.1f}, "
        f"NumPy {bw['numpy_GBps']:.1f})", flush=True)
  summary, status, failed, accuracy = [], {}, False, []
  suffix = "-quick" if args.quick else ""
  for group in args.groups.split(","):
    t0 = time.perf_counter()
    try:
      result, rows = GROUPS[group](args.quick, bw)
    except ImportError as e:
      status[group] = f"skipped: {e}"
      print(f"  {group}: skipped ({e})", flush=True)
      continue
    except Exception as e:
      traceback.print_exc()
      status[group] = f"failed: {e!r}"[:300]
      failed = True
      continue
    path = _common.write_json(group + suffix, dict(result, bandwidth=bw))
    import core as _core
    _core.plot(rows, path[:-5] + ".png", f"{group}: jaxdiv time / peer time, "
               f"{env['backend']} {env['device']}")
    status[group] = f"ok in {time.perf_counter() - t0:.0f} s: {os.path.relpath(path)}"
    summary.extend(rows)
    accuracy.extend(result.get("accuracy", []))
  print("\n" + _common.table(summary, SUMMARY))
  if accuracy:
    import hand
    print("\nfloat32 absolute error against float64 (scipy), jaxdiv and the hand-written line:")
    print(_common.table(accuracy, hand.ACC_COLUMNS))
  print("\nratio: jaxdiv time / peer time (< 1: jaxdiv faster); temp_ratio: XLA temporary bytes, "
        "jaxdiv / peer; roofline: time to move the minimum bytes at the measured bandwidth / "
        "jaxdiv time; floor_read_ms / floor_exp_ms (group hand): one reduction reading the inputs "
        "/ the exps (logits) or logs (probabilities) the maths needs, timed in the same rounds")
  for group, s in status.items():
    print(f"{group}: {s}")
  total = time.perf_counter() - start
  path = _common.write_json("run" + suffix, dict(rows=summary, accuracy=accuracy, groups=status,
                                                 bandwidth=bw,
                                                 seconds=total, versions=core.versions()))
  print(f"wrote {os.path.relpath(path)} ({total:.0f} s)")
  if args.markdown:
    print("\n" + markdown(summary, accuracy))
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
