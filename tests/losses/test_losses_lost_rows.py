"""A row whose loss is NaN (a NaN or +inf logit, a NaN target) is a constant: its gradient is 0,
and the other rows' values and gradients (and those of any hyperparameter they share) are what
they would be without it.

Before, a row summed or masked away sent a zero cotangent through its NaN softmax, 0 * NaN = NaN,
into its own logits and into every parameter shared by the rows (label smoothing, z-loss, the
poly loss's epsilon, a distillation temperature): optax does the same. The expected values are
the same loss on the finite rows alone.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import tiered

import jaxdiv.losses as jl

N, V = 5, 16
LOST = (1, 3)  # rows 1 and 3 get a NaN and a +inf logit; rows 0, 2 and 4 stay finite
FINITE = np.array([0, 2, 4])


def _logits(dtype=jnp.float32):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(N, V)) * 2
  x[1, 4] = np.nan
  x[3, 7] = np.inf
  return jnp.asarray(x, dtype)


_RNG = np.random.default_rng(1)
INT_LABELS = jnp.asarray(_RNG.integers(0, V, N))
PROBS = jax.nn.softmax(jnp.asarray(_RNG.normal(size=(N, V)), jnp.float32))
TEACHER = jnp.asarray(_RNG.normal(size=(N, V)), jnp.float32)
WEIGHTS = jnp.asarray(_RNG.uniform(0.5, 2.0, V), jnp.float32)
CLASS_MASK = jnp.asarray(_RNG.uniform(size=(N, V)) > 0.2)

# (name, fn(logits, rows, h) -> per-row loss, where `rows` selects the labels, teacher and mask
# rows that go with the logits, and `h` is a scalar hyperparameter the loss is differentiated in
# (None: none).
CASES = {
    "int": (lambda x, r, h: jl.softmax_cross_entropy_with_integer_labels(x, INT_LABELS[r]),
            None),
    "int xla": (lambda x, r, h: jl.softmax_cross_entropy_with_integer_labels(
        x, INT_LABELS[r], implementation="xla"), None),
    "int chunked": (lambda x, r, h: jl.softmax_cross_entropy_with_integer_labels(
        x, INT_LABELS[r], implementation="chunked"), None),
    "int label_smoothing": (lambda x, r, h: jl.softmax_cross_entropy_with_integer_labels(
        x, INT_LABELS[r], label_smoothing=0.1), None),
    "int z_loss": (lambda x, r, h: jl.softmax_cross_entropy_with_integer_labels(
        x, INT_LABELS[r], z_loss=1e-2), None),
    "int traced label_smoothing": (lambda x, r, h: jl.softmax_cross_entropy_with_integer_labels(
        x, INT_LABELS[r], label_smoothing=h), 0.1),
    "int traced z_loss": (lambda x, r, h: jl.softmax_cross_entropy_with_integer_labels(
        x, INT_LABELS[r], z_loss=h), 1e-2),
    "int weights": (lambda x, r, h: jl.softmax_cross_entropy_with_integer_labels(
        x, INT_LABELS[r], weights=WEIGHTS * h), 1.0),
    "int class where": (lambda x, r, h: jl.softmax_cross_entropy_with_integer_labels(
        x, INT_LABELS[r], where=CLASS_MASK[r] | (jnp.arange(V) == INT_LABELS[r][:, None])),
        None),
    "softmax label_smoothing": (lambda x, r, h: jl.softmax_cross_entropy(
        x, PROBS[r], label_smoothing=h), 0.1),
    "softmax z_loss": (lambda x, r, h: jl.softmax_cross_entropy(x, PROBS[r], z_loss=h), 1e-2),
    "softmax where": (lambda x, r, h: jl.softmax_cross_entropy(
        x, PROBS[r] * h, where=CLASS_MASK[r]), 1.0),
    "softmax weights": (lambda x, r, h: jl.softmax_cross_entropy(
        x, PROBS[r], weights=WEIGHTS * h), 1.0),
    "poly": (lambda x, r, h: jl.poly_loss_cross_entropy(x, PROBS[r], epsilon=h), 2.0),
    "poly per-example epsilon": (lambda x, r, h: jl.poly_loss_cross_entropy(
        x, PROBS[r], epsilon=h * jnp.linspace(0.5, 1.5, N)[r]), 2.0),
    "poly where": (lambda x, r, h: jl.poly_loss_cross_entropy(
        x, PROBS[r], epsilon=h, where=CLASS_MASK[r]), 2.0),
    **{f"distill {d}": (lambda x, r, h, d=d: jl.distillation_loss(x, TEACHER[r], divergence=d),
                        None)
       for d in ("forward_kl", "reverse_kl", "js", "skew_kl", "skew_reverse_kl", "tv")},
    "distill traced temperature": (lambda x, r, h: jl.distillation_loss(
        x, TEACHER[r], temperature=h), 2.0),
}


_LOST_ROW_CASES = [(name, jit) for name in CASES for jit in (False, True)]
_SLOW_LOST_ROW_CASES = [("int", False), ("int traced label_smoothing", False),
                        ("distill skew_kl", False)]


# The eager cases of three losses (5-10 s) are slow; their jit cases run in the fast tier.
@tiered("name, jit", _LOST_ROW_CASES,
        fast=[c for c in _LOST_ROW_CASES if c not in _SLOW_LOST_ROW_CASES],
        ids=[f"{name}-{'jit' if jit else 'eager'}" for name, jit in _LOST_ROW_CASES])
def test_a_lost_row_is_a_constant(name, jit):
  fn, h = CASES[name]
  x = _logits()
  rows = np.arange(N)
  hv = jnp.float32(0.0 if h is None else h)

  def kept(x, h, rows):  # the finite rows' sum: the lost rows summed away
    out = fn(x, rows, h)
    return jnp.sum(jnp.where(jnp.isin(jnp.arange(out.shape[0]), jnp.asarray(LOST)), 0, out)
                   if out.shape[0] == N else out)

  value = fn(x, rows, hv)
  grad = jax.grad(kept, (0, 1))
  if jit:
    grad = jax.jit(grad)
  gx, gh = grad(x, hv, rows)
  gx, gh = np.asarray(gx), np.asarray(gh)
  # Before: 0 * NaN in the lost rows' logits (and in h where it is shared).
  assert np.isfinite(gx).all() and np.isfinite(gh).all()
  np.testing.assert_array_equal(gx[list(LOST)], 0)
  # The finite rows: the values and gradients of the same loss on them alone.
  value = np.asarray(value)
  assert not np.isfinite(value[list(LOST)]).any()
  want = np.asarray(fn(x[FINITE], FINITE, hv))
  np.testing.assert_allclose(value[FINITE], want, rtol=2e-6, atol=1e-6)
  wx, wh = jax.grad(kept, (0, 1))(x[FINITE], hv, FINITE)
  np.testing.assert_allclose(gx[FINITE], np.asarray(wx), rtol=2e-5, atol=1e-6)
  if h is not None:
    np.testing.assert_allclose(gh, np.asarray(wh), rtol=2e-5, atol=1e-6)
    # A lost row leaves the hyperparameter's derivative alone: central differences on the
    # finite rows' sum.
    eps = 1e-2 * max(abs(h), 1.0)
    fd = (kept(x, hv + eps, rows) - kept(x, hv - eps, rows)) / (2 * eps)
    np.testing.assert_allclose(gh, np.asarray(fd), rtol=2e-2, atol=2e-3)


def test_a_lost_row_left_out_by_ignore_index_or_where():
  """A NaN row that is also ignored (`ignore_index`) or masked (per-example `where`): value 0,
  gradient 0, through the kernels' default path."""
  x = _logits()
  labels = INT_LABELS.at[1].set(-100).at[3].set(-100)
  for loss in (lambda x: jl.softmax_cross_entropy_with_integer_labels(x, labels,
                                                                      ignore_index=-100),
               lambda x: jl.softmax_cross_entropy_with_integer_labels(
                   x, INT_LABELS, where=~jnp.isin(jnp.arange(N), jnp.asarray(LOST)))):
    out = np.asarray(loss(x))
    np.testing.assert_array_equal(out[list(LOST)], 0)
    total = jax.grad(lambda x, loss=loss: loss(x).sum())
    for grad in (total, jax.jit(total)):
      g = np.asarray(grad(x))
      np.testing.assert_array_equal(g[list(LOST)], 0)
      want = jax.grad(lambda x: jl.softmax_cross_entropy_with_integer_labels(
          x, INT_LABELS[FINITE]).sum())(x[FINITE])
      np.testing.assert_allclose(g[FINITE], np.asarray(want), rtol=2e-6, atol=1e-7)


