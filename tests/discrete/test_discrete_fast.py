"""The unguarded fast path of the Shannon family (`jaxdiv/discrete/_fast.py`).

Its values and its hand-written derivatives (a `custom_jvp`) are checked against `jax.grad` of
an independent float64 plain-`jnp` reference, and a batch with an edge case (which falls back
to the guarded path) against the guarded path itself (a `where` mask forces it), under `jit`
and eagerly, forward and reverse mode.
"""

from __future__ import annotations

import discrete_reference as dref
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from _helpers import tiered
from jax import lax
from jax.scipy import special

import jaxdiv
from jaxdiv import _fallback

lsm = jax.nn.log_softmax


def _js_ref(p, q, lp, lq, beta):
  lm = jnp.log(beta * p + (1 - beta) * q)
  return beta * jnp.sum(p * (lp - lm), -1) + (1 - beta) * jnp.sum(q * (lq - lm), -1)


# name -> (jaxdiv call, reference on probabilities and their logs)
CASES = {
    "entropy": (lambda p, q, **k: jaxdiv.entropy(p, **k),
                lambda p, q, lp, lq: -jnp.sum(p * lp, -1)),
    "cross_entropy": (jaxdiv.cross_entropy, lambda p, q, lp, lq: -jnp.sum(p * lq, -1)),
    "kl_divergence": (jaxdiv.kl_divergence, lambda p, q, lp, lq: jnp.sum(p * (lp - lq), -1)),
    "jeffreys_divergence": (jaxdiv.jeffreys_divergence,
                            lambda p, q, lp, lq: jnp.sum((p - q) * (lp - lq), -1)),
    "js_divergence": (jaxdiv.js_divergence,
                      lambda p, q, lp, lq: _js_ref(p, q, lp, lq, 0.5)),
    "js_divergence[beta=0.3]": (lambda p, q, **k: jaxdiv.js_divergence(p, q, 0.3, **k),
                                lambda p, q, lp, lq: _js_ref(p, q, lp, lq, 0.3)),
}


def _reference(name, from_logits):
  ref = CASES[name][1]
  if from_logits:
    return lambda a, b: ref(jnp.exp(lsm(a)), jnp.exp(lsm(b)), lsm(a), lsm(b))
  return lambda p, q: ref(p, q, jnp.log(p), jnp.log(q))


def _inputs(from_logits, seed=0, shape=(4, 7), dtype=np.float64):
  rng = np.random.default_rng(seed)
  if from_logits:
    a = 3 * rng.normal(size=shape)
    return a.astype(dtype), (a + rng.normal(size=shape)).astype(dtype)
  return (rng.dirichlet(np.ones(shape[-1]), shape[:-1]).astype(dtype),
          rng.dirichlet(np.ones(shape[-1]), shape[:-1]).astype(dtype))


def _ours(name, from_logits, where=None):
  fn = CASES[name][0]
  return lambda a, b: fn(a, b, from_logits=from_logits, where=where)


# Fast tier: each function but entropy and each input form once (`tiered`); the rest in the slow
# tier. entropy (8.6 s) is slow: the other five run the same Shannon custom_jvp.
@tiered("name,from_logits", [(n, fl) for n in CASES for fl in (True, False)],
        fast=[(n, n != "cross_entropy") for n in CASES if n != "entropy"])
def test_value_and_grads_match_reference(x64, name, from_logits):
  a, b = map(jnp.asarray, _inputs(from_logits))
  _assert_matches(_ours(name, from_logits), _reference(name, from_logits), a, b)


def _assert_matches(ours, ref, a, b):
  """Value, gradient, forward mode and Hessian (the last two through the custom_jvp rule)."""
  np.testing.assert_allclose(ours(a, b), ref(a, b), rtol=1e-12, atol=1e-13)
  total = lambda f: (lambda x, y: jnp.sum(f(x, y)))
  for got, want in zip(jax.grad(total(ours), (0, 1))(a, b), jax.grad(total(ref), (0, 1))(a, b)):
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(jax.jacfwd(total(ours))(a, b), jax.jacfwd(total(ref))(a, b),
                             rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(jax.hessian(total(ours))(a, b), jax.hessian(total(ref))(a, b),
                             rtol=1e-7, atol=1e-9)


def _with_edges(from_logits):
  a, b = _inputs(from_logits, seed=1)
  if from_logits:
    a[1, 2] = -np.inf  # outside p's support
    b[2, 3] = -np.inf  # q = 0 where p > 0: +inf
    a[3, :] = -np.inf  # an empty row: 0
  else:
    a[1, 2] = 0.0
    b[2, 3] = 0.0
    a[3, 4] = 0.0
    b[3, 4] = 0.0
  return jnp.asarray(a), jnp.asarray(b)


# Fast tier: each input form and each of eager and jit, on the functions with the most guards
# (the fallback is one mechanism for every function, whose values the test above checks).
@tiered("name,from_logits,jit",
        [(n, fl, j) for n in CASES for fl in (True, False) for j in (False, True)],
        fast=[("kl_divergence", True, True), ("entropy", False, False),
              ("js_divergence", True, False)])
def test_edge_batch_falls_back_to_guarded_path(x64, name, from_logits, jit):
  a, b = _with_edges(from_logits)
  ours = _ours(name, from_logits)
  guarded = _ours(name, from_logits, where=jnp.ones(a.shape, bool))  # a mask: guarded path
  wrap = jax.jit if jit else (lambda f: f)
  # the same maths; jit may fuse and round differently
  np.testing.assert_allclose(wrap(ours)(a, b), guarded(a, b), rtol=1e-13, atol=1e-14)
  finite = lambda f: (lambda x, y: jnp.sum(jnp.where(jnp.isfinite(f(x, y)), f(x, y), 0)))
  for got, want in zip(wrap(jax.grad(finite(ours), (0, 1)))(a, b),
                       jax.grad(finite(guarded), (0, 1))(a, b)):
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)


def test_vmap_mixes_fast_and_guarded_rows():
  a, b = _with_edges(True)
  a, b = a.astype(np.float32), b.astype(np.float32)
  f = lambda x, y: jaxdiv.kl_divergence(x, y, from_logits=True)
  np.testing.assert_allclose(jax.vmap(f)(a, b), jnp.stack([f(x, y) for x, y in zip(a, b)]),
                             rtol=1e-6, atol=1e-7)


def _primitives(jaxpr) -> list[str]:
  """The primitives of a jaxpr and of the jaxprs inside its equations."""
  names = []
  for eqn in jaxpr.eqns:
    names.append(eqn.primitive.name)
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        sub = getattr(sub, "jaxpr", sub)
        if hasattr(sub, "eqns"):
          names += _primitives(sub)
  return names


# Slow: kl (10 s) and the generator (7 s); js and entropy run the same `cond` in the fast tier.
@pytest.mark.parametrize("name,fn", [
    pytest.param("kl(logits)", lambda a, b: jaxdiv.kl_divergence(a, b, from_logits=True),
                 marks=pytest.mark.slow),
    ("js(logits)", lambda a, b: jaxdiv.js_divergence(a, b, from_logits=True)),
    ("entropy(probs)", lambda a, b: jaxdiv.entropy(jax.nn.softmax(a))),
    pytest.param("f_divergence(generator)", lambda a, b: jaxdiv.f_divergence(
        jax.nn.softmax(a), jax.nn.softmax(b), lambda t: t * jnp.log(t)), marks=pytest.mark.slow),
])
def test_vmap_keeps_the_fallback_a_cond(name, fn):
  """Under `jax.vmap` the guarded fallback stays behind a `cond` on one predicate for the whole
  batch (`_fallback.any_in_batch`), forward and value+grad. A mapped predicate made the `cond`
  a `select` that computed the guarded path on every call: KL from logits over 16 x [256, 2048],
  vmapped, took 4.5x its direct time forward, 2.6x value+grad. Values as without vmap, a
  guarded row in one example only."""
  rng = np.random.default_rng(3)
  a, b = (rng.normal(size=(2, 3, 7)).astype(np.float32) for _ in range(2))
  a[1, 0, 0] = np.inf  # a guarded row in the second example only
  vg = jax.value_and_grad(lambda x, y: jnp.sum(fn(x, y)))
  for g in (jax.vmap(fn), jax.vmap(vg)):
    assert "cond" in _primitives(jax.make_jaxpr(g)(a, b).jaxpr), name
  got = jax.vmap(fn)(a, b)
  np.testing.assert_array_equal(np.isnan(got), np.isnan(fn(a, b)))
  np.testing.assert_allclose(got, fn(a, b), rtol=1e-6, atol=1e-7)
  got_v, got_g = jax.jit(jax.vmap(vg))(a, b)
  for i in range(2):
    want_v, want_g = vg(a[i], b[i])
    np.testing.assert_allclose(got_v[i], want_v, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got_g[i], want_g, rtol=1e-5, atol=1e-6)


def test_mapped_size_counts_the_examples_vmap_computes_at_once():
  from jaxdiv._fallback import mapped_size
  seen = []

  def f(x, y):
    seen.append(mapped_size(x, y))
    return jnp.sum(x * y, -1)

  x, y = jnp.ones((4, 3, 5, 7)), jnp.ones((5, 7))
  runs = {
      "eager": (lambda: f(x, y), 1),
      "jit": (lambda: jax.jit(f)(x, y), 1),
      "vmap(vmap)": (lambda: jax.vmap(jax.vmap(f, (0, None)), (0, None))(x, y), 12),
      "jit(vmap)": (lambda: jax.jit(jax.vmap(f, (0, None)))(x[0], y), 3),
      "vmap over y": (lambda: jax.vmap(f, (None, 0))(y, x[0, 0]), 5),
      "grad(vmap)": (lambda: jax.grad(lambda u: jax.vmap(f, (0, None))(u, y).sum())(x[0]), 3),
      "vmap(grad)": (lambda: jax.vmap(jax.grad(lambda u: f(u, y).sum()))(x[0]), 3),
      "lax.map": (lambda: lax.map(lambda u: f(u, y), x[0]), 1),
      "jit(vmap) over no examples": (lambda: jax.jit(jax.vmap(f, (0, None)))(x[:0, 0], y), 1),
  }
  for name, (run, want) in runs.items():
    seen.clear()
    run()
    assert seen and set(seen) == {want}, (name, seen)
  # A vmap over no examples (helper-53: a block size divided by 0 raised ZeroDivisionError).
  z = jnp.zeros((0, 4, 8))
  kl = lambda a, b: jaxdiv.kl_divergence(a, b, from_logits=True)
  assert jax.jit(jax.vmap(kl))(z, z).shape == (0, 4)
  assert jax.jit(jax.vmap(jax.grad(lambda a, b: kl(a, b).sum())))(z, z).shape == (0, 4, 8)


