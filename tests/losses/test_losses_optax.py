"""The optax drop-ins: same values and gradients as optax.losses, and finite where optax is NaN."""

from __future__ import annotations

import dataclasses
import inspect
import re
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.special
from _helpers import tiered
from jax.test_util import check_grads

import jaxdiv.losses as jl

NINF = -np.inf


def _logits(rng, shape):
  return rng.normal(size=shape).astype(np.float32)


def _dirichlet(rng, shape):
  return rng.dirichlet(np.ones(shape[-1]), size=shape[:-1]).astype(np.float32)


def _log_probs(rng, shape):
  return np.log(_dirichlet(rng, shape))


@dataclasses.dataclass(frozen=True)
class Spec:
  name: str
  make: Callable  # rng, shape -> (first, second)
  kwargs: tuple = ()
  grad_argnums: tuple = (0, 1)
  reduces: bool = True  # has a class axis (and optax's axis/where)

  @property
  def ours(self):
    return getattr(jl, self.name)

  @property
  def theirs(self):
    return getattr(optax.losses, self.name)

  def __str__(self):
    return self.name + "".join(f"-{k}={v}" for k, v in self.kwargs)


SPECS = [
    Spec("softmax_cross_entropy", lambda r, s: (_logits(r, s), _dirichlet(r, s))),
    Spec("softmax_cross_entropy_with_integer_labels",
         lambda r, s: (_logits(r, s), r.integers(0, s[-1], size=s[:-1])), grad_argnums=(0,)),
    Spec("safe_softmax_cross_entropy", lambda r, s: (_logits(r, s), _dirichlet(r, s))),
    Spec("sigmoid_binary_cross_entropy",
         lambda r, s: (3 * _logits(r, s), r.uniform(size=s).astype(np.float32)), reduces=False),
    Spec("sigmoid_focal_loss",
         lambda r, s: (3 * _logits(r, s), r.uniform(size=s).astype(np.float32)), reduces=False),
    Spec("sigmoid_focal_loss",
         lambda r, s: (3 * _logits(r, s), r.integers(0, 2, size=s).astype(np.float32)),
         # Gradient in hard labels: optax's is wrong (see test_focal_label_gradient_at_hard_labels).
         kwargs=(("alpha", 0.25), ("gamma", 1.5)), grad_argnums=(0,), reduces=False),
    Spec("poly_loss_cross_entropy", lambda r, s: (_logits(r, s), _dirichlet(r, s))),
    Spec("poly_loss_cross_entropy", lambda r, s: (_logits(r, s), _dirichlet(r, s)),
         kwargs=(("epsilon", -1.0),)),
    Spec("kl_divergence", lambda r, s: (_log_probs(r, s), _dirichlet(r, s))),
    Spec("kl_divergence_with_log_targets", lambda r, s: (_log_probs(r, s), _log_probs(r, s))),
    Spec("generalized_kl_divergence",
         lambda r, s: (_logits(r, s), r.uniform(0.1, 2, size=s).astype(np.float32))),
    Spec("convex_kl_divergence",
         lambda r, s: (_logits(r, s), r.uniform(0.1, 2, size=s).astype(np.float32))),
]
IDS = [str(s) for s in SPECS]


def _spec(name, **kwargs):
  return next(s for s in SPECS if s.name == name and dict(s.kwargs) == kwargs)


def _id(value):
  if isinstance(value, tuple):  # a shape
    return "x".join(map(str, value))
  return str(value) if isinstance(value, Spec) else None


# Representatives for the per-spec checks of float64, jit/vmap and second order, whose path does
# not depend on the loss beyond what the fast tier runs for every loss (values and gradients
# against optax, masks and axes): a dense two-argument loss, the integer labels (gather), the
# focal loss with its options (sigmoid and powers), and a KL loss on log-probabilities. The other
# specs run in the slow tier. (Second order of the integer labels with every option:
# test_losses_classification.py::test_check_grads_with_options.)
REPRESENTATIVES = [
    _spec("softmax_cross_entropy_with_integer_labels"),
    _spec("sigmoid_focal_loss", alpha=0.25, gamma=1.5),
    _spec("kl_divergence_with_log_targets"),
]
WHERE_SPECS = [s for s in SPECS if "where" in inspect.signature(s.theirs).parameters]


@pytest.fixture(autouse=True)
def _quiet_deprecations():
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    yield


def _sum(fn, kwargs, argnums):
  # Jitted: one compile is cheaper than dispatching every op of a backward pass eagerly.
  return jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a, **kwargs)), argnums=argnums))


def _close_or_finite_where_nan(ours, theirs, rtol):
  """Equal to optax wherever optax is a number; finite wherever optax is NaN."""
  ours, theirs = np.asarray(ours), np.asarray(theirs)
  nan = np.isnan(theirs)
  assert not np.isnan(ours).any(), ours
  np.testing.assert_allclose(ours[~nan], theirs[~nan], rtol=rtol, atol=rtol)


def _assert_same(ours, theirs, spec, args, kwargs, rtol):
  _close_or_finite_where_nan(ours(*args, **kwargs), theirs(*args, **kwargs), rtol)
  g_ours = _sum(ours, kwargs, spec.grad_argnums)(*args)
  g_theirs = _sum(theirs, kwargs, spec.grad_argnums)(*args)
  for a, b in zip(g_ours, g_theirs):
    _close_or_finite_where_nan(a, b, 10 * rtol)


def test_signatures_match_optax():
  for spec in SPECS:
    ours = inspect.signature(spec.ours).parameters
    theirs = inspect.signature(spec.theirs).parameters
    for (n1, p1), (n2, p2) in zip(ours.items(), theirs.items()):
      assert (n1, p1.kind, p1.default) == (n2, p2.kind, p2.default), spec.name
    assert len(ours) >= len(theirs), spec.name
    extra = list(ours.values())[len(theirs):]
    assert all(p.kind == p.KEYWORD_ONLY for p in extra), spec.name


# Every spec against optax in the fast tier, each shape with some of them.
@tiered("spec,shape", [(sp, sh) for sh in [(7,), (4, 5), (2, 3, 6)] for sp in SPECS], ids=_id)
def test_values_and_gradients_equal_optax(spec, shape):
  args = spec.make(np.random.default_rng(0), shape)
  _assert_same(spec.ours, spec.theirs, spec, args, dict(spec.kwargs), rtol=2e-6)


