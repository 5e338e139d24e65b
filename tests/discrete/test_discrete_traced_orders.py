"""The order-alpha family from logits and from probabilities at a traced scalar order (a `jit`
argument, an order being learnt, a `vmap` over orders).

Where the order is generic (finite and at least 2; the alpha-divergence: its swapped order
max(alpha, 1 - alpha)) the members take the hand-written power sum, with its derivatives in
closed form; elsewhere, and on rows where the power sum is not finite, the guarded path, which
holds the limits at 1 and inf and the centred sum near 1 (its derivatives over row blocks).
References: the textbook formulas in float64 (plain jnp on the float32 logits, differentiated by
JAX) on rows inside both supports; on rows with -inf, NaN or +inf logits, the static order's
values and the guarded path's derivatives (a mask of ones). From probabilities the power sum is
divided by the mass of p (the alpha-divergence below order 1/2: of q), Renyi's definition for
incomplete distributions, which the references write out.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiv
from jaxdiv import _fallback


def _power_sum(la, lb, a):
  return jnp.sum(jnp.exp(a * la + (1 - a) * lb), axis=-1)


# name: (the member on (a, b, alpha), its textbook formula on float64 log-softmaxes).
MEMBERS = {
    "renyi_divergence": (
        lambda a, b, al: jaxdiv.renyi_divergence(a, b, al, from_logits=True),
        lambda la, lb, al: jnp.log(_power_sum(la, lb, al)) / (al - 1)),
    "tsallis_divergence": (
        lambda a, b, al: jaxdiv.tsallis_divergence(a, b, al, from_logits=True),
        lambda la, lb, al: (_power_sum(la, lb, al) - 1) / (al - 1)),
    "alpha_divergence": (
        lambda a, b, al: jaxdiv.alpha_divergence(a, b, al, from_logits=True),
        lambda la, lb, al: (_power_sum(la, lb, al) - 1) / (al * (al - 1))),
    "renyi_entropy": (
        lambda a, b, al: jaxdiv.renyi_entropy(a, al, from_logits=True),
        lambda la, lb, al: jnp.log(jnp.sum(jnp.exp(al * la), -1)) / (1 - al)),
    "tsallis_entropy": (
        lambda a, b, al: jaxdiv.tsallis_entropy(a, al, from_logits=True),
        lambda la, lb, al: (1 - jnp.sum(jnp.exp(al * la), -1)) / (al - 1)),
}
# Generic orders (2, 3.5, 6) and orders the guarded path takes (0.3, 1.25); the
# alpha-divergence's negative and swapped ones: -1 and -2 generic, -0.5 and 0.5 not.
ORDERS = [0.3, 1.25, 2.0, 3.5, 6.0]
_CASES = [(n, a) for n in MEMBERS for a in ORDERS] + [
    ("alpha_divergence", -0.5), ("alpha_divergence", 0.5), ("alpha_divergence", -1.0),
    ("alpha_divergence", -2.0)]
# The largest relative error allowed (of the largest entry): value and first derivatives, second
# derivatives. The guarded path's d2/dalpha2 at 0.3 is 3e-5 off (Tsallis divergence).
_RTOL = (2e-5, 2e-5, 2e-5, 1e-4, 2e-5)


def _logits(rows=6, n=64, seed=0):
  rng = np.random.default_rng(seed)
  a = (2 * rng.standard_normal((rows, n))).astype(np.float32)
  b = (a + rng.standard_normal((rows, n))).astype(np.float32)
  return a, b


def _derivatives(f, a, b, alpha):
  """Row values; d/d(logits a) and d/dalpha of their sum; d2/dalpha2 and d/da of d/dalpha."""
  total = lambda x, al: jnp.sum(f(x, b, al))
  d_alpha = jax.grad(total, argnums=1)
  return (f(a, b, alpha), jax.grad(total)(a, alpha), d_alpha(a, alpha),
          jax.grad(d_alpha, argnums=1)(a, alpha), jax.grad(d_alpha)(a, alpha))


def _close(got, want, rtol, what):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.max(np.abs(want)),
                             err_msg=what)


def _orders(cases, name):
  return [a for n, a in cases if n == name]


# Slow tier: five float64 derivatives of ours and of the reference compiled, 10-27 s, once a
# member: every order reuses them. The fast tier runs the traced path in the vmapped,
# closed-over and low-precision cases (below).
@pytest.mark.slow
@pytest.mark.parametrize("name", MEMBERS)
def test_traced_generic_orders_against_float64(name):
  ours, textbook = MEMBERS[name]
  ref = lambda x, y, al: textbook(jax.nn.log_softmax(x), jax.nn.log_softmax(y), al)
  _against_float64(ours, ref, *_logits(), _orders(_CASES, name), name)


def _against_float64(ours, ref, x, y, orders, label):
  """`_derivatives` of `ours` on the float32 inputs, jitted once (the order is an argument),
  against those of the float64 reference `ref` on the same values (d/dx: in the first input),
  at each of `orders`."""
  ours_d = jax.jit(lambda x, y, al: _derivatives(ours, x, y, al))
  ref_d = jax.jit(lambda x, y, al: _derivatives(ref, x, y, al))
  for alpha in orders:
    got = ours_d(x, y, jnp.float32(alpha))
    with jax.enable_x64(True):
      want = ref_d(jnp.asarray(x, jnp.float64), jnp.asarray(y, jnp.float64), jnp.float64(alpha))
    for what, g, w, rtol in zip(("value", "d/dx", "d/dalpha", "d2/dalpha2", "d2/dx dalpha"),
                                got, want, _RTOL):
      assert np.all(np.isfinite(np.asarray(g))), f"{label} alpha={alpha}: {what}"
      _close(g, w, rtol, f"{label} alpha={alpha}: {what}")


def _edge_logits():
  a, b = _logits(rows=7, n=16, seed=1)
  a[0, 3] = -np.inf             # outside supp p: a term of 0
  b[1, 5] = -np.inf             # outside supp q: 0 below order 1, +inf above
  a[2, 7] = b[2, 7] = -np.inf   # outside both
  a[3] = -np.inf                # an empty row
  a[4, 2] = np.nan              # a NaN row
  b[5, 1] = np.inf              # a +inf logit: NaN
  return a, b                   # row 6 is inside both supports


def _against_the_guarded_path(ours, guarded, x, y, orders, label):
  """At each of `orders`: `ours`' values as the static order's, and its derivatives (in the
  first input and in alpha, of the sum of the finite rows) as `guarded`'s at the traced order,
  and finite. Each side is jitted once, the order and the finite rows arguments; both inputs
  are arguments too: closed over, an input with an entry that is not finite is a constant that
  takes the guarded path (`test_inputs_a_jitted_function_closes_over`)."""
  def both(f):
    def total(x, y, al, finite):
      return jnp.sum(jnp.where(finite, f(x, y, al), 0))
    return jax.jit(lambda x, y, al, finite: (
        f(x, y, al), jax.grad(total, argnums=(0, 2))(x, y, al, finite)))

  ours_j, guarded_j = both(ours), both(guarded)
  for alpha in orders:
    static = np.asarray(ours(x, y, alpha))
    finite = np.isfinite(static)
    assert not finite.all() and finite.sum() >= 3, alpha
    traced, (gx, ga) = ours_j(x, y, jnp.float32(alpha), finite)
    _, (wx, wa) = guarded_j(x, y, jnp.float32(alpha), finite)
    np.testing.assert_allclose(np.asarray(traced), static, rtol=2e-6, atol=1e-6,
                               err_msg=f"{label} alpha={alpha}")
    for what, g, w in (("d/dx", gx, wx), ("d/dalpha", ga, wa)):
      assert np.all(np.isfinite(np.asarray(g))), f"{label} alpha={alpha}: {what}"
      _close(g, w, 2e-5, f"{label} alpha={alpha}: {what}")


# Slow tier: two value+grads compiled a member, 10-25 s (the orders reuse them); the fast tier
# runs the traced path in the vmapped, closed-over and low-precision cases (below).
@pytest.mark.slow
@pytest.mark.parametrize("name", MEMBERS)
def test_traced_generic_orders_on_rows_that_leave_the_support(name):
  """Values as the static order's; derivatives (in the logits and in alpha, of the sum of the
  finite rows) as the guarded path's at the traced order, and finite: as written, d/dalpha of
  a term outside a support is -inf times 0."""
  ours, _ = MEMBERS[name]
  mask = np.ones(16, bool)  # a mask takes the guarded path
  _against_the_guarded_path(ours, lambda x, y, al: _guarded(name, x, y, al, mask),
                            *_edge_logits(), _orders(_CASES, name), name)


def _guarded(name, a, b, alpha, mask):
  fn = getattr(jaxdiv, name)
  if name.endswith("entropy"):
    return fn(a, alpha, from_logits=True, where=mask)
  return fn(a, b, alpha, from_logits=True, where=mask)


@pytest.mark.parametrize("orders", [(2.0, 3.0, 5.0), (0.5, 1.0, 1.1, 2.0, np.inf)],
                         ids=["generic", "with-limits"])
def test_vmap_over_orders_equals_each_static_order(orders):
  """One predicate for the batch of orders: generic orders alone take the hand-written sum;
  with a limit or an order near 1 among them, every order takes the guarded path."""
  a, b = _edge_logits()
  for name in ("renyi_divergence", "alpha_divergence", "tsallis_entropy"):
    ours, _ = MEMBERS[name]
    got = jax.jit(jax.vmap(lambda al, f=ours: f(a, b, al)))(jnp.asarray(orders, jnp.float32))
    want = np.stack([np.asarray(ours(a, b, o)) for o in orders])
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-6, atol=1e-6, err_msg=name)


def test_inputs_a_jitted_function_closes_over():
  """Arrays a jitted function closes over are constants to XLA, which folds an empty row's
  log-softmax into a NaN literal whose `exp` XLA:CPU does not keep NaN: closed-over inputs with
  an entry that is not finite take the guarded path (`_common.fast_inputs`), at a traced order
  as at a static one. The batch, and its empty row alone."""
  a, b = _edge_logits()
  for name in ("renyi_divergence", "alpha_divergence", "renyi_entropy"):
    ours, _ = MEMBERS[name]
    for x, y in ((a, b), (a[3], b[3])):
      want = np.asarray(ours(x, y, 2.0))
      got = jax.jit(lambda al, x=x, y=y, f=ours: f(x, y, al))(jnp.float32(2.0))
      np.testing.assert_allclose(np.asarray(got), want, rtol=2e-6, atol=1e-6, err_msg=name)


# The order that is not generic compiles the guarded path's second derivatives (17-40 s): slow.
@pytest.mark.parametrize("name,alpha", [
    ("renyi_divergence", 2.0), pytest.param("tsallis_entropy", 0.3, marks=pytest.mark.slow),
    ("alpha_divergence", -1.0)])
def test_guarded_derivatives_over_row_blocks(monkeypatch, name, alpha):
  """The guarded path's coefficients (an order that is not generic, or rows that leave the
  support at a generic one) are computed over row blocks (`_fallback.careful_blocks`, values
  and per-row derivatives in alpha beside the gradients): with blocks of 32 entries (2 rows of
  16), the same values, first derivatives and second derivatives in alpha as on the whole
  batch."""
  ours, _ = MEMBERS[name]
  a, b = _edge_logits()
  finite = np.isfinite(np.asarray(ours(a, b, alpha)))

  def run():
    def total(x, al):
      return jnp.sum(jnp.where(finite, ours(x, b, al), 0))
    d_alpha = jax.grad(total, argnums=1)
    return jax.jit(lambda x, al: (ours(x, b, al), jax.grad(total, argnums=(0, 1))(x, al),
                                  jax.grad(d_alpha, argnums=1)(x, al)))(a, jnp.float32(alpha))

  whole = run()
  monkeypatch.setattr(_fallback, "_CAREFUL_BLOCK_ENTRIES", 32)
  blocks = run()
  for what, g, w in zip(("value", "d/da", "d/dalpha", "d2/dalpha2"),
                        jax.tree_util.tree_leaves(blocks), jax.tree_util.tree_leaves(whole)):
    g, w = np.asarray(g), np.asarray(w)
    assert np.all(np.isfinite(g) == np.isfinite(w)), what
    assert np.all(np.isfinite(g)) or what == "value", what
    np.testing.assert_allclose(g, w, rtol=2e-6, atol=1e-6, err_msg=f"{name} {alpha}: {what}")


@pytest.mark.parametrize("n,v", [(8192, 512), (256, 32768)])
def test_value_and_grad_temporaries_at_most_the_hand_lines(n, v):
  """XLA's temporaries of value+grad in the logits and a traced order 2 against the
  hand-written line's. Differentiated as written, a `cond` between the hand line and the
  guarded path held both branches' buffers: 1.46 GiB at 32768x512 against the hand line's
  0.45 (the guarded path alone: 1.0)."""
  x = jax.ShapeDtypeStruct((n, v), jnp.float32)
  al = jax.ShapeDtypeStruct((), jnp.float32)
  lsm = jax.nn.log_softmax
  hand = lambda a, b, al: jnp.log(jnp.sum(jnp.exp(al * lsm(a) + (1 - al) * lsm(b)), -1)) / (al - 1)
  ours = lambda a, b, al: jaxdiv.renyi_divergence(a, b, al, from_logits=True)

  def temp(f):
    vg = jax.value_and_grad(lambda a, b, al: jnp.sum(f(a, b, al)), argnums=(0, 1, 2))
    return jax.jit(vg).lower(x, x, al).compile().memory_analysis().temp_size_in_bytes

  assert temp(ours) <= temp(hand), (temp(ours), temp(hand))


@pytest.mark.parametrize("alpha", [2.0, pytest.param(0.5, marks=pytest.mark.slow)])
def test_low_precision_inputs_keep_their_dtype(alpha):
  """bfloat16 logits: the result is bfloat16 and equals the static order's, on every path (the
  hand line, its fallback rows, an order that is not generic); the derivatives are finite. The
  guarded rows came back in float32, the compute dtype, beside the hand line's bfloat16."""
  a, b = _edge_logits()
  a, b = jnp.asarray(a, jnp.bfloat16), jnp.asarray(b, jnp.bfloat16)
  for name in ("renyi_divergence", "tsallis_entropy"):
    ours, _ = MEMBERS[name]
    want = ours(a, b, alpha)
    got = jax.jit(ours)(a, b, jnp.float32(alpha))
    assert got.dtype == want.dtype == jnp.bfloat16, name
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                               rtol=1e-2, atol=1e-2, err_msg=name)
    finite = np.isfinite(np.asarray(want, np.float32))
    total = lambda x, al, f=ours, keep=finite: jnp.sum(
        jnp.where(keep, f(x, b, al), 0).astype(jnp.float32))
    ga, gal = jax.jit(jax.grad(total, argnums=(0, 1)))(a, jnp.float32(alpha))
    assert ga.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(ga, np.float32))), name
    assert np.isfinite(float(gal)), name