# The fast tier runs no case of this test; it costs 14 s.
@pytest.mark.slow
def test_eager_derivatives_trace_no_vmap_probe(monkeypatch):
  """Under eager `jax.grad` (no `vmap`, no `jit`) neither `mapped_size`'s probe nor
  `any_in_batch`'s `custom_vmap` is called: each traces a jaxpr per call, and made an eager
  value+grad of KL from logits on 8x10 1.2x as long (helper-53). Under `vmap` both are."""
  calls = []
  for name in ("_probe", "_any_mapped"):
    real = getattr(_fallback, name)
    monkeypatch.setattr(_fallback, name,
                        lambda x, real=real, name=name: (calls.append(name), real(x))[1])
  rng = np.random.default_rng(0)
  a, b = (jnp.asarray(rng.normal(size=(8, 10)), jnp.float32) for _ in range(2))
  fns = [lambda a: jaxdiv.kl_divergence(a, b, from_logits=True),
         lambda a: jaxdiv.renyi_entropy(jax.nn.softmax(a), 2.0),
         lambda a: jaxdiv.total_variation_distance(jax.nn.softmax(a), jax.nn.softmax(b))]
  for f in fns:
    g = jax.grad(lambda a, f=f: f(a).sum())
    for run in (f, g, jax.grad(lambda a, g=g: g(a)[0, 0]),
                lambda a, f=f: jax.jvp(f, (a,), (a,))):
      run(a)  # (`jax.jacfwd` and `jax.hessian` are `vmap`s: the probe runs there)
  assert not calls, calls
  jax.vmap(jax.grad(lambda a: fns[0](a).sum()))(a[:, None])
  assert set(calls) == {"_probe", "_any_mapped"}, calls


