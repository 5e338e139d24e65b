"""Large-vocabulary kernels beside their peers, in one process, on the same inputs.

    python bench/kernels.py            # CPU criteria at the issue's shapes (a few minutes)
    python bench/kernels.py --quick    # smaller shapes (under a minute)
    python bench/kernels.py --only gpu --peers   # on a GPU: the LLM head shapes, with
                                                 # Liger-Kernel and Cut Cross-Entropy (torch)

Prints a table of ratios against the optax baseline (median time; XLA-reported temporary
memory) with each figure's roofline (FLOPs, minimum bytes), and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(__file__))
import _common
import forward_grad

from jaxdiv.kernels import _shapes
from jaxdiv.kernels import cross_entropy_with_integer_labels
from jaxdiv.kernels import distillation_divergence
from jaxdiv.kernels import fused_linear_cross_entropy
from jaxdiv.kernels import fused_linear_distillation_divergence

GiB = 1 << 30


def _data(key, n, d, v, dtype):
  kh, kw, ky = jax.random.split(jax.random.key(key), 3)
  h = jax.random.normal(kh, (n, d), dtype)
  w = (jax.random.normal(kw, (d, v), jnp.float32) / np.sqrt(d)).astype(dtype)
  return h, w, jax.random.randint(ky, (n,), 0, v)


def _optax_linear(h, w, y):
  z = jnp.dot(h, w, preferred_element_type=jnp.float32)
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(z, y))


def _fused(implementation, h, w, y):
  return jnp.mean(fused_linear_cross_entropy(h, w, y, implementation=implementation))


def _forward_grad_mean(h, w, y):
  return forward_grad.linear_cross_entropy(h, w, y, jnp.ones(y.shape, bool), vd=False,
                                           reduction="mean")


def _vg(loss, argnums):
  return jax.jit(jax.value_and_grad(loss, argnums))


def bench_memory():
  """The issue's memory criterion, compiled only: tokens=8192, d=1024, vocab=131072, f32."""
  n, d, v = _shapes.MEMORY_LINEAR
  args = (jax.ShapeDtypeStruct((n, d), jnp.float32), jax.ShapeDtypeStruct((d, v), jnp.float32),
          jax.ShapeDtypeStruct((n,), jnp.int32))
  base = _common.memory(jax.value_and_grad(_optax_linear, (0, 1)), *args)
  rows = [dict(case=f"memory f32 N={n} D={d} V={v}", impl="matmul+optax",
               temp_GiB=base["temp_bytes"] / GiB, temp_ratio=1.0)]
  for name, fn in [("fused default", functools.partial(_fused, None)),
                   ("fused chunked", functools.partial(_fused, "chunked")),
                   ("grads-in-forward (mean)", _forward_grad_mean)]:
    mem = _common.memory(jax.value_and_grad(fn, (0, 1)), *args)
    rows.append(dict(case=rows[0]["case"], impl=f"jaxdiv {name}",
                     temp_GiB=mem["temp_bytes"] / GiB,
                     temp_ratio=mem["temp_bytes"] / base["temp_bytes"]))
  return rows


def _rows(case, times, base_name, **extra):
  """Table rows from `time_interleaved`'s answer; `extra[name]` adds figures from the time."""
  base = times[base_name]
  base = None if isinstance(base, Exception) else base
  rows = []
  for name, t in times.items():
    if isinstance(t, Exception):
      rows.append(dict(case=case, impl=name, error=repr(t)[:300]))
      continue
    row = dict(case=case, impl=name, time_s=t, time_ratio=t / base if base else None)
    row.update(extra.get(name, lambda t: {})(t))
    rows.append(row)
  return rows


