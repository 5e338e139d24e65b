"""`jaxdiv eval` beside the same jitted divergence on blocks held in memory (issue 12, item 4).

    python bench/evaluate.py            # 65536 x 1024 float32 logits per input (2 x 256 MiB)
    python bench/evaluate.py --quick    # 12288 x 1024 (2 x 48 MiB)

Two inputs of logits (a ~ N(0, 9), b = a + N(0, 1)) are written to .npy files, the format
`jaxdiv eval` reads; then, per divergence (KL and JS from logits), timed in turn in one process
(medians):

- `cli`: `jaxdiv.cli.main(["eval", P, Q, "-d", NAME, "--from-logits"])` in this process: the
  command's own path (files memory-mapped, its default batch from `--memory-budget`, every
  reduction, quantiles and histogram included; its table printed to nowhere);
- `evaluate`: `jaxdiv.evaluate(NAME, P, Q, from_logits=True)` on the memory-mapped files at the
  same batch size, the mean only;
- `in_memory` (the peer): the same function, `jax.jit(fn(a, b, axis=-1, from_logits=True))`,
  applied to the same rows already on the device, cut into blocks of the same batch size, the
  results brought to the host;
- `floor_read`: one jitted sum per block over the same in-memory blocks (each byte read once).

The files are read from the page cache (they were just written): the comparison is of the
pipeline, not of a disk. `ratio` is the evaluation's throughput over the peer's (target
>= 0.7). Without `--quick`, runs of the installed command in a new process (`python -m jaxdiv
eval`, JAX's start-up and compilation included) are added, with the GB/s each reports itself:
without a compilation cache, then filling a fresh one and reading it back.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common
import core

from jaxdiv import cli
from jaxdiv import evaluation

MiB = 1 << 20
SHAPE, QUICK_SHAPE = (65536, 1024), (12288, 1024)
CASES = ("kl_divergence", "js_divergence")


def _write_inputs(directory: str, rows: int, n: int, seed: int = 0) -> tuple[str, str]:
  """The issue's logits, a ~ N(0, 9) and b = a + N(0, 1), as two .npy files written in pieces."""
  rng = np.random.default_rng(seed)
  paths = [os.path.join(directory, name) for name in ("p.npy", "q.npy")]
  outs = [np.lib.format.open_memmap(p, "w+", np.float32, (rows, n)) for p in paths]
  step = max(1, (16 * MiB) // (4 * n))
  for i in range(0, rows, step):
    a = 3.0 * rng.standard_normal((min(step, rows - i), n), np.float32)
    outs[0][i:i + len(a)] = a
    outs[1][i:i + len(a)] = a + rng.standard_normal(a.shape, np.float32)
  for o in outs:
    o.flush()
  del outs
  return paths[0], paths[1]


def _cli_argv(name: str, p: str, q: str) -> list[str]:
  return ["eval", p, q, "-d", name, "--from-logits", "--no-progress"]


def _run_cli(argv: list[str]) -> None:
  with contextlib.redirect_stdout(io.StringIO()):
    status = cli.main(argv)
  if status != 0:
    raise RuntimeError(f"jaxdiv {' '.join(argv)} exited with {status}")


def _subprocess_cli(argv: list[str], summary: str) -> dict:
  """One run of the installed command in a new process: wall time (start-up included) and the
  throughput the command reports itself (its compilation included)."""
  t0 = time.perf_counter()
  subprocess.run([sys.executable, "-m", "jaxdiv", *argv, "--summary", summary], check=True,
                 stdout=subprocess.DEVNULL, env=dict(os.environ, JAX_PLATFORMS="cpu")
                 if jax.default_backend() == "cpu" else None)
  wall = time.perf_counter() - t0
  with open(summary) as f:
    run = json.load(f)["run"]
  return dict(wall_s=wall, seconds=run["seconds"], GBps=run["bytes_per_second"] / 1e9)


def _blocks(path: str, batch: int) -> list[jax.Array]:
  """The rows of an .npy file on the default device, in blocks of `batch` rows (the last one
  padded, as the evaluation pads it)."""
  x = np.load(path)
  out = []
  for i in range(0, len(x), batch):
    block = x[i:i + batch]
    if len(block) < batch:
      block = np.concatenate([block, np.repeat(block[-1:], batch - len(block), 0)])
    out.append(jax.device_put(block))
  return out


def _read_files(paths) -> int:
  """The files' bytes read once into memory (from the page cache: they were just written)."""
  total = 0
  for path in paths:
    with open(path, "rb", buffering=0) as f:
      buf = bytearray(16 * MiB)
      while k := f.readinto(buf):
        total += k
  return total


def bench(quick: bool = False, reps: int | None = None, bw: dict | None = None,
          subprocess_cli: bool | None = None) -> dict:
  rows_n, n = QUICK_SHAPE if quick else SHAPE
  reps = reps or (3 if quick else 7)
  subprocess_cli = (not quick) if subprocess_cli is None else subprocess_cli
  nbytes = 2 * rows_n * n * 4
  rows = []
  with tempfile.TemporaryDirectory(prefix="jaxdiv-bench-eval-") as tmp:
    t0 = time.perf_counter()
    p_path, q_path = _write_inputs(tmp, rows_n, n)
    write_s = time.perf_counter() - t0
    mm = [evaluation.open_array(p) for p in (p_path, q_path)]
    for name in CASES:
      argv = _cli_argv(name, p_path, q_path)
      _run_cli(argv)  # compiles the step; its batch size is the one evaluate picks below
      fn = evaluation.DIVERGENCES[name].fn
      # The CLI's batch: the largest that fits its default --memory-budget (as cli.py picks it).
      budget = evaluation.parse_size(cli.build_parser().parse_args(argv).memory_budget)
      batch_size, max_block = evaluation.budget_batch(budget, n, [4, 4], jax.device_count())
      res = evaluation.evaluate(name, *mm, from_logits=True, batch_size=batch_size,
                                max_block_rows=max_block)
      batch = res.timing["batch_size"]
      blocks = list(zip(_blocks(p_path, batch), _blocks(q_path, batch)))
      step = jax.jit(lambda a, b, fn=fn: fn(a, b, axis=-1, from_logits=True))
      read = jax.jit(lambda a, b: jnp.sum(a) + jnp.sum(b))

      def in_memory(step=step, blocks=blocks):
        return np.concatenate([np.asarray(v) for v in [step(a, b) for a, b in blocks]])

      def floor(read=read, blocks=blocks):
        return jax.block_until_ready([read(a, b) for a, b in blocks])

      # The same function at the block shape the evaluation compiles (one call per (r, n)
      # block, so that every row's bits are the same for any batch and device count): what is
      # left between this and `evaluate` is the pipeline's own cost.
      r = res.timing["block_rows"]
      small = [(a[i:i + r], b[i:i + r]) for a, b in blocks for i in range(0, batch, r)]

      def in_memory_blocks(step=step, small=small):
        return np.concatenate([np.asarray(v) for v in [step(a, b) for a, b in small]])

      runs = [lambda argv=argv: _run_cli(argv),
              lambda name=name, bs=batch_size, mm=mm, mb=max_block: evaluation.evaluate(
                  name, *mm, from_logits=True, batch_size=bs, max_block_rows=mb),
              in_memory, in_memory_blocks, floor, lambda: _read_files((p_path, q_path))]
      t_cli, t_eval, t_mem, t_blocks, t_read, t_file = core.interleaved(runs, reps, warmup=1)
      want = in_memory()[:rows_n]
      np.testing.assert_allclose(res.per_row, want, rtol=1e-5, atol=1e-6)
      del blocks, small
      shape = f"{rows_n}x{n}"
      for who, t in (("cli", t_cli), ("evaluate", t_eval)):
        rows.append(dict(group="evaluate", case=f"jaxdiv eval {name}(logits) [{who}]",
                         mode="fwd", shape=shape, vs="jit on in-memory blocks",
                         jaxdiv_ms=1e3 * t, peer_ms=1e3 * t_mem, ratio=t / t_mem,
                         throughput_ratio=t_mem / t, GBps=nbytes / t / 1e9,
                         peer_GBps=nbytes / t_mem / 1e9, floor_read_ms=1e3 * t_read,
                         floor_GBps=nbytes / t_read / 1e9, floor_file_ms=1e3 * t_file,
                         floor_file_GBps=nbytes / t_file / 1e9, block_rows=r,
                         peer_blocks_ms=1e3 * t_blocks, vs_blocks_ratio=t_blocks / t,
                         batch=batch, bytes=nbytes,
                         roofline=(nbytes / (bw["GBps"] * 1e9) / t) if bw else ""))
      gb = lambda t: f"{nbytes / t / 1e9:.2f}"
      print(f"  evaluate {name}: GB/s cli {gb(t_cli)}, evaluate {gb(t_eval)}, in memory "
            f"{gb(t_mem)} ({r}-row blocks {gb(t_blocks)}), floors: read {gb(t_read)}, files "
            f"{gb(t_file)}; throughput cli / in memory {t_mem / t_cli:.2f}, evaluate / in "
            f"memory {t_mem / t_eval:.2f}", flush=True)
      if subprocess_cli:
        # Without a compilation cache, then with a fresh one twice: the run that fills it and
        # the run that reads it (`--compile-cache`, the command's default in the user's folder).
        cache = os.path.join(tmp, f"xla-{name}")
        for how, extra in (("no compile cache", ["--no-compile-cache"]),
                           ("compile cache cold", ["--compile-cache", cache]),
                           ("compile cache warm", ["--compile-cache", cache])):
          sub = _subprocess_cli(argv + extra, os.path.join(tmp, "summary.json"))
          rows.append(dict(group="evaluate",
                           case=f"jaxdiv eval {name}(logits) [subprocess, {how}]",
                           mode="fwd", shape=shape, vs="jit on in-memory blocks",
                           jaxdiv_ms=1e3 * sub["seconds"], peer_ms=1e3 * t_mem,
                           ratio=sub["seconds"] / t_mem, throughput_ratio=t_mem / sub["seconds"],
                           GBps=sub["GBps"], peer_GBps=nbytes / t_mem / 1e9,
                           wall_with_startup_ms=1e3 * sub["wall_s"], batch=batch, bytes=nbytes))
          print(f"  subprocess {name}, {how}: {sub['GBps']:.2f} GB/s reported ({sub['seconds']:.3f}"
                f" s), wall {sub['wall_s']:.2f} s with start-up", flush=True)
    del mm
  return dict(rows=rows, shape=[rows_n, n], dtype="float32", reps=reps, bytes=nbytes,
              write_seconds=write_s, versions=core.versions())


COLUMNS = ["case", "shape", "batch", "jaxdiv_ms", "peer_ms", "peer_blocks_ms", "floor_read_ms",
           "floor_file_ms", "GBps", "peer_GBps", "floor_GBps", "floor_file_GBps",
           "throughput_ratio"]


def main(argv=None):
  options = [("--reps", dict(type=int, help="timed repetitions (default 3 quick, 7 full)")),
             ("--subprocess-cli", dict(action=argparse.BooleanOptionalAction,
                                       default=None, help="also time `python -m jaxdiv eval`"
                                       " once (default: without --quick)"))]
  _common.main("evaluate", bench, __doc__, [("rows", COLUMNS)], argv, options=options)


if __name__ == "__main__":
  main()