@pytest.mark.parametrize("name,fn,entries", [
    ("renyi_entropy(probs)", lambda a: jaxdiv.renyi_entropy(jax.nn.softmax(a), 2.0), 1 << 12),
    # slow (5 s): test_vmap_of_short_examples_takes_the_guarded_forward_whole runs these blocks
    pytest.param("kl(logits, where)", lambda a: jaxdiv.kl_divergence(
        a, jnp.roll(a, 1, -1), from_logits=True, where=a > -2), 1 << 16, marks=pytest.mark.slow),
])
def test_vmap_blocks_count_the_mapped_examples_once(monkeypatch, name, fn, entries):
  """The row blocks of the one pass (`row_reduce`) and of the guarded forward
  (`forward_in_row_blocks`) hold every mapped example's rows: their entries are divided by
  the mapped size once, eagerly as under `jit`. Eagerly the one pass's blocks were divided
  twice (`platform_dependent` runs its branch under the `vmap`, helper-53), and the guarded
  forward took a mapped batch of examples smaller than a block whole."""
  monkeypatch.setattr(_fallback, "_MAX_PARTIAL_BYTES", 1 << 10)
  monkeypatch.setattr(_fallback, "_BLOCK_ENTRIES", 1 << 12)
  monkeypatch.setattr(_fallback, "GUARDED_BLOCK_ENTRIES", 1 << 16)  # 2x an example
  seen = []
  real = _fallback.row_block_shape
  monkeypatch.setattr(_fallback, "row_block_shape",
                      lambda shape, axis, entries: (seen.append((tuple(shape), entries)),
                                                    real(shape, axis, entries))[1])
  x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 64, 512)), jnp.float32)
  want = jax.jit(fn)(x.reshape(-1, 512)).reshape(4, 64)
  runs = {}
  for mode, g in (("eager", jax.vmap(fn)), ("jit", jax.jit(jax.vmap(fn)))):
    seen.clear()
    np.testing.assert_allclose(g(x), want, rtol=2e-6, err_msg=f"{name} {mode}")
    # (the blocks of the patched sizes; the guarded fallback's are traced under `jit` only)
    runs[mode] = sorted({s for s in seen if s[1] <= 1 << 14})
  assert runs["eager"] == runs["jit"] == [((64, 512), entries // 4)], runs


def test_vmap_of_short_examples_takes_the_guarded_forward_whole(monkeypatch):
  """Where one row of each mapped example is already over `_WIDEST_BLOCK` blocks' entries, the
  guarded forward (`forward_in_row_blocks`) takes the mapped batch whole: blocks of [8192, 1,
  512] sliced across the mapped axis made the JS distance from logits under jit(vmap) 2x slower
  than the whole batch (helper-54). Values as without vmap."""
  monkeypatch.setattr(_fallback, "GUARDED_BLOCK_ENTRIES", 1 << 10)
  seen = []
  real = _fallback.row_block_shape
  monkeypatch.setattr(_fallback, "row_block_shape",
                      lambda shape, axis, entries: (seen.append((tuple(shape), entries)),
                                                    real(shape, axis, entries))[1])
  rng = np.random.default_rng(2)
  a, b = (jnp.asarray(rng.normal(size=(8, 2, 512)), jnp.float32) for _ in range(2))
  fn = lambda a, b: jaxdiv.js_distance(a, b, from_logits=True)
  got = jax.jit(jax.vmap(fn))(a, b)  # 8 x 512 = 4K entries a row of each: over 2 x 1K
  assert not [s for s in seen if s[1] <= 1 << 10], seen
  np.testing.assert_allclose(got, fn(a.reshape(16, 512), b.reshape(16, 512)).reshape(8, 2),
                             rtol=2e-6)
  seen.clear()
  jax.jit(jax.vmap(fn))(a[:2], b[:2])  # 2 x 512: blocks of one row of each example
  assert ((2, 512), (1 << 10) // 2) in seen, seen


@pytest.mark.parametrize("name,fn,mode", [
    ("kl(logits)", lambda a, b: jaxdiv.kl_divergence(a, b, from_logits=True), "fwd"),
    ("kl(logits)", lambda a, b: jaxdiv.kl_divergence(a, b, from_logits=True), "vg"),
    ("js(logits)", lambda a, b: jaxdiv.js_divergence(a, b, from_logits=True), "vg"),
    ("renyi_entropy(probs)", lambda p, q: jaxdiv.renyi_entropy(p, 2.0), "fwd"),
    ("total_variation(probs)", lambda p, q: jaxdiv.total_variation_distance(p, q), "fwd"),
])
def test_vmap_holds_no_more_temporaries_than_one_batch(name, fn, mode):
  """XLA's temporaries of `jax.vmap(f)` over 16 examples of [256, 2048] (float32) against f on
  the [16, 256, 2048] batch: the size-based choices count the mapped examples
  (`_fallback.mapped_size`). They saw one example: the fallback's `cond` branch took the
  whole mapped batch (KL from logits forward 96 MiB against 3, value+grad 224 against 128; JS
  value+grad 416; the Renyi entropy's one-pass partials 168 MiB against 0)."""
  x = jax.ShapeDtypeStruct((16, 256, 2048), jnp.float32)
  if mode == "vg":
    g = lambda f: jax.value_and_grad(lambda a, b: jnp.sum(f(a, b)), (0, 1))
  else:
    g = lambda f: f
  temp = lambda f: jax.jit(f).lower(x, x).compile().memory_analysis().temp_size_in_bytes
  mapped, batch = temp(g(jax.vmap(fn))), temp(g(fn))
  assert mapped <= batch + (8 << 20), (name, mode, mapped / 2**20, batch / 2**20)


@pytest.mark.parametrize("name", ["cross_entropy", "kl_divergence", "jeffreys_divergence",
                                  "js_divergence"])
def test_vmap_over_one_input_sizes_the_coefficients_by_the_mapped_batch(monkeypatch, name):
  """`jax.vmap(f, in_axes=(None, 0))` over 16 examples of [256, 2048] computes on the mapped
  batch (96 MiB of three float32 arrays, above `_shannon._FRESH_BYTES`), so its coefficients
  come from the row statistics, as with the threshold at 0: the same program. Sized by the
  unmapped input alone (one example, 6 MiB), value+grad held the per-entry arrays (KL 98 MiB
  of temporaries against 64, JS 162 against 96)."""
  from jaxdiv.discrete import _shannon

  fn = lambda a, b: CASES[name][0](a, b, from_logits=True)
  a = jax.ShapeDtypeStruct((256, 2048), jnp.float32)
  b = jax.ShapeDtypeStruct((16, 256, 2048), jnp.float32)

  def temp():  # a new function each time: a traced one is not traced again
    vg = jax.value_and_grad(lambda a, b: jnp.sum(jax.vmap(fn, (None, 0))(a, b)), (0, 1))
    return jax.jit(vg).lower(a, b).compile().memory_analysis().temp_size_in_bytes

  by_size = temp()
  monkeypatch.setattr(_shannon, "_FRESH_BYTES", 0)
  assert by_size == temp(), (by_size / 2**20, temp() / 2**20)


def _hand_js_logits(a, b):
  la, lb = lsm(a), lsm(b)
  lm = jnp.logaddexp(la, lb) - jnp.log(2.0)
  return 0.5 * jnp.sum(jnp.exp(la) * (la - lm), -1) + 0.5 * jnp.sum(jnp.exp(lb) * (lb - lm), -1)


def _hand_logits(name, a, b):
  """The hand-written jnp line of each Shannon form from logits."""
  la, lb = lsm(a), lsm(b)
  pa, pb = jnp.exp(la), jnp.exp(lb)
  return {"entropy": lambda: -jnp.sum(pa * la, -1),
          "cross_entropy": lambda: -jnp.sum(pa * lb, -1),
          "kl_divergence": lambda: jnp.sum(pa * (la - lb), -1),
          "jeffreys_divergence": lambda: jnp.sum((pa - pb) * (la - lb), -1),
          "js_divergence": lambda: _hand_js_logits(a, b),
          "js_distance": lambda: jnp.sqrt(_hand_js_logits(a, b))}[name]()


def _float64_logits(name, a, b):
  """Each Shannon form from logits in float64 (scipy's logsumexp), the accuracy reference."""
  la, lb = (x - scipy.special.logsumexp(x.astype(np.float64), -1, keepdims=True) for x in (a, b))
  pa, pb = np.exp(la), np.exp(lb)
  lm = np.logaddexp(la, lb) - np.log(2.0)
  js = lambda: 0.5 * ((pa * (la - lm)).sum(-1) + (pb * (lb - lm)).sum(-1))
  return {"entropy": lambda: -(pa * la).sum(-1), "cross_entropy": lambda: -(pa * lb).sum(-1),
          "kl_divergence": lambda: (pa * (la - lb)).sum(-1),
          "jeffreys_divergence": lambda: ((pa - pb) * (la - lb)).sum(-1),
          "js_divergence": js, "js_distance": lambda: np.sqrt(js())}[name]()


@pytest.mark.parametrize("name", ["kl_divergence", "js_divergence"])
def test_float32_accuracy_not_below_hand_written(name):
  """float32 against float64 on the issue's rows: never less accurate than the jnp line."""
  a, b = _inputs(True, seed=2, shape=(2000, 512), dtype=np.float32)
  a32, b32 = jnp.asarray(a), jnp.asarray(b)
  want = _float64_logits(name, a, b)
  if name == "kl_divergence":
    hand = jnp.sum(jax.nn.softmax(a32) * (lsm(a32) - lsm(b32)), -1)
  else:
    hand = _hand_js_logits(a32, b32)
  ours = np.asarray(CASES[name][0](a, b, from_logits=True), np.float64)
  e_ours, e_hand = np.abs(ours - want), np.abs(np.asarray(hand, np.float64) - want)
  assert np.median(e_ours) <= 1.01 * np.median(e_hand), (np.median(e_ours), np.median(e_hand))
  assert e_ours.max() <= 1.01 * e_hand.max(), (e_ours.max(), e_hand.max())


@pytest.mark.parametrize("name", ["entropy", "cross_entropy", "kl_divergence",
                                  "jeffreys_divergence", "js_divergence", "js_distance"])
def test_guarded_path_float32_accuracy_not_below_hand_written(name):
  """The guarded path (a mask of all True here; `js_distance` always) against float64, on
  logits of scale 8: no less accurate than the jnp line. Its log-softmax took `x - lse`, `lse`
  rounded to the ulp of the row max first: 3-7x the line's median error (helper-60)."""
  rng = np.random.default_rng(11)
  a, b = (8 * rng.normal(size=(2, 2000, 512))).astype(np.float32)
  fn = getattr(jaxdiv, name)
  keep = np.ones(a.shape, bool)
  args = (a,) if name == "entropy" else (a, b)
  ours = np.asarray(fn(*args, from_logits=True, where=keep), np.float64)
  want = _float64_logits(name, a, b)
  hand = np.asarray(_hand_logits(name, jnp.asarray(a), jnp.asarray(b)), np.float64)
  e_ours, e_hand = np.abs(ours - want), np.abs(hand - want)
  assert np.median(e_ours) <= 1.05 * np.median(e_hand), (np.median(e_ours), np.median(e_hand))
  assert e_ours.max() <= 1.25 * e_hand.max(), (e_ours.max(), e_hand.max())


# Fast tier: the two-input Shannon body (kl) and the mixture one (js).
@tiered("name", ["kl_divergence", "cross_entropy", "js_divergence", "entropy"],
        fast=["kl_divergence", "js_divergence"])
def test_reverse_over_reverse_hessian_when_the_batch_falls_back(x64, name):
  # A -inf logit sends the batch to the guarded path; grad-of-grad then sent zero cotangents
  # back through the unguarded expression's 0 * inf partials: NaN Hessian rows (found in
  # review). Each row's Hessian must equal the guarded path's (a mask of all True).
  a = jnp.array([[-jnp.inf, 0.0, 1.0], [0.2, 0.3, 0.5]], jnp.float64)
  b = jnp.array([[0.0, 0.0, 1.0], [0.1, 0.6, 0.3]], jnp.float64)
  fn = getattr(jaxdiv, name)
  args = () if name == "entropy" else (b,)

  def total(x, **kw):
    return jnp.sum(fn(x, *args, from_logits=True, **kw))

  guarded = jax.jit(jax.jacrev(jax.grad(lambda x: total(x, where=jnp.ones((2, 3), bool)))))(a)
  fast = jax.jit(jax.jacrev(jax.grad(total)))(a)
  np.testing.assert_allclose(np.asarray(fast), np.asarray(guarded), atol=1e-12)


# The order-alpha and f families (static hyperparameters away from their guarded branches):
# name -> (jaxdiv call, reference on probabilities). The order-alpha power sums are divided by
# the mass of the first argument (Renyi's definition for incomplete distributions, documented
# in jaxdiv/discrete/_renyi.py), which changes the derivative with respect to probabilities.
_POWER = lambda p, q, a: jnp.sum(p ** a * q ** (1 - a), -1) / jnp.sum(p if a >= 0.5 else q, -1)
_POWER1 = lambda p, a: jnp.sum(p ** a, -1) / jnp.sum(p, -1)
OTHER_CASES = {
    "renyi_divergence[alpha=2]": (lambda p, q, **k: jaxdiv.renyi_divergence(p, q, 2.0, **k),
                                  lambda p, q: jnp.log(_POWER(p, q, 2.0))),
    "renyi_entropy[alpha=0.5]": (lambda p, q, **k: jaxdiv.renyi_entropy(p, 0.5, **k),
                                 lambda p, q: jnp.log(_POWER1(p, 0.5)) / 0.5),
    "tsallis_entropy[alpha=3]": (lambda p, q, **k: jaxdiv.tsallis_entropy(p, 3.0, **k),
                                 lambda p, q: (1 - _POWER1(p, 3.0)) / 2),
    "tsallis_divergence[alpha=2]": (lambda p, q, **k: jaxdiv.tsallis_divergence(p, q, 2.0, **k),
                                    lambda p, q: _POWER(p, q, 2.0) - 1),
    "alpha_divergence[alpha=-1]": (lambda p, q, **k: jaxdiv.alpha_divergence(p, q, -1.0, **k),
                                   lambda p, q: (_POWER(p, q, -1.0) - 1) / 2),
    # Two inputs at orders in (0, 1), where the power sum is at most 1 and can underflow.
    "renyi_divergence[alpha=0.5]": (lambda p, q, **k: jaxdiv.renyi_divergence(p, q, 0.5, **k),
                                    lambda p, q: -2 * jnp.log(_POWER(p, q, 0.5))),
    "tsallis_divergence[alpha=0.5]": (
        lambda p, q, **k: jaxdiv.tsallis_divergence(p, q, 0.5, **k),
        lambda p, q: -2 * (_POWER(p, q, 0.5) - 1)),
    "alpha_divergence[alpha=0.3]": (lambda p, q, **k: jaxdiv.alpha_divergence(p, q, 0.3, **k),
                                    lambda p, q: (_POWER(p, q, 0.3) - 1) / (0.3 * -0.7)),
    # Orders within 1/4 of 1: from logits the near form (S - 1 as sum p expm1(t d)), of two
    # inputs, of one, and with the order near 1 on the second input (a < 1/2 swaps them).
    "renyi_divergence[alpha=1.1]": (lambda p, q, **k: jaxdiv.renyi_divergence(p, q, 1.1, **k),
                                    lambda p, q: jnp.log(_POWER(p, q, 1.1)) / 0.1),
    "tsallis_entropy[alpha=0.9]": (lambda p, q, **k: jaxdiv.tsallis_entropy(p, 0.9, **k),
                                   lambda p, q: (1 - _POWER1(p, 0.9)) / -0.1),
    "alpha_divergence[alpha=0.1]": (lambda p, q, **k: jaxdiv.alpha_divergence(p, q, 0.1, **k),
                                    lambda p, q: (_POWER(p, q, 0.1) - 1) / (0.1 * -0.9)),
    "hellinger_distance": (jaxdiv.hellinger_distance,
                           lambda p, q: jnp.sqrt(0.5 * jnp.sum((jnp.sqrt(p) - jnp.sqrt(q)) ** 2,
                                                               -1))),
    "total_variation_distance": (jaxdiv.total_variation_distance,
                                 lambda p, q: 0.5 * jnp.sum(jnp.abs(p - q), -1)),
    "chi_squared_divergence": (jaxdiv.chi_squared_divergence,
                               lambda p, q: jnp.sum((p - q) ** 2 / q, -1)),
    "f_divergence[hellinger]": (
        lambda p, q, **k: jaxdiv.f_divergence(p, q, lambda t: (jnp.sqrt(t) - 1) ** 2, **k),
        lambda p, q: jnp.sum((jnp.sqrt(p) - jnp.sqrt(q)) ** 2, -1)),
    "bhattacharyya_distance": (jaxdiv.bhattacharyya_distance,
                               lambda p, q: -jnp.log(jnp.sum(jnp.sqrt(p * q), -1))),
}


def _other(name, from_logits, where=None):
  fn, ref = OTHER_CASES[name]
  ours = lambda a, b: fn(a, b, from_logits=from_logits, where=where)
  if from_logits:
    return ours, lambda a, b: ref(jnp.exp(lsm(a)), jnp.exp(lsm(b)))
  return ours, ref


# Fast tier: each function once; renyi_divergence[alpha=2] (8 s) slow: tsallis_divergence[alpha=2]
# runs the same power sum.
@tiered("name,from_logits", [(n, fl) for n in OTHER_CASES for fl in (True, False)],
        fast=[(n, n != "renyi_entropy[alpha=0.5]") for n in OTHER_CASES
              if n != "renyi_divergence[alpha=2]"])
def test_other_families_value_and_grads_match_reference(x64, name, from_logits):
  a, b = map(jnp.asarray, _inputs(from_logits))
  _assert_matches(*_other(name, from_logits), a, b)


# Fast tier: one function per value form of `_fast` (a power sum with two inputs and with one,
# its near form, the f-family's closed form and a user generator), both input forms among them.
# Slow: renyi_divergence[alpha=2] (11 s) and the user generator, f_divergence[hellinger] (6 s).
@tiered("name,from_logits", [(n, fl) for n in OTHER_CASES for fl in (True, False)],
        fast=[("tsallis_entropy[alpha=3]", False),
              ("alpha_divergence[alpha=0.3]", True), ("alpha_divergence[alpha=0.1]", True),
              ("hellinger_distance", True),
              ("bhattacharyya_distance", True), ("bhattacharyya_distance", False)])
def test_other_families_edge_rows_take_the_guarded_values(x64, name, from_logits):
  a, b = _with_edges(from_logits)
  ours = jax.jit(_other(name, from_logits)[0])
  guarded = _other(name, from_logits, where=jnp.ones(a.shape, bool))[0]
  np.testing.assert_allclose(ours(a, b), guarded(a, b), rtol=1e-12, atol=1e-14)
  finite = lambda f: (lambda x, y: jnp.sum(jnp.where(jnp.isfinite(f(x, y)), f(x, y), 0)))
  for got, want in zip(jax.jit(jax.grad(finite(ours), (0, 1)))(a, b),
                       jax.grad(finite(guarded), (0, 1))(a, b)):
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


# Each exponent class of the power sums' row guard (`_fast.guarded_sum`): integer and not, above
# 1, between 0 and 1, below 0; and the other forms with a guard of their own. Fast tier: one
# exponent of each sign and one of the f-family's forms; the rest slow.
GUARDED_PROB_CASES = {
    "renyi_divergence[alpha=2]": lambda p, q, **k: jaxdiv.renyi_divergence(p, q, 2.0, **k),
    "renyi_divergence[alpha=2.5]": lambda p, q, **k: jaxdiv.renyi_divergence(p, q, 2.5, **k),
    "renyi_divergence[alpha=0.5]": lambda p, q, **k: jaxdiv.renyi_divergence(p, q, 0.5, **k),
    "alpha_divergence[alpha=0.3]": lambda p, q, **k: jaxdiv.alpha_divergence(p, q, 0.3, **k),
    "tsallis_divergence[alpha=3]": lambda p, q, **k: jaxdiv.tsallis_divergence(p, q, 3.0, **k),
    "alpha_divergence[alpha=-1]": lambda p, q, **k: jaxdiv.alpha_divergence(p, q, -1.0, **k),
    "alpha_divergence[alpha=-0.5]": lambda p, q, **k: jaxdiv.alpha_divergence(p, q, -0.5, **k),
    "renyi_entropy[alpha=2]": lambda p, q, **k: jaxdiv.renyi_entropy(p, 2.0, **k),
    "renyi_entropy[alpha=0.5]": lambda p, q, **k: jaxdiv.renyi_entropy(p, 0.5, **k),
    "tsallis_entropy[alpha=0.7]": lambda p, q, **k: jaxdiv.tsallis_entropy(p, 0.7, **k),
    "tsallis_entropy[alpha=1.5]": lambda p, q, **k: jaxdiv.tsallis_entropy(p, 1.5, **k),
    # the other guarded probability forms
    "total_variation_distance": jaxdiv.total_variation_distance,
    "chi_squared_divergence": jaxdiv.chi_squared_divergence,
    "hellinger_distance": jaxdiv.hellinger_distance,
    "bhattacharyya_distance": jaxdiv.bhattacharyya_distance,
    "f_divergence[chi2]": lambda p, q, **k: jaxdiv.f_divergence(p, q, lambda t: (t - 1) ** 2,
                                                                **k),
    # a generator that hides a +inf entry (f(inf) = 0): the fast path's terms must show it
    "f_divergence[1/(1+t)]": lambda p, q, **k: jaxdiv.f_divergence(p, q, lambda t: 1 / (1 + t),
                                                                   **k),
}


# Slow: renyi_divergence[alpha=2] (19 s; test_one_pass_over_row_blocks_takes_the_guarded_values
# runs the integer orders) and f_divergence[1/(1+t)] (7 s, the slow tier only).
@tiered("name", list(GUARDED_PROB_CASES),
        fast=["alpha_divergence[alpha=-0.5]", "renyi_entropy[alpha=0.5]",
              "chi_squared_divergence"])
def test_fast_path_takes_the_guarded_values_on_bad_probabilities(one_pass, x64, name):
  """Probabilities with a negative, +inf or zero entry (in either input, alone or both at one
  index): the fast path's row values (NaN included) and gradients are the guarded path's. Rows
  of 6 and of 256 entries (the one-pass row reduction of `_fallback.row_reduce` on CPU)."""
  for n in (6, 256):
    _check_bad_probabilities(name, n)


# The forms whose fast path takes the one pass over probabilities (`_fallback.row_reduce`).
ONE_PASS_BLOCK_CASES = ["renyi_divergence[alpha=2]", "alpha_divergence[alpha=-1]",
                        "renyi_entropy[alpha=2]", "tsallis_divergence[alpha=3]",
                        "total_variation_distance", "chi_squared_divergence",
                        "f_divergence[chi2]"]


@tiered("name", ONE_PASS_BLOCK_CASES,
        fast=["alpha_divergence[alpha=-1]", "renyi_entropy[alpha=2]", "total_variation_distance",
              "f_divergence[chi2]"])
def test_one_pass_over_row_blocks_takes_the_guarded_values(one_pass_blocks, x64, name):
  """The one pass over blocks of rows (where its partial sums would exceed 16 MiB; here blocks
  of two rows, the last overlapping the one before): the row values and gradients of 10 rows of
  256 probabilities with negative, +inf and zero entries are the guarded path's, as over the
  whole batch, and the loop over the blocks is what ran."""
  p, q = _inputs(False, seed=3, shape=(10, 256))
  fn = GUARDED_PROB_CASES[name]
  assert "while" in jax.jit(lambda p, q: fn(p, q)).lower(p, q).as_text()
  _check_bad_probabilities(name, 256)


@pytest.mark.parametrize("weight_shape,blocks", [((4, 1, 1), False), ((4, 2, 1), False),
                                                 ((512,), True)])
def test_one_pass_blocks_with_a_generator_closing_over_an_array(one_pass_blocks, weight_shape,
                                                                 blocks):
  """A generator that closes over a concrete array: weights a row ([B, 1, 1], [B, T, 1]) would
  broadcast a block of rows to the whole batch (or fail), so the pass takes the batch whole;
  weights a column ([V]) keep the blocks. Values against float64, eager and jitted. Before,
  the per-sequence weights gave the last block's values on every row."""
  rng = np.random.default_rng(9)
  p, q = (rng.dirichlet(np.full(512, 2.0), (4, 2)).astype(np.float32) for _ in "pq")
  p[1] = q[1]  # a divergence of 0 whatever its weight
  w = jnp.asarray(rng.random(weight_shape).astype(np.float32) + 0.5)
  gen = lambda t: w * (t - 1) ** 2
  p64, q64 = p.astype(np.float64), q.astype(np.float64)
  want = np.sum(np.asarray(w, np.float64) * q64 * (p64 / q64 - 1) ** 2, -1)
  fn = lambda p, q: jaxdiv.f_divergence(p, q, gen)
  assert ("while" in jax.jit(fn).lower(p, q).as_text()) == blocks
  for got in (fn(p, q), jax.jit(fn)(p, q)):
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)


def _check_bad_probabilities(name, n):
  p, q = _inputs(False, seed=3, shape=(10, n))
  edits = [("p", 1, -0.1), ("q", 2, -0.1), ("p", 3, np.inf), ("q", 4, np.inf), ("p", 5, 0.0),
           ("q", 6, 0.0), ("p", 7, -1e-30), ("q", 8, -0.0)]
  for which, row, value in edits:
    (p if which == "p" else q)[row, 2] = value
  p[9, 1] = q[9, 1] = 0.0
  p, q = jnp.asarray(p), jnp.asarray(q)
  fn = GUARDED_PROB_CASES[name]
  ours = jax.jit(lambda p, q: fn(p, q))  # a new trace: the `one_pass` fixture's threshold
  guarded = lambda p, q: fn(p, q, where=jnp.ones(p.shape, bool))  # a mask: guarded path
  want = np.asarray(guarded(p, q))
  np.testing.assert_allclose(ours(p, q), want, rtol=1e-12, atol=1e-14)
  # the rows with a negative entry of an input that is read are NaN; the others as the maths
  # gives them
  negative = [1, 7] if "entropy" in name else [1, 2, 7]
  assert np.isnan(want[negative]).all(), want
  finite = lambda f: (lambda x, y: jnp.sum(jnp.where(jnp.isfinite(f(x, y)), f(x, y), 0)))
  for got, exp in zip(jax.jit(jax.grad(finite(fn), (0, 1)))(p, q),
                      jax.grad(finite(guarded), (0, 1))(p, q)):
    np.testing.assert_allclose(got, exp, rtol=1e-10, atol=1e-12)


# Fast tier: entropy, whose case runs the same row blocks as kl from logits (10 s, slow).
@tiered("name,from_logits,axis", [("kl_divergence", True, -1), ("entropy", False, -1),
                                  ("js_divergence", True, 0)],
        fast=[("entropy", False, -1)])
def test_large_batch_falls_back_over_row_blocks(x64, name, from_logits, axis):
  """A batch of more than 2**19 entries runs its guarded fallback block by block (XLA holds a
  `cond` branch's buffers whether it runs or not: `_fallback.row_blocks`): 300 rows of 4096,
  edge rows in the first and in the last, overlapping block; values and gradients equal the
  guarded path's (a mask forces it) on every row."""
  a, b = _edge_rows(from_logits, 5, 300)
  if axis == 0:
    a, b = a.T.copy(), b.T.copy()
  _check_against_the_guarded_path(CASES[name][0], a, b, from_logits, axis)


# Fast tier: kl and jeffreys; cross_entropy (22 s) and js (10 s) slow.
@tiered("name", ["cross_entropy", "kl_divergence", "jeffreys_divergence", "js_divergence"],
        fast=["kl_divergence", "jeffreys_divergence"])
def test_coefficients_from_row_statistics_equal_the_guarded_path(x64, monkeypatch, name):
  """Above glibc's mmap threshold the Shannon forms' coefficients form the log-softmaxes and
  softmaxes again from the inputs' row statistics (`_shannon._by_size`); with the threshold at
  0 every size takes that path: values and gradients equal the guarded path's, edge rows
  (-inf logits: the fallback's `cond` mixes the two) included, along either axis."""
  from jaxdiv.discrete import _shannon

  monkeypatch.setattr(_shannon, "_FRESH_BYTES", 0)
  a, b = _edge_rows(True, 6, 40)
  _check_against_the_guarded_path(CASES[name][0], a, b, True)
  _check_against_the_guarded_path(CASES[name][0], a.T.copy(), b.T.copy(), True, axis=0)
  _check_against_the_guarded_path(CASES[name][0], a[4:20], b[4:20], True)  # no edge row


def _edge_rows(from_logits, seed, rows):
  """`rows` rows of 4096 with edge entries (-inf logits, zero probabilities) in the third and
  the third-last row."""
  a, b = _inputs(from_logits, seed=seed, shape=(rows, 4096))
  edge = -np.inf if from_logits else 0.0
  for x in (a, b):
    x[[3, rows - 3], :5] = edge
  if not from_logits:
    a, b = a / a.sum(-1, keepdims=True), b / b.sum(-1, keepdims=True)
  return a, b


def _check_against_the_guarded_path(fn, a, b, from_logits, axis=-1):
  """Values and gradients of `fn` equal the guarded path's (a mask forces it) on every row."""
  ours = lambda x, y: fn(x, y, axis=axis, from_logits=from_logits)
  guarded = lambda x, y: fn(x, y, axis=axis, from_logits=from_logits,
                            where=jnp.ones(a.shape, bool))
  np.testing.assert_allclose(jax.jit(ours)(a, b), guarded(a, b), rtol=1e-13, atol=1e-14)
  finite = lambda f: (lambda x, y: jnp.sum(jnp.where(jnp.isfinite(f(x, y)), f(x, y), 0)))
  for got, want in zip(jax.jit(jax.grad(finite(ours), (0, 1)))(a, b),
                       jax.grad(finite(guarded), (0, 1))(a, b)):
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)


# Fast tier: entropy, whose case runs the same blocks as kl from logits (14 s, slow).
@tiered("name,from_logits", [("kl_divergence", True), ("entropy", False)],
        fast=[("entropy", False)])
def test_a_batch_of_sequences_falls_back_over_row_blocks(x64, name, from_logits):
  """A batch of sequences whose one sequence holds more entries than a block, `[2, 400, 4096]`,
  is cut into blocks along its tokens as `[800, 4096]` is along its rows: the fallback's
  temporaries (XLA's own count) are no larger than for `[800, 4096]` (before: blocks of one
  whole sequence, 1.6x the entries), and values and gradients equal the guarded path's, edge
  rows in the first and in the last, overlapping block."""
  a, b = _edge_rows(from_logits, 6, 800)
  fn = CASES[name][0]
  ours = lambda x, y: fn(x, y, from_logits=from_logits)
  temp = lambda x, y: jax.jit(ours).lower(x, y).compile().memory_analysis().temp_size_in_bytes
  a3, b3 = a.reshape(2, 400, 4096), b.reshape(2, 400, 4096)
  assert temp(a3, b3) <= temp(a, b) + (1 << 16)
  _check_against_the_guarded_path(fn, a3, b3, from_logits)


@pytest.mark.parametrize("name,fn", [
    ("entropy(probs)", lambda p, q: jaxdiv.entropy(p)),
    ("kl(logits)", lambda a, b: jaxdiv.kl_divergence(a, b, from_logits=True)),
    ("js(logits)", lambda a, b: jaxdiv.js_divergence(a, b, from_logits=True)),
    ("js(probs)", lambda p, q: jaxdiv.js_divergence(p, q)),
    ("renyi_entropy(probs)", lambda p, q: jaxdiv.renyi_entropy(p, 2.0)),
    ("tsallis_divergence(probs)", lambda p, q: jaxdiv.tsallis_divergence(p, q, 2.0)),
])
def test_the_fallback_holds_a_blocks_temporaries(name, fn):
  """XLA's own count of a forward's temporaries (float32; the fallback's `cond` branch is
  allocated on every call, run or not) stays under glibc's 32 MiB `mmap` threshold from 2M
  entries up: above it every call maps fresh pages (Tsallis entropy of [512, 4096]: 38 MiB of
  temporaries with blocks of 1M entries, 0.47 ms against 0.18 with blocks of 256K). Nor does the
  fast path write an [N, V] array out (JS of probabilities as two sums: log m at rows of 32768,
  64 MiB at [512, 32768])."""
  for shape in ((512, 4096), (64, 32768), (4096, 4096), (512, 32768)):
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    temp = jax.jit(fn).lower(x, x).compile().memory_analysis().temp_size_in_bytes
    assert temp < 24 << 20, (name, shape, temp / 2**20)


@pytest.mark.parametrize("name,fn,arrays", [
    ("kl", jaxdiv.kl_divergence, 1), ("cross_entropy", jaxdiv.cross_entropy, 1),
    ("js", jaxdiv.js_divergence, 1), ("jeffreys", jaxdiv.jeffreys_divergence, 2),
])
def test_value_and_grad_from_logits_write_no_per_entry_residual(name, fn, arrays):
  """XLA's temporaries of value+grad from logits (float32 [4096, 4096]: 64 MiB an array): the
  coefficients form their per-entry arrays from the value's row statistics inside the fallback's
  `cond` (`_fast.from_stats`); as the `cond`'s operands they were written out, 2-5 arrays (KL
  198 MiB, JS 332). The value's own reduction keeps one (Jeffreys two)."""
  x = jax.ShapeDtypeStruct((4096, 4096), jnp.float32)
  vg = jax.value_and_grad(lambda a, b: jnp.sum(fn(a, b, from_logits=True)), (0, 1))
  temp = jax.jit(vg).lower(x, x).compile().memory_analysis().temp_size_in_bytes
  assert temp < (arrays * 64 + 16) << 20, (name, temp / 2**20)


def _check_row_blocks(shape, axis, rng, entries=None):
  from jaxdiv._fallback import row_blocks
  x, y = rng.normal(size=shape), rng.normal(size=shape)
  if entries is None:
    entries = 4 * x.size // x.shape[0 if axis != 0 else 1]  # blocks of 4 rows

  def fn(u, v):
    return jnp.sum(jnp.exp(u) * jnp.sin(v), axis=axis)

  def grads(u, v):
    return jax.grad(lambda s, t: jnp.sum(fn(s, t)), (0, 1))(u, v)

  blocked = row_blocks(fn, axis, entries=entries)
  np.testing.assert_allclose(jax.jit(blocked)(x, y), fn(x, y), rtol=1e-14)
  for got, want in zip(row_blocks(grads, axis, keep_axis=True, entries=entries)(x, y),
                       grads(x, y)):
    np.testing.assert_allclose(got, want, rtol=1e-14)
  w = rng.normal(size=fn(x, y).shape)
  np.testing.assert_allclose(jax.grad(lambda u: jnp.sum(w * blocked(u, y)))(x),
                             jax.grad(lambda u: jnp.sum(w * fn(u, y)))(x), rtol=1e-14)


# Slow (8 s): test_large_batch_falls_back_over_row_blocks runs `row_blocks` in the fast tier.
@pytest.mark.slow
def test_row_blocks_equal_the_whole_batch(x64):
  """`_fallback.row_blocks` with blocks of a few rows (so that the last one overlaps) against
  the function on the whole batch: row values and per-entry gradients, the reduced axis first,
  last and in the middle of 3-D inputs, and differentiated through."""
  rng = np.random.default_rng(7)
  for shape, axis in (((23, 11), -1), ((11, 23), 0), ((13, 5, 6), 1)):
    _check_row_blocks(shape, axis, rng)


# Slow (11 s): test_a_batch_of_sequences_falls_back_over_row_blocks[entropy-False] runs these.
@pytest.mark.slow
def test_row_blocks_along_an_inner_batch_axis(x64):
  """Where one index of the first batch axis holds more entries than a block (a sequence of
  tokens, `[1, T, V]`), the blocks are cut along the first batch axis whose rows fit, one index
  of the axes before it at a time: values, gradients and derivatives through them equal the
  whole batch's, the reduced axis last, first and in the middle, 3-D and 4-D, with the last
  block of each run overlapping the one before."""
  from jaxdiv._fallback import row_block_shape
  rng = np.random.default_rng(8)
  # (shape, axis, entries, the blocks' shape, whether the values are checked: one case a layout)
  for shape, axis, entries, block, values in (((2, 23, 11), -1, 44, (1, 4, 11), True),
                                              ((1, 23, 11), 2, 50, (1, 4, 11), False),
                                              ((11, 2, 23), 0, 40, (11, 1, 3), True),
                                              ((2, 11, 23), 1, 30, (1, 11, 2), True),
                                              ((2, 3, 7, 11), -1, 30, (1, 1, 2, 11), True),
                                              ((3, 2, 7, 11), 1, 30, (1, 2, 1, 11), False),
                                              ((2, 3, 5), -1, 2, (1, 1, 5), False)):
    assert row_block_shape(shape, axis, entries) == block
    if values:
      _check_row_blocks(shape, axis, rng, entries)
  # No entries: no blocks (an empty first axis with more than a block's entries behind it).
  assert row_block_shape((0, 4, 4), 2, 8) is None
  empty = jnp.zeros((0, 2, 1 << 20))
  assert jax.jit(lambda a: jaxdiv.kl_divergence(a, a, from_logits=True))(empty).shape == (0, 2)
  # One index of the first axis that fits: the blocks of before, along it.
  assert row_block_shape((8, 256, 512), -1, 1 << 18) == (2, 256, 512)
  assert row_block_shape((1, 256, 512), -1, 1 << 18) is None


def test_row_blocks_of_a_function_closing_over_a_batch_array(x64):
  """A function that closes over an array of the batch's shape (a weight a token, a weight a
  row) cannot be cut into blocks: its batch is taken whole, with the same values (along the
  first axis its blocks broadcast the weights to a wrong shape before)."""
  from jaxdiv._fallback import row_blocks
  rng = np.random.default_rng(9)
  for shape, w_shape in (((1, 23, 11), (1, 23, 1)), ((23, 11), (23, 1))):
    x = rng.normal(size=shape)
    w = rng.normal(size=w_shape)
    fn = lambda u, w=w: jnp.sum(jnp.exp(u) * w, axis=-1)
    blocked = row_blocks(fn, -1, entries=11)
    assert "while" not in jax.jit(blocked).lower(x).as_text()
    np.testing.assert_allclose(jax.jit(blocked)(x), fn(x), rtol=1e-14)


LOGITS_FORMS = {
    "kl_divergence": lambda a, b, **k: jaxdiv.kl_divergence(a, b, from_logits=True, **k),
    "entropy": lambda a, b, **k: jaxdiv.entropy(a, from_logits=True, **k),
    "js_divergence": lambda a, b, **k: jaxdiv.js_divergence(a, b, from_logits=True, **k),
    "renyi_divergence[alpha=2]": lambda a, b, **k: jaxdiv.renyi_divergence(
        a, b, 2.0, from_logits=True, **k),
    "total_variation_distance": lambda a, b, **k: jaxdiv.total_variation_distance(
        a, b, from_logits=True, **k),
    "chi_squared_divergence": lambda a, b, **k: jaxdiv.chi_squared_divergence(
        a, b, from_logits=True, **k),
}


# Slow (9-10 s a case): test_bhattacharyya_from_logits_small_overlap_loses_no_terms runs both forms.
@pytest.mark.slow
@pytest.mark.parametrize("name,rows", [(n, r) for n in LOGITS_FORMS for r in (4095, 4096)])
def test_logits_forms_on_both_sides_of_the_fused_row_count(x64, name, rows):
  """`_fast.log_softmax` and `softmax` take two forms of the same operations, by the batch's row
  count (`_fast.FUSED_ROWS`, where XLA:CPU's fusion changes): both give the guarded path's
  values and gradients, edge rows included, and the float64 reference's on the others."""
  from jaxdiv.discrete import _fast
  assert _fast.FUSED_ROWS == 4096
  a, b = _inputs(True, seed=6, shape=(rows, 5))
  a[[0, rows - 1], 1] = -np.inf  # outside p's support
  b[[2, rows - 2], 3] = -np.inf  # q = 0 where p > 0
  a[7, :] = -np.inf              # an empty row
  fn = LOGITS_FORMS[name]
  guarded = lambda x, y: fn(x, y, where=jnp.ones(x.shape, bool))
  np.testing.assert_allclose(jax.jit(fn)(a, b), guarded(a, b), rtol=1e-12, atol=1e-14)
  finite = lambda f: (lambda x, y: jnp.sum(jnp.where(jnp.isfinite(f(x, y)), f(x, y), 0)))
  for got, want in zip(jax.jit(jax.grad(finite(fn), (0, 1)))(a, b),
                       jax.grad(finite(guarded), (0, 1))(a, b)):
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
  # the clean rows against the plain float64 expression
  clean = np.isfinite(a).all(-1) & np.isfinite(b).all(-1)
  ref = _reference(name, True) if name in CASES else _other(name, True)[1]
  want = ref(a[clean], b[clean])
  np.testing.assert_allclose(jax.jit(fn)(a, b)[clean], want, rtol=1e-12, atol=1e-14)


# The fast tier runs no case of this test; it costs 9 s a case.
@pytest.mark.slow
@pytest.mark.parametrize("rows", [1000, 4096])
def test_total_variation_from_logits_value_through_its_derivative(rows):
  """Total variation from logits computes its value once more for its derivative, in the form
  the coefficients read (`_f._tv_logits(for_coefs=True)`): the row values of `jax.vjp` are the
  forward's to rounding (not bit for bit: at XLA's default optimisation level the two programs
  fuse the sum differently below `FUSED_ROWS`, as they did before this form), an edge row's
  included (the guarded path's), on both sides of `FUSED_ROWS`; the gradient is the float64
  one."""
  a, b = (np.asarray(x, np.float32) for x in _inputs(True, seed=8, shape=(rows, 512)))
  a[3, :] = -np.inf  # an empty row: the guarded path
  fn = lambda a, b: jaxdiv.total_variation_distance(a, b, from_logits=True)
  forward = jax.jit(fn)(a, b)
  values, pullback = jax.jit(lambda a, b: jax.vjp(fn, a, b))(a, b)
  np.testing.assert_allclose(values, forward, rtol=4 * np.finfo(np.float32).eps, atol=1e-7)
  got = pullback(jnp.ones_like(values))
  with jax.enable_x64(True):
    want = jax.grad(lambda a, b: jnp.sum(fn(a, b)), (0, 1))(*(jnp.asarray(x, jnp.float64)
                                                                for x in (a, b)))
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-7)


