"""The core divergences beside the jnp / optax lines a user would write for them (issue 12).

    python bench/hand.py            # the issue's shapes: 32768x512, 2048x32768, 4096x4096
    python bench/hand.py --quick    # the same aspect ratios with fewer rows

For each case and shape: forward and value+grad (of the summed result, both inputs) of jaxdiv
and of the hand-written expression, timed in turn in one process (medians), with two floors
beside them, timed in the same rounds: `read`, one reduction over the inputs (`sum(x)`, each
input read once), and `exp`, the transcendental work the maths needs (`sum(exp(x))` per
logits input, `sum(log(x))` per probability input). Then the float32 accuracy of jaxdiv and of
the hand-written line against a float64 reference on the same rows: median and max absolute
error.
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.special

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common
import core

import jaxdiv

MiB = 1 << 20
SHAPES = [(32768, 512), (2048, 32768), (4096, 4096)]
QUICK_SHAPES = [(4096, 512), (256, 32768), (512, 4096)]

lsm, sm = jax.nn.log_softmax, jax.nn.softmax


def _hand_js_logits(a, b):
  la, lb = lsm(a), lsm(b)
  lm = jnp.logaddexp(la, lb) - jnp.log(2.0)
  return 0.5 * jnp.sum(jnp.exp(la) * (la - lm), -1) + 0.5 * jnp.sum(jnp.exp(lb) * (lb - lm), -1)


def _hand_js_probs(p, q):
  m = 0.5 * (p + q)
  rel = jax.scipy.special.rel_entr
  return 0.5 * jnp.sum(rel(p, m), -1) + 0.5 * jnp.sum(rel(q, m), -1)


# (case, input form, jaxdiv, hand-written, the peer's text)
CASES = [
    ("kl_divergence", "logits", lambda a, b: jaxdiv.kl_divergence(a, b, from_logits=True),
     lambda a, b: jnp.sum(sm(a) * (lsm(a) - lsm(b)), -1),
     "sum(softmax(a) * (log_softmax(a) - log_softmax(b)))"),
    ("cross_entropy", "logits", lambda a, b: jaxdiv.cross_entropy(a, b, from_logits=True),
     lambda a, b: optax.losses.softmax_cross_entropy(b, sm(a)),
     "optax softmax_cross_entropy(b, softmax(a))"),
    ("entropy", "logits", lambda a: jaxdiv.entropy(a, from_logits=True),
     lambda a: -jnp.sum(sm(a) * lsm(a), -1), "-sum(softmax(a) * log_softmax(a))"),
    ("js_divergence", "logits", lambda a, b: jaxdiv.js_divergence(a, b, from_logits=True),
     _hand_js_logits, "logaddexp mixture of the log-softmaxes"),
    ("jeffreys_divergence", "logits",
     lambda a, b: jaxdiv.jeffreys_divergence(a, b, from_logits=True),
     lambda a, b: jnp.sum((sm(a) - sm(b)) * (lsm(a) - lsm(b)), -1),
     "sum((softmax(a) - softmax(b)) * (log_softmax(a) - log_softmax(b)))"),
    ("kl_divergence", "probs", jaxdiv.kl_divergence,
     lambda p, q: optax.losses.kl_divergence(jnp.log(q), p), "optax kl_divergence(log q, p)"),
    ("cross_entropy", "probs", jaxdiv.cross_entropy,
     lambda p, q: -jnp.sum(jax.scipy.special.xlogy(p, q), -1), "-sum(xlogy(p, q))"),
    ("entropy", "probs", jaxdiv.entropy,
     lambda p: jnp.sum(jax.scipy.special.entr(p), -1), "sum(entr(p))"),
    ("js_divergence", "probs", jaxdiv.js_divergence, _hand_js_probs, "rel_entr with the mixture"),
]


def _inputs(n, v, seed=0):
  """The issue's rows: logits a ~ N(0, 9), b = a + N(0, 1), and their softmaxes."""
  k1, k2 = jax.random.split(jax.random.key(seed))
  a = 3.0 * jax.random.normal(k1, (n, v), jnp.float32)
  b = a + jax.random.normal(k2, (n, v), jnp.float32)
  return dict(logits=(a, b), probs=(sm(a), sm(b)))


def _vg(f, n):
  return jax.value_and_grad(lambda *x: jnp.sum(f(*x)), argnums=tuple(range(n)))


def _compiled(f, args):
  """`jax.jit(f)` compiled once for `args`: the callable timed, and XLA's temporary bytes."""
  c = jax.jit(f).lower(*args).compile()
  return c, int(c.memory_analysis().temp_size_in_bytes)