def bench_cross_entropy(quick):
  """Cross-entropy over given logits: value-and-grad time against optax."""
  n, v = _shapes.BENCH_LOGITS_QUICK if quick else _shapes.BENCH_LOGITS
  z = jax.random.normal(jax.random.key(0), (n, v), jnp.float32) * 3
  y = jax.random.randint(jax.random.key(1), (n,), 0, v)
  floor_bytes = 2 * n * v * 4  # read the logits once, write their gradient once
  fns = {"optax": _vg(lambda z, y: jnp.mean(
      optax.softmax_cross_entropy_with_integer_labels(z, y)), 0)}
  # Floors, timed beside the losses: one read of the logits and one write of a new [n, v]
  # array (what any value-and-grad must at least do), and the same with one `exp` per entry
  # (what any exact softmax gradient must at least do).
  fns["floor: read+write"] = jax.jit(lambda z, y: z * 2.0)
  fns["floor: read+exp+write"] = jax.jit(lambda z, y: jnp.exp(z))
  impls = [None, "xla", "chunked"] + (["pallas"] if jax.default_backend() == "gpu" else [])
  for impl in impls:
    fns[f"jaxdiv {impl or 'default'}"] = _vg(lambda z, y, impl=impl: jnp.mean(
        cross_entropy_with_integer_labels(z, y, implementation=impl)), 0)
  times = _common.time_interleaved(fns, z, y)
  roofline = lambda t: dict(min_bytes=floor_bytes, GBps_at_floor=floor_bytes / t / 1e9)
  rows = _rows(f"ce f32 N={n} V={v}", times, "optax", **{k: roofline for k in fns})
  for row in rows:
    if "error" not in row:
      row["temp_MiB"] = _common.memory(fns[row["impl"]], z, y)["temp_bytes"] / (1 << 20)
  return rows


def bench_fused(quick, shape=None, dtype=jnp.float32, impls=(None, "chunked", "xla"),
                matmul_rate=None):
  """Fused linear cross-entropy value-and-grad (d hidden, d weight) against matmul + optax."""
  n, d, v = shape or (_shapes.BENCH_LINEAR_CPU_QUICK if quick else _shapes.BENCH_LINEAR_CPU)
  h, w, y = _data(0, n, d, v, dtype)
  nbytes = jnp.dtype(dtype).itemsize * 2 * (n * d + d * v)  # read h, W; write dh, dW
  fns = {"matmul+optax": _vg(_optax_linear, (0, 1))}
  flops = {"matmul+optax": 6 * n * d * v}
  for impl in impls:
    name = f"jaxdiv fused {impl or 'default'}"
    fns[name] = _vg(functools.partial(_fused, impl), (0, 1))
    # "xla" materialises the logits (6 NDV); the blockwise ones recompute them (8 NDV).
    flops[name] = (6 if impl == "xla" else 8) * n * d * v
  if jax.default_backend() == "cpu":
    # The alternative: a mean loss with the gradients formed in the forward pass (6 NDV, no
    # logits kept, a [D, V] float32 gradient held until the backward), as Liger-Kernel.
    name = "jaxdiv grads-in-forward (mean)"
    fns[name] = _vg(_forward_grad_mean, (0, 1))
    flops[name] = 6 * n * d * v

  def roofline(name):
    def extra(t):
      row = dict(flops=flops[name], min_bytes=nbytes, TFLOPs=flops[name] / t / 1e12)
      if matmul_rate:
        row["frac_of_matmul_rate"] = flops[name] / t / matmul_rate
      return row
    return extra

  times = _common.time_interleaved(fns, h, w, y)
  return _rows(f"fused {jnp.dtype(dtype).name} N={n} D={d} V={v}", times, "matmul+optax",
               **{k: roofline(k) for k in fns})


def bench_distillation(quick):
  """Distillation divergences over logits: value-and-grad against plain autodiff (optax)."""
  n, v = _shapes.BENCH_LOGITS_QUICK if quick else _shapes.BENCH_LOGITS
  n = n // 2  # two [tokens, vocab] inputs
  zs = jax.random.normal(jax.random.key(0), (n, v), jnp.float32) * 2
  zt = jax.random.normal(jax.random.key(1), (n, v), jnp.float32) * 2
  fns = {"optax kl_with_log_targets": _vg(lambda zs, zt: jnp.mean(
      optax.losses.kl_divergence_with_log_targets(jax.nn.log_softmax(zs),
                                                  jax.nn.log_softmax(zt))), 0)}
  for impl in (None, "chunked"):
    fns[f"jaxdiv {impl or 'default'}"] = _vg(lambda zs, zt, impl=impl: jnp.mean(
        distillation_divergence(zs, zt, implementation=impl)), 0)
  times = _common.time_interleaved(fns, zs, zt)
  return _rows(f"forward_kl f32 N={n} V={v}", times, "optax kl_with_log_targets")


def _materialised_distillation(hs, ws, ht, wt):
  zs = jnp.dot(hs, ws, preferred_element_type=jnp.float32)
  zt = jnp.dot(ht, wt, preferred_element_type=jnp.float32)
  return jnp.mean(optax.losses.kl_divergence_with_log_targets(
      jax.nn.log_softmax(zs), jax.lax.stop_gradient(jax.nn.log_softmax(zt))))


