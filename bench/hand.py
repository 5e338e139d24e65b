"""The core divergences beside the jnp / optax lines a user would write for them (issue 12).

    python bench/hand.py            # the issue's shapes: 32768x512, 2048x32768, 4096x4096
    python bench/hand.py --quick    # the same aspect ratios with fewer rows

For each case and shape: forward and value+grad (of the summed result, both inputs; in the
`order` forms, the order-alpha family at an order passed to `jit`, also in the order) of jaxdiv
and of the hand-written expression, timed in turn in one process (medians), with two floors
beside them, timed in the same rounds: `read`, one reduction over the inputs (`sum(x)`, each
input read once), and `exp`, the transcendental work the maths needs (`sum(exp(x))` per
logits input, `sum(log(x))` per probability input). Then the float32 accuracy of jaxdiv and of
the hand-written line against a float64 reference on the same rows: median and max absolute
error.
"""

from __future__ import annotations

import inspect
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
QUICK_SHAPES = [(1024, 512), (64, 32768), (128, 4096)]  # 2 MiB an input: run.py in ~2 min

lsm, sm = jax.nn.log_softmax, jax.nn.softmax


def _hand_js_logits(a, b):
  la, lb = lsm(a), lsm(b)
  lm = jnp.logaddexp(la, lb) - jnp.log(2.0)
  return 0.5 * jnp.sum(jnp.exp(la) * (la - lm), -1) + 0.5 * jnp.sum(jnp.exp(lb) * (lb - lm), -1)


def _hand_js_probs(p, q):
  m = 0.5 * (p + q)
  rel = jax.scipy.special.rel_entr
  return 0.5 * jnp.sum(rel(p, m), -1) + 0.5 * jnp.sum(rel(q, m), -1)


A2 = 2.0  # the order of the order-alpha rows
A_NEAR = 1.1  # an order that takes the near form
xlogy, xlog1py = jax.scipy.special.xlogy, jax.scipy.special.xlog1py
lsig, sig = jax.nn.log_sigmoid, jax.nn.sigmoid


def _hand_renyi_logits(a, b, alpha=A2):
  return jnp.log(jnp.sum(jnp.exp(alpha * lsm(a) + (1 - alpha) * lsm(b)), -1)) / (alpha - 1)


def _hand_power_sum(p, q, alpha=A2):
  return jnp.sum(p ** alpha * q ** (1 - alpha), -1)


def _hand_power_sum_logits(a, b, alpha=A2):
  return jnp.sum(jnp.exp(alpha * lsm(a) + (1 - alpha) * lsm(b)), -1)


def _hand_hellinger(p, q):
  return jnp.sqrt(0.5 * jnp.sum((jnp.sqrt(p) - jnp.sqrt(q)) ** 2, -1))


def _hand_chi2(p, q):
  return jnp.sum((p - q) ** 2 / q, -1)


def _hand_bhattacharyya(p, q):
  return -jnp.log(jnp.sum(jnp.sqrt(p * q), -1))


def _hand_binary_entropy_logits(a):
  return -(sig(a) * lsig(a) + sig(-a) * lsig(-a))


def _hand_binary_kl_logits(a, b):
  return sig(a) * (lsig(a) - lsig(b)) + sig(-a) * (lsig(-a) - lsig(-b))


def _chi2_f(t):
  return (t - 1) ** 2