@tiered("spec", SPECS, fast=REPRESENTATIVES, ids=IDS)
def test_float64_equal_optax(spec, x64):
  rng = np.random.default_rng(1)
  args = [a.astype(np.float64) if a.dtype == np.float32 else a
          for a in spec.make(rng, (4, 5))]
  _assert_same(spec.ours, spec.theirs, spec, args, dict(spec.kwargs), rtol=1e-12)


# softmax_cross_entropy (8 s) is slow; its `where` runs fast in test_per_example_where_equals_optax.
@tiered("spec", WHERE_SPECS, fast=[s for s in WHERE_SPECS if s != _spec("softmax_cross_entropy")],
        ids=[str(s) for s in WHERE_SPECS])
def test_where_and_axis_equal_optax(spec):
  rng = np.random.default_rng(2)
  args = spec.make(rng, (3, 4, 6))
  where = rng.uniform(size=(3, 4, 6)) < 0.7
  where[..., 0] = True  # optax is NaN on fully masked rows; compared separately below
  kwargs = dict(spec.kwargs)
  _assert_same(spec.ours, spec.theirs, spec, args, {**kwargs, "where": where}, rtol=2e-6)
  if spec.name != "softmax_cross_entropy_with_integer_labels":
    _assert_same(spec.ours, spec.theirs, spec, args, {**kwargs, "axis": (1, 2)}, rtol=2e-6)
    _assert_same(spec.ours, spec.theirs, spec, args, {**kwargs, "axis": None}, rtol=2e-6)
  else:
    labels = rng.integers(0, 24, size=(3,))
    for axis in [(1, 2), (2, 1)]:
      _assert_same(spec.ours, spec.theirs, spec, (args[0], labels), {"axis": axis},
                   rtol=2e-6)


@pytest.mark.parametrize("name", ["softmax_cross_entropy",
                                  "softmax_cross_entropy_with_integer_labels",
                                  "poly_loss_cross_entropy"])
def test_per_example_where_equals_optax(name):
  rng = np.random.default_rng(3)
  spec = next(s for s in SPECS if s.name == name)
  args = spec.make(rng, (5, 4))
  where = np.array([True, False, True, True, False])
  if name == "poly_loss_cross_entropy":
    # optax's poly loss does not expand a per-example mask; compare with the expanded one.
    want = spec.theirs(*args, where=np.broadcast_to(where[:, None], (5, 4)))
  else:
    want = spec.theirs(*args, where=where)
  np.testing.assert_allclose(spec.ours(*args, where=where), want, rtol=2e-6)
  np.testing.assert_array_equal(spec.ours(*args, where=where)[~where], 0)


# Float64 references written from the formulas, independent of both libraries.
def _ref_log_softmax(x):
  x = np.asarray(x, np.float64)
  m = np.max(x, -1, keepdims=True)
  return x - m - np.log(np.sum(np.exp(x - m), -1, keepdims=True))


def _xlogy(x, y):
  return np.where(x == 0, 0.0, x * np.log(np.where(x == 0, 1, y)))


