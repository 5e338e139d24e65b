"""Large-vocabulary kernels beside their peers, in one process, on the same inputs.

    python bench/kernels.py            # CPU criteria at the issue's shapes (a few minutes)
    python bench/kernels.py --quick    # smaller shapes (under a minute)
    python bench/kernels.py --only gpu --peers   # on a GPU: the LLM head shapes, with
                                                 # Liger-Kernel and Cut Cross-Entropy (torch)
    python bench/kernels.py --only fused,filter  # the fused loss beside its JAX peers
                                                 # (pip install -e .[bench]), and its
                                                 # gradient filter on a trained LM head

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

from jaxdiv.kernels import _shapes
from jaxdiv.kernels import cross_entropy_with_integer_labels
from jaxdiv.kernels import distillation_divergence
from jaxdiv.kernels import fused_linear_cross_entropy
from jaxdiv.kernels import fused_linear_distillation_divergence
from jaxdiv.kernels.linear_cross_entropy import api as lce_api

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
  return fused_linear_cross_entropy(h, w, y, implementation=implementation, reduction="mean")


def _jax_peers():
  """{name: (mean loss of (hidden [n, d], weight [d, v], weight [v, d], labels), argnums of
  the hidden and the weight it reads)} for the installed JAX peers of the fused loss, and
  {name: why it is absent}. Both are in the `bench` extra (pip install -e .[bench])."""
  peers, absent = {}, {}
  try:
    import tokamax
    from absl import flags

    # tokamax's config parses sys.argv with absl on first use, and fails on this script's own
    # options ("Unknown command line flag 'only'"): parse the program name alone.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS(sys.argv[:1])
    # On CPU and GPU tokamax runs its "xla" implementation (the logits are materialised); its
    # Mosaic kernel is TPU-only.
    peers["tokamax"] = (lambda h, w, wt, y: tokamax.linear_softmax_cross_entropy_loss(
        h, y, w, reduction="mean"), (0, 1))
  except Exception as e:  # ImportError, or an incompatible jax
    absent["tokamax"] = repr(e)[:300]
  try:
    import jax_cce
    # Cut Cross-Entropy's method in lax.scan over vocabulary chunks (4096); weight [v, d].
    peers["jax_cce"] = (lambda h, w, wt, y: jax_cce.linear_cross_entropy(h, wt, y), (0, 2))
  except Exception as e:
    absent["jax_cce"] = repr(e)[:300]
  return peers, absent


def _peer_version(name):
  import importlib.metadata as md
  return md.version({"tokamax": "tokamax", "jax_cce": "jax-cce"}[name])


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
                   ("fused forward_grad", functools.partial(_fused, "forward_grad"))]:
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


def bench_fused(quick, shape=None, dtype=jnp.float32, impls=None, matmul_rate=None,
                reps=5):
  """Fused linear cross-entropy value-and-grad (d hidden, d weight) against matmul + optax and
  the JAX peers (tokamax, jax-cce) when installed: time, and XLA's temporary bytes, with the
  ratios to the fastest and to the leanest peer."""
  n, d, v = shape or (_shapes.BENCH_LINEAR_CPU_QUICK if quick else _shapes.BENCH_LINEAR_CPU)
  on_cpu = jax.default_backend() == "cpu"
  h, w, y = _data(0, n, d, v, dtype)
  # `None` on one CPU device is "forward_grad" (timed once, beside "chunked"), elsewhere
  # "chunked" or "pallas"
  default_fg = lce_api.forward_grad_by_default(h, v, reduction="mean")
  if impls is None:
    impls = (None, "forward_grad" if on_cpu and not default_fg else "chunked", "xla")
  wt = jnp.asarray(w.T)  # the [vocab, d] layout, for the peer that takes it
  nbytes = jnp.dtype(dtype).itemsize * 2 * (n * d + d * v)  # read h, W; write dh, dW
  on_dv = lambda loss: (lambda h, w, wt, y: loss(h, w, y))
  losses = {"matmul+optax": (on_dv(_optax_linear), (0, 1))}
  flops = {"matmul+optax": 6 * n * d * v}
  peers, absent = _jax_peers()
  for name, peer in peers.items():
    losses[name], flops[name] = peer, 6 * n * d * v if name == "tokamax" else 8 * n * d * v
  for name, why in absent.items():
    print(f"  fused: peer {name} skipped: {why}", flush=True)
  for impl in impls:
    name = f"jaxdiv fused {impl or 'default'}"
    losses[name] = (on_dv(functools.partial(_fused, impl)), (0, 1))
    # "xla" materialises the logits and "forward_grad" forms the gradients in the forward
    # (6 NDV); the lse-only paths recompute the logits (8 NDV).
    six = impl in ("xla", "forward_grad") or (impl is None and default_fg)
    flops[name] = (6 if six else 8) * n * d * v
  fns = {k: _vg(loss, argnums) for k, (loss, argnums) in losses.items()}
  temp = {}
  for k, fn in fns.items():
    try:
      temp[k] = _common.memory(fn, h, w, wt, y)["temp_bytes"]
    except Exception:  # the timing below reports the error
      pass

  def roofline(name):
    def extra(t):
      row = dict(flops=flops[name], min_bytes=nbytes, TFLOPs=flops[name] / t / 1e12)
      if name in temp:
        row["temp_MiB"] = temp[name] / (1 << 20)
      if matmul_rate:
        row["frac_of_matmul_rate"] = flops[name] / t / matmul_rate
      return row
    return extra

  times = _common.time_interleaved(fns, h, w, wt, y, reps=reps, max_seconds=600.0)
  rows = _rows(f"fused {jnp.dtype(dtype).name} N={n} D={d} V={v}", times, "matmul+optax",
               **{k: roofline(k) for k in fns})
  # The criteria: time <= 1.0x the fastest peer, temporary memory <= 0.7x the leanest.
  ok = lambda k: k in temp and isinstance(times[k], float)
  peer_names = [k for k in ["matmul+optax", *peers] if ok(k)]
  if peer_names:
    fastest = min(peer_names, key=lambda k: times[k])
    leanest = min(peer_names, key=lambda k: temp[k])
    for row in rows:
      if row["impl"] in peers:
        row["version"] = _peer_version(row["impl"])
      if ok(row["impl"]):
        row["time_vs_fastest_peer"] = times[row["impl"]] / times[fastest]
        row["temp_vs_leanest_peer"] = temp[row["impl"]] / max(temp[leanest], 1)
    rows[0]["fastest_peer"], rows[0]["leanest_peer"] = fastest, leanest
  rows += [dict(case=rows[0]["case"], impl=k, error=f"skipped: {why}")
           for k, why in absent.items()]
  return rows


def _stdlib_words(n_files=400):
  """Word and punctuation tokens of the first `n_files` of Python's standard library sources
  (sorted by name): a corpus that every machine with this interpreter has."""
  import re
  import sysconfig

  root = sysconfig.get_paths()["stdlib"]
  files = sorted(f for f in os.listdir(root) if f.endswith(".py"))[:n_files]
  words = []
  for f in files:
    with open(os.path.join(root, f), encoding="utf-8", errors="replace") as fh:
      words += re.findall(r"[A-Za-z_]\w*|\d+|\S", fh.read())
  return words


def _trained_lm_head(n, d, v, steps, batch=512, seed=0):
  """A trigram language model's softmax head, trained: tokens are the `v - 1` most frequent
  stdlib words by rank (id 0 is every other word), the hidden state tanh(E1[x_{t-1}] +
  E2[x_{t-2}]) ([d]), trained with Adam on batches of `batch` tokens for `steps` steps (mean
  cross-entropy, matmul + optax). Returns (held-out hidden [n, d], head [d, v], labels [n]) and
  the final training loss."""
  import collections

  words = _stdlib_words()
  rank = {w: i + 1 for i, (w, _) in enumerate(collections.Counter(words).most_common(v - 1))}
  ids = np.array([rank.get(x, 0) for x in words], np.int32)
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  params = dict(e1=jax.random.normal(k1, (v, d)) * 0.1, e2=jax.random.normal(k2, (v, d)) * 0.1,
                w=jax.random.normal(k3, (d, v)) / np.sqrt(d))
  hidden = lambda p, x1, x2: jnp.tanh(p["e1"][x1] + p["e2"][x2])

  def loss(p, x1, x2, y):
    return _optax_linear(hidden(p, x1, x2), p["w"], y)

  opt = optax.adam(3e-3)
  state = opt.init(params)

  @jax.jit
  def step(p, state, x1, x2, y):
    value, g = jax.value_and_grad(loss)(p, x1, x2, y)
    updates, state = opt.update(g, state, p)
    return optax.apply_updates(p, updates), state, value

  held_out = len(ids) - n - 2  # the last n tokens are held out
  rng = np.random.default_rng(seed)
  for _ in range(steps):
    t = rng.integers(2, held_out, batch)
    params, state, value = step(params, state, ids[t - 1], ids[t - 2], ids[t])
  t = np.arange(held_out + 2, len(ids))
  return (hidden(params, ids[t - 1], ids[t - 2]), params["w"], jnp.asarray(ids[t])), float(value)


def bench_filter(quick, eps_list=(2.0 ** -12, 2.0 ** -16), reps=5):
  """The opt-in gradient filter on the logits of a trained LM head (`_trained_lm_head`), not
  random weights: value-and-grad time against the exact chunked path, the fraction of
  [64 tokens x 512 vocabulary] tiles skipped, and the error of the loss and of the gradients
  (relative, Frobenius) against a float64 reference, beside the exact path's own error."""
  from jaxdiv.kernels import _linear_blocks
  from jaxdiv.kernels.linear_cross_entropy import chunked_xla
  from jaxdiv.kernels.linear_cross_entropy import reference

  n, d, v = (1024, 64, 8192) if quick else (2048, 128, 16384)
  steps = 100 if quick else 300
  (h, w, y), train_loss = _trained_lm_head(n, d, v, steps)
  case = f"filter f32 trained trigram head N={n} D={d} V={v}"
  valid = np.ones(n, bool)
  with jax.enable_x64(True):
    ref = lambda h, w: jnp.mean(reference.linear_cross_entropy(
        h, w, jnp.asarray(y), jnp.asarray(valid), vd=False))
    h64, w64 = jnp.asarray(np.asarray(h), jnp.float64), jnp.asarray(np.asarray(w), jnp.float64)
    want, (want_dh, want_dw) = jax.value_and_grad(ref, (0, 1))(h64, w64)
    want, want_dh, want_dw = float(want), np.asarray(want_dh), np.asarray(want_dw)
    # The tiles' largest probability, as the filter sees them (f64 here).
    z = np.asarray(h64 @ w64)
  p = np.exp(z - np.log(np.sum(np.exp(z - z.max(1, keepdims=True)), 1, keepdims=True))
             - z.max(1, keepdims=True))
  bv = min(_linear_blocks.default_block(n, v, jax.default_backend()), chunked_xla._FILTER_BLOCK)
  bn = min(chunked_xla._FILTER_ROWS, n)
  starts = lambda size, b: [min(i * b, size - b) for i in range(-(-size // b))]  # clamped
  tile_max = np.array([[p[r:r + bn, c:c + bv].max() for c in starts(v, bv)]
                       for r in starts(n, bn)])

  fns = {"exact (grad_filter_eps=None)": None,
         # The filter's tiles with nothing skipped: the cost or gain of the tiling alone.
         "grad_filter_eps=1e-30 (tiles, none skipped)": 1e-30}
  for eps in eps_list:
    fns[f"grad_filter_eps={eps:.3g}"] = eps
  jitted = {k: _vg(lambda h, w, eps=eps: jnp.mean(fused_linear_cross_entropy(
      h, w, y, grad_filter_eps=eps)), (0, 1)) for k, eps in fns.items()}
  times = _common.time_interleaved(jitted, h, w, reps=reps, max_seconds=300.0)
  rel = lambda a, b: float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))
  rows = []
  for k, eps in fns.items():
    value, (dh, dw) = jitted[k](h, w)
    rows.append(dict(case=case, impl=k, eps=eps, time_s=times[k],
                     speedup=times[next(iter(fns))] / times[k],
                     speedup_vs_tiles=times[list(fns)[1]] / times[k],
                     skipped_tiles=float(np.mean(tile_max < eps)) if eps else 0.0,
                     loss_rel_err=abs(float(value) - want) / abs(want), dh_rel_err=rel(dh, want_dh),
                     dw_rel_err=rel(dw, want_dw),
                     train=f"{steps} Adam steps, final loss {train_loss:.3f}"))
  return rows


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


def bench_fused_rows(quick, reps=3):
  """Fused loss value-and-grad (mean, float32) of "forward_grad" against "chunked" as the
  vocabulary grows and "forward_grad"'s 32 MiB token blocks get fewer tokens: where
  `implementation=None` stops taking it on a one-device CPU (`forward_grad.MIN_DEFAULT_ROWS`).
  N=1024, D=256 (512 and 128 with --quick), V from 32768 (256 tokens a block) to 262144 (32)."""
  from jaxdiv.kernels.linear_cross_entropy import forward_grad
  n, d = (512, 128) if quick else (1024, 256)
  rows = []
  for v in (32768, 65536, 131072, 262144):
    h, w, y = _data(0, n, d, v, jnp.float32)
    fns = {impl: _vg(functools.partial(_fused, impl), (0, 1))
           for impl in ("chunked", "forward_grad")}
    fns["matmul+optax"] = _vg(_optax_linear, (0, 1))
    temp = {k: _common.memory(f, h, w, y)["temp_bytes"] for k, f in fns.items()}
    times = _common.time_interleaved(fns, h, w, y, reps=reps, max_seconds=600.0)
    for impl, t in times.items():
      rows.append(dict(case=f"fused rows f32 N={n} D={d} V={v}", impl=impl,
                       tokens_a_block=forward_grad.rows_for(v), time_s=t,
                       vs_chunked=t / times["chunked"], temp_MiB=temp[impl] / (1 << 20)))
    ratio = times["forward_grad"] / times["chunked"]
    print(f"  fused rows V={v}: forward_grad / chunked {ratio:.2f}", flush=True)
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="smaller shapes")
  parser.add_argument("--only", default=None,
                      help="comma-separated sections: memory,ce,fused,distill,distill_linear,gpu,"
                      "tune,peers,filter,fused_rows")
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
             gpu=bench_gpu, peers=bench_peers, tune=bench_tune,
             filter=lambda: bench_filter(args.quick),
             fused_rows=lambda: bench_fused_rows(args.quick))
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


_ORDER = ["impl", "time_s", "time_ratio", "time_vs_fastest_peer", "temp_vs_leanest_peer",
          "temp_GiB", "temp_ratio", "TFLOPs",
          "frac_of_matmul_rate", "flops", "min_bytes", "GBps_at_floor", "temp_MiB", "peak_GiB",
          "version", "torch", "fastest_peer", "leanest_peer", "eps", "skipped_tiles",
          "speedup", "speedup_vs_tiles", "loss_rel_err", "dh_rel_err", "dw_rel_err", "train",
          "tokens_a_block", "vs_chunked", "error"]

if __name__ == "__main__":
  main()