# (case, input form, jaxdiv, hand-written, the peer's text). Forms: logits and probs (softmax
# rows), bernoulli (elementwise sigmoids, for the binary forms, whose logits are `logits`).
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
    ("jeffreys_divergence", "probs", jaxdiv.jeffreys_divergence,
     lambda p, q: jnp.sum((p - q) * (jnp.log(p) - jnp.log(q)), -1),
     "sum((p - q) * (log p - log q))"),
    # The order-alpha family at alpha = 2.
    ("renyi_divergence", "logits",
     lambda a, b: jaxdiv.renyi_divergence(a, b, A2, from_logits=True), _hand_renyi_logits,
     "log(sum(exp(a la + (1 - a) lb))) / (a - 1)"),
    ("renyi_divergence", "probs", lambda p, q: jaxdiv.renyi_divergence(p, q, A2),
     lambda p, q: jnp.log(_hand_power_sum(p, q)) / (A2 - 1),
     "log(sum(p**a * q**(1 - a))) / (a - 1)"),
    ("renyi_entropy", "logits", lambda a: jaxdiv.renyi_entropy(a, A2, from_logits=True),
     lambda a: jnp.log(jnp.sum(jnp.exp(A2 * lsm(a)), -1)) / (1 - A2),
     "log(sum(exp(a log_softmax))) / (1 - a)"),
    ("renyi_entropy", "probs", lambda p: jaxdiv.renyi_entropy(p, A2),
     lambda p: jnp.log(jnp.sum(p ** A2, -1)) / (1 - A2), "log(sum(p**a)) / (1 - a)"),
    ("tsallis_entropy", "logits", lambda a: jaxdiv.tsallis_entropy(a, A2, from_logits=True),
     lambda a: (1 - jnp.sum(jnp.exp(A2 * lsm(a)), -1)) / (A2 - 1),
     "(1 - sum(exp(a log_softmax))) / (a - 1)"),
    ("tsallis_entropy", "probs", lambda p: jaxdiv.tsallis_entropy(p, A2),
     lambda p: (1 - jnp.sum(p ** A2, -1)) / (A2 - 1), "(1 - sum(p**a)) / (a - 1)"),
    ("tsallis_divergence", "logits",
     lambda a, b: jaxdiv.tsallis_divergence(a, b, A2, from_logits=True),
     lambda a, b: (_hand_power_sum_logits(a, b) - 1) / (A2 - 1),
     "(sum(exp(a la + (1 - a) lb)) - 1) / (a - 1)"),
    ("tsallis_divergence", "probs", lambda p, q: jaxdiv.tsallis_divergence(p, q, A2),
     lambda p, q: (_hand_power_sum(p, q) - 1) / (A2 - 1), "(sum(p**a * q**(1 - a)) - 1) / (a - 1)"),
    ("alpha_divergence", "logits",
     lambda a, b: jaxdiv.alpha_divergence(a, b, A2, from_logits=True),
     lambda a, b: (_hand_power_sum_logits(a, b) - 1) / (A2 * (A2 - 1)),
     "(sum(exp(a la + (1 - a) lb)) - 1) / (a (a - 1))"),
    ("alpha_divergence", "probs", lambda p, q: jaxdiv.alpha_divergence(p, q, A2),
     lambda p, q: (_hand_power_sum(p, q) - 1) / (A2 * (A2 - 1)),
     "(sum(p**a * q**(1 - a)) - 1) / (a (a - 1))"),
    # An order below 1, whose powers are roots (1/2: square roots), on probabilities.
    ("renyi_divergence[alpha=0.5]", "probs", lambda p, q: jaxdiv.renyi_divergence(p, q, 0.5),
     lambda p, q: jnp.log(_hand_power_sum(p, q, 0.5)) / (0.5 - 1),
     "log(sum(p**a * q**(1 - a))) / (a - 1), a = 0.5"),
    ("renyi_entropy[alpha=0.5]", "probs", lambda p: jaxdiv.renyi_entropy(p, 0.5),
     lambda p: jnp.log(jnp.sum(p ** 0.5, -1)) / (1 - 0.5), "log(sum(p**a)) / (1 - a), a = 0.5"),
    # An order near 1 (|alpha - 1| < 0.25), which keeps its relative precision as alpha -> 1
    # (S - 1 summed as sum p expm1(t d), t = alpha - 1), where the hand-written line divides a
    # log of about 1 by alpha - 1: from logits `_fast.power_sum`'s near form, from
    # probabilities the guarded path.
    ("renyi_divergence[alpha=1.1]", "logits",
     lambda a, b: jaxdiv.renyi_divergence(a, b, A_NEAR, from_logits=True),
     lambda a, b: _hand_renyi_logits(a, b, A_NEAR),
     "log(sum(exp(a la + (1 - a) lb))) / (a - 1), a = 1.1"),
    ("renyi_entropy[alpha=1.1]", "logits",
     lambda a: jaxdiv.renyi_entropy(a, A_NEAR, from_logits=True),
     lambda a: jnp.log(jnp.sum(jnp.exp(A_NEAR * lsm(a)), -1)) / (1 - A_NEAR),
     "log(sum(exp(a log_softmax))) / (1 - a), a = 1.1"),
    ("renyi_divergence[alpha=1.1]", "probs", lambda p, q: jaxdiv.renyi_divergence(p, q, A_NEAR),
     lambda p, q: jnp.log(_hand_power_sum(p, q, A_NEAR)) / (A_NEAR - 1),
     "log(sum(p**a * q**(1 - a))) / (a - 1), a = 1.1"),
    # The f-family.
    ("hellinger_distance", "logits",
     lambda a, b: jaxdiv.hellinger_distance(a, b, from_logits=True),
     lambda a, b: _hand_hellinger(sm(a), sm(b)),
     "sqrt(sum((sqrt(softmax a) - sqrt(softmax b))^2) / 2)"),
    ("hellinger_distance", "probs", jaxdiv.hellinger_distance, _hand_hellinger,
     "sqrt(sum((sqrt p - sqrt q)^2) / 2)"),
    ("total_variation_distance", "logits",
     lambda a, b: jaxdiv.total_variation_distance(a, b, from_logits=True),
     lambda a, b: 0.5 * jnp.sum(jnp.abs(sm(a) - sm(b)), -1), "sum(|softmax a - softmax b|) / 2"),
    ("total_variation_distance", "probs", jaxdiv.total_variation_distance,
     lambda p, q: 0.5 * jnp.sum(jnp.abs(p - q), -1), "sum(|p - q|) / 2"),
    ("chi_squared_divergence", "logits",
     lambda a, b: jaxdiv.chi_squared_divergence(a, b, from_logits=True),
     lambda a, b: _hand_chi2(sm(a), sm(b)), "sum((softmax a - softmax b)^2 / softmax b)"),
    ("chi_squared_divergence", "probs", jaxdiv.chi_squared_divergence, _hand_chi2,
     "sum((p - q)^2 / q)"),
    ("bhattacharyya_distance", "logits",
     lambda a, b: jaxdiv.bhattacharyya_distance(a, b, from_logits=True),
     lambda a, b: -jax.nn.logsumexp(0.5 * (lsm(a) + lsm(b)), -1),
     "-logsumexp((log_softmax a + log_softmax b) / 2)"),
    ("bhattacharyya_distance", "probs", jaxdiv.bhattacharyya_distance, _hand_bhattacharyya,
     "-log(sum(sqrt(p q)))"),
    ("f_divergence[chi2]", "probs", lambda p, q: jaxdiv.f_divergence(p, q, _chi2_f),
     lambda p, q: jnp.sum(q * _chi2_f(p / q), -1), "sum(q f(p / q)), f = (t - 1)^2"),
    # The binary forms, elementwise.
    ("binary_entropy", "logits", lambda a: jaxdiv.binary_entropy(a, from_logits=True),
     _hand_binary_entropy_logits, "-(sigmoid(a) log_sigmoid(a) + sigmoid(-a) log_sigmoid(-a))"),
    ("binary_entropy", "bernoulli", jaxdiv.binary_entropy,
     lambda p: -(xlogy(p, p) + xlog1py(1 - p, -p)), "-(xlogy(p, p) + xlog1py(1 - p, -p))"),
    ("binary_cross_entropy", "logits",
     lambda a, b: jaxdiv.binary_cross_entropy(a, b, from_logits=True),
     lambda a, b: optax.sigmoid_binary_cross_entropy(b, sig(a)),
     "optax sigmoid_binary_cross_entropy(b, sigmoid(a))"),
    ("binary_cross_entropy", "bernoulli", jaxdiv.binary_cross_entropy,
     lambda p, q: -(xlogy(p, q) + xlog1py(1 - p, -q)), "-(xlogy(p, q) + xlog1py(1 - p, -q))"),
    ("binary_kl_divergence", "logits",
     lambda a, b: jaxdiv.binary_kl_divergence(a, b, from_logits=True), _hand_binary_kl_logits,
     "sigmoid(a) (log_sigmoid(a) - log_sigmoid(b)) + the same at -a, -b"),
    ("binary_kl_divergence", "bernoulli", jaxdiv.binary_kl_divergence,
     lambda p, q: (jax.scipy.special.rel_entr(p, q) + jax.scipy.special.rel_entr(1 - p, 1 - q)),
     "rel_entr(p, q) + rel_entr(1 - p, 1 - q)"),
]