REFERENCES = {
    "softmax_cross_entropy": lambda x, y: -np.sum(y * _ref_log_softmax(x), -1),
    "softmax_cross_entropy_with_integer_labels":
        lambda x, y: -np.take_along_axis(_ref_log_softmax(x), y[..., None], -1)[..., 0],
    "safe_softmax_cross_entropy": lambda x, y: -np.sum(y * _ref_log_softmax(x), -1),
    "sigmoid_binary_cross_entropy":
        lambda x, y: y * np.logaddexp(0, -x) + (1 - y) * np.logaddexp(0, x),
    "kl_divergence": lambda lq, p: np.sum(_xlogy(p, p) - p * lq, -1),
    "kl_divergence_with_log_targets":
        lambda lq, lp: np.sum(np.exp(lp) * (lp - lq), -1),
    "generalized_kl_divergence":
        lambda lq, p: np.sum(_xlogy(p, p) - p * lq - p + np.exp(lq), -1),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_against_float64_reference(name):
  spec = next(s for s in SPECS if s.name == name)
  args = spec.make(np.random.default_rng(4), (6, 7))
  want = REFERENCES[name](*(np.asarray(a, np.float64) if a.dtype.kind == "f" else a
                            for a in args))
  np.testing.assert_allclose(spec.ours(*args), want, rtol=2e-6, atol=1e-6)


def test_focal_against_float64_reference():
  rng = np.random.default_rng(5)
  x = 3 * _logits(rng, (20,))
  y = rng.uniform(size=20).astype(np.float32)
  x64, y64 = x.astype(np.float64), y.astype(np.float64)
  p = 1 / (1 + np.exp(-x64))
  ce = y64 * np.logaddexp(0, -x64) + (1 - y64) * np.logaddexp(0, x64)
  one_minus_pt = (1 - y64) * p + y64 * (1 - p)
  alpha_t = 0.25 * y64 + 0.75 * (1 - y64)
  want = alpha_t * one_minus_pt**1.5 * ce
  np.testing.assert_allclose(jl.sigmoid_focal_loss(x, y, alpha=0.25, gamma=1.5), want,
                             rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("gamma", [1.5, 0.0])
def test_focal_labels_outside_the_unit_interval_follow_the_formula(gamma):
  # Where 1 - p_t < 0 the power is NaN (NumPy's too, for gamma = 1.5); it was a silent -0.0.
  x = np.array([-3.0, -0.5, 0.0, 0.5, 1.0, 3.0, 12.0])
  for label in (2.0, -1.0, 1.5):
    y = np.full_like(x, label)
    p = 1 / (1 + np.exp(-x))
    ce = y * np.logaddexp(0, -x) + (1 - y) * np.logaddexp(0, x)
    with np.errstate(invalid="ignore"):
      want = ((1 - y) * p + y * (1 - p)) ** gamma * ce
    assert np.isnan(want).any() == (gamma > 0)
    got = jl.sigmoid_focal_loss(x.astype(np.float32), y.astype(np.float32), gamma=gamma)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
  # A zero alpha_t (alpha = 0.25, y = 1.5) times the NaN power is NaN, as in IEEE arithmetic
  # and optax; the gradient where the value is finite stays finite. A NaN label is NaN.
  y = np.full_like(x, 1.5, dtype=np.float32)
  f = lambda a: jl.sigmoid_focal_loss(a, y, alpha=0.25, gamma=gamma)
  value, grad = f(x.astype(np.float32)), jax.grad(lambda a: f(a).sum())(x.astype(np.float32))
  # (`want` is the loop's last, y = 1.5.)
  np.testing.assert_array_equal(np.isnan(value), np.isnan(want) if gamma > 0 else False)
  assert np.isfinite(np.asarray(grad)[np.isfinite(value)]).all()
  assert np.isnan(jl.sigmoid_focal_loss(x, np.full_like(x, np.nan), gamma=gamma)).all()


# Slow tier: the fast tier runs no case of this test; it costs 7 s.
@pytest.mark.slow
def test_focal_label_gradient_at_hard_labels(x64):
  # optax forms log(1 - p_t) with jax.scipy.special.logsumexp(b=[1 - y, y]), which drops the
  # entry whose weight b is 0 and with it that entry's gradient in y: at y in {0, 1} optax's
  # gradient in the labels is wrong. jaxdiv's matches central differences.
  x = np.array([0.7, -1.2, 2.0])
  y = np.array([1.0, 0.0, 1.0])

  def ref(x, y):
    p = 1 / (1 + np.exp(-x))
    ce = y * np.logaddexp(0, -x) + (1 - y) * np.logaddexp(0, x)
    return np.sum((0.25 * y + 0.75 * (1 - y)) * ((1 - y) * p + y * (1 - p)) ** 1.5 * ce)

  h = 1e-6
  want = [(ref(x, y + h * e) - ref(x, y - h * e)) / (2 * h) for e in np.eye(3)]
  grad = lambda f: jax.grad(lambda b: f(x, b, alpha=0.25, gamma=1.5).sum())(y)
  np.testing.assert_allclose(grad(jl.sigmoid_focal_loss), want, rtol=1e-6)
  assert not np.allclose(grad(optax.losses.sigmoid_focal_loss), want, rtol=1e-2)


def test_poly_against_float64_reference():
  rng = np.random.default_rng(6)
  x, y = _logits(rng, (5, 4)), _dirichlet(rng, (5, 4))
  ls = _ref_log_softmax(x)
  want = -np.sum(y * ls, -1) + 2.0 * np.sum(y * (1 - np.exp(ls)), -1)
  np.testing.assert_allclose(jl.poly_loss_cross_entropy(x, y), want, rtol=2e-6)


# Where optax is NaN: jaxdiv is finite in value and gradient, with the right value.
def _finite_value_and_grad(fn, args, argnums=0, **kwargs):
  value = fn(*args, **kwargs)
  grads = _sum(fn, kwargs, argnums)(*args)
  grads = grads if isinstance(grads, tuple) else (grads,)
  assert not np.any(np.isnan(value)), value
  for g in grads:
    assert np.all(np.isfinite(g)), g
  return value, grads


# Slow tier: the fast tier runs no case of this test; it costs 6 s.
@pytest.mark.slow
def test_softmax_cross_entropy_minus_inf_logit_with_zero_target():
  x = jnp.array([[0.0, 1.0, NINF]])
  y = jnp.array([[1.0, 0.0, 0.0]])
  assert np.isnan(optax.losses.softmax_cross_entropy(x, y)).all()
  value, (gx, gy) = _finite_value_and_grad(jl.softmax_cross_entropy, (x, y), argnums=(0, 1))
  want = jl.softmax_cross_entropy(x[:, :2], y[:, :2])
  np.testing.assert_allclose(value, want, rtol=1e-6)
  np.testing.assert_allclose(gx[:, :2], jax.grad(
      lambda a: jl.softmax_cross_entropy(a, y[:, :2]).sum())(x[:, :2]), rtol=1e-6)
  np.testing.assert_array_equal(gx[:, 2], 0)
  # Same through poly loss, where optax is NaN as well.
  assert np.isnan(optax.losses.poly_loss_cross_entropy(x, y)).all()
  value, _ = _finite_value_and_grad(jl.poly_loss_cross_entropy, (x, y))
  np.testing.assert_allclose(value, jl.poly_loss_cross_entropy(x[:, :2], y[:, :2]), rtol=1e-6)


# Slow tier: the fast tier runs no case of this test; it costs 7 s.
@pytest.mark.slow
def test_softmax_cross_entropy_rows_that_leave_the_fast_line():
  # The default path evaluates optax's line and takes the guarded terms only on rows where it
  # is not finite; each row's value, gradient in both arguments, forward-mode derivative and
  # Hessian-vector product must be those of the float64 closed forms, whatever the other rows.
  rng = np.random.default_rng(3)
  x = rng.standard_normal((6, 5)).astype(np.float32)
  y = rng.dirichlet(np.ones(5), 6).astype(np.float32)
  x[1, [0, 3]] = NINF  # -inf logits where the target is 0
  y[1] = [0.0, 0.3, 0.3, 0.0, 0.4]
  x[2], y[2] = NINF, 0.0  # no support, no target: 0
  x[3, 2] = np.nan  # NaN row
  x[4, 1] = np.inf  # +inf logit: NaN row
  y[5] = [0.0, 0.0, 1.0, 0.0, 0.0]  # one-hot
  finite = [0, 1, 2, 5]
  xf, yf = np.float64(x), np.float64(y)
  with np.errstate(invalid="ignore", divide="ignore"):
    m = np.max(np.where(np.isfinite(xf), xf, -np.inf), -1, keepdims=True)
    lse = m + np.log(np.sum(np.exp(xf - m), -1, keepdims=True))
    log_p = xf - lse
  log_p[2] = NINF
  want = -np.sum(np.where(yf == 0, 0.0, yf * log_p), -1)
  want_gx = np.exp(log_p) * yf.sum(-1, keepdims=True) - yf
  want_gy = -np.where((yf == 0) & np.isinf(log_p), 0.0, log_p)

  value = np.asarray(jl.softmax_cross_entropy(x, y))
  np.testing.assert_allclose(value[finite], want[finite], rtol=2e-6, atol=1e-7)
  assert np.isnan(value[[3, 4]]).all()
  gx, gy = jax.grad(lambda a, b: jnp.sum(jl.softmax_cross_entropy(a, b)[np.array(finite)]),
                    argnums=(0, 1))(x, y)
  np.testing.assert_allclose(np.asarray(gx)[finite], want_gx[finite], rtol=2e-6, atol=1e-7)
  np.testing.assert_allclose(np.asarray(gy)[finite], want_gy[finite], rtol=2e-6, atol=1e-7)
  # Forward mode agrees with reverse mode; a Hessian-vector product is finite on these rows.
  tx = rng.standard_normal(x.shape).astype(np.float32)
  _, jvp = jax.jvp(lambda a: jl.softmax_cross_entropy(a, y), (x,), (tx,))
  np.testing.assert_allclose(np.asarray(jvp)[finite], np.sum(want_gx * tx, -1)[finite],
                             rtol=1e-5, atol=1e-6)
  rows = np.array(finite)
  hvp = jax.jvp(jax.grad(lambda a: jnp.sum(jl.softmax_cross_entropy(a, y)[rows])), (x,), (tx,))[1]
  p = np.exp(log_p)
  tot = yf.sum(-1, keepdims=True)
  want_hvp = tot * p * (tx - np.sum(np.where(p > 0, p * tx, 0.0), -1, keepdims=True))
  np.testing.assert_allclose(np.asarray(hvp)[rows], want_hvp[rows], rtol=1e-5, atol=1e-6)
  # A bad row leaves the others' bits as they were.
  np.testing.assert_array_equal(value[[0, 5]], np.asarray(jl.softmax_cross_entropy(x[[0, 5]],
                                                                                   y[[0, 5]])))
  # Poly loss takes the same path and probabilities: CE + eps sum(y (1 - p)).
  poly = np.asarray(jl.poly_loss_cross_entropy(x, y, epsilon=2.0))
  want_poly = want + 2.0 * np.sum(yf * (1 - p), -1)
  np.testing.assert_allclose(poly[rows], want_poly[rows], rtol=2e-6, atol=1e-6)
  assert np.isnan(poly[[3, 4]]).all()
  g = jax.grad(lambda a: jnp.sum(jl.poly_loss_cross_entropy(a, y, epsilon=2.0)[rows]))(x)
  want_g = want_gx - 2.0 * p * (yf - np.sum(yf * p, -1, keepdims=True))
  np.testing.assert_allclose(np.asarray(g)[rows], want_g[rows], rtol=1e-5, atol=1e-6)


def test_integer_labels_all_minus_inf_row():
  x = jnp.array([[NINF, NINF, NINF], [0.0, 1.0, 2.0]])
  labels = jnp.array([0, 2])
  assert np.isnan(optax.losses.softmax_cross_entropy_with_integer_labels(x, labels)[0])
  value = jl.softmax_cross_entropy_with_integer_labels(x, labels)
  assert value[0] == np.inf
  g = jax.grad(lambda a: jl.softmax_cross_entropy_with_integer_labels(a, labels)[0])(x)
  np.testing.assert_array_equal(g, 0)


@pytest.mark.parametrize("name", ["softmax_cross_entropy",
                                  "softmax_cross_entropy_with_integer_labels",
                                  "poly_loss_cross_entropy", "kl_divergence",
                                  "kl_divergence_with_log_targets",
                                  "generalized_kl_divergence"])
def test_fully_masked_rows_are_zero_with_zero_gradient(name):
  spec = next(s for s in SPECS if s.name == name)
  x, y = spec.make(np.random.default_rng(7), (3, 4))
  x = x.copy()
  x[1, :] = NINF if "cross_entropy" in name else x[1, :]
  where = np.ones((3, 4), bool)
  where[1] = False
  value, grads = _finite_value_and_grad(spec.ours, (x, y), argnums=spec.grad_argnums,
                                        where=where)
  assert value[1] == 0
  for g in grads:
    np.testing.assert_array_equal(g[1], 0)


@pytest.mark.parametrize("name", ["sigmoid_binary_cross_entropy", "sigmoid_focal_loss"])
def test_sigmoid_losses_at_infinite_logits(name):
  x = jnp.array([np.inf, NINF, np.inf, NINF])
  y = jnp.array([1.0, 0.0, 0.0, 1.0])
  assert np.isnan(getattr(optax.losses, name)(x, y)[:2]).all()
  value = getattr(jl, name)(x, y)
  np.testing.assert_array_equal(value, [0, 0, np.inf, np.inf])
  g = jax.grad(lambda a: getattr(jl, name)(a, y[:2]).sum())(x[:2])
  np.testing.assert_array_equal(g, 0)


# Slow tier: the fast tier runs no case of this test; it costs 20 s.
@pytest.mark.slow
def test_sigmoid_cross_entropy_against_float64():
  # float32 logits from 0 to beyond exp's range, hard labels and soft ones up to 1 - 2**-24;
  # the float64 closed forms: the value y log1p(e^-x) + (1 - y) log1p(e^x), d/dx = sigmoid(x) -
  # y, d/dy = -x, d2/dx2 = sigmoid(x) sigmoid(-x), d2/dx dy = -1.
  base = np.array([0.0, 1e-8, 1e-3, 0.5, 2.0, 9.0, 17.0, 20.0, 40.0, 88.0, 104.0, 1e4])
  x = np.concatenate([base, -base[1:]]).astype(np.float32)
  labels = np.float32([0.0, 0.3, 0.5, 0.95, 0.999, 1 - 2**-24, 1.0])
  xs, ys = (a.ravel() for a in np.meshgrid(x, labels))
  x64, y64 = xs.astype(np.float64), ys.astype(np.float64)
  s64, sn64 = scipy.special.expit(x64), scipy.special.expit(-x64)
  ours, theirs = jl.sigmoid_binary_cross_entropy, optax.losses.sigmoid_binary_cross_entropy
  # The value: max(x, 0) - y x cancelled for labels near 1 (y = 1 - 2**-24 at x = 17: 85% off).
  want = y64 * np.logaddexp(0, -x64) + (1 - y64) * np.logaddexp(0, x64)
  err, optax_err = (np.abs(f(xs, ys) - want) / np.maximum(want, 1e-300) for f in (ours, theirs))
  assert err.max() <= max(optax_err.max(), 1.2e-7), (err.max(), optax_err.max())
  f = lambda a, b: ours(a, b).sum()
  (gx, gy), (ox, _) = (jax.grad(g, (0, 1))(xs, ys) for g in
                       (f, lambda a, b: theirs(a, b).sum()))
  want = np.where(xs >= 0, (1 - y64) - sn64, s64 - y64)  # no cancellation of sigmoid near 1
  err, optax_err = np.abs(gx - want), np.abs(ox - want)
  np.testing.assert_array_less(err, 1e-7 + 2e-7 * np.abs(want))
  assert err.max() <= optax_err.max() and np.median(err) <= np.median(optax_err)
  np.testing.assert_array_equal(gy, -xs)
  # Near the gradient's zero (y close to sigmoid(x), |x| small), where the sigmoid near 1/2 is
  # stored to 3e-8: no less accurate than optax, median and largest error.
  rng = np.random.default_rng(0)
  x0 = (0.05 * rng.standard_normal(20000)).astype(np.float32)
  for y0 in (np.full_like(x0, 0.5), (scipy.special.expit(x0) + 1e-3 * rng.standard_normal(
      x0.size)).astype(np.float32)):
    want = scipy.special.expit(x0.astype(np.float64)) - y0
    err, optax_err = (np.abs(jax.grad(lambda a, f=f, y0=y0: f(a, y0).sum())(x0) - want)
                      for f in (ours, theirs))
    assert np.median(err) <= np.median(optax_err) and err.max() <= optax_err.max()
  hxx = jax.vmap(jax.hessian(ours))(xs, ys)
  np.testing.assert_allclose(hxx, s64 * sn64, rtol=1e-5, atol=1e-30)
  hxy = jax.vmap(jax.grad(jax.grad(ours), 1))(xs, ys)
  np.testing.assert_allclose(hxy, -1.0, rtol=1e-6)
  # Labels outside [0, 1] follow the formula: no y x to overflow at the largest logits.
  big, beyond = np.float32([3e38, -3e38]), np.float32([1.5, -0.5])
  np.testing.assert_allclose(ours(big, beyond), theirs(big, beyond), rtol=1e-6)
  # At an infinite logit: the label's derivative is 0 where the value is (0 * inf = 0) and
  # infinite where the value is; the mixed second derivative is 0 in both orders.
  inf = np.float32([np.inf, NINF, np.inf, NINF])
  y = np.float32([1.0, 0.0, 0.3, 0.3])
  np.testing.assert_array_equal(ours(inf, y), [0, 0, np.inf, np.inf])
  np.testing.assert_array_equal(jax.grad(f, 1)(inf, y), [0, 0, NINF, np.inf])
  for z, label in ((np.inf, 1.0), (NINF, 0.0)):
    h = jax.hessian(ours, (0, 1))(np.float32(z), np.float32(label))
    np.testing.assert_array_equal(np.asarray(h), 0)


def test_focal_gamma_zero_is_cross_entropy():
  x = jnp.array([100.0, -100.0, 30.0, 0.5])
  y = jnp.array([1.0, 0.0, 1.0, 0.3])
  np.testing.assert_allclose(jl.sigmoid_focal_loss(x, y, gamma=0.0),
                             jl.sigmoid_binary_cross_entropy(x, y), rtol=1e-6)


def test_kl_zero_targets():
  log_q = jnp.log(jnp.array([0.5, 0.5, 0.0]))
  p = jnp.array([0.5, 0.5, 0.0])
  assert np.isnan(optax.losses.kl_divergence(log_q, p))
  value, _ = _finite_value_and_grad(jl.kl_divergence, (log_q, p))
  assert value == 0
  # Gradient in the targets at a zero target: optax NaN, jaxdiv finite.
  log_q = jnp.log(jnp.array([0.5, 0.3, 0.2]))
  assert np.isnan(jax.grad(lambda t: optax.losses.kl_divergence(log_q, t))(p)).any()
  for fn in (jl.kl_divergence, jl.generalized_kl_divergence):
    _finite_value_and_grad(fn, (log_q, p), argnums=(0, 1))
  log_p = jnp.log(p)
  assert np.isnan(optax.losses.kl_divergence_with_log_targets(log_q, log_p))
  value, _ = _finite_value_and_grad(jl.kl_divergence_with_log_targets, (log_q, log_p),
                                    argnums=(0, 1))
  np.testing.assert_allclose(value, 0.5 * np.log(0.5 / 0.5) + 0.5 * np.log(0.5 / 0.3),
                             rtol=1e-6)


# Eager kl_divergence (6 s) is slow; its jit case runs the same rows in the fast tier.
@tiered("jit,name", [(j, n) for j in (False, True)
                     for n in ("kl_divergence", "generalized_kl_divergence")],
        fast=[(False, "generalized_kl_divergence"), (True, "kl_divergence"),
              (True, "generalized_kl_divergence")])
def test_kl_losses_edge_rows_against_float64(name, jit):
  """Rows of every kind side by side, float32, against float64 closed forms: zero targets
  beside finite and -inf log-predictions, targets near float32's smallest normal number, a +inf
  KL (a positive target on a -inf log-prediction), a negative target and a NaN (NaN rows).
  The unguarded one-pass sum (`_kl_probs_fast`) takes the finite rows, the guarded terms the
  others; each row's value and gradients are the closed form's, whatever its neighbours."""
  rng = np.random.default_rng(5)
  p = rng.dirichlet(np.ones(6), size=7)
  log_q = np.log(rng.dirichlet(np.ones(6), size=7))
  p[0, :2], p[0, 2] = 0.0, p[0, 2] + p[0, :2].sum()  # zero targets, finite log q
  p[1, :2], p[1, 2] = 0.0, p[1, 2] + p[1, :2].sum()  # zero targets on -inf log q
  log_q[1, :2] = NINF
  p[2, :3] = [1e-37, 3e-38, 1e-30]  # near float32's tiny (1.2e-38)
  log_q[3, 4] = NINF  # a positive target there: KL = +inf
  p[4, 1] = -0.1  # a negative target: NaN
  p[5, 3] = np.nan
  fn = getattr(jl, name)
  generalized = name == "generalized_kl_divergence"
  p32, lq32 = p.astype(np.float32), log_q.astype(np.float32)
  p64, lq64 = p32.astype(np.float64), lq32.astype(np.float64)  # the same numbers
  with np.errstate(all="ignore"):
    terms = np.where(p64 == 0, 0.0, p64 * (np.log(p64) - lq64))
    want = terms.sum(-1) + (np.sum(np.exp(lq64) - p64, -1) if generalized else 0)
    d_lq = np.exp(lq64) - p64 if generalized else -p64
    d_p = np.where(p64 > 0, np.log(p64) - lq64 + 1, 0.0) - generalized
  want[4] = np.nan  # (the log of a negative target)
  f = jax.jit(fn) if jit else fn
  got = np.asarray(f(lq32, p32), np.float64)
  np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
  np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
  finite = np.array([0, 1, 2, 6])  # (rows 3-5 are +inf or NaN)
  grads = jax.grad(lambda a, b: jnp.sum(fn(a, b)[finite]), (0, 1))
  g_lq, g_p = (np.asarray(g, np.float64) for g in (jax.jit(grads) if jit else grads)(lq32, p32))
  for got, want in ((g_lq, d_lq), (g_p, d_p)):
    np.testing.assert_allclose(got[finite], want[finite], rtol=2e-6, atol=1e-7)
  # The rows left out of the sum: 0, every entry. A partial that is not finite (d/dp at the
  # +inf, the negative and the NaN target, d/dlog q at the NaN one) is taken as 0: the zero
  # cotangent met it as 0 * inf = NaN (as in autodiff of the optax line), which reached
  # anything upstream that every row shares.
  for g in (g_lq, g_p):
    np.testing.assert_array_equal(g[3:6], 0)
  # Those rows differentiated themselves: the closed form wherever it is finite (optax's), 0
  # where it is not.
  with np.errstate(all="ignore"):
    d_p_all = np.where(p64 > 0, np.log(p64) - lq64 + 1, np.where(p64 == 0, 0.0, np.nan))
    d_p_all = d_p_all - generalized
  grads = jax.grad(lambda a, b: jnp.sum(fn(a, b)), (0, 1))
  g_lq, g_p = (np.asarray(g, np.float64) for g in (jax.jit(grads) if jit else grads)(lq32, p32))
  for got, want in ((g_lq, d_lq), (g_p, d_p_all)):
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, np.where(np.isfinite(want), want, 0), rtol=2e-6, atol=1e-7)
  # The Hessian in the targets on those rows: diagonal, 1 / p (0 at a zero target).
  h = np.asarray(jax.jacfwd(jax.grad(lambda b: jnp.sum(fn(lq32, b)[finite])))(p32), np.float64)
  h = h[finite].reshape(len(finite) * 6, 7 * 6)[:, (finite[:, None] * 6 + np.arange(6)).ravel()]
  with np.errstate(divide="ignore"):
    want_h = np.diag(np.where(p64[finite] > 0, 1 / p64[finite], 0).ravel())
  np.testing.assert_allclose(h, want_h, rtol=2e-6)
  # Over every row: the NaN and the negative target's second derivatives are 0, as the guarded
  # terms give (helper-55: NaN and 1 / p where the coefficients read the log there).
  h = np.asarray(jax.jacfwd(jax.grad(lambda b: jnp.sum(fn(lq32, b))))(p32))
  np.testing.assert_array_equal(h[4, 1], 0)
  np.testing.assert_array_equal(h[5, 3], 0)


@tiered("spec", SPECS, fast=[_spec("softmax_cross_entropy"), *REPRESENTATIVES[1:]], ids=IDS)
def test_check_grads(spec, x64):
  args = [a.astype(np.float64) if a.dtype == np.float32 else a
          for a in spec.make(np.random.default_rng(8), (2, 3))]
  kwargs = dict(spec.kwargs)
  # Jitted: eager second-order checks dispatch thousands of small ops.
  if spec.grad_argnums == (0,):
    check_grads(jax.jit(lambda a: spec.ours(a, args[1], **kwargs)), (args[0],), order=2,
                modes=["fwd", "rev"])
  else:
    check_grads(jax.jit(lambda a, b: spec.ours(a, b, **kwargs)), tuple(args), order=2,
                modes=["fwd", "rev"])


@tiered("spec", SPECS, fast=REPRESENTATIVES, ids=IDS)
def test_jit_and_vmap(spec):
  args = spec.make(np.random.default_rng(9), (4, 5))
  fn = lambda a, b: spec.ours(a, b, **dict(spec.kwargs))
  eager = fn(*args)
  np.testing.assert_allclose(jax.jit(fn)(*args), eager, rtol=1e-6)
  np.testing.assert_allclose(jax.vmap(fn)(*args), eager, rtol=1e-6)


# Every spec in one of the two half-precision dtypes in the fast tier.
@tiered("spec,dtype", [(sp, d) for d in [jnp.bfloat16, jnp.float16] for sp in SPECS], ids=_id)
def test_low_precision(spec, dtype):
  args = spec.make(np.random.default_rng(10), (4, 5))
  low = [jnp.asarray(a, dtype) if a.dtype == np.float32 else a for a in args]
  high = [jnp.asarray(a, jnp.float32) if a.dtype == np.float32 else a for a in low]
  kwargs = dict(spec.kwargs)
  out = spec.ours(*low, **kwargs)
  assert out.dtype == dtype
  np.testing.assert_allclose(np.asarray(out, np.float32), spec.ours(*high, **kwargs),
                             rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_integer_logits_are_rejected(spec):
  args = spec.make(np.random.default_rng(11), (2, 3))
  with pytest.raises(TypeError, match="must be a floating-point"):
    spec.ours(np.ones((2, 3), np.int32), args[1], **dict(spec.kwargs))


def test_bad_shapes_and_options():
  x = np.zeros((2, 3), np.float32)
  with pytest.raises(ValueError, match="cannot be broadcast"):
    jl.softmax_cross_entropy(x, np.zeros((2, 4), np.float32))
  with pytest.raises(ValueError, match="batch shape"):
    jl.softmax_cross_entropy_with_integer_labels(x, np.zeros((3,), np.int32))
  with pytest.raises(TypeError, match="integer class indices"):
    jl.softmax_cross_entropy_with_integer_labels(x, np.zeros((2,), np.float32))
  with pytest.raises(ValueError, match="out of range"):
    jl.softmax_cross_entropy(x, x, axis=2)
  with pytest.raises(ValueError, match="cannot be broadcast"):
    jl.kl_divergence(x, np.zeros((3, 3), np.float32))
  with pytest.raises(ValueError, match="where"):
    jl.kl_divergence(x, x, where=np.ones((4,), bool))
  with pytest.raises(ValueError, match="gamma"):
    jl.sigmoid_focal_loss(x, x, gamma=-1.0)
  with pytest.raises(ValueError, match="alpha"):
    jl.sigmoid_focal_loss(x, x, alpha=2.0)


@pytest.mark.parametrize("fn, shapes, axis", [
    (jl.softmax_cross_entropy, ((3, 1), (3, 4)), -1),  # one logit a row against 4 classes
    (jl.safe_softmax_cross_entropy, ((3, 1), (3, 4)), None),
    (jl.poly_loss_cross_entropy, ((3, 1), (3, 4)), -1),
    (jl.softmax_cross_entropy, ((1, 4), (3, 4)), 0),  # the class axis is the first
    (jl.softmax_cross_entropy, ((4,), (3, 4)), None),  # every axis; the logits lack one
    (jl.poly_loss_cross_entropy, ((1, 1, 4), (2, 1, 4)), (0, 2)),
])
def test_logits_broadcast_along_a_class_axis_are_refused(fn, shapes, axis):
  # optax takes the softmax over the logits' own entries (a size-1 axis gives 0), a broadcast
  # first would take it over copies (log C): the two disagree, so neither is computed.
  logits, labels = (np.full(s, 0.25, np.float32) for s in shapes)
  kwargs = {} if fn is jl.safe_softmax_cross_entropy else {"axis": axis}
  with pytest.raises(ValueError, match=r"`logits` would be broadcast along class axis .*"
                     + re.escape(f"{shapes[0]} and {shapes[1]}")):
    fn(logits, labels, **kwargs)


def test_labels_broadcast_along_the_class_axis_match_optax():
  # The other way round is optax's too: its log-softmax has every class, the labels broadcast.
  logits = np.random.default_rng(3).normal(size=(3, 4)).astype(np.float32)
  labels = np.full((3, 1), 0.25, np.float32)
  np.testing.assert_allclose(jl.softmax_cross_entropy(logits, labels),
                             optax.losses.softmax_cross_entropy(logits, labels), rtol=1e-6)
  # Logits broadcast to no classes are empty rows, 0 as in optax, not refused.
  empty = np.zeros((3, 0), np.float32)
  np.testing.assert_array_equal(jl.softmax_cross_entropy(logits[:, :1], empty),
                                optax.losses.softmax_cross_entropy(logits[:, :1], empty))


def test_convex_kl_divergence_warns_like_optax():
  x = np.zeros((2, 3), np.float32)
  with pytest.warns(DeprecationWarning, match="generalized_kl_divergence"):
    jl.convex_kl_divergence(x, np.ones((2, 3), np.float32))


# Slow tier: the fast tier runs no case of this test; it costs 6 s.
@pytest.mark.slow
def test_kl_losses_reverse_over_reverse_hessian_finite_at_zero_targets(x64):
  """A zero target (a -inf log-target) with a mask (the guarded terms): the Hessian by reverse
  over reverse mode is finite (a select on the product instead of the log-ratio gave 0 * inf
  there)."""
  log_q = jnp.log(jnp.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]]))
  p = jnp.array([[0.5, 0.5, 0.0], [0.1, 0.3, 0.6]])
  where = jnp.array([[True, True, True], [True, False, True]])
  for fn, t in ((jl.kl_divergence_with_log_targets, jnp.log(p)), (jl.kl_divergence, p)):
    for mask in (where, None):
      total = lambda t, fn=fn, mask=mask: jnp.sum(fn(log_q, t, where=mask))
      assert np.isfinite(jax.jacrev(jax.grad(total))(t)).all(), (fn.__name__, mask)
      assert np.isfinite(jax.jacrev(jax.grad(lambda lq, fn=fn, mask=mask, t=t: jnp.sum(
          fn(lq, t, where=mask))))(log_q)).all(), (fn.__name__, mask)