def bench_distill_linear(quick, shape=None, dtype=jnp.float32, impls=(None, "chunked", "xla")):
  """Fused linear distillation (forward KL, the teacher a head of the same shape):
  value-and-grad (d student hidden, d student head) against two matmuls + optax."""
  n, d, v = shape or (_shapes.BENCH_LINEAR_CPU_QUICK if quick else _shapes.BENCH_LINEAR_CPU)
  hs, ws, _ = _data(2, n, d, v, dtype)
  ht, wt, _ = _data(3, n, d, v, dtype)
  fns = {"matmuls+optax kl": _vg(_materialised_distillation, (0, 1))}
  flops = {"matmuls+optax kl": 8 * n * d * v}  # 2 forward products, 2 backward
  for impl in impls:
    name = f"jaxdiv fused {impl or 'default'}"
    fns[name] = _vg(lambda hs, ws, ht, wt, impl=impl: jnp.mean(
        fused_linear_distillation_divergence(hs, ws, ht, wt, implementation=impl)), (0, 1))
    # Blockwise: both heads once forward (4 NDV: one pass for a KL), both recomputed and two
    # products back (8 NDV).
    flops[name] = (8 if impl == "xla" else 12) * n * d * v
  times = _common.time_interleaved(fns, hs, ws, ht, wt)
  extra = {k: (lambda t, f=f: dict(flops=f, TFLOPs=f / t / 1e12)) for k, f in flops.items()}
  return _rows(f"distill fused forward_kl {jnp.dtype(dtype).name} N={n} D={d} V={v}", times,
               "matmuls+optax kl", **extra)


def matmul_rate(n, d, v, dtype=jnp.bfloat16):
  """Measured FLOP/s of one [n, d] x [d, v] product with float32 accumulation."""
  h, w, _ = _data(1, n, d, v, dtype)
  fn = jax.jit(lambda h, w: jnp.dot(h, w, preferred_element_type=jnp.float32))
  return 2 * n * d * v / _common.time_fn(fn, h, w, reps=10)


def bench_gpu():
  """The LLM head shapes in bfloat16: fused loss FLOP rate against the measured matmul rate."""
  rows = []
  for name, shape in (("gemma2-2b", _shapes.GEMMA2_2B_HEAD), ("llama3-8b", _shapes.LLAMA3_8B_HEAD)):
    rate = matmul_rate(*shape)
    fused = bench_fused(False, shape, jnp.bfloat16, impls=("pallas", "chunked"),
                        matmul_rate=rate)
    rows += [dict(case=fused[0]["case"], impl=f"{name}: bf16 matmul (jnp.dot)",
                  TFLOPs=rate / 1e12), *fused]
  rows += bench_distill_linear(False, _shapes.GEMMA2_2B_HEAD, jnp.bfloat16,
                               impls=("pallas", "chunked"))
  return rows


def bench_tune():
  """Tiles of the Pallas fused loss at the Gemma-2-2B head (GPU): (tokens, vocab, d) tile,
  vocabulary splits of the forward grid, warps."""
  from jaxdiv.kernels.linear_cross_entropy import pallas_gpu

  n, d, v = _shapes.GEMMA2_2B_HEAD
  h, w, y = _data(0, n, d, v, jnp.bfloat16)
  valid = jnp.ones((n,), bool)
  fns = {}
  for tile, splits, warps in (((64, 128, 64), 8, 4), ((128, 128, 64), 4, 8),
                              ((128, 256, 64), 4, 8), ((64, 256, 64), 8, 8)):
    def loss(h, w, tile=tile, splits=splits, warps=warps):
      return jnp.mean(pallas_gpu.linear_cross_entropy(h, w, y, valid, vd=False, tile=tile,
                                                      splits=splits, num_warps=warps))
    fns[f"pallas tile={tile} splits={splits} warps={warps}"] = _vg(loss, (0, 1))
  times = _common.time_interleaved(fns, h, w)
  rows = _rows("tune gemma2-2b bf16", times, next(iter(fns)),
               **{k: (lambda t: dict(TFLOPs=8 * n * d * v / t / 1e12)) for k in fns})
  return rows


