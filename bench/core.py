"""Core divergences beside scipy, torch (CPU) and optax, in one process, on the same inputs.

    python bench/core.py            # batch 4096 x 4096 float32
    python bench/core.py --quick    # batch 1024 x 1024

Each case is one divergence evaluated on a batch of rows, forward and (for the differentiable
peers) forward+VJP of the summed result with respect to both inputs. Every peer gets the same
numbers in its natural input form (probabilities, or log-probabilities where optax wants them);
the table gives median times, the jaxdiv/peer time ratio, XLA's temporary memory for the JAX
functions, and the roofline: the time to read the inputs once and write the output at the memory
bandwidth measured in this run, over the measured time.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common

import jaxdiv

try:
  import torch
  # One thread by default: on a small shared machine, torch's thread pool spin-waits against the
  # other processes and its median time grows tenfold (seen here on 2 cores); XLA's CPU
  # elementwise loops run on one thread too. JAXDIV_BENCH_TORCH_THREADS overrides it.
  torch.set_num_threads(int(os.environ.get("JAXDIV_BENCH_TORCH_THREADS", "1")))
except ImportError:  # torch is optional: its columns then say "not installed"
  torch = None

try:
  import scipy
  import scipy.spatial.distance
  import scipy.special
  import scipy.stats
except ImportError:
  scipy = None

MiB = 1 << 20


def bandwidth(nbytes: int = 256 * MiB, reps: int = 5) -> dict:
  """Memory bandwidth of this machine, measured now: a large float32 array read and written once
  by XLA (`x + 1`) and by NumPy (`np.copyto`); bytes moved (read + write) over the median time."""
  n = nbytes // 4
  x = jnp.ones((n,), jnp.float32)
  f = jax.jit(lambda a: a + 1.0)
  t_xla = _common.time_fn(f, x, warmup=2, reps=reps)
  a, b = np.ones(n, np.float32), np.empty(n, np.float32)
  t_np = _common.time_fn(lambda: np.copyto(b, a), warmup=1, reps=reps)
  del x
  return dict(xla_GBps=2 * nbytes / t_xla / 1e9, numpy_GBps=2 * nbytes / t_np / 1e9,
              GBps=max(2 * nbytes / t_xla, 2 * nbytes / t_np) / 1e9, bytes=nbytes)


@dataclasses.dataclass
class Peer:
  name: str                       # "jaxdiv", "optax", "scipy", "torch"
  fn: Callable | None             # takes the case's arrays in this peer's form; None: not present
  grad: bool = True               # has a forward+VJP
  kind: str = "jax"               # "jax" (jit, XLA memory), "numpy", "torch"
  note: str = ""


def _runner(peer: Peer, arrays, mode: str) -> tuple[Callable[[], object], int | None]:
  """A no-argument call of `peer` on `arrays` in `mode` that waits for its result, and XLA's
  temporary bytes for the JAX peers."""
  if peer.kind == "jax":
    f = peer.fn if mode == "fwd" else (
        lambda *a: jax.grad(lambda *b: jnp.sum(peer.fn(*b)), argnums=tuple(range(len(a))))(*a))
    jitted = jax.jit(f)
    mem = _common.memory(f, *arrays)["temp_bytes"]
    return (lambda: jax.block_until_ready(jitted(*arrays))), mem
  if peer.kind == "numpy":
    return (lambda: peer.fn(*arrays)), None
  if mode == "fwd":
    def run():
      with torch.no_grad():
        return peer.fn(*arrays)
    return run, None
  leaves = [a.detach().requires_grad_(True) for a in arrays]

  def run_vjp():
    for t in leaves:
      t.grad = None
    peer.fn(*leaves).sum().backward()
    return leaves[0].grad
  return run_vjp, None


def interleaved(runs: list[Callable[[], object]], reps: int, warmup: int = 3,
                rotate: bool = False) -> list[float]:
  """Median seconds of each no-argument call, timed in turn within each repetition, so that a
  load from elsewhere on the machine falls on all of them alike. With `rotate`, repetition i
  starts at call i (mod their number), so that each call runs in each place of the turn
  alike: two identical programs timed in fixed turns at 2048x32768 differed by 6-19%."""
  for _ in range(warmup):
    for r in runs:
      r()
  times = [[] for _ in runs]
  for i in range(reps):
    order = list(range(len(runs)))
    if rotate:
      k = i % len(runs)
      order = order[k:] + order[:k]
    for j in order:
      t0 = time.perf_counter()
      runs[j]()
      times[j].append(time.perf_counter() - t0)
  return [float(np.median(t)) for t in times]


def _inputs(n: int, v: int, seed: int = 0):
  kp, kq = jax.random.split(jax.random.key(seed))
  lp = jax.nn.log_softmax(jax.random.normal(kp, (n, v), jnp.float32))
  lq = jax.nn.log_softmax(jax.random.normal(kq, (n, v), jnp.float32))
  return dict(p=jnp.exp(lp), q=jnp.exp(lq), log_p=lp, log_q=lq)


def _forms(x: dict) -> dict:
  """The same numbers as JAX, NumPy and torch arrays."""
  out = dict(jax=x, numpy={k: np.asarray(v) for k, v in x.items()})
  if torch is not None:
    out["torch"] = {k: torch.from_numpy(np.array(v)) for k, v in out["numpy"].items()}
  return out


def _torch_js(p, q):
  m = 0.5 * (p + q)
  return 0.5 * (torch.special.xlogy(p, p / m).sum(-1) + torch.special.xlogy(q, q / m).sum(-1))


def cases() -> list[tuple[str, tuple[str, ...], list[tuple[Peer, tuple[str, ...]]]]]:
  """(case, jaxdiv input names, [(peer, peer input names)]): the peers and what each is fed."""
  sp = scipy is not None
  tp = torch is not None
  F = torch.nn.functional if tp else None
  return [
      ("entropy", ("p",), [
          (Peer("jaxdiv", jaxdiv.entropy), ("p",)),
          (Peer("scipy", (lambda p: scipy.stats.entropy(p, axis=-1)) if sp else None, False,
                "numpy", "scipy.stats.entropy"), ("p",)),
          (Peer("torch", (lambda p: torch.special.entr(p).sum(-1)) if tp else None, True,
                "torch", "torch.special.entr(p).sum(-1)"), ("p",)),
      ]),
      ("cross_entropy", ("p", "q"), [
          (Peer("jaxdiv", jaxdiv.cross_entropy), ("p", "q")),
          (Peer("optax", lambda lq, p: optax.losses.softmax_cross_entropy(lq, p), note=
                "softmax_cross_entropy(log q, p)"), ("log_q", "p")),
          (Peer("scipy", (lambda p, q: -scipy.special.xlogy(p, q).sum(-1)) if sp else None, False,
                "numpy", "-xlogy(p, q).sum(-1)"), ("p", "q")),
          (Peer("torch", (lambda p, lq: -(p * lq).sum(-1)) if tp else None, True, "torch",
                "-(p * log q).sum(-1)"), ("p", "log_q")),
      ]),
      ("kl_divergence", ("p", "q"), [
          (Peer("jaxdiv", jaxdiv.kl_divergence), ("p", "q")),
          (Peer("optax", lambda lq, p: optax.losses.kl_divergence(lq, p),
                note="kl_divergence(log q, p)"), ("log_q", "p")),
          (Peer("scipy", (lambda p, q: scipy.special.rel_entr(p, q).sum(-1)) if sp else None,
                False, "numpy", "rel_entr(p, q).sum(-1)"), ("p", "q")),
          (Peer("torch", (lambda lq, p: F.kl_div(lq, p, reduction="none").sum(-1)) if tp else None,
                True, "torch", "F.kl_div(log q, p).sum(-1)"), ("log_q", "p")),
      ]),
      ("kl_divergence(from_logits)", ("log_p", "log_q"), [
          (Peer("jaxdiv", lambda a, b: jaxdiv.kl_divergence(a, b, from_logits=True)),
           ("log_p", "log_q")),
          # The peers normalise the logits first, as jaxdiv does (inputs that happen to be
          # normalised already must not let them skip that work).
          (Peer("optax", lambda b, a: optax.losses.kl_divergence_with_log_targets(
              jax.nn.log_softmax(b), jax.nn.log_softmax(a)),
                note="kl_divergence_with_log_targets(log_softmax(b), log_softmax(a))"),
           ("log_q", "log_p")),
          (Peer("torch", (lambda b, a: F.kl_div(F.log_softmax(b, -1), F.log_softmax(a, -1),
                                               reduction="none", log_target=True).sum(-1))
                if tp else None, True, "torch", "F.kl_div(log_softmax(b), log_softmax(a),"
                " log_target=True)"), ("log_q", "log_p")),
      ]),
      ("js_divergence", ("p", "q"), [
          (Peer("jaxdiv", jaxdiv.js_divergence), ("p", "q")),
          (Peer("scipy", (lambda p, q: scipy.spatial.distance.jensenshannon(p, q, axis=-1) ** 2)
                if sp else None, False, "numpy", "jensenshannon(p, q)**2"), ("p", "q")),
          (Peer("torch", _torch_js if tp else None, True, "torch", "xlogy with the mixture"),
           ("p", "q")),
      ]),
      ("renyi_divergence(alpha=2)", ("p", "q"), [
          (Peer("jaxdiv", lambda p, q: jaxdiv.renyi_divergence(p, q, 2.0)), ("p", "q")),
          (Peer("torch", (lambda p, q: torch.log((p * p / q).sum(-1))) if tp else None, True,
                "torch", "log(sum(p^2/q))"), ("p", "q")),
      ]),
      ("hellinger_distance", ("p", "q"), [
          (Peer("jaxdiv", jaxdiv.hellinger_distance), ("p", "q")),
          (Peer("scipy", (lambda p, q: np.sqrt(0.5 * ((np.sqrt(p) - np.sqrt(q)) ** 2).sum(-1)))
                if sp else None, False, "numpy", "numpy formula"), ("p", "q")),
          (Peer("torch", (lambda p, q: torch.sqrt(0.5 * ((p.sqrt() - q.sqrt()) ** 2).sum(-1)))
                if tp else None, True, "torch", "torch formula"), ("p", "q")),
      ]),
  ]


def bench(quick: bool = False, reps: int | None = None, bw: dict | None = None) -> dict:
  n, v = (1024, 1024) if quick else (4096, 4096)
  reps = reps or (7 if quick else 20)
  bw = bw or bandwidth(64 * MiB if quick else 256 * MiB)
  forms = _forms(_inputs(n, v))
  rows = []
  for case, own_names, peers in cases():
    own = peers[0][0]
    for mode in ("fwd", "fwd+vjp"):
      own_run, m_own = _runner(own, [forms["jax"][k] for k in own_names], mode)
      live, rows_now = [], []
      for peer, names in peers[1:]:
        row = dict(group="core", case=case, mode=mode, shape=f"{n}x{v}", vs=peer.name,
                   jaxdiv_temp_MiB=m_own / MiB, peer_fn=peer.note or peer.name)
        if peer.fn is None:
          row.update(peer_ms="not installed")
        elif mode == "fwd+vjp" and not peer.grad:
          row.update(peer_ms="no grad")
        else:
          run, m_peer = _runner(peer, [forms[peer.kind][k] for k in names], mode)
          live.append((row, run))
          if m_peer is not None:
            row["peer_temp_MiB"] = m_peer / MiB
        rows_now.append(row)
      times = interleaved([own_run] + [r for _, r in live], reps)
      t_own = times[0]
      for (row, _), t_peer in zip(live, times[1:]):
        row.update(peer_ms=1e3 * t_peer, ratio=t_own / t_peer)
      # Minimum traffic in float32: the inputs read once and the output written once; the VJP
      # reads the inputs once more and writes one cotangent per input.
      n_in = len(own_names)
      moved = 4 * (n * v * n_in + n) if mode == "fwd" else 4 * (3 * n * v * n_in)
      floor = moved / (bw["GBps"] * 1e9)
      for row in rows_now:
        row.update(jaxdiv_ms=1e3 * t_own, roofline=floor / t_own)
      rows.extend(rows_now)
      print(f"  core {case} {mode}: jaxdiv {1e3 * t_own:.3f} ms", flush=True)
  return dict(rows=rows, bandwidth=bw, shape=[n, v], dtype="float32", reps=reps,
              versions=versions())


def versions() -> dict:
  out = dict(jax=jax.__version__, optax=optax.__version__, jaxdiv=jaxdiv.__version__)
  out["scipy"] = scipy.__version__ if scipy is not None else "not installed"
  out["torch"] = torch.__version__ if torch is not None else "not installed"
  if torch is not None:
    out["torch_threads"] = torch.get_num_threads()
  return out


COLUMNS = ["case", "mode", "vs", "jaxdiv_ms", "peer_ms", "ratio", "jaxdiv_temp_MiB",
           "peer_temp_MiB", "roofline"]


def plot(rows: list[dict], path: str, title: str) -> str:
  """One horizontal bar chart: jaxdiv time / peer time per case, mode and peer (log scale)."""
  import matplotlib
  import matplotlib.ticker
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rows = [r for r in rows if isinstance(r.get("ratio"), float)]
  labels = [f"{r['case']} [{r['mode']}] vs {r['vs']}" for r in rows]
  ratios = [r["ratio"] for r in rows]
  fig, ax = plt.subplots(figsize=(8, 0.22 * len(rows) + 1.2), dpi=80)
  colors = ["tab:green" if x <= 1 else "tab:red" for x in ratios]
  ax.barh(range(len(rows)), ratios, color=colors)
  ax.axvline(1.0, color="k", lw=0.8)
  ax.set_xscale("log")
  ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
  ax.set_yticks(range(len(rows)), labels, fontsize=7)
  ax.invert_yaxis()
  ax.set_xlabel("jaxdiv time / peer time (< 1: jaxdiv faster)")
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def main(argv=None):
  _common.main("core", bench, __doc__, [("rows", COLUMNS)], argv,
               header=lambda r: f"bandwidth {r['bandwidth']['GBps']:.1f} GB/s",
               plot=lambda rows, png: plot(rows, png, "core divergences, CPU"))


if __name__ == "__main__":
  main()