# softmax_cross_entropy (7 s) is slow; the other two run the row-block fallback in the fast tier.
@tiered("name", ["kl_divergence_with_log_targets", "softmax_cross_entropy",
                 "poly_loss_cross_entropy"],
        fast=["kl_divergence_with_log_targets", "poly_loss_cross_entropy"])
def test_large_batch_fallback_over_row_blocks_equals_the_guarded_path(x64, name):
  """More than 2**19 entries: the losses' guarded fallback runs block by block
  (`_fallback.row_blocks`, whose `cond` branch XLA would otherwise hold whole on every call).
  300 rows of 4096, rows needing the guard in the first and the overlapping last block;
  values and gradients equal the guarded path's (a `where` of all True forces it)."""
  rng = np.random.default_rng(11)
  a = 2 * rng.normal(size=(300, 4096))
  b = 2 * rng.normal(size=(300, 4096))
  a = a - np.logaddexp.reduce(a, axis=-1, keepdims=True)
  b = b - np.logaddexp.reduce(b, axis=-1, keepdims=True)
  if name == "kl_divergence_with_log_targets":
    b[[3, 297], :5] = -np.inf  # log-targets of 0 where the prediction is finite or not
    a[[3], :2] = -np.inf
    f = lambda x, y, **k: jl.kl_divergence_with_log_targets(x, y, **k)
  elif name == "poly_loss_cross_entropy":  # a per-example epsilon: cut into the same blocks
    b = np.exp(b)
    b[[3, 297], :5] = 0.0
    a[[3, 297], :5] = -np.inf
    eps = np.linspace(-1.0, 3.0, 300)
    f = lambda x, y, **k: jl.poly_loss_cross_entropy(x, y, epsilon=eps, **k)
  else:
    b = np.exp(b)
    b[[3, 297], :5] = 0.0  # zero targets on -inf logits
    a[[3, 297], :5] = -np.inf
    f = lambda x, y, **k: jl.softmax_cross_entropy(x, y, **k)
  ours = lambda x, y: f(x, y)
  guarded = lambda x, y: f(x, y, where=jnp.ones(a.shape, bool))
  np.testing.assert_allclose(jax.jit(ours)(a, b), guarded(a, b), rtol=1e-13, atol=1e-14)
  for got, want in zip(jax.jit(jax.grad(lambda x, y: jnp.sum(ours(x, y)), (0, 1)))(a, b),
                       jax.grad(lambda x, y: jnp.sum(guarded(x, y)), (0, 1))(a, b)):
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)