# The order-alpha family at a traced order (a `jit` argument, an order being learnt; value+grad
# also in alpha), from logits: forms `order` (alpha = A2) and `order-near` (A_NEAR, where the
# guarded path keeps the derivatives in alpha precise). Inputs `(a, alpha)` or `(a, b, alpha)`.
_TRACED = [
    ("renyi_divergence", lambda a, b, al: jaxdiv.renyi_divergence(a, b, al, from_logits=True),
     lambda a, b, al: _hand_renyi_logits(a, b, al),
     "log(sum(exp(al la + (1 - al) lb))) / (al - 1)"),
    ("renyi_entropy", lambda a, al: jaxdiv.renyi_entropy(a, al, from_logits=True),
     lambda a, al: jnp.log(jnp.sum(jnp.exp(al * lsm(a)), -1)) / (1 - al),
     "log(sum(exp(al log_softmax))) / (1 - al)"),
    ("tsallis_entropy", lambda a, al: jaxdiv.tsallis_entropy(a, al, from_logits=True),
     lambda a, al: (1 - jnp.sum(jnp.exp(al * lsm(a)), -1)) / (al - 1),
     "(1 - sum(exp(al log_softmax))) / (al - 1)"),
    ("tsallis_divergence",
     lambda a, b, al: jaxdiv.tsallis_divergence(a, b, al, from_logits=True),
     lambda a, b, al: (_hand_power_sum_logits(a, b, al) - 1) / (al - 1),
     "(sum(exp(al la + (1 - al) lb)) - 1) / (al - 1)"),
    ("alpha_divergence", lambda a, b, al: jaxdiv.alpha_divergence(a, b, al, from_logits=True),
     lambda a, b, al: (_hand_power_sum_logits(a, b, al) - 1) / (al * (al - 1)),
     "(sum(exp(al la + (1 - al) lb)) - 1) / (al (al - 1))"),
]
CASES += [(f"{case}[traced alpha={A2:g}]", "order", ours, hand, note)
          for case, ours, hand, note in _TRACED]