# From probabilities: (the member on (p, q, alpha), its textbook formula of the power sum S).
def _prob_power_sum(p, q, al, two=True):
  """sum p^al q^(1 - al) (one input: sum p^al) over the mass of p; the alpha-divergence's
  swapped form below order 1/2 normalises by q's (`two == "swap"`)."""
  mass = jnp.sum(p, -1)
  if two == "swap":
    mass = jnp.where(al >= 0.5, mass, jnp.sum(q, -1))
  return jnp.sum(p ** al * q ** (1 - al) if two else p ** al, -1) / mass


PROB_MEMBERS = {
    "renyi_divergence": (
        lambda p, q, al: jaxdiv.renyi_divergence(p, q, al),
        lambda p, q, al: jnp.log(_prob_power_sum(p, q, al)) / (al - 1)),
    "tsallis_divergence": (
        lambda p, q, al: jaxdiv.tsallis_divergence(p, q, al),
        lambda p, q, al: (_prob_power_sum(p, q, al) - 1) / (al - 1)),
    "alpha_divergence": (
        lambda p, q, al: jaxdiv.alpha_divergence(p, q, al),
        lambda p, q, al: (_prob_power_sum(p, q, al, "swap") - 1) / (al * (al - 1))),
    "renyi_entropy": (
        lambda p, q, al: jaxdiv.renyi_entropy(p, al),
        lambda p, q, al: jnp.log(_prob_power_sum(p, q, al, False)) / (1 - al)),
    "tsallis_entropy": (
        lambda p, q, al: jaxdiv.tsallis_entropy(p, al),
        lambda p, q, al: (1 - _prob_power_sum(p, q, al, False)) / (al - 1)),
}
_PROB_CASES = [(n, a) for n in PROB_MEMBERS for a in (2.0, 3.5)] + [
    ("renyi_divergence", 0.3), ("alpha_divergence", -1.0), ("alpha_divergence", -2.0)]