def test_chi_squared_from_logits_gradient_where_the_ratio_squared_overflows():
  """Chi-squared from logits with q 60 nats below p at one entry (float32): the value (1.9e25)
  is finite and so is its gradient, the float64 one; its coefficient pb (1 - r^2) overflowed
  at r^2 (NaN and inf before). Also a row beside it that is unaffected."""
  a = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 2.0]], np.float32)
  b = np.array([[0.0, -60.0, 1.0], [1.0, 0.0, 2.0]], np.float32)
  fn = lambda a, b: jnp.sum(jaxdiv.chi_squared_divergence(a, b, from_logits=True))
  got = jax.jit(jax.grad(fn, (0, 1)))(a, b)
  with jax.enable_x64(True):
    want = jax.grad(fn, (0, 1))(*(jnp.asarray(x, jnp.float64) for x in (a, b)))
  for g, w in zip(got, want):
    assert np.isfinite(g).all(), g
    np.testing.assert_allclose(g, w, rtol=1e-5)


# The fast tier runs no case of this test; it costs 13 s.
@pytest.mark.slow
def test_chi_squared_from_logits_guarded_hessian_where_p_equals_q(x64):
  """The guarded path's chi-squared from logits (a mask, or a row with -inf logits) at p = q
  and beside it: its Hessian is the closed form's, chi2 + 1 = exp(LSE(2a - b) + LSE(b) -
  2 LSE(a)). Its log form log|expm1(log p - log q)| had no curvature at p = q (0 before)."""
  lse = jax.scipy.special.logsumexp
  closed = lambda a, b: jnp.sum(jnp.exp(lse(2 * a - b, -1) + lse(b, -1) - 2 * lse(a, -1)) - 1)
  a = jnp.array([[0.3, -1.2, 2.0, 0.1]])
  for b in (a, a.at[0, 0].add(0.5), a.at[0, 2].add(-3.0)):
    masked = lambda a, b: jnp.sum(jaxdiv.chi_squared_divergence(
        a, b, from_logits=True, where=jnp.ones(a.shape, bool)))
    for i in (0, 1):  # jitted: op by op, the guarded path's Hessians took 25 s
      np.testing.assert_allclose(jax.jit(jax.hessian(masked, i))(a, b),
                                 jax.hessian(closed, i)(a, b), rtol=1e-10, atol=1e-12)
  # a row that takes the guarded path by itself: -inf on both sides, p = q on the support
  r = jnp.array([[-jnp.inf, 0.3, -1.2, 2.0]])
  fn = lambda a, b: jnp.sum(jaxdiv.chi_squared_divergence(a, b, from_logits=True))
  np.testing.assert_allclose(jax.jit(jax.hessian(fn))(r, r)[0, 1:, 0, 1:],
                             jax.hessian(closed)(r[:, 1:], r[:, 1:])[0, :, 0, :],
                             rtol=1e-10, atol=1e-12)