def bench_speed(shapes, reps):
  rows = []
  for n, v in shapes:
    x = _inputs(n, v)
    floors = {}
    for case, form, ours, hand, note in CASES:
      n_in = 1 if case == "entropy" else 2
      args = x[form][:n_in]
      if (form, n_in) not in floors:
        op = jnp.exp if form == "logits" else jnp.log
        floors[form, n_in] = [
            _compiled(lambda *xs: sum(jnp.sum(t, -1) for t in xs), args)[0],
            _compiled(lambda *xs, op=op: sum(jnp.sum(op(t), -1) for t in xs), args)[0]]
      for mode in ("fwd", "fwd+vjp"):
        fs = [ours, hand] if mode == "fwd" else [_vg(ours, n_in), _vg(hand, n_in)]
        (c_own, m_own), (c_hand, m_hand) = (_compiled(f, args) for f in fs)
        runs = [lambda c=c, args=args: jax.block_until_ready(c(*args))
                for c in [c_own, c_hand] + floors[form, n_in]]
        t_own, t_hand, t_read, t_work = core.interleaved(runs, reps, warmup=1)
        rows.append(dict(group="hand", case=f"{case}({form})", mode=mode, shape=f"{n}x{v}",
                         vs="hand-written", peer_fn=note, jaxdiv_ms=1e3 * t_own,
                         peer_ms=1e3 * t_hand, ratio=t_own / t_hand, floor_read_ms=1e3 * t_read,
                         floor_exp_ms=1e3 * t_work, jaxdiv_temp_MiB=m_own / MiB,
                         peer_temp_MiB=m_hand / MiB))
        print(f"  hand {case}({form}) {mode} {n}x{v}: ratio {t_own / t_hand:.3f}", flush=True)
  return rows


def _ref64(case, form, a, b):
  """float64 reference with scipy on the same float32 inputs."""
  if form == "logits":
    la = a - scipy.special.logsumexp(a, -1, keepdims=True)
    lb = b - scipy.special.logsumexp(b, -1, keepdims=True)
    p, q = np.exp(la), np.exp(lb)
  else:  # probabilities are used as given (not renormalised), as jaxdiv and the peers do
    p, q = a, b
  if case == "kl_divergence":
    return scipy.special.rel_entr(p, q).sum(-1)
  if case == "cross_entropy":
    return -scipy.special.xlogy(p, q).sum(-1)
  if case == "entropy":
    return scipy.special.entr(p).sum(-1)
  if case == "js_divergence":
    m = 0.5 * (p + q)
    return 0.5 * scipy.special.rel_entr(p, m).sum(-1) + 0.5 * scipy.special.rel_entr(q, m).sum(-1)
  if case == "jeffreys_divergence":
    return (scipy.special.rel_entr(p, q) + scipy.special.rel_entr(q, p)).sum(-1)
  raise ValueError(case)


def bench_accuracy(n=20000, v=512):
  x = _inputs(n, v, seed=1)
  rows = []
  for case, form, ours, hand, note in CASES:
    n_in = 1 if case == "entropy" else 2
    args = x[form][:n_in]
    a64 = [np.asarray(t, np.float64) for t in x[form]]
    want = _ref64(case, form, *a64)
    row = dict(group="accuracy", case=f"{case}({form})", shape=f"{n}x{v}", vs="hand-written",
               peer_fn=note)
    for who, f in (("jaxdiv", ours), ("peer", hand)):
      err = np.abs(np.asarray(jax.jit(f)(*args), np.float64) - want)
      row[f"{who}_med_err"], row[f"{who}_max_err"] = float(np.median(err)), float(err.max())
    row["med_ratio"] = row["jaxdiv_med_err"] / row["peer_med_err"]
    row["max_ratio"] = row["jaxdiv_max_err"] / row["peer_max_err"]
    rows.append(row)
  return rows


COLUMNS = ["case", "mode", "shape", "jaxdiv_ms", "peer_ms", "ratio", "floor_read_ms",
           "floor_exp_ms", "jaxdiv_temp_MiB", "peer_temp_MiB"]
ACC_COLUMNS = ["case", "shape", "jaxdiv_med_err", "peer_med_err", "med_ratio", "jaxdiv_max_err",
               "peer_max_err", "max_ratio"]


def bench(quick: bool = False, reps: int | None = None, bw: dict | None = None) -> dict:
  shapes = QUICK_SHAPES if quick else SHAPES
  reps = reps or (5 if quick else 9)
  rows = bench_speed(shapes, reps)
  acc = bench_accuracy(4096 if quick else 20000)
  return dict(rows=rows, accuracy=acc, shapes=shapes, dtype="float32", reps=reps,
              versions=core.versions())


def main(argv=None):
  _common.main("hand", bench, __doc__, [("rows", COLUMNS), ("accuracy", ACC_COLUMNS)], argv)


if __name__ == "__main__":
  main()