# Slow tier: the fast tier runs no case of this test; it costs 5 s.
@pytest.mark.slow
def test_nan_target_row_is_a_constant():
  """A NaN in a probability target: the row is NaN, its gradients (logits and targets) 0, the
  label smoothing's derivative that of the finite rows."""
  x = jnp.asarray(np.random.default_rng(2).normal(size=(N, V)), jnp.float32)
  y = PROBS.at[2, 5].set(jnp.nan)
  finite = np.array([0, 1, 3, 4])
  loss = lambda x, y, h: jl.softmax_cross_entropy(x, y, label_smoothing=h)
  kept = lambda x, y, h: jnp.sum(jnp.where(jnp.arange(x.shape[0]) == 2, 0, loss(x, y, h))
                                 if x.shape[0] == N else loss(x, y, h))
  assert np.isnan(np.asarray(loss(x, y, 0.1))[2])
  for grad in (jax.grad(kept, (0, 1, 2)), jax.jit(jax.grad(kept, (0, 1, 2)))):
    gx, gy, gh = (np.asarray(g) for g in grad(x, y, jnp.float32(0.1)))
    np.testing.assert_array_equal(gx[2], 0)
    np.testing.assert_array_equal(gy[2], 0)
    wx, wy, wh = jax.grad(kept, (0, 1, 2))(x[finite], y[finite], jnp.float32(0.1))
    np.testing.assert_allclose(gx[finite], np.asarray(wx), rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(gy[finite], np.asarray(wy), rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(gh, np.asarray(wh), rtol=2e-5, atol=1e-6)


# default (11 s) and xla (8 s) are slow; default-sum runs the default in the fast tier.
@pytest.mark.parametrize("implementation, kw", [
    pytest.param(None, {}, marks=pytest.mark.slow), pytest.param("xla", {}, marks=pytest.mark.slow),
    ("chunked", {}), ("chunked", {"grad_filter_eps": 1e-3}),
    ("forward_grad", {"reduction": "mean"}), (None, {"reduction": "sum"})],
    ids=["default", "xla", "chunked", "chunked-filter", "forward_grad-mean", "default-sum"])
def test_fused_linear_lost_hidden_row_leaves_the_head_alone(implementation, kw):
  """A token whose hidden state holds a NaN or an infinity, ignored (`ignore_index`): the loss is
  finite, and so are d hidden (0 on that token) and d weight, which every token shares (it was
  0 * NaN in every column: one bad padding token poisoned the head). Both equal the gradients
  of the counted tokens alone."""
  rng = np.random.default_rng(3)
  h = rng.normal(size=(9, 16)).astype(np.float32)
  h[2, 3], h[6, 0] = np.nan, np.inf
  w = (rng.normal(size=(16, 40)) * 0.3).astype(np.float32)
  y = rng.integers(0, 40, 9)
  y[[2, 6]] = -100
  counted = np.array([0, 1, 3, 4, 5, 7, 8])

  def loss(h, w, y):
    out = jl.fused_linear_cross_entropy(h, w, jnp.asarray(y), ignore_index=-100,
                                        implementation=implementation, **kw)
    return jnp.sum(out)

  value = loss(jnp.asarray(h), jnp.asarray(w), y)
  want = loss(jnp.asarray(h[counted]), jnp.asarray(w), y[counted])
  np.testing.assert_allclose(value, want, rtol=1e-6)  # a mean counts the same tokens
  for grad in (jax.grad(loss, (0, 1)), jax.jit(jax.grad(loss, (0, 1)))):
    gh, gw = (np.asarray(g) for g in grad(jnp.asarray(h), jnp.asarray(w), jnp.asarray(y)))
    wh, ww = jax.grad(loss, (0, 1))(jnp.asarray(h[counted]), jnp.asarray(w), y[counted])
    np.testing.assert_array_equal(gh[[2, 6]], 0)
    np.testing.assert_allclose(gh[counted], np.asarray(wh), rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(gw, np.asarray(ww), rtol=2e-5, atol=1e-7)


# Review cases (helper-57): each failed before its fix.


@pytest.mark.parametrize("impl", [None, "xla", "chunked"])
def test_softcap_lost_row_is_a_constant(impl):
  """Soft-capping before the kernels: tanh's derivative at a NaN logit is NaN, which met the
  lost row's zero d logits as 0 * NaN."""
  x = _logits()
  loss = lambda x, rows: jl.softmax_cross_entropy_with_integer_labels(
      x, INT_LABELS[rows], softcap=5.0, implementation=impl)
  g = np.asarray(jax.grad(lambda x: jnp.sum(jnp.where(
      jnp.isin(jnp.arange(N), jnp.asarray(LOST)), 0, loss(x, np.arange(N)))))(x))
  want = jax.grad(lambda x: loss(x, FINITE).sum())(x[FINITE])
  np.testing.assert_array_equal(g[1], 0)  # the NaN row (+inf is capped to a finite logit)
  np.testing.assert_allclose(g[FINITE], np.asarray(want), rtol=2e-6, atol=1e-7)


# chunked (10 s) and xla (6 s) are slow; forward_grad runs in the fast tier.
@pytest.mark.parametrize("implementation, kw", [
    pytest.param("chunked", {}, marks=pytest.mark.slow), ("forward_grad", {"reduction": "sum"}),
    pytest.param("xla", {}, marks=pytest.mark.slow)])
def test_fused_linear_softcap_lost_hidden_row(implementation, kw):
  rng = np.random.default_rng(4)
  h = rng.normal(size=(6, 8)).astype(np.float32)
  h[2, 1] = np.nan
  w = (rng.normal(size=(8, 24)) * 0.5).astype(np.float32)
  y = rng.integers(0, 24, 6)
  y[2] = -100
  loss = lambda h, w: jnp.sum(jl.fused_linear_cross_entropy(
      h, w, jnp.asarray(y), ignore_index=-100, softcap=5.0, implementation=implementation,
      **kw))
  gh, gw = (np.asarray(g) for g in jax.grad(loss, (0, 1))(jnp.asarray(h), jnp.asarray(w)))
  keep = np.array([0, 1, 3, 4, 5])
  loss_kept = lambda h, w: jnp.sum(jl.fused_linear_cross_entropy(
      h, w, jnp.asarray(y[keep]), softcap=5.0, implementation=implementation, **kw))
  wh, ww = jax.grad(loss_kept, (0, 1))(jnp.asarray(h[keep]), jnp.asarray(w))
  np.testing.assert_array_equal(gh[2], 0)
  np.testing.assert_allclose(gh[keep], np.asarray(wh), rtol=2e-5, atol=1e-7)
  np.testing.assert_allclose(gw, np.asarray(ww), rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_distillation_lost_teacher_row_and_traced_temperature(bad):
  """A NaN or +inf teacher row: d/dT of the other rows' sum is theirs alone (the teacher's
  t / T met 0 * NaN in d/dT)."""
  s = jnp.asarray(np.random.default_rng(5).normal(size=(N, V)), jnp.float32)
  t = TEACHER.at[2, 3].set(bad)
  kept = np.array([0, 1, 3, 4])
  loss = lambda s, t, T: jl.distillation_loss(s, t, temperature=T)
  g = jax.grad(lambda T: jnp.sum(jnp.where(jnp.arange(N) == 2, 0, loss(s, t, T))))(2.0)
  want = jax.grad(lambda T: jnp.sum(loss(s[kept], t[kept], T)))(2.0)
  np.testing.assert_allclose(g, want, rtol=2e-5)


def test_poly_infinite_target_is_a_constant():
  x = jnp.asarray(np.random.default_rng(6).normal(size=(N, V)), jnp.float32)
  y = PROBS.at[1, 2].set(jnp.inf)
  kept = np.array([0, 2, 3, 4])
  loss = lambda x, y, e: jl.poly_loss_cross_entropy(x, y, epsilon=e)
  assert np.isnan(np.asarray(loss(x, y, 2.0))[1])
  total = lambda x, y, e: jnp.sum(jnp.where(jnp.arange(N) == 1, 0, loss(x, y, e)))
  want = jax.grad(lambda x, y, e: jnp.sum(loss(x, y, e)), (0, 1, 2))(x[kept], y[kept], 2.0)
  for grad in (jax.grad(total, (0, 1, 2)), jax.jit(jax.grad(total, (0, 1, 2)))):
    gx, gy, ge = grad(x, y, 2.0)
    np.testing.assert_array_equal(np.asarray(gx[1]), 0)
    np.testing.assert_array_equal(np.asarray(gy[1]), 0)
    np.testing.assert_allclose(np.asarray(gx[kept]), np.asarray(want[0]), rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(gy[kept]), np.asarray(want[1]), rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(ge, want[2], rtol=2e-5)


@pytest.mark.parametrize("name", ["softmax_cross_entropy", "poly_loss_cross_entropy"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_lost_target_row_summed_in_is_a_constant(name, bad):
  """A row whose targets hold a NaN or an infinity, summed in (its cotangent 1, not 0): its
  gradients in its logits and targets are 0, on the fast path and through a `where` of all True
  (the guarded path) alike, and the other rows' are those of the loss without it."""
  fn = getattr(jl, name)
  x = jnp.asarray(np.random.default_rng(8).normal(size=(N, V)), jnp.float32)
  y = PROBS.at[2, 5].set(bad)
  kept = np.array([0, 1, 3, 4])
  want = jax.grad(lambda x, y: jnp.sum(fn(x, y)), (0, 1))(x[kept], y[kept])
  for kw in ({}, {"where": jnp.ones((N, V), bool)}):
    total = lambda x, y, kw=kw: jnp.sum(fn(x, y, **kw))
    assert np.isnan(np.asarray(fn(x, y, **kw))[2])
    for grad in (jax.grad(total, (0, 1)), jax.jit(jax.grad(total, (0, 1)))):
      for g, w in zip(grad(x, y), want):
        g = np.asarray(g)
        np.testing.assert_array_equal(g[2], 0)
        np.testing.assert_allclose(g[kept], np.asarray(w), rtol=2e-6, atol=1e-7)


INF_ROW_CASES = {
    "int label_smoothing weights": lambda x, y, lab, h, w, m: (
        jl.softmax_cross_entropy_with_integer_labels(x, lab, label_smoothing=h, weights=w)),
    "int where": lambda x, y, lab, h, w, m: jl.softmax_cross_entropy_with_integer_labels(
        x, lab, label_smoothing=h, weights=w, where=m),
    "soft label_smoothing weights": lambda x, y, lab, h, w, m: jl.softmax_cross_entropy(
        x, y, label_smoothing=h, weights=w),
    "soft where": lambda x, y, lab, h, w, m: jl.softmax_cross_entropy(
        x, y * w, label_smoothing=h, where=m),
    "poly where": lambda x, y, lab, h, w, m: jl.poly_loss_cross_entropy(
        x, y * w, epsilon=1 + h, where=m),
}


_INF_ROW_PRODUCT = [
    (name, on_inf) for name in INF_ROW_CASES for on_inf in (False, True)
    if on_inf or "poly" not in name]  # (without label smoothing, the poly row is finite)


# ("int label_smoothing weights", False) (5 s) is slow; "int where" runs it with a mask fast.
@tiered("name, label_on_inf", _INF_ROW_PRODUCT,
        fast=[c for c in _INF_ROW_PRODUCT if c != ("int label_smoothing weights", False)])
def test_an_infinite_row_summed_away_is_a_constant(name, label_on_inf):
  """A row whose loss is +inf (a target or label above 0, or label smoothing, on a -inf
  logit), summed away with `where(isfinite(loss), loss, 0)`: every gradient is finite; the
  row's own are 0, and the other rows' and the shared label smoothing's and weights' equal
  those of the loss on the other rows alone. Before, the guarded paths' infinite partial in a
  target, weight or label smoothing met the zero cotangent as 0 * inf = NaN."""
  fn = INF_ROW_CASES[name]
  x = np.asarray(_logits()).copy()
  x[[1, 3]] = np.random.default_rng(9).normal(size=(2, V))
  x[2, 6] = -np.inf
  x = jnp.asarray(x)
  lab = INT_LABELS.at[2].set(6 if label_on_inf else 0)
  y = PROBS if label_on_inf else PROBS.at[2, 6].set(0.0)
  if label_on_inf:
    y = y.at[2, 6].set(0.3)
  m = jnp.ones((N, V), bool)
  kept = np.array([0, 1, 3, 4])
  assert np.asarray(fn(x, y, lab, 0.1, WEIGHTS, m))[2] == np.inf
  total = lambda x, y, h, w: jnp.sum((lambda v: jnp.where(jnp.isfinite(v), v, 0))(
      fn(x, y, lab, h, w, m)))
  alone = lambda x, y, h, w: jnp.sum(fn(x, y, lab[kept], h, w, m[kept]))
  want = jax.grad(alone, (0, 1, 2, 3))(x[kept], y[kept], 0.1, WEIGHTS)
  for grad in (jax.grad(total, (0, 1, 2, 3)), jax.jit(jax.grad(total, (0, 1, 2, 3)))):
    gx, gy, gh, gw = (np.asarray(g) for g in grad(x, y, 0.1, WEIGHTS))
    np.testing.assert_array_equal(gx[2], 0)
    np.testing.assert_array_equal(gy[2], 0)
    np.testing.assert_allclose(gx[kept], np.asarray(want[0]), rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(gy[kept], np.asarray(want[1]), rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(gh, np.asarray(want[2]), rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(gw, np.asarray(want[3]), rtol=2e-5, atol=1e-6)


# Slow tier: the fast tier runs no case of this test; it costs 12 s.
@pytest.mark.slow
def test_float64_references_lost_rows():
  """float64 runs the plain-jnp references: the same rule there, in reverse and forward mode,
  and the linear reference keeps its mixed second derivative (d2 / dh dw) exact."""
  with jax.enable_x64(True):
    x = _logits(jnp.float64)
    teacher = TEACHER.astype(jnp.float64)
    for loss in (lambda x: jl.softmax_cross_entropy_with_integer_labels(x, INT_LABELS),
                 *(lambda x, d=d: jl.distillation_loss(x, teacher, divergence=d)
                   for d in ("forward_kl", "reverse_kl", "js"))):
      kept = lambda x, loss=loss: jnp.sum(jnp.where(
          jnp.isin(jnp.arange(N), jnp.asarray(LOST)), 0, loss(x)))
      g = np.asarray(jax.grad(kept)(x))
      np.testing.assert_array_equal(g[list(LOST)], 0)
      assert np.isfinite(g).all()
      tangent = jnp.zeros_like(x).at[0].set(1.0)
      _, dv = jax.jvp(loss, (x,), (tangent,))
      np.testing.assert_array_equal(np.asarray(dv)[list(LOST)], 0)
    from jaxdiv.kernels.linear_cross_entropy import reference as lref
    rng = np.random.default_rng(7)
    h, w = jnp.asarray(rng.normal(size=(3, 4))), jnp.asarray(rng.normal(size=(4, 5)))
    f = lambda h, w: jnp.sum(jnp.tanh(lref.logits(h, w, vd=False)))
    plain = lambda h, w: jnp.sum(jnp.tanh(h @ w))
    mixed = lambda f: jax.jacfwd(jax.grad(f, 0), 1)(h, w)
    np.testing.assert_allclose(mixed(f), mixed(plain), rtol=1e-12, atol=1e-12)