# The guarded path (a mask, an order or a function without a fast path) over row blocks.
# name -> (jaxdiv call with the hyperparameter h, float64 reference on probabilities, h)
GUARDED = {
    "js_distance[logits]": (lambda a, b, h, **k: jaxdiv.js_distance(a, b, h, from_logits=True,
                                                                    **k),
                            lambda p, q, h: dref.js_distance(p, q), 0.5),
    # Rényi's convention for an incomplete p (here: masked): the power sum over p's mass.
    "renyi_divergence[alpha=0.5,where]": (
        lambda a, b, h, **k: jaxdiv.renyi_divergence(a, b, h, **k),
        lambda p, q, h: (dref._log_power_sum(p, q, h, -1) - np.log(p.sum(-1))) / (h - 1), 0.5),
    "alpha_divergence[alpha=0.3,logits,where]": (
        lambda a, b, h, **k: jaxdiv.alpha_divergence(a, b, h, from_logits=True, **k),
        dref.alpha_divergence, 0.3),
    "kl_divergence[where]": (lambda a, b, h, **k: jaxdiv.kl_divergence(a, b, **k),
                             lambda p, q, h: dref.kl_divergence(p, q), None),
    "js_divergence[beta=0.3,logits,where]": (
        lambda a, b, h, **k: jaxdiv.js_divergence(a, b, h, from_logits=True, **k),
        dref.js_divergence, 0.3),
    "tsallis_entropy[alpha=1.1]": (lambda a, b, h, **k: jaxdiv.tsallis_entropy(a, h, **k),
                                   lambda p, q, h: dref.tsallis_entropy(p, h), 1.1),
}