CASES += [(f"{case}[traced alpha={A_NEAR:g}]", "order-near", ours, hand, note)
          for case, ours, hand, note in _TRACED if case == "renyi_divergence"]
# From probabilities (form `order-probs`, alpha = A2): the hand line's general power `p ** al`.
_TRACED_PROBS = [
    ("renyi_divergence", lambda p, q, al: jaxdiv.renyi_divergence(p, q, al),
     lambda p, q, al: jnp.log(_hand_power_sum(p, q, al)) / (al - 1),
     "log(sum(p**al * q**(1 - al))) / (al - 1)"),
    ("renyi_entropy", lambda p, al: jaxdiv.renyi_entropy(p, al),
     lambda p, al: jnp.log(jnp.sum(p ** al, -1)) / (1 - al), "log(sum(p**al)) / (1 - al)"),
    ("tsallis_entropy", lambda p, al: jaxdiv.tsallis_entropy(p, al),
     lambda p, al: (1 - jnp.sum(p ** al, -1)) / (al - 1), "(1 - sum(p**al)) / (al - 1)"),
    ("tsallis_divergence", lambda p, q, al: jaxdiv.tsallis_divergence(p, q, al),
     lambda p, q, al: (_hand_power_sum(p, q, al) - 1) / (al - 1),
     "(sum(p**al * q**(1 - al)) - 1) / (al - 1)"),
    ("alpha_divergence", lambda p, q, al: jaxdiv.alpha_divergence(p, q, al),
     lambda p, q, al: (_hand_power_sum(p, q, al) - 1) / (al * (al - 1)),
     "(sum(p**al * q**(1 - al)) - 1) / (al (al - 1))"),
]
CASES += [(f"{case}[traced alpha={A2:g}]", "order-probs", ours, hand, note)
          for case, ours, hand, note in _TRACED_PROBS]