def _probs(rows=6, n=64, seed=0):
  """Softmax rows in float32; the second row of p holds 1.25 of mass (an incomplete or
  unnormalised distribution: the mass divides S)."""
  a, b = _logits(rows, n, seed)
  p, q = (np.array(jax.nn.softmax(x), np.float32) for x in (a, b))
  p[1] *= np.float32(1.25)
  return p, q


@pytest.mark.slow  # 10-25 s a member, as the logits' (above)
@pytest.mark.parametrize("name", PROB_MEMBERS)
def test_traced_orders_from_probabilities_against_float64(name):
  ours, textbook = PROB_MEMBERS[name]
  _against_float64(ours, textbook, *_probs(), _orders(_PROB_CASES, name), name)


def _edge_probs():
  p, q = _probs(rows=9, n=16, seed=1)
  p[0, 3] = 0        # outside supp p: a term of 0
  q[1, 5] = 0        # outside supp q: +inf above order 1, 0 for the alpha-divergence below 0
  p[2, 7] = q[2, 7] = 0
  p[3] = 0           # an empty row
  p[4, 2] = np.nan
  q[5, 1] = np.inf
  p[6, 4] = -0.1     # a negative probability
  return p, q        # row 1 is unnormalised (1.25), rows 7 and 8 inside both supports