# Slow (17-21 s a case): test_guarded_blocks_with_a_traced_base_and_a_user_generator runs blocks.
@pytest.mark.slow
@pytest.mark.parametrize("name,axis", [(n, ax) for n in GUARDED for ax in (-1, 0)])
def test_guarded_path_over_row_blocks(x64, name, axis):
  """A batch of more than 2**18 entries that takes the guarded path computes its values over
  blocks of rows (`_common.guarded`, where they stay in cache) and its derivatives on the whole
  batch: 300 rows of 1024, edge rows (a NaN, zeros or -inf logits, an empty or fully masked
  row) in the first and in the last, overlapping block. Values equal the same function on
  batches too small to be split, row for row; clean rows equal the float64 reference;
  gradients (in the inputs and in a traced hyperparameter, reverse and forward mode) equal
  those of the unsplit batches."""
  fn, ref, h = GUARDED[name]
  logits = "logits" in name
  a, b = _inputs(logits, seed=8, shape=(300, 1024))  # 2 blocks of 256 rows, overlapping
  edge = -np.inf if logits else 0.0
  for x in (a, b):
    x[[3, 297], :5] = edge
  a[150, 7] = np.nan
  if logits:
    a[298, :] = -np.inf  # an empty row: 0
  else:
    a, b = a / a.sum(-1, keepdims=True), b / b.sum(-1, keepdims=True)
  where = None
  if "where" in name:
    where = np.random.default_rng(9).random(a.shape) > 0.2
    where[5, :] = False  # a fully masked row: 0
    where[150, 7] = True  # the NaN is not masked
  if axis == 0:
    a, b = a.T.copy(), b.T.copy()
    where = None if where is None else where.T.copy()
  kw = dict(axis=axis) if where is None else dict(axis=axis, where=where)

  def ours(x, y, hh=h):
    return fn(x, y, hh, **kw)

  def pieces(x, y, hh=h):  # batches of 50 rows: 51200 entries, not split
    cut = lambda z, i: None if z is None else (z[i:i + 50] if axis != 0 else z[:, i:i + 50])
    parts = [fn(cut(x, i), cut(y, i), hh, axis=axis, where=cut(where, i))
             for i in range(0, 300, 50)]
    return jnp.concatenate(parts)

  jaxpr = str(jax.make_jaxpr(ours)(a, b))
  assert "scan" in jaxpr or "while" in jaxpr  # the blocks are a fori_loop
  got = jax.jit(ours)(a, b)
  np.testing.assert_array_equal(np.isnan(got), np.isnan(pieces(a, b)))
  np.testing.assert_allclose(got, pieces(a, b), rtol=1e-12, atol=1e-15)
  assert np.isnan(got[150]) and (not logits or got[298] == 0)
  if where is not None:
    assert got[5] == 0
  # clean rows against the float64 reference
  rows = lambda z: z if axis != 0 else z.T
  p, q = (np.exp(dref.log_softmax64(rows(z))) for z in (a, b)) if logits else (rows(a), rows(b))
  clean = np.isfinite(rows(a)).all(-1) & np.isfinite(rows(b)).all(-1)
  clean &= (rows(a) != edge).all(-1) & (rows(b) != edge).all(-1)
  if where is None:
    np.testing.assert_allclose(got[clean], ref(p[clean], q[clean], h), rtol=1e-11, atol=1e-14)
  else:  # masked entries are left out; logits are normalised over the others
    clean &= rows(where).any(-1)
    pm, qm = (np.where(rows(where), z, 0.0) for z in (p, q))
    if logits:
      pm, qm = pm / pm.sum(-1, keepdims=True), qm / qm.sum(-1, keepdims=True)
    np.testing.assert_allclose(got[clean], ref(pm[clean], qm[clean], h), rtol=1e-11,
                               atol=1e-14)
  # derivatives: those of the unsplit batches (reverse and forward mode), finite but on the
  # NaN row
  finite = lambda f: (lambda x, y, hh=h: jnp.sum(jnp.where(jnp.isfinite(f(x, y, hh)),
                                                           f(x, y, hh), 0)))
  for g, w in zip(jax.jit(jax.grad(finite(ours), (0, 1)))(a, b),
                  jax.grad(finite(pieces), (0, 1))(a, b)):
    assert np.isfinite(np.delete(rows(g), 150, axis=0)).all()
    np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-13)
  if h is not None:  # in the hyperparameter, without the NaN row (whose derivative is NaN)
    a = a.copy()
    rows(a)[150] = rows(a)[151]
    dh = jax.jit(jax.grad(finite(ours), 2))(a, b, h)
    assert np.isfinite(dh)
    np.testing.assert_allclose(dh, jax.grad(finite(pieces), 2)(a, b, h), rtol=1e-9)
    np.testing.assert_allclose(jax.jacfwd(finite(ours), 2)(a, b, h), dh, rtol=1e-9)


# The fast tier runs no case of this test; it costs 7 s.
@pytest.mark.slow
def test_guarded_path_with_one_hyperparameter_a_row(x64):
  """An order or mixture weight given one value a row (an array, concrete or traced) keeps the
  guarded path on the whole batch (its blocks would slice the inputs and not the array): 300
  rows of 1024, against the float64 reference row by row."""
  a, b = _inputs(True, seed=10, shape=(300, 1024))
  rng = np.random.default_rng(11)
  alpha, beta = rng.uniform(0.3, 0.7, 300), rng.uniform(0.1, 0.9, 300)
  p, q = (np.exp(dref.log_softmax64(z)) for z in (a, b))
  want_renyi = [dref.renyi_divergence(p[i], q[i], alpha[i]) for i in range(300)]
  want_js = [np.sqrt(dref.js_divergence(p[i], q[i], beta[i])) for i in range(300)]
  renyi = lambda x, y, h: jaxdiv.renyi_divergence(x, y, h, from_logits=True)
  js = lambda x, y, h: jaxdiv.js_distance(x, y, h, from_logits=True)
  for fn, h, want in ((renyi, alpha, want_renyi), (js, beta, want_js)):
    for call in (fn, jax.jit(fn)):
      np.testing.assert_allclose(call(a, b, jnp.asarray(h)), want, rtol=1e-10, atol=1e-13)


def test_guarded_blocks_with_a_traced_base_and_a_user_generator(x64):
  """Everything the guarded body reads besides the inputs goes to the blocks as an argument
  (the logarithm base, traced under `jax.grad`), and `f_divergence` with a generator that
  closes over arrays keeps the unsplit path: 300 rows of 1024 with a mask, against batches of
  50 rows (not split). Before: UnexpectedTracerError and a shape error."""
  a, b = _inputs(True, seed=12, shape=(300, 1024))
  m = np.random.default_rng(13).random(a.shape) > 0.1
  def total(s, rows=slice(0, 300)):
    return jnp.sum(jaxdiv.kl_divergence(a[rows], b[rows], where=m[rows], from_logits=True,
                                        base=s))
  got = jax.jit(jax.grad(total))(2.0)
  want = sum(jax.grad(total)(2.0, slice(i, i + 50)) for i in range(0, 300, 50))
  np.testing.assert_allclose(got, want, rtol=1e-12)
  w = np.random.default_rng(14).uniform(0.5, 2.0, (300, 1))
  p, q = (np.exp(dref.log_softmax64(z)) for z in (a, b))
  fdiv = jax.jit(lambda p, q: jaxdiv.f_divergence(p, q, lambda t: w * (t - 1) ** 2, where=m))
  want = np.sum(np.where(m, w * q * (p / q - 1) ** 2, 0), -1)
  np.testing.assert_allclose(fdiv(p, q), want, rtol=1e-10)