_QUICK_TRACED = f"renyi_divergence[traced alpha={A2:g}]"  # the one `--quick` runs


def _n_in(hand) -> int:
  params = inspect.signature(hand).parameters.values()
  return sum(x.default is inspect.Parameter.empty for x in params)


# The Bernoulli forms on probabilities summed over the last axis (`axis=-1`, the divergence of
# products of independent Bernoullis; a summed loss): a sum changes what XLA:CPU does with the
# elementwise expression (a YNNPACK reduction that may take its last operation with it).
def _row_summed(ours, hand):
  """`ours(..., axis=-1)` and `sum(hand(...), -1)`, with the hand line's arity (`_n_in`)."""
  if _n_in(hand) == 1:
    return lambda p: ours(p, axis=-1), lambda p: jnp.sum(hand(p), -1)
  return lambda p, q: ours(p, q, axis=-1), lambda p, q: jnp.sum(hand(p, q), -1)


CASES += [(f"{case}[axis=-1]", form, *_row_summed(ours, hand), f"sum(-1) of {note}")
          for case, form, ours, hand, note in CASES if form == "bernoulli"]


def _selected(only):
  """The cases whose name contains one of the comma-separated words of `only` (all: None)."""
  if not only:
    return CASES
  words = only.split(",")
  return [c for c in CASES if any(w in f"{c[0]}({c[1]})" for w in words)]


def _inputs(n, v, seed=0):
  """The issue's rows: logits a ~ N(0, 9), b = a + N(0, 1), and their softmaxes."""
  k1, k2 = jax.random.split(jax.random.key(seed))
  a = 3.0 * jax.random.normal(k1, (n, v), jnp.float32)
  b = a + jax.random.normal(k2, (n, v), jnp.float32)
  return dict(logits=(a, b), probs=(sm(a), sm(b)), bernoulli=(sig(a), sig(b)),
              order=(a, b, jnp.float32(A2)), **{"order-near": (a, b, jnp.float32(A_NEAR)),
                                                "order-probs": (sm(a), sm(b), jnp.float32(A2))})


def _args(x, form, n_in):
  """A case's inputs: the first `n_in` of its form's; the order forms' entropies `(a, alpha)`."""
  if form.startswith("order") and n_in == 2:
    return x[form][0], x[form][2]
  return x[form][:n_in]


def _rows(xs):
  """The inputs that hold rows (not an order)."""
  return [t for t in xs if t.ndim]


def _vg(f, n):
  return jax.value_and_grad(lambda *x: jnp.sum(f(*x)), argnums=tuple(range(n)))


