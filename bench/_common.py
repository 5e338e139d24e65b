"""Shared benchmark helpers: timing, XLA-reported memory, and the JSON record of a run."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time

import jax
import numpy as np

RESULTS = os.path.join(os.path.dirname(__file__), "results")

# Compiled programs are kept across runs, as the tests keep theirs: on a 2-core CPU the quick
# run's ~400 compilations take several minutes, and reading them back a few seconds. Timings
# are unchanged (the same executables). JAXDIV_BENCH_CACHE="" turns it off.
CACHE = os.environ.get("JAXDIV_BENCH_CACHE", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache", "jax-bench"))
if CACHE:
  jax.config.update("jax_compilation_cache_dir", CACHE)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def time_fn(fn, *args, warmup: int = 1, reps: int = 5, max_seconds: float = 30.0) -> float:
  """Median wall time in seconds of `fn(*args)` after `warmup` calls, each waited on with
  `block_until_ready`; stops early (at least 3 samples) once `max_seconds` have been spent."""
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times, start = [], time.perf_counter()
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
    if len(times) >= 3 and time.perf_counter() - start > max_seconds:
      break
  return statistics.median(times)


def time_interleaved(fns: dict, *args, warmup: int = 1, reps: int = 5,
                     max_seconds: float = 120.0) -> dict:
  """Median wall times of several functions on the same `args`, timed in turn (one call of
  each per round), so that a load that drifts during the run (a shared machine) weighs on all
  of them alike. A function that fails (compile error, out of memory) maps to its exception."""
  results, live = {}, {}
  for name, fn in fns.items():
    try:
      for _ in range(warmup):
        jax.block_until_ready(fn(*args))
      live[name], results[name] = fn, []
    except Exception as e:  # reported by the caller, not fatal to the other candidates
      results[name] = e
  start = time.perf_counter()
  for i in range(reps):
    for name, fn in live.items():
      t0 = time.perf_counter()
      jax.block_until_ready(fn(*args))
      results[name].append(time.perf_counter() - t0)
    if i >= 2 and time.perf_counter() - start > max_seconds:
      break
  return {k: statistics.median(v) if isinstance(v, list) else v for k, v in results.items()}


def memory(fn, *args) -> dict:
  """XLA's memory analysis of `jax.jit(fn)` compiled for `args` (arrays or ShapeDtypeStructs),
  without running it: temporary, argument and output bytes."""
  compiled = jax.jit(fn).lower(*args).compile()
  mem = compiled.memory_analysis()
  return dict(temp_bytes=int(mem.temp_size_in_bytes),
              argument_bytes=int(mem.argument_size_in_bytes),
              output_bytes=int(mem.output_size_in_bytes))


def environment() -> dict:
  device = jax.devices()[0]
  return dict(
      date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
      machine=platform.node(), processor=platform.processor() or platform.machine(),
      cpu_count=os.cpu_count(), backend=jax.default_backend(),
      device=getattr(device, "device_kind", str(device)), jax=jax.__version__,
      jaxlib=jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
      numpy=np.__version__, python=platform.python_version())


def write_json(name: str, payload: dict) -> str:
  """Writes `payload` with the environment to bench/results/<name>-<backend>-<date>.json."""
  env = environment()
  os.makedirs(RESULTS, exist_ok=True)
  stamp = env["date"][:19].replace(":", "").replace("-", "")
  path = os.path.join(RESULTS, f"{name}-{env['backend']}-{stamp}.json")
  with open(path, "w") as f:
    json.dump(dict(environment=env, **payload), f, indent=1, default=float)
  return path


def table(rows: list[dict], columns: list[str]) -> str:
  """A plain-text table of `rows` (dicts) with `columns`."""
  def fmt(x):
    if isinstance(x, float):
      return f"{x:.4g}"
    return str(x)
  cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
  widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
  line = lambda xs: "  ".join(x.ljust(w) for x, w in zip(xs, widths))
  return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells])


def main(name: str, bench, doc: str, tables, argv=None, *, header=None, plot=None,
         options=()) -> str:
  """The command line of one bench group: `--quick`, then `bench(quick)`, its tables printed,
  its JSON written (`write_json`) and, with `plot(rows, png_path)`, its plot.

  Args:
    name: the group (the JSON's name, with "-quick" for quick runs).
    bench: `bench(quick) -> dict` of the group.
    doc: the module docstring (its first line is the description).
    tables: `(key, columns)` pairs: `result[key]` is printed as a table of `columns`.
    argv: the arguments (default: the command line).
    header: optional `header(result) -> str`, printed before the tables.
    plot: optional `plot(rows, path)` of `result["rows"]`.
    options: `(flag, argparse keywords)` pairs of the group's own options, passed to `bench`
      as keywords named by their `dest`.
  """
  parser = argparse.ArgumentParser(description=doc.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="smaller shapes")
  parser.add_argument("--tag", default="", help="appended to the JSON file's name")
  for flag, kwargs in options:
    parser.add_argument(flag, **kwargs)
  args = vars(parser.parse_args(argv))
  quick, tag = args.pop("quick"), args.pop("tag")
  result = bench(quick, **args)
  if header is not None:
    print(header(result))
  for key, columns in tables:
    print(table(result[key], columns))
  path = write_json(name + ("-quick" if quick else "") + tag, result)
  if plot is not None:
    plot(result["rows"], path[:-5] + ".png")
  print("wrote", path)
  return path
