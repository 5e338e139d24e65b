"""Post-training divergences from hidden states beside their dense equivalents, in one process.

    python bench/post_training.py            # memory at the issue's shape + CPU times
    python bench/post_training.py --quick    # smaller time shapes
    python bench/post_training.py --only memory

Functions: `fused_linear_token_log_probs` (log-probs and entropy, softcap), the fused top-k
distillation (k = 64, tail bin) and the fused cross-entropy with softcap, each as value and
gradient with respect to (hidden, weight) of a scalar loss, against the same loss on
materialised [tokens, vocab] float32 logits (`hidden @ weight`, then jnp / optax). Memory is
XLA's temporary allocation (`memory_analysis`, compiled only) at tokens=8192, d=1024,
vocab=131072, float32; the issue's criterion is <= 2% of the dense computation's.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(__file__))
import _common

from jaxdiv import losses
from jaxdiv.kernels import _shapes

GiB = 1 << 30
K = 64
CAP = 30.0


def _dense_logits(h, w, softcap=None):
  z = jnp.dot(h, w, preferred_element_type=jnp.float32)
  return z if softcap is None else softcap * jnp.tanh(z / softcap)


def _cases():
  """name -> (fused loss, dense loss), each f(h, w, y, idx, lp) -> scalar."""

  def tlp_fused(h, w, y, idx, lp):
    log_p, ent = losses.fused_linear_token_log_probs(h, w, y, softcap=CAP)
    return jnp.mean(log_p) + 0.01 * jnp.mean(ent)

  def tlp_dense(h, w, y, idx, lp):
    log_q = jax.nn.log_softmax(_dense_logits(h, w, CAP))
    ent = -jnp.sum(jnp.exp(log_q) * log_q, -1)
    return jnp.mean(jnp.take_along_axis(log_q, y[:, None], -1)) + 0.01 * jnp.mean(ent)

  def topk_fused(h, w, y, idx, lp):
    return losses.fused_linear_topk_distillation_loss(h, w, idx, lp, reduction="mean")

  def topk_dense(h, w, y, idx, lp):
    return losses.topk_distillation_loss(_dense_logits(h, w), idx, lp, reduction="mean")

  def ce_fused(h, w, y, idx, lp):
    return losses.fused_linear_cross_entropy(h, w, y, softcap=CAP, reduction="mean")

  def ce_dense(h, w, y, idx, lp):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(_dense_logits(h, w, CAP), y))

  return {"token_log_probs (softcap)": (tlp_fused, tlp_dense),
          f"topk_distillation k={K} bin": (topk_fused, topk_dense),
          "fused_linear_cross_entropy (softcap)": (ce_fused, ce_dense)}


def _specs(n, d, v):
  return (jax.ShapeDtypeStruct((n, d), jnp.float32), jax.ShapeDtypeStruct((d, v), jnp.float32),
          jax.ShapeDtypeStruct((n,), jnp.int32), jax.ShapeDtypeStruct((n, K), jnp.int32),
          jax.ShapeDtypeStruct((n, K), jnp.float32))


def _data(n, d, v):
  kh, kw, ky, kt = jax.random.split(jax.random.key(0), 4)
  h = jax.random.normal(kh, (n, d))
  w = jax.random.normal(kw, (d, v)) / np.sqrt(d) * 3
  y = jax.random.randint(ky, (n,), 0, v)
  lt = jax.nn.log_softmax(jax.random.normal(kt, (n, v)) * 3)
  lp, idx = jax.lax.top_k(lt, K)
  return h, w, y, idx, lp


def bench_memory():
  n, d, v = _shapes.MEMORY_LINEAR
  case = f"memory f32 N={n} D={d} V={v}"
  rows = []
  for name, (fused, dense) in _cases().items():
    mem = {k: _common.memory(jax.value_and_grad(f, (0, 1)), *_specs(n, d, v))["temp_bytes"]
           for k, f in (("fused", fused), ("dense", dense))}
    rows.append(dict(case=case, impl=name, temp_GiB=mem["fused"] / GiB,
                     dense_GiB=mem["dense"] / GiB, temp_ratio=mem["fused"] / mem["dense"]))
  return rows


def bench_time(quick):
  n, d, v = _shapes.BENCH_LINEAR_CPU_QUICK if quick else _shapes.BENCH_LINEAR_CPU
  case = f"time f32 N={n} D={d} V={v} ({jax.default_backend()})"
  args = _data(n, d, v)
  rows = []
  for name, (fused, dense) in _cases().items():
    fns = {k: jax.jit(jax.value_and_grad(f, (0, 1))) for k, f in (("fused", fused),
                                                                   ("dense", dense))}
    t = _common.time_interleaved(fns, *args, reps=5)
    rows.append(dict(case=case, impl=name, time_s=t["fused"], dense_s=t["dense"],
                     time_ratio=t["fused"] / t["dense"]))
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="smaller time shapes")
  parser.add_argument("--only", default=None, help="comma-separated sections: memory,time")
  args = parser.parse_args(argv)
  sections = args.only.split(",") if args.only else ["memory", "time"]
  run = dict(memory=bench_memory, time=lambda: bench_time(args.quick))
  results = {}
  columns = ["impl", "time_s", "dense_s", "time_ratio", "temp_GiB", "dense_GiB", "temp_ratio"]
  for s in sections:
    results[s] = run[s]()
    cols = [c for c in columns if any(c in r for r in results[s])]
    print(f"\n== {s}: {results[s][0]['case']}\n" + _common.table(results[s], cols), flush=True)
  path = _common.write_json("post_training" + ("-quick" if args.quick else ""),
                            dict(sections=results, quick=args.quick))
  print(f"\nwrote {path}")


if __name__ == "__main__":
  main()
