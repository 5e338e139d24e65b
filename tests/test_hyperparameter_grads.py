"""Hyperparameter derivatives against float64 finite differences, from one table.

Every public function with a differentiable hyperparameter (a Rényi order, a mixture weight,
a temperature, label smoothing, a z-loss weight, a Sinkhorn epsilon, a kernel bandwidth, ...)
has a row: the function of that hyperparameter alone, and the points to check, ordinary ones and
every point where an implementation switches branch (alpha = 0, 1 and 1 +- a little, beta at 0
and 1, T = 1, ...). ``jax.grad`` at each point is compared with a central difference (one-sided,
second order, at the edge of the domain). :func:`test_every_hyperparameter_has_a_row` fails
when a public function gains such a hyperparameter without a row or a stated exclusion.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import tiered

import jaxdiv
from jaxdiv import estimators
from jaxdiv import kernels
from jaxdiv import losses
from jaxdiv import parametric as jp

# Names that are differentiable hyperparameters wherever they appear in a public signature.
HYPERPARAMETER_NAMES = frozenset(
    {"alpha", "beta", "gamma", "temperature", "label_smoothing", "z_loss", "epsilon",
     "bandwidth"})

_STATIC = ("static: compiled into the kernels (a concrete number, checked by"
           " test_static_hyperparameters_reject_tracers); differentiate the plain path"
           " (jaxdiv.losses with implementation=None) instead")
# Hyperparameters that are static arguments of the large-vocabulary kernels.
_BOTH = ("jaxdiv.kernels", "jaxdiv.losses")
STATIC = {
    (mod, name, param): _STATIC
    for mods, name, params in (
        (("jaxdiv.kernels",), "cross_entropy_with_integer_labels", ("label_smoothing", "z_loss")),
        (_BOTH, "fused_linear_cross_entropy", ("label_smoothing", "z_loss")),
        (("jaxdiv.kernels",), "distillation_divergence", ("beta", "temperature")),
        (_BOTH, "fused_linear_distillation_divergence", ("beta", "temperature")),
        (_BOTH, "fused_linear_token_log_probs", ("temperature",)),
        (_BOTH, "topk_distillation_loss", ("beta", "temperature")),
        (_BOTH, "fused_linear_topk_distillation_loss", ("beta", "temperature")))
    for mod in mods
    for param in params
}
# (module, function, parameter) -> why it has no row.
EXCLUDED = {
    ("jaxdiv.estimators", "sinkhorn_divergence", "tol"):
        "a stopping tolerance of the solver, not a parameter of the divergence",
    **STATIC,
}


@dataclasses.dataclass(frozen=True)
class Row:
  """A function of one hyperparameter, float64, and the points at which to differentiate it."""
  module: str
  name: str
  param: str
  fn: Callable[[jax.Array], jax.Array]
  points: tuple
  lo: float | None = None  # the closed domain's edges: the difference is one-sided there
  hi: float | None = None
  variant: str = ""
  rtol: float = 2e-6

  @property
  def id(self):
    variant = f",{self.variant}" if self.variant else ""
    return f"{self.module.split('.')[-1]}.{self.name}[{self.param}{variant}]"


def _data():
  """Small fixed float64 inputs (built under x64)."""
  rng = np.random.default_rng(0)
  z = lambda *s: jnp.asarray(rng.normal(size=s) * 1.5)
  return dict(
      lp=z(2, 5), lq=z(2, 5), labels=jnp.array([1, 4]),
      soft=jax.nn.softmax(z(2, 5)), hidden=z(2, 3), weight=z(3, 5), t_hidden=z(2, 4),
      t_weight=z(4, 5), x=z(6, 2), y=z(7, 2) + 0.5, logits1=z(6), bin_labels=jnp.asarray(
          rng.integers(0, 2, size=6).astype(np.float64)),
      log_p=jnp.log(jax.nn.softmax(z(2, 5))))


ALPHA_RENYI = (0.0, 0.3, 1 - 1e-4, 1.0, 1 + 1e-4, 2.5)
ALPHA_PARAMETRIC = (0.0, 0.5, 1 - 1e-3, 1.0, 1 + 1e-3, 1.1)
WEIGHT = (0.0, 1e-6, 0.3, 0.5, 1 - 1e-6, 1.0)
TEMPERATURE = (0.5, 1.0, 2.0)


def _rows(d):
  lp, lq = d["lp"], d["lq"]
  s = jnp.sum
  rows = []

  def add(module, name, param, fn, points, **kw):
    rows.append(Row(module, name, param, fn, tuple(points), **kw))

  # Core divergences, from logits.
  for name in ("renyi_divergence", "tsallis_divergence"):
    f = getattr(jaxdiv, name)
    add("jaxdiv", name, "alpha", lambda a, f=f: s(f(lp, lq, alpha=a, from_logits=True)),
        ALPHA_RENYI, lo=0.0)
  for name in ("renyi_entropy", "tsallis_entropy"):
    f = getattr(jaxdiv, name)
    add("jaxdiv", name, "alpha", lambda a, f=f: s(f(lp, alpha=a, from_logits=True)),
        ALPHA_RENYI, lo=0.0)
  add("jaxdiv", "alpha_divergence", "alpha",
      lambda a: s(jaxdiv.alpha_divergence(lp, lq, alpha=a, from_logits=True)),
      (-1.0, 0.0, 1e-4, 0.5, 1 - 1e-4, 1.0, 1 + 1e-4, 2.0))
  add("jaxdiv", "js_divergence", "beta",
      lambda b: s(jaxdiv.js_divergence(lp, lq, beta=b, from_logits=True)), WEIGHT,
      lo=0.0, hi=1.0)
  # The square root of a divergence that is 0 at beta in {0, 1} has no derivative there.
  add("jaxdiv", "js_distance", "beta",
      lambda b: s(jaxdiv.js_distance(lp, lq, beta=b, from_logits=True)), (1e-2, 0.3, 0.5, 0.9),
      lo=0.0, hi=1.0)

  # Parametric Rényi divergences (the order alpha).
  par = {
      "normal_renyi_divergence": (0.3, 1.7, -1.1, 0.6),
      "gamma_renyi_divergence": (2.5, 1.3, 0.7, 0.4),
      "exponential_renyi_divergence": (1.3, 0.4),
      "beta_renyi_divergence": (6.5, 2.5, 3.0, 3.0),
      "poisson_renyi_divergence": (2.0, 3.5),
      "bernoulli_renyi_divergence": (0.3, 0.6),
      "categorical_renyi_divergence": (jnp.array([0.2, 0.5, 0.3]), jnp.array([0.4, 0.4, 0.2])),
      "dirichlet_renyi_divergence": (jnp.array([2.0, 3.0, 1.5]), jnp.array([1.0, 2.0, 1.2])),
  }
  for name, args in par.items():
    f = getattr(jp, name)
    add("jaxdiv.parametric", name, "alpha", lambda a, f=f, args=args: s(f(*args, alpha=a)),
        ALPHA_PARAMETRIC, lo=0.0)
  mu_p, mu_q = jnp.array([0.3, -0.2]), jnp.array([-0.5, 0.4])
  cov_p = jnp.array([[1.2, 0.3], [0.3, 0.8]])
  cov_q = jnp.array([[0.9, -0.2], [-0.2, 1.1]])
  # Both sides of 1 at 1e-6 as well: the log-determinant terms are formed without a division
  # by alpha - 1 (which lost 1e-5 of the derivative at 1 +- 1e-3 before).
  alpha_mvn = sorted(ALPHA_PARAMETRIC + (1 - 1e-6, 1 + 1e-6))
  add("jaxdiv.parametric", "mvn_renyi_divergence", "alpha",
      lambda a: jp.mvn_renyi_divergence(mu_p, cov_p, mu_q, cov_q, alpha=a),
      alpha_mvn, lo=0.0, variant="full")
  add("jaxdiv.parametric", "mvn_renyi_divergence", "alpha",
      lambda a: jp.mvn_renyi_divergence(mu_p, jnp.linalg.cholesky(cov_p), mu_q,
                                        jnp.linalg.cholesky(cov_q), alpha=a,
                                        covariance="cholesky"),
      alpha_mvn, lo=0.0, variant="cholesky")
  add("jaxdiv.parametric", "mvn_renyi_divergence", "alpha",
      lambda a: jp.mvn_renyi_divergence(mu_p, jnp.array([1.2, 0.8]), mu_q,
                                        jnp.array([0.9, 1.1]), alpha=a, covariance="diag"),
      alpha_mvn, lo=0.0, variant="diag")

  # Losses.
  labels, soft = d["labels"], d["soft"]
  for name in ("softmax_cross_entropy", "softmax_cross_entropy_with_integer_labels"):
    f = getattr(losses, name)
    y = soft if name == "softmax_cross_entropy" else labels
    add("jaxdiv.losses", name, "label_smoothing",
        lambda e, f=f, y=y: s(f(lp, y, label_smoothing=e)), (0.0, 0.1, 0.5, 1.0),
        lo=0.0, hi=1.0)
    add("jaxdiv.losses", name, "z_loss", lambda w, f=f, y=y: s(f(lp, y, z_loss=w)),
        (0.0, 1e-4, 0.1), lo=0.0)
  dl = losses.distillation_loss
  for div in ("forward_kl", "reverse_kl", "js", "tv"):
    add("jaxdiv.losses", "distillation_loss", "temperature",
        lambda t, div=div: s(dl(lp, lq, divergence=div, temperature=t)), TEMPERATURE,
        variant=div)
  add("jaxdiv.losses", "distillation_loss", "beta",
      lambda b: s(dl(lp, lq, divergence="js", beta=b)), WEIGHT, lo=0.0, hi=1.0)
  for div in ("skew_kl", "skew_reverse_kl"):
    add("jaxdiv.losses", "distillation_loss", "alpha",
        lambda a, div=div: s(dl(lp, lq, divergence=div, alpha=a)), (0.0, 0.1, 0.5, 1.0),
        lo=0.0, hi=1.0, variant=div)
  add("jaxdiv.losses", "divergence_loss", "temperature",
      lambda t: s(losses.divergence_loss(jaxdiv.kl_divergence, lp, lq, temperature=t,
                                         temperature_scaling=True)), TEMPERATURE)
  add("jaxdiv.losses", "poly_loss_cross_entropy", "epsilon",
      lambda e: s(losses.poly_loss_cross_entropy(lp, soft, epsilon=e)), (-1.0, 0.0, 2.0))
  z1, b1 = d["logits1"], d["bin_labels"]
  add("jaxdiv.losses", "sigmoid_focal_loss", "alpha",
      lambda a: s(losses.sigmoid_focal_loss(z1, b1, alpha=a)), (0.0, 0.25, 1.0), lo=0.0,
      hi=1.0)
  add("jaxdiv.losses", "sigmoid_focal_loss", "gamma",
      lambda g: s(losses.sigmoid_focal_loss(z1, b1, gamma=g)), (0.0, 0.5, 1.0, 2.0), lo=0.0)

  # Estimators.
  x, y = d["x"], d["y"]
  for kern in ("gaussian", "laplace", "inverse_multiquadric"):
    for est in ("unbiased", "linear"):
      add("jaxdiv.estimators", "mmd2", "bandwidth",
          lambda b, kern=kern, est=est: estimators.mmd2(x, y, kernel=kern, bandwidth=b,
                                                        estimator=est),
          (0.3, 1.0, 3.0), variant=f"{kern},{est}")
  add("jaxdiv.estimators", "sinkhorn_divergence", "epsilon",
      lambda e: estimators.sinkhorn_divergence(x, y, epsilon=e, tol=1e-12,
                                               max_iterations=5000),
      (0.3, 1.0, 3.0), rtol=1e-5)
  return rows


@functools.cache
def _table():
  with jax.enable_x64(True):
    return {r.id: r for r in _rows(_data())}


def _row_ids():
  return sorted(_table())


CASES = [(rid, i) for rid in _row_ids() for i in range(len(_table()[rid].points))]
# Rows whose every point runs in the slow tier: variants that share the hyperparameter's path
# with a fast row (a row costs a compilation; its points, the branch points, share it).
# mmd2: each kernel and each estimator stays fast once (gaussian-unbiased, laplace-linear,
# inverse_multiquadric-unbiased); distillation temperature: it divides the logits alike for
# every divergence (forward_kl and js stay fast); skew_reverse_kl mirrors skew_kl.
SLOW_ROWS = {
    "estimators.mmd2[bandwidth,gaussian,linear]",
    "estimators.mmd2[bandwidth,laplace,unbiased]",
    "estimators.mmd2[bandwidth,inverse_multiquadric,linear]",
    "losses.distillation_loss[temperature,reverse_kl]",
    "losses.distillation_loss[temperature,tv]",
    "losses.distillation_loss[alpha,skew_reverse_kl]",
}
# Single points in the slow tier: Beta's Rényi at alpha = 0 (6 s; Dirichlet's, the same code,
# stays fast).
SLOW_POINTS = {("parametric.beta_renyi_divergence[alpha]", 0)}


@functools.cache
def _compiled(rid):
  row = _table()[rid]
  # One compilation: the value (for the differences) comes with the derivative.
  return jax.jit(jax.value_and_grad(row.fn))


def _finite_difference(f, x, lo, hi):
  """Richardson-extrapolated central difference; one-sided (forward/backward) at an edge.

  Steps of 1e-3 keep the rounding of the value (e.g. the division by ``alpha - 1`` of the
  Rényi forms just off ``alpha = 1``) far below the tolerance; extrapolation removes the
  ``h²`` term. Near an edge the step is 2% of the distance to it.
  """
  scale = max(1.0, abs(x))
  room = min(np.inf if lo is None else x - lo, np.inf if hi is None else hi - x)
  if room == 0:
    sgn = 1.0 if (lo is not None and x == lo) else -1.0
    d1 = lambda h: sgn * (-3 * f(x) + 4 * f(x + sgn * h) - f(x + 2 * sgn * h)) / (2 * h)
    h = 1e-5 * scale
    return (4 * d1(h) - d1(2 * h)) / 3
  h = min(1e-3 * scale, 0.02 * room)
  d = lambda h: (f(x + h) - f(x - h)) / (2 * h)
  return (4 * d(h) - d(2 * h)) / 3


@tiered("rid,i", CASES,
        fast=[c for c in CASES if c[0] not in SLOW_ROWS and c not in SLOW_POINTS],
        ids=[f"{r}@{_table()[r].points[i]}" for r, i in CASES])
def test_hyperparameter_derivative_matches_finite_difference(rid, i):
  row = _table()[rid]
  x = row.points[i]
  with jax.enable_x64(True):
    f = _compiled(rid)
    fx = lambda v: float(f(jnp.float64(v))[0])
    value, got = (float(v) for v in f(jnp.float64(x)))
    assert np.isfinite(value), f"{rid} at {x}: value {value}"
    want = _finite_difference(fx, x, row.lo, row.hi)
  np.testing.assert_allclose(got, want, rtol=row.rtol, atol=1e-7,
                             err_msg=f"d/d{row.param} of {rid} at {row.param}={x}")


# The orders' branch points: alpha = 1 (the KL limit) of every Rényi-type row, and alpha = 0
# of the alpha-divergence (the reversed KL). The value there comes from its own branch, the
# derivatives from a Taylor term added to it; the second one is checked here (a slope alone
# gave d²/dalpha² = 0 at 1).
SECOND_CASES = [(rid, x) for rid in _row_ids() if _table()[rid].param == "alpha"
                and _table()[rid].module in ("jaxdiv", "jaxdiv.parametric")
                for x in (0.0, 1.0) if x in _table()[rid].points
                and (x == 1.0 or _table()[rid].name == "alpha_divergence")]


# The Gamma-based rows (exponential, Gamma, Beta, Dirichlet) compile their second derivatives
# for 40-65 s each (the log-gamma remainder's series under two derivatives): slow tier.
_SLOW_SECOND = ("cholesky]", "diag]")
_SLOW_SECOND_FAMILIES = ("parametric.exponential_", "parametric.gamma_", "parametric.beta_",
                         "parametric.dirichlet_")


# The categorical rows from logits compile the traced-order path's coefficients differentiated
# again, the guarded path's second derivatives in both of its branches: 15-22 s a case in CI
# (6-9.5 s before 2026-12-07). The fast tier keeps the alpha-divergence at 1 (under 5 s).
_SLOW_SECOND_CATEGORICAL = ("jaxdiv.renyi_", "jaxdiv.tsallis_")


def _second_in_fast_tier(rid, x):
  if rid.endswith(_SLOW_SECOND) or rid.startswith(_SLOW_SECOND_FAMILIES):
    return False
  if rid.startswith(_SLOW_SECOND_CATEGORICAL):
    return False
  return not (rid.startswith("jaxdiv.alpha_divergence") and x == 0.0)


@tiered("rid,x", SECOND_CASES,
        fast=[c for c in SECOND_CASES if _second_in_fast_tier(*c)],
        ids=[f"{r}@{x}" for r, x in SECOND_CASES])
def test_second_derivative_in_alpha_at_the_branch_points(rid, x):
  """d²/dalpha² at the branch point, reverse-over-reverse and forward-over-reverse, against a
  Richardson-extrapolated second difference of the values (the branch's own value at x, the
  general formula at x +- h)."""
  row = _table()[rid]
  with jax.enable_x64(True):
    f = jax.jit(row.fn)
    fx = lambda v: float(f(jnp.float64(v)))
    d2 = lambda h: (fx(x + h) - 2 * fx(x) + fx(x - h)) / (h * h)
    want = (4 * d2(3e-3) - d2(6e-3)) / 3
    rev = float(jax.jit(jax.grad(jax.grad(row.fn)))(jnp.float64(x)))
    fwd = float(jax.jit(jax.jacfwd(jax.grad(row.fn)))(jnp.float64(x)))
  for got in (rev, fwd):
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-7,
                               err_msg=f"d²/d{row.param}² of {rid} at {row.param}={x}")


def _public_functions():
  for mod in (jaxdiv, jp, losses, kernels, estimators):
    for name in getattr(mod, "__all__", dir(mod)):
      obj = getattr(mod, name)
      if name.startswith("_") or inspect.ismodule(obj) or inspect.isclass(obj):
        continue
      if callable(obj):
        yield mod.__name__, name, obj


def test_every_hyperparameter_has_a_row():
  """A public function with a hyperparameter (a known name, or any float default) has a row."""
  covered = {(r.module, r.name, r.param) for r in _table().values()}
  missing = []
  for module, name, fn in _public_functions():
    for p in inspect.signature(fn).parameters.values():
      float_default = isinstance(p.default, float)
      if p.name in HYPERPARAMETER_NAMES or float_default:
        key = (module, name, p.name)
        if key not in covered and key not in EXCLUDED:
          missing.append(key)
  assert not missing, (
      "public hyperparameters without a row in tests/test_hyperparameter_grads.py (add one, or"
      f" an entry in EXCLUDED with the reason): {missing}")
  assert set(EXCLUDED).isdisjoint(covered)


def test_table_checks_every_branch_point_of_the_orders():
  """The order rows include alpha = 0, 1 and both sides of 1 (where the code switches)."""
  for row in _table().values():
    if row.param == "alpha" and row.lo == 0.0 and row.module != "jaxdiv.losses":
      pts = np.asarray(row.points)
      assert 0.0 in pts and 1.0 in pts, row.id
      assert np.any((pts > 1) & (pts < 1.01)) and np.any((pts < 1) & (pts > 0.99)), row.id


def _static_calls():
  d = _data()
  lp, lq, labels = d["lp"], d["lq"], d["labels"]
  h, w, th, tw = d["hidden"], d["weight"], d["t_hidden"], d["t_weight"]
  calls = {}
  for mod in ("jaxdiv.kernels", "jaxdiv.losses"):
    flce = (kernels if mod == "jaxdiv.kernels" else losses).fused_linear_cross_entropy
    fld = (kernels if mod == "jaxdiv.kernels" else losses).fused_linear_distillation_divergence
    for param in ("label_smoothing", "z_loss"):
      calls[(mod, "fused_linear_cross_entropy", param)] = (
          lambda v, flce=flce, param=param: flce(h, w, labels, **{param: v}))
    for param in ("beta", "temperature"):
      calls[(mod, "fused_linear_distillation_divergence", param)] = (
          lambda v, fld=fld, param=param: fld(h, w, teacher_hidden=th, teacher_weight=tw,
                                              divergence="js", **{param: v}))
  for param in ("label_smoothing", "z_loss"):
    calls[("jaxdiv.kernels", "cross_entropy_with_integer_labels", param)] = (
        lambda v, param=param: kernels.cross_entropy_with_integer_labels(lp, labels,
                                                                          **{param: v}))
  for param in ("beta", "temperature"):
    calls[("jaxdiv.kernels", "distillation_divergence", param)] = (
        lambda v, param=param: kernels.distillation_divergence(lp, lq, divergence="js",
                                                               **{param: v}))
  k = 3
  top = jnp.argsort(-lq, axis=-1)[:, :k]
  top_lp = jnp.take_along_axis(jax.nn.log_softmax(lq), top, axis=-1)
  for mod in (kernels, losses):
    name = mod.__name__
    calls[(name, "fused_linear_token_log_probs", "temperature")] = (
        lambda v, mod=mod: mod.fused_linear_token_log_probs(h, w, labels, temperature=v)[0])
    for param in ("beta", "temperature"):
      calls[(name, "topk_distillation_loss", param)] = (
          lambda v, mod=mod, param=param: mod.topk_distillation_loss(
              lp, top, top_lp, divergence="js", **{param: v}))
      calls[(name, "fused_linear_topk_distillation_loss", param)] = (
          lambda v, mod=mod, param=param: mod.fused_linear_topk_distillation_loss(
              h, w, top, top_lp, divergence="js", **{param: v}))
  return calls


@pytest.mark.slow  # the fast tier runs no case of this test; it costs 6 s
def test_static_hyperparameters_reject_tracers():
  """The exclusions for static hyperparameters are true: a traced value is refused by name."""
  calls = _static_calls()
  assert set(calls) == set(STATIC)
  for (_, name, param), call in calls.items():
    with pytest.raises(TypeError, match=param):
      jax.grad(lambda v, call=call: jnp.sum(call(v)))(0.5)
    assert np.all(np.isfinite(np.asarray(call(0.5)))), (name, param)