# Fast tier: tsallis and alpha, the same power sum as renyi (12 s, slow).
@tiered("name", ["renyi_divergence", "tsallis_divergence", "alpha_divergence"],
        fast=["tsallis_divergence", "alpha_divergence"])
def test_order_alpha_hessian_finite_with_a_tiny_probability(name):
  """Orders in (0, 1) from probabilities with an entry of 1e-27 (softmax over logits 62 apart)
  in float32: the Hessian in q is finite and equals the float64 one (the negative-entry guard
  `0 * rsqrt(min p)` had a derivative of 0 * inf, NaN in every entry)."""
  fn = getattr(jaxdiv, name)
  p = jax.nn.softmax(jnp.array([0.0, 20.0, 40.0, 60.0, 62.0]))
  q = jnp.full(5, 0.2)
  for alpha in (0.3, 0.5):
    h = jax.hessian(lambda q, alpha=alpha: fn(p, q, alpha))(q)
    assert np.isfinite(h).all(), (alpha, h)
    with jax.enable_x64(True):
      p64 = jax.nn.softmax(jnp.array([0.0, 20.0, 40.0, 60.0, 62.0], jnp.float64))
      want = jax.hessian(lambda q, p64=p64, alpha=alpha: fn(p64, q, alpha))(
          jnp.full(5, 0.2, jnp.float64))
    np.testing.assert_allclose(h, want, rtol=2e-4, atol=1e-4)


# The forms whose fast path sums in one pass over rows of 256 float64 (`_fallback.row_reduce`
# on CPU): integer-order power sums, total variation and chi-squared.
ONE_PASS_CASES = ["renyi_divergence[alpha=2]", "tsallis_entropy[alpha=3]",
                  "tsallis_divergence[alpha=2]", "alpha_divergence[alpha=-1]",
                  "total_variation_distance", "chi_squared_divergence"]


# Slow: renyi_divergence[alpha=2] (17 s) and tsallis_entropy[alpha=3] (6 s); alpha=-1 runs the
# two-input pass, test_one_pass_over_row_blocks_takes_the_guarded_values the one-input one.
@tiered("name", ONE_PASS_CASES, fast=["alpha_divergence[alpha=-1]"])
def test_one_pass_rows_match_reference(one_pass, x64, name):
  """Value, gradient, forward mode (5 rows) and Hessian (one row) against the plain-jnp
  reference on rows of 256 probabilities (Dirichlet(5): no entry so small that alpha = -1's
  Hessian spans 20 decades, beyond `_assert_matches`' absolute tolerance)."""
  ours, ref = _other(name, False)
  rng = np.random.default_rng(5)
  a, b = (jnp.asarray(rng.dirichlet(np.full(256, 5.0), 5)) for _ in range(2))
  _assert_matches(ours, ref, a[:1], b[:1])
  np.testing.assert_allclose(jax.jit(ours)(a, b), ref(a, b), rtol=1e-12, atol=1e-13)
  total = lambda f: (lambda x, y: jnp.sum(f(x, y)))
  for got, want in zip(jax.grad(total(ours), (0, 1))(a, b), jax.grad(total(ref), (0, 1))(a, b)):
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


# The fast tier runs no case of this test; it costs 6 s.
@pytest.mark.slow
def test_f_divergence_nan_entry_with_a_generator_that_hides_it(one_pass):
  """A NaN probability makes the row NaN (the guarded path's value) even where the user's `f`
  maps NaN to a number: it must reach the fast path's sum, since XLA:CPU's row minimum of the
  guard drops a NaN at this shape ([7, 1024] float32). Before, the row was 0.3359."""
  f = lambda t: jnp.where(t < 1, 1 - t, 0.0)
  rng = np.random.default_rng(7)
  p, q = (rng.dirichlet(np.full(1024, 2.0), 7).astype(np.float32) for _ in "pq")
  p[0, 5] = np.nan
  got = jax.jit(lambda p, q: jaxdiv.f_divergence(p, q, f))(p, q)
  want = jaxdiv.f_divergence(p, q, f, where=np.ones(p.shape, bool))
  assert np.isnan(want[0]) and np.isnan(got[0])
  np.testing.assert_allclose(got, want, rtol=1e-6)


ROOT_FORMS = {
    "hellinger_distance": jaxdiv.hellinger_distance,
    "bhattacharyya_distance": jaxdiv.bhattacharyya_distance,
    "renyi_divergence[alpha=0.5]": lambda p, q, **k: jaxdiv.renyi_divergence(p, q, 0.5, **k),
    "tsallis_divergence[alpha=0.7]": lambda p, q, **k: jaxdiv.tsallis_divergence(p, q, 0.7, **k),
    "alpha_divergence[alpha=0.3]": lambda p, q, **k: jaxdiv.alpha_divergence(p, q, 0.3, **k),
    "renyi_entropy[alpha=0.5]": lambda p, q, **k: jaxdiv.renyi_entropy(p, 0.5, **k),
    "tsallis_entropy[alpha=0.7]": lambda p, q, **k: jaxdiv.tsallis_entropy(p, 0.7, **k),
    # integer orders: zeros were on the fast path before, with second derivatives through the
    # mass and the powers at a zero entry (renyi_divergence 2: 54 off the guarded path's)
    "renyi_divergence[alpha=2]": lambda p, q, **k: jaxdiv.renyi_divergence(p, q, 2.0, **k),
    "renyi_entropy[alpha=2]": lambda p, q, **k: jaxdiv.renyi_entropy(p, 2.0, **k),
    "tsallis_divergence[alpha=3]": lambda p, q, **k: jaxdiv.tsallis_divergence(p, q, 3.0, **k),
}


# Slow: hellinger (6 s) and renyi_divergence[alpha=0.5] (10 s); tsallis_entropy[alpha=0.7] runs
# a root form, test_root_forms_hessian_at_tiny_entries the two-input ones' Hessians.
@tiered("name", list(ROOT_FORMS), fast=["tsallis_entropy[alpha=0.7]",
                                        "renyi_divergence[alpha=2]"])
def test_root_forms_second_derivatives_at_zero_probabilities(x64, name):
  """A zero probability stays on the fast path of the root forms (square roots, and powers of
  orders in (0, 1)), with no row guard: its slope is the guarded path's 0, and so are the
  Hessians in p, in q and mixed (with `jnp.sqrt`'s or `x ** c`'s infinite slope they were
  inf / NaN). For every power sum a zero entry is outside the support to all orders, its mass
  included, as on the guarded path. Zeros in p, in q and in both at one index."""
  rng = np.random.default_rng(4)
  p, q = rng.random((3, 7)), rng.random((3, 7))
  p[0, 2] = q[1, 3] = p[2, 4] = q[2, 4] = 0.0
  p, q = (jnp.asarray(x / x.sum(-1, keepdims=True)) for x in (p, q))
  fn = ROOT_FORMS[name]
  fast = lambda p, q: jnp.sum(fn(p, q))
  guarded = lambda p, q: jnp.sum(fn(p, q, where=jnp.ones(p.shape, bool)))
  got, want = jax.jit(jax.hessian(fast, (0, 1)))(p, q), jax.hessian(guarded, (0, 1))(p, q)
  for g_row, w_row in zip(got, want):
    for g, w in zip(g_row, w_row):
      assert np.isfinite(g).all()
      np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


def test_arithmetic_only_generators_take_the_one_pass():
  """`_fast.arithmetic_only`: a generator of sums, products, quotients and integer powers may
  share the one pass of `_fallback.row_reduce`; roots, logs, selects, nested calls and an f that
  does not trace on a scalar may not."""
  from jaxdiv.discrete import _fast
  yes = [lambda t: (t - 1) ** 2, lambda t: jnp.abs(t - 1) / 2, lambda t: (t - 1) ** 2 / (t + 1),
         lambda t: -t * 3.0 + 1]
  no = [lambda t: t * jnp.log(t), jnp.sqrt, lambda t: jnp.where(t < 1, 1 - t, 0.0),
        lambda t: jax.jit(lambda u: u * u)(t), lambda t: t[0], lambda t: jnp.exp(t)]
  for dtype in (jnp.float32, jnp.float64):
    assert all(_fast.arithmetic_only(f, dtype) for f in yes)
    assert not any(_fast.arithmetic_only(f, dtype) for f in no)


def _bounded_perspective(p, q, theta):
  """sum q f(p / q) for f(t) = theta (1 / (1 + t) - 1/2) as q^2 / (p + q) - q / 2: no ratio, so
  no overflow where p / q is beyond the floating-point range."""
  return theta * jnp.sum(q * q / (p + q) - q / 2, axis=-1)


# The fast tier runs no case (12 s a case); the clamped generator's test runs the same overflow.
@pytest.mark.slow
@pytest.mark.parametrize("dtype,traced", [
    pytest.param(d, t, id=f"{np.dtype(d).name}-{'traced' if t else 'constant'}")
    for d in (np.float32, np.float64) for t in (False, True)])