@pytest.mark.slow  # 10-25 s a member, as the logits' (above)
@pytest.mark.parametrize("name", PROB_MEMBERS)
def test_traced_orders_from_probabilities_on_rows_that_leave_the_support(name):
  """Values as the static order's; derivatives (in p and in alpha, of the sum of the finite
  rows) as the guarded path's at the traced order (a mask of ones), and finite. A zero entry
  gets no gradient, the mass's included (the guarded path's convention)."""
  ours, _ = PROB_MEMBERS[name]
  mask = np.ones(16, bool)
  fn = getattr(jaxdiv, name)
  masked = ((lambda x, y, al: fn(x, al, where=mask)) if name.endswith("entropy")
            else (lambda x, y, al: fn(x, y, al, where=mask)))
  _against_the_guarded_path(ours, masked, *_edge_probs(), _orders(_PROB_CASES, name), name)


@pytest.mark.slow  # 7 s
def test_traced_orders_from_probabilities_vmapped_and_closed_over():
  """A `vmap` over generic orders equals each static order; closed-over probabilities with
  entries that are not finite take the guarded path, as the logits do."""
  p, q = _edge_probs()
  orders = jnp.asarray([2.0, 3.0, -1.5], jnp.float32)
  for name in ("renyi_divergence", "alpha_divergence", "tsallis_entropy"):
    ours, _ = PROB_MEMBERS[name]
    os_ = orders if name == "alpha_divergence" else orders[:2]
    got = jax.jit(jax.vmap(lambda al, f=ours: f(p, q, al)))(os_)
    want = np.stack([np.asarray(ours(p, q, float(o))) for o in os_])
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-6, atol=1e-6, err_msg=name)
    got = jax.jit(lambda al, f=ours: f(p, q, al))(jnp.float32(2.0))
    np.testing.assert_allclose(np.asarray(got), want[0], rtol=2e-6, atol=1e-6, err_msg=name)