def _compiled(f, args):
  """`jax.jit(f)` compiled once for `args`: the callable timed, and XLA's temporary bytes."""
  c = jax.jit(f).lower(*args).compile()
  return c, int(c.memory_analysis().temp_size_in_bytes)


def bench_speed(shapes, reps, cases=CASES):
  rows = []
  for n, v in shapes:
    x = _inputs(n, v)
    floors = {}
    for case, form, ours, hand, note in cases:
      n_in = _n_in(hand)
      args = _args(x, form, n_in)
      if (form, n_in) not in floors:
        op = jnp.log if form in ("probs", "bernoulli", "order-probs") else jnp.exp
        floors[form, n_in] = [
            _compiled(lambda *xs: sum(jnp.sum(t, -1) for t in _rows(xs)), args)[0],
            _compiled(lambda *xs, op=op: sum(jnp.sum(op(t), -1) for t in _rows(xs)), args)[0]]
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
  if case.startswith("binary_"):
    return _ref64_binary(case, form, a, b)
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
  # The order-alpha rows at A2 (or the order in the name, `renyi_entropy[alpha=0.5]`), from
  # the power sums (no zero probabilities in these rows), divided by the mass of p as jaxdiv
  # defines them (Renyi's definition for incomplete distributions); the hand-written lines
  # leave it out, a difference of the order of the float32 rounding of sum(p) - 1.
  a = A2
  if "[alpha=" in case:
    case, a = case.split("[")[0], float(case.split("=")[1].rstrip("]"))
  z = p.sum(-1)
  s_pq = np.sum(p ** a * q ** (1 - a), -1) / z
  s_p = np.sum(p ** a, -1) / z
  if case == "renyi_divergence":
    return np.log(s_pq) / (a - 1)
  if case == "renyi_entropy":
    return np.log(s_p) / (1 - a)
  if case == "tsallis_entropy":
    return (1 - s_p) / (a - 1)
  if case == "tsallis_divergence":
    return (s_pq - 1) / (a - 1)
  if case == "alpha_divergence":
    return (s_pq - 1) / (a * (a - 1))
  if case == "hellinger_distance":
    return np.sqrt(0.5 * np.sum((np.sqrt(p) - np.sqrt(q)) ** 2, -1))
  if case == "total_variation_distance":
    return 0.5 * np.sum(np.abs(p - q), -1)
  if case in ("chi_squared_divergence", "f_divergence[chi2]"):
    return np.sum((p - q) ** 2 / q, -1)
  if case == "bhattacharyya_distance":
    return -np.log(np.sum(np.sqrt(p * q), -1))
  raise ValueError(case)


def _ref64_binary(case, form, a, b):
  """The Bernoulli forms elementwise in float64 (from logits through log_expit); `[axis=-1]`:
  summed over the last axis."""
  if case.endswith("[axis=-1]"):
    return _ref64_binary(case[:-len("[axis=-1]")], form, a, b).sum(-1)
  if form == "logits":
    lp1, lp0 = scipy.special.log_expit(a), scipy.special.log_expit(-a)
    lq1, lq0 = scipy.special.log_expit(b), scipy.special.log_expit(-b)
    p1, p0 = np.exp(lp1), np.exp(lp0)
  else:
    # sigmoid(a) rounds to 1 in float32 from a = 17: scipy's conventions (0 log 0 = 0) there,
    # where the plain products gave 0 * -inf = NaN (the accuracy rows were NaN until 2026-12-04).
    xlogy, xlog1py = scipy.special.xlogy, scipy.special.xlog1py
    if case == "binary_entropy":
      return -(xlogy(a, a) + xlog1py(1 - a, -a))
    if case == "binary_cross_entropy":
      return -(xlogy(a, b) + xlog1py(1 - a, -b))
    if case == "binary_kl_divergence":
      return (xlogy(a, a) - xlogy(a, b)) + (xlog1py(1 - a, -a) - xlog1py(1 - a, -b))
    raise ValueError(case)
  if case == "binary_entropy":
    return -(p1 * lp1 + p0 * lp0)
  if case == "binary_cross_entropy":
    return -(p1 * lq1 + p0 * lq0)
  if case == "binary_kl_divergence":
    return p1 * (lp1 - lq1) + p0 * (lp0 - lq0)
  raise ValueError(case)