_PEER_SCRIPT = r"""
import json, sys, torch
n, d, v = json.loads(sys.argv[1])
out = {"torch": torch.__version__}
torch.manual_seed(0)
h = torch.randn(n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
w = (torch.randn(v, d, device="cuda") / d ** 0.5).to(torch.bfloat16).requires_grad_()
y = torch.randint(0, v, (n,), device="cuda")
def bench(step, reps=10):
    for _ in range(2): step()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); step(); b.record(); torch.cuda.synchronize(); ts.append(a.elapsed_time(b) / 1e3)
    return sorted(ts)[len(ts) // 2]
def run(loss_fn):
    def step():
        h.grad = None; w.grad = None
        loss_fn().backward()
    torch.cuda.reset_peak_memory_stats()
    t = bench(step)
    return t, torch.cuda.max_memory_allocated() / 2**30
try:
    from liger_kernel.transformers import fused_linear_cross_entropy as lfce
    import importlib.metadata as md
    liger = lfce.LigerFusedLinearCrossEntropyLoss()
    t, m = run(lambda: liger(w, h, y))
    out["liger"] = {"time_s": t, "peak_GiB": m, "version": md.version("liger-kernel")}
except Exception as e:
    out["liger"] = {"error": repr(e)[:300]}
try:
    from cut_cross_entropy import linear_cross_entropy
    import importlib.metadata as md
    t, m = run(lambda: linear_cross_entropy(h, w, y, reduction="mean"))
    out["cce"] = {"time_s": t, "peak_GiB": m, "version": md.version("cut-cross-entropy")}
except Exception as e:
    out["cce"] = {"error": repr(e)[:300]}
print("PEERS " + json.dumps(out))
"""


def bench_peers():
  """Liger-Kernel and Cut Cross-Entropy (torch + Triton) at the same head shapes, in a child
  process of this run (torch and JAX would otherwise compete for the GPU's memory)."""
  rows = []
  for name, (n, d, v) in (("gemma2-2b", _shapes.GEMMA2_2B_HEAD),
                          ("llama3-8b", _shapes.LLAMA3_8B_HEAD)):
    proc = subprocess.run([sys.executable, "-c", _PEER_SCRIPT, json.dumps([n, d, v])],
                          capture_output=True, text=True, timeout=900)
    line = [x for x in proc.stdout.splitlines() if x.startswith("PEERS ")]
    if not line:
      rows.append(dict(case=name, impl="peers", error=proc.stderr[-500:]))
      continue
    res = json.loads(line[0][6:])
    for peer in ("liger", "cce"):
      r = res[peer]
      flops = (6 if peer == "liger" else 8) * n * d * v
      rows.append(dict(case=f"fused bfloat16 N={n} D={d} V={v}", impl=f"{peer} (torch)", **r,
                       flops=flops, TFLOPs=flops / r["time_s"] / 1e12 if "time_s" in r else None,
                       torch=res["torch"]))
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="smaller shapes")
  parser.add_argument("--only", default=None,
                      help="comma-separated sections: memory,ce,fused,distill,distill_linear,gpu,"
                      "tune,peers")
  parser.add_argument("--peers", action="store_true", help="also run Liger-Kernel and CCE")
  args = parser.parse_args(argv)
  on_gpu = jax.default_backend() == "gpu"
  sections = (args.only.split(",") if args.only else
              ["memory", "ce", "fused", "distill", "distill_linear"] + (["gpu"] if on_gpu else []))
  if args.peers and "peers" not in sections:
    sections.append("peers")
  run = dict(memory=bench_memory, ce=lambda: bench_cross_entropy(args.quick),
             fused=lambda: bench_fused(args.quick), distill=lambda: bench_distillation(args.quick),
             distill_linear=lambda: bench_distill_linear(args.quick),
             gpu=bench_gpu, peers=bench_peers, tune=bench_tune)
  results = {}
  for s in sections:
    results[s] = run[s]()
    for case in dict.fromkeys(r["case"] for r in results[s]):
      rows = [r for r in results[s] if r["case"] == case]
      print(f"\n== {s}: {case}\n" + _common.table(rows, sorted(
          {k for r in rows for k in r} - {"case"}, key=_ORDER.index)), flush=True)
  path = _common.write_json("kernels" + ("-quick" if args.quick else ""),
                            dict(sections=results, quick=args.quick))
  print(f"\nwrote {path}")


_ORDER = ["impl", "time_s", "time_ratio", "temp_GiB", "temp_ratio", "TFLOPs",
          "frac_of_matmul_rate", "flops", "min_bytes", "GBps_at_floor", "temp_MiB", "peak_GiB",
          "version", "torch", "error"]

if __name__ == "__main__":
  main()