@pytest.mark.slow  # 17 s, most of it compiling the hand line's value+grad
def test_traced_order_from_probabilities_temporaries_at_most_the_hand_lines():
  """Value+grad in p, q and a traced order 2 against `log(sum(p**al * q**(1 - al))) / (al -
  1)`: the guarded path held 2.6x the hand line's temporaries (4096x4096: 1008 MiB against
  384)."""
  x = jax.ShapeDtypeStruct((8192, 512), jnp.float32)
  al = jax.ShapeDtypeStruct((), jnp.float32)
  hand = lambda p, q, al: jnp.log(jnp.sum(p ** al * q ** (1 - al), -1)) / (al - 1)
  ours = lambda p, q, al: jaxdiv.renyi_divergence(p, q, al)

  def temp(f):
    vg = jax.value_and_grad(lambda p, q, al: jnp.sum(f(p, q, al)), argnums=(0, 1, 2))
    return jax.jit(vg).lower(x, x, al).compile().memory_analysis().temp_size_in_bytes

  assert temp(ours) <= temp(hand), (temp(ours), temp(hand))


def test_traced_order_from_low_precision_probabilities():
  """bfloat16 probabilities: a bfloat16 result equal to the static order's, finite
  derivatives."""
  p, q = (jnp.asarray(x, jnp.bfloat16) for x in _edge_probs())
  ours, _ = PROB_MEMBERS["renyi_divergence"]
  want = ours(p, q, 2.0)
  got = jax.jit(ours)(p, q, jnp.float32(2.0))
  assert got.dtype == want.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                             rtol=1e-2, atol=1e-2)
  finite = np.isfinite(np.asarray(want, np.float32))
  total = lambda x, al: jnp.sum(jnp.where(finite, ours(x, q, al), 0).astype(jnp.float32))
  gp, gal = jax.jit(jax.grad(total, argnums=(0, 1)))(p, jnp.float32(2.0))
  assert gp.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(gp, np.float32)))
  assert np.isfinite(float(gal))