def bench_accuracy(n=20000, v=512, cases=CASES):
  x = _inputs(n, v, seed=1)
  rows = []
  for case, form, ours, hand, note in cases:
    n_in = _n_in(hand)
    args = _args(x, form, n_in)
    ref_case, ref_form = case, form
    if form.startswith("order"):  # the static order's reference: `renyi_divergence[alpha=2]`
      ref_case = case.replace("traced ", "")
      ref_form = "probs" if form == "order-probs" else "logits"
    a64 = [np.asarray(t, np.float64) for t in x[ref_form]]
    want = _ref64(ref_case, ref_form, *a64)
    row = dict(group="accuracy", case=f"{case}({form})", shape=f"{n}x{v}", vs="hand-written",
               peer_fn=note)
    fin = np.isfinite(want)
    for who, f in (("jaxdiv", ours), ("peer", hand)):
      got = np.asarray(jax.jit(f)(*args), np.float64)
      # where the reference is inf (a Bernoulli KL at q = 0 < p), a result that is not the same
      # inf counts as an infinite error
      err = np.where(fin, np.abs(got - np.where(fin, want, 0)), np.where(got == want, 0, np.inf))
      row[f"{who}_med_err"], row[f"{who}_max_err"] = float(np.median(err)), float(err.max())
    row["med_ratio"] = row["jaxdiv_med_err"] / row["peer_med_err"]
    row["max_ratio"] = row["jaxdiv_max_err"] / row["peer_max_err"]
    rows.append(row)
  return rows


COLUMNS = ["case", "mode", "shape", "jaxdiv_ms", "peer_ms", "ratio", "floor_read_ms",
           "floor_exp_ms", "jaxdiv_temp_MiB", "peer_temp_MiB"]
ACC_COLUMNS = ["case", "shape", "jaxdiv_med_err", "peer_med_err", "med_ratio", "jaxdiv_max_err",
               "peer_max_err", "max_ratio"]


def _shape(text: str, shapes) -> tuple[int, int]:
  """An index into `shapes`, or rows x length (`128x4096`)."""
  if "x" in text:
    n, v = text.split("x")
    return int(n), int(v)
  return shapes[int(text)]


def bench(quick: bool = False, reps: int | None = None, bw: dict | None = None,
          only: str | None = None, shapes: str | None = None) -> dict:
  all_shapes = QUICK_SHAPES if quick else SHAPES
  shapes = [_shape(s, all_shapes) for s in shapes.split(",")] if shapes else all_shapes
  reps = reps or (3 if quick else 9)
  cases = _selected(only)
  if quick and not only:  # run.py --quick in ~2 min: one traced-order row (each takes ~25 s)
    cases = [c for c in cases if not c[1].startswith("order") or c[0] == _QUICK_TRACED]
  rows = bench_speed(shapes, reps, cases)
  acc = bench_accuracy(4096 if quick else 20000, cases=cases)
  return dict(rows=rows, accuracy=acc, shapes=shapes, dtype="float32", reps=reps, only=only,
              versions=core.versions())


def main(argv=None):
  options = [("--only", dict(help="comma-separated words: the cases whose name has one")),
             ("--shapes", dict(help="comma-separated indices into the shapes, or sizes such as "
                                "128x4096 (default: all)")),
             ("--reps", dict(type=int, help="timed repetitions (default 3 quick, 9 full)"))]
  _common.main("hand", bench, __doc__, [("rows", COLUMNS), ("accuracy", ACC_COLUMNS)], argv,
               options=options)


if __name__ == "__main__":
  main()