# Slow tier: the fast tier runs no case of this test; it costs 6 s.
@pytest.mark.slow
def test_poly_per_example_epsilon_against_float64_closed_form():
  """A per-example epsilon (the batch shape) takes the fast path as a row parameter: values and
  the derivatives in the logits, the targets and epsilon equal the closed forms in float64,
  -inf logits with zero targets included; eagerly, under jit and under vmap."""
  rng = np.random.default_rng(12)
  x, y = _logits(rng, (6, 7)), _dirichlet(rng, (6, 7))
  x[1, [0, 3]] = -np.inf
  y[1] = 0.0
  y[1, [1, 2, 4]] = [0.2, 0.5, 0.3]
  eps = rng.uniform(-1.0, 3.0, 6)
  ls = _ref_log_softmax(x)
  p = np.exp(ls)
  ce = -np.sum(np.where(y > 0, y * ls, 0.0), -1)
  term = np.sum(y * (1 - p), -1)
  want = ce + eps * term
  s = np.sum(y * p, -1, keepdims=True)
  want_gx = p * y.sum(-1, keepdims=True) - y - eps[:, None] * p * (y - s)
  want_gy = np.where(y > 0, -ls, np.where(np.isfinite(ls), -ls, 0.0)) + eps[:, None] * (1 - p)
  f = lambda x, y, e: jl.poly_loss_cross_entropy(x, y, epsilon=e)
  grad = jax.grad(lambda x, y, e: jnp.sum(f(x, y, e)), (0, 1, 2))
  as32 = lambda *a: [jnp.asarray(v, jnp.float32) for v in a]
  for g, run in ((f, grad), (jax.jit(f), jax.jit(grad))):
    np.testing.assert_allclose(g(*as32(x, y, eps)), want, rtol=2e-6, atol=1e-6)
    for got, w in zip(run(*as32(x, y, eps)), (want_gx, want_gy, term)):
      np.testing.assert_allclose(np.asarray(got), w, rtol=2e-5, atol=2e-6)
  mapped = jax.vmap(f, in_axes=(0, 0, 0))(*as32(x, y, eps))
  np.testing.assert_allclose(mapped, want, rtol=2e-6, atol=1e-6)


