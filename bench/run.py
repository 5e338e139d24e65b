"""jaxdiv beside its peers, every group in one process, one table of ratios.

    python bench/run.py --quick     # small shapes: a few minutes on a CPU
    python bench/run.py             # the full shapes
    python bench/run.py --groups core,losses

Groups: `core` (bench/core.py: core divergences against scipy, torch on the CPU and optax),
`losses` (bench/losses.py: jaxdiv.losses against optax.losses), `kernels` (bench/kernels.py:
large-vocabulary kernels against optax; Liger-Kernel and Cut Cross-Entropy on a GPU where they
are installed). A group whose module does not import is reported and skipped.

Each group writes bench/results/<group>[-quick]-<backend>-<date>.json (with the machine, device
and versions) and a PNG of its ratios next to it; the summary table printed at the end is also
written as bench/results/run[-quick]-<backend>-<date>.json.
"""

from __future__ import annotations

import argparse
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


GROUPS = dict(hand=run_hand, core=run_core, losses=run_losses, kernels=run_kernels)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="smaller shapes (a few minutes)")
  parser.add_argument("--groups", default=",".join(GROUPS), help="comma-separated groups")
  args = parser.parse_args(argv)
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
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