def test_f_divergence_ratio_beyond_range_with_a_bounded_generator(dtype, traced):
  """Finite p and positive q whose ratio p / q overflows (1e30 / 1e-10 in float32, 1e300 /
  1e-10 in float64), with a generator finite at infinity. The term is
  q f(inf), on the fast and the guarded path alike, with value, gradient and Hessians (forward
  over reverse, reverse over reverse) against the float64 closed form of the perspective. A
  generator that closes over a traced parameter (the autodiff path) as well. Before, the
  guarded path gave p f'(inf) with an estimated slope of -5e-31 (value -0.48 for -5e-11), and
  the fast path's q-derivative (inf * 0), mixed Hessian and traced-parameter gradients were NaN.
  From logits the ratio exp(log p - log q) overflows only where q is below the normal range
  (log q < -87 in float32 and log p <= 0), where the term is 0 either way."""
  big = {np.float32: 1e30, np.float64: 1e300}[dtype]
  x = np.array([[big, 1.0, 2.0], [0.2, 0.3, 0.5]], dtype)
  y = np.array([[1e-10, 1.0, 0.5], [0.3, 0.3, 0.4]], dtype)
  ref = lambda p, q, theta: jnp.sum(_bounded_perspective(p, q, theta))

  with jax.enable_x64(True):
    x64, y64 = jnp.asarray(x, jnp.float64), jnp.asarray(y, jnp.float64)
    want = [ref(x64, y64, 1.5), jax.grad(ref, (0, 1, 2))(x64, y64, 1.5),
            jax.hessian(ref, (0, 1))(x64, y64, 1.5)]
  with jax.enable_x64(dtype == np.float64):
    x, y = jnp.asarray(x), jnp.asarray(y)
    assert np.isinf(np.asarray(x / y)[0, 0])
    for where in (None, jnp.ones(x.shape, bool)):
      def ours(x, y, theta, where=where):
        const = 1.5 if not traced else theta
        f = lambda t: const * (1 / (1 + t) - 0.5)
        return jnp.sum(jaxdiv.f_divergence(x, y, f, where=where))
      got = [jax.jit(ours)(x, y, 1.5), jax.jit(jax.grad(ours, (0, 1, 2)))(x, y, 1.5)]
      hessians = [jax.jit(jax.hessian(ours, (0, 1)))(x, y, 1.5),
                  jax.jit(jax.jacrev(jax.jacrev(ours, (0, 1)), (0, 1)))(x, y, 1.5)]
      tol = dict(rtol=2e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-14)
      np.testing.assert_allclose(got[0], want[0], **tol)
      for g, w in zip(got[1][:2 if not traced else 3], want[1]):
        assert np.isfinite(g).all()
        np.testing.assert_allclose(g, w, **tol)
      for h in hessians:
        for g_row, w_row in zip(h, want[2]):
          for g, w in zip(g_row, w_row):
            assert np.isfinite(g).all()
            np.testing.assert_allclose(g, w, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_f_divergence_ratio_beyond_range_with_a_clamped_generator(dtype):
  """A generator clamped at the largest float (`nan_to_num`) is finite at infinity without
  being bounded there: where p / q overflows, its term is the guarded path's p f'(inf) (+inf
  for (t - 1)^2, p / 2 for |t - 1| / 2) on both paths, not q * max. Closed forms: q (p/q - 1)^2
  overflows; q |p/q - 1| / 2 = |p - q| / 2."""
  big = {np.float32: 1e30, np.float64: 1e300}[dtype]
  with jax.enable_x64(dtype == np.float64):
    p = jnp.asarray(np.array([[big, 1.0, 2.0], [0.2, 0.3, 0.5]], dtype))
    q = jnp.asarray(np.array([[1e-10, 1.0, 0.5], [0.3, 0.3, 0.4]], dtype))
    p64, q64 = np.asarray(p, np.float64), np.asarray(q, np.float64)
    tv = np.sum(np.abs(p64 - q64), -1) / 2
    chi2 = np.sum((p64 - q64) ** 2 / q64, -1)
    chi2[0] = np.inf
    for f, want in ((lambda t: jnp.nan_to_num((t - 1) ** 2), chi2),
                    (lambda t: jnp.nan_to_num(jnp.abs(t - 1) / 2), tv)):
      for where in (None, jnp.ones(p.shape, bool)):
        got = jax.jit(lambda p, q, f=f, where=where: jaxdiv.f_divergence(p, q, f, where=where))(
            p, q)
        np.testing.assert_allclose(got, want, rtol=1e-6)


def _hellinger64(p, q):
  return jnp.sqrt(0.5 * jnp.sum((jnp.sqrt(p) - jnp.sqrt(q)) ** 2))


def _power_sum64(alpha):
  """Renyi's divergence for an incomplete p (the power sum over p's mass), as jaxdiv's."""
  def renyi(p, q):
    return jnp.log(jnp.sum(p ** alpha * q ** (1 - alpha)) / jnp.sum(p)) / (alpha - 1)
  return renyi


# (jaxdiv form, plain float64 reference, p, q): entries far below float32's square-root range
# (1e-30: the slope's derivative is 1e44) and an overlap below 1e-19 (S^-2 overflows), zeros
# outside it (the reference leaves them out: no derivative, the guarded path's convention).
TINY_CASES = {
    "hellinger_distance": (jaxdiv.hellinger_distance, _hellinger64,
                           [1e-30, 0.5, 0.5], [0.3, 0.3, 0.4]),
    "bhattacharyya_distance": (
        jaxdiv.bhattacharyya_distance,
        lambda p, q: -jnp.log(jnp.sum(jnp.sqrt(p[:2] * q[:2]))),
        [1e-20, 1e-20, 1.0, 0.0], [4e-20, 1e-20, 0.0, 1.0]),
    "renyi_divergence[alpha=0.5]": (lambda p, q: jaxdiv.renyi_divergence(p, q, 0.5),
                                    _power_sum64(0.5), [1e-30, 0.5, 0.5], [0.3, 0.3, 0.4]),
    "renyi_divergence[alpha=0.7]": (lambda p, q: jaxdiv.renyi_divergence(p, q, 0.7),
                                    _power_sum64(0.7), [1e-30, 0.5, 0.5], [0.3, 0.3, 0.4]),
}


# Slow: bhattacharyya (5 s); the others run the same float32 root-form Hessians.
@tiered("name", list(TINY_CASES), fast=["hellinger_distance", "renyi_divergence[alpha=0.5]",
                                        "renyi_divergence[alpha=0.7]"])
def test_root_forms_hessian_at_tiny_entries(name):
  """float32 Hessians (p, q, mixed; forward over reverse) of the root forms at entries whose
  own second derivatives overflow: equal to the float64 reference rounded to float32, +-inf
  where it overflows and nowhere NaN. Before, forward mode through `lax.rsqrt` (its rule cubes
  the value: inf) met the zero tangents of the other entries (Hellinger, Renyi: NaN rows), and
  the derivative of -1/S held S^-2 = inf (Bhattacharyya: NaN beside the zero entries)."""
  ours, ref, p, q = TINY_CASES[name]
  with jax.enable_x64(True):
    want = jax.hessian(ref, (0, 1))(jnp.asarray(p, jnp.float64), jnp.asarray(q, jnp.float64))
  p32, q32 = jnp.asarray(p, jnp.float32), jnp.asarray(q, jnp.float32)
  got = jax.jit(jax.hessian(ours, (0, 1)))(p32, q32)
  for g_row, w_row in zip(got, want):
    for g, w in zip(g_row, w_row):
      with np.errstate(over="ignore"):  # +-inf where float32 overflows
        w = np.asarray(w).astype(np.float32)
      assert not np.isnan(g).any(), (g, w)
      np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("rows", [8, _fallback.FUSED_ROWS])
def test_bhattacharyya_from_logits_small_overlap_loses_no_terms(rows):
  """An overlap S = sum exp((log p + log q) / 2) of 6e-36 (float32, 1024 classes) whose 1023
  other terms are below the normal range: the fast path's unshifted sum flushes them (value
  81.46525, 5.6e-4 off) and leaves such rows to the guarded path, which shifts by the max.
  Against scipy's logsumexp in float64."""
  v = 1024
  a = np.full(v, -176.0)
  b = np.full(v, -4.0)
  a[0], b[0] = 0.0, -160.0
  la, lb = (x - scipy.special.logsumexp(x) for x in (a, b))
  want = -scipy.special.logsumexp(0.5 * (la + lb))
  x, y = (jnp.asarray(np.repeat(t[None], rows, 0), jnp.float32) for t in (a, b))
  got = jax.jit(lambda x, y: jaxdiv.bhattacharyya_distance(x, y, from_logits=True))(x, y)
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_high_order_gradient_from_logits_where_the_power_sum_is_subnormal():
  """The derivative from logits at order 14 of 1024 near-uniform logits, where the power sum
  S = sum p^14 (9e-40) is below float32's normal range (the review's case for the fast path's
  coefficients; the row takes the guarded path, S being flushed to 0 there): finite and within
  1e-4 of the largest entry of the float64 gradient of the textbook form log S / (1 - alpha),
  S by logsumexp. (Tsallis's gradient is of the order of S itself there.)"""
  alpha = 14.0
  x = (0.05 * np.random.default_rng(0).normal(size=(2, 1024))).astype(np.float32)
  f = lambda z: jnp.sum(jaxdiv.renyi_entropy(z, alpha, from_logits=True))
  got = np.asarray(jax.jit(jax.grad(f))(x))

  def textbook(z):
    return jnp.sum(special.logsumexp(alpha * jax.nn.log_softmax(z, -1), -1) / (1 - alpha))

  with jax.enable_x64(True):
    want = np.asarray(jax.grad(textbook)(jnp.asarray(x, jnp.float64)))
  assert np.all(np.isfinite(got))
  bound = np.broadcast_to(1e-4 * np.max(np.abs(want), axis=-1, keepdims=True), got.shape)
  np.testing.assert_array_less(np.abs(got - want), bound)


@pytest.mark.parametrize("alpha", [2.0, 3.0])
@pytest.mark.parametrize("name", ["renyi_divergence", "tsallis_divergence", "alpha_divergence"])
def test_gradient_in_q_finite_where_q_is_tiny(name, alpha):
  """d/dq on probabilities where an entry of q is tiny (6e-14) but the value is finite: the
  fast path's x ** (c - 1) for the exponent c = 1 - alpha overflowed float32 (q ** -3 = 4e39)
  and gave -inf where the gradient is -1.6e13 (review of stop 36). Against the float64 gradient
  of the textbook power sum, relative to each row's largest entry."""
  rng = np.random.default_rng(0)
  p, q = rng.gamma(0.5, size=(2, 8, 512))
  q[3, 7] = 6e-14 * q[3].sum()
  p, q = (x / x.sum(-1, keepdims=True) for x in (p, q))
  fn = getattr(jaxdiv, name)
  f32 = [jnp.asarray(x, jnp.float32) for x in (p, q)]
  got = jax.jit(jax.grad(lambda p, q: jnp.sum(fn(p, q, alpha)), (0, 1)))(*f32)

  def textbook(p, q):
    s = jnp.sum(p ** alpha * q ** (1 - alpha), -1) / jnp.sum(p, -1)
    out = {"renyi_divergence": jnp.log(s) / (alpha - 1),
           "tsallis_divergence": (s - 1) / (alpha - 1),
           "alpha_divergence": (s - 1) / (alpha * (alpha - 1))}[name]
    return jnp.sum(out)

  with jax.enable_x64(True):
    want = jax.grad(textbook, (0, 1))(*(jnp.asarray(np.asarray(x), jnp.float64) for x in f32))
  for g, w in zip(got, want):
    g, w = np.asarray(g, np.float64), np.asarray(w)
    assert np.all(np.isfinite(g))
    bound = np.broadcast_to(1e-5 * np.max(np.abs(w), axis=-1, keepdims=True), g.shape)
    np.testing.assert_array_less(np.abs(g - w), bound)


def _call_with_a_generator(p, q, traced):
  """Calls f_divergence with a generator holding a new object (eager, jitted, and with a
  traced parameter); returns a weak reference to that object."""
  import weakref

  class Table:  # weakref-able, held by the generator
    w = np.float32(2.0)

  table = Table()
  gen = lambda t: table.w * (t - 1) ** 2
  jaxdiv.f_divergence(p, q, gen)
  jax.jit(lambda p, q: jaxdiv.f_divergence(p, q, gen))(p, q)
  if traced:
    jax.grad(lambda s: jnp.sum(jaxdiv.f_divergence(p, q, lambda t: s * gen(t))))(1.0)
  return weakref.ref(table)


# The fast tier runs no case of this test; it costs 7 s.
@pytest.mark.slow
def test_f_divergence_keeps_no_generator_alive(one_pass_blocks):
  """After a call (eager and jitted, over blocks and with a traced parameter), nothing keeps the
  user's generator alive: `jax.closure_convert`'s cache held every one (and a traced parameter's
  whole trace) until 2549472."""
  import gc
  rng = np.random.default_rng(10)
  p, q = (jnp.asarray(rng.dirichlet(np.ones(512), 6).astype(np.float32)) for _ in "pq")
  refs = [_call_with_a_generator(p, q, traced) for traced in (False, True)]
  gc.collect()
  assert [r() for r in refs] == [None, None]