# Slow tier: the fast tier runs no case of this test; it costs 24 s.
@pytest.mark.slow
def test_poly_second_derivatives_with_epsilon_equal_plain_jnp(x64):
  """Second derivatives through epsilon, a row parameter of the fast path (scalar and per
  example): the Hessian in (logits, targets, epsilon) and forward-over-reverse, equal to those
  of the plain jnp expression (float64)."""
  rng = np.random.default_rng(13)
  x = jnp.asarray(_logits(rng, (3, 4)), jnp.float64)
  y = jnp.asarray(_dirichlet(rng, (3, 4)), jnp.float64)

  def plain(x, y, e):
    ls = jax.nn.log_softmax(x)
    return jnp.sum(-jnp.sum(y * ls, -1) + e * jnp.sum(y * (1 - jnp.exp(ls)), -1))

  ours = lambda x, y, e: jnp.sum(jl.poly_loss_cross_entropy(x, y, epsilon=e))
  for e in (jnp.float64(2.0), jnp.asarray(rng.uniform(-1, 3, 3))):
    for argnums in (2, (0, 2), (0, 1, 2)):
      got = jax.jit(jax.hessian(ours, argnums))(x, y, e)
      want = jax.hessian(plain, argnums)(x, y, e)
      for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-13)
    fwd = jax.jacfwd(jax.grad(ours, 2), 0)(x, y, e)
    np.testing.assert_allclose(fwd, jax.jacfwd(jax.grad(plain, 2), 0)(x, y, e),
                               rtol=1e-12, atol=1e-13)


def test_poly_fallback_is_held_over_row_blocks():
  """The poly loss's guarded fallback (its `cond` branch, whose buffers XLA holds whether it
  runs or not) runs over row blocks with its epsilon, a row parameter, cut alike: XLA's
  temporaries stay under an eighth of the batch (a whole-batch branch held 96 MiB at
  2048x4096, three times the batch), with a scalar or a per-example epsilon."""
  n, v = 2048, 4096
  x = jnp.zeros((n, v), jnp.float32)
  for e in (jnp.float32(2.0), jnp.ones((n,), jnp.float32)):
    f = lambda a, b, e: jl.poly_loss_cross_entropy(a, b, epsilon=e)
    mem = jax.jit(f).lower(x, x, e).compile().memory_analysis()
    assert mem.temp_size_in_bytes < n * v * 4 / 4, mem


def test_softmax_cross_entropy_nan_row_left_out_has_finite_gradients():
  """A row of NaN logits (a model blown up on one example), left out with `where`: its
  gradient is 0 in the logits and the labels, not 0 * NaN (optax's), and the other rows'
  gradients are optax's."""
  x = jnp.array([[1.0, 2.0, 3.0, 4.0], [jnp.nan, 1.0, 1.0, 1.0], [0.5, -0.5, 0.0, 2.0]])
  y = jnp.array([[0.1, 0.2, 0.3, 0.4], [0.25] * 4, [0.0, 0.0, 1.0, 0.0]])
  kept = lambda fn: lambda a, b: jnp.sum(jnp.where(jnp.isfinite(d := fn(a, b)), d, 0))
  finite = np.array([0, 2])
  want = jax.grad(kept(optax.losses.softmax_cross_entropy), (0, 1))(x[finite], y[finite])
  assert np.isnan(np.asarray(jax.grad(kept(optax.losses.softmax_cross_entropy))(x, y))).any()
  grads = jax.grad(kept(jl.softmax_cross_entropy), (0, 1))
  for grad in (grads, jax.jit(grads)):
    for g, w in zip(grad(x, y), want):
      g = np.asarray(g)
      np.testing.assert_array_equal(g[1], 0)
      np.testing.assert_allclose(g[finite], np.asarray(w), rtol=1e-6, atol=1e-7)
