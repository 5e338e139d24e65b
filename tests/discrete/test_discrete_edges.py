"""Edges found in review: traced/array hyperparameters on boundary inputs, alpha near 1 in
float32, derivatives with respect to alpha and beta at their limit points, gradients at zero
probabilities, rows of -inf logits, scalars."""

from __future__ import annotations

import functools

import discrete_reference as ref
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats
from _helpers import tiered
from discrete_specs import MECHANISM_SPEC_IDS
from discrete_specs import SPEC_IDS
from discrete_specs import SPECS
from discrete_specs import call
from discrete_specs import logits_reference
from discrete_specs import over_specs
from discrete_specs import reference

import jaxdiv

# Boundary rows: q = 0 where p > 0 (infinite for alpha >= 1), disjoint, shared zeros, interior.
P_B = np.array([[0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0],
                [0.1, 0.2, 0.3, 0.4]])
Q_B = np.array([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5], [0.3, 0.7, 0.0, 0.0],
                [0.4, 0.3, 0.2, 0.1]])
ORDER_FNS = [jaxdiv.renyi_divergence, jaxdiv.tsallis_divergence, jaxdiv.alpha_divergence]


# Negative orders exist for the alpha-divergence only. Fast tier: Tsallis at order 1 (every
# order's branch is traced by each traced call; the static branches' values are checked against
# float64 in `test_discrete_reference.py`); Renyi at order 0 (9 s) is in the slow tier.
@tiered("alpha,fn", [(a, fn) for a in (0.0, 0.5, 1.0, 2.0, np.inf, -1.0) for fn in ORDER_FNS
                     if a >= 0 or fn is jaxdiv.alpha_divergence],
        fast=[(1.0, jaxdiv.tsallis_divergence)],
        ids=lambda v: getattr(v, "__name__", str(v)))
def test_traced_alpha_equals_static_on_boundary_rows(fn, alpha):
  p, q = jnp.asarray(P_B, jnp.float32), jnp.asarray(Q_B, jnp.float32)
  static = np.asarray(fn(p, q, alpha))
  traced = np.asarray(jax.jit(fn)(p, q, alpha))
  # Within a few float32 ulp, not bit for bit: where every |(alpha - 1) log(p / q)| <= 1, a
  # traced order sums the centred power mean (`_renyi._log_power_mean`, whose derivatives in
  # alpha keep their precision), a static one expm1 of the log-ratios; both are within 3e-7 of
  # float64 on these rows, whose values are 0 to 4 (a true 0 comes out as up to 4.5e-8).
  np.testing.assert_allclose(traced, static, rtol=3e-6, atol=1e-7)
  # Gradients of rows whose value is finite are finite, traced or not.
  rows = np.isfinite(static)
  for f in (fn, jax.jit(fn)):
    g = jax.grad(lambda a, f=f: jnp.sum(f(a, q[rows], alpha)))(p[rows])
    assert np.all(np.isfinite(np.asarray(g))), (alpha, g)


# Renyi (5.7 s) in the slow tier; Tsallis and alpha (the same `_renyi.py` code) stay fast.
@tiered("fn", ORDER_FNS, fast=ORDER_FNS[1:], ids=lambda f: f.__name__)
def test_alpha_gradient_on_boundary_rows_is_finite(fn):
  p, q = jnp.asarray(P_B[3]), jnp.asarray(Q_B[3])
  pb, qb = jnp.asarray(P_B[0]), jnp.asarray(Q_B[0])
  for a in (0.5, 2.0):
    assert np.isfinite(float(jax.grad(lambda x: fn(p, q, x))(a)))
  # q = 0 where p > 0: finite value for alpha < 1, and a finite derivative there.
  assert np.isfinite(float(jax.grad(lambda x: fn(pb, qb, x))(0.5)))


def test_alpha_near_one_is_continuous_in_float32():
  p = jax.nn.softmax(jnp.array([0.3, -1.2, 2.0, 0.7, -0.4]))
  q = jax.nn.softmax(jnp.array([1.0, 0.1, -0.5, 0.2, 0.9]))
  p64 = np.asarray(p, np.float64)
  p64 /= p64.sum()
  q64 = np.asarray(q, np.float64)
  q64 /= q64.sum()
  kl = ref.kl_divergence(p64, q64)
  for fn, want in ((jaxdiv.renyi_divergence, kl), (jaxdiv.tsallis_divergence, kl),
                   (jaxdiv.alpha_divergence, kl)):
    for a in (1 - 1e-6, 1 + 1e-6, 1 - 1e-3, 1 + 1e-3):
      exact = ref.renyi_divergence(p64, q64, a) if fn is jaxdiv.renyi_divergence else want
      np.testing.assert_allclose(float(fn(p, q, a)), exact, rtol=2e-3,
                                 err_msg=f"{fn.__name__} alpha={a}")
  h = ref.entropy(p64)
  for fn in (jaxdiv.renyi_entropy, jaxdiv.tsallis_entropy):
    for a in (1 - 1e-6, 1 + 1e-6):
      np.testing.assert_allclose(float(fn(p, a)), h, rtol=1e-4, err_msg=fn.__name__)


def _richardson(fn, x0):
  c = lambda h: (float(fn(x0 + h)) - float(fn(x0 - h))) / (2 * h)
  return (4 * c(5e-3) - c(1e-2)) / 3


@pytest.mark.parametrize("name,fn,point", [
    # 9 s: slow tier; alpha_divergence@1 (the same limit, the KL) stays fast.
    pytest.param("tsallis_divergence@1", lambda p, q, a: jaxdiv.tsallis_divergence(p, q, a), 1.0,
                 marks=pytest.mark.slow),
    ("alpha_divergence@1", lambda p, q, a: jaxdiv.alpha_divergence(p, q, a), 1.0),
    ("alpha_divergence@0", lambda p, q, a: jaxdiv.alpha_divergence(p, q, a), 0.0),
    ("tsallis_entropy@1", lambda p, q, a: jaxdiv.tsallis_entropy(p, a), 1.0),
    ("renyi_entropy@1", lambda p, q, a: jaxdiv.renyi_entropy(p, a), 1.0),
])
def test_alpha_derivative_at_limit_points(name, fn, point, x64):
  p, q = jnp.array([0.1, 0.2, 0.7]), jnp.array([0.3, 0.3, 0.4])
  g = jax.grad(lambda a: fn(p, q, a))(jnp.asarray(point))
  np.testing.assert_allclose(float(g), _richardson(lambda a: fn(p, q, a), point), rtol=1e-6,
                             err_msg=name)


@pytest.mark.parametrize("from_logits", [False, True])
def test_js_beta_derivative_at_endpoints(from_logits, x64):
  p, q = np.array([0.3, 0.7]), np.array([0.6, 0.4])
  pp, qq = (np.log(p), np.log(q)) if from_logits else (p, q)
  g = [float(jax.grad(lambda b: jaxdiv.js_divergence(pp, qq, b, from_logits=from_logits))(
      jnp.asarray(b0))) for b0 in (0.0, 1.0)]
  # d JS / d beta = KL(p||q) at beta = 0 and -KL(q||p) at beta = 1 (closed form).
  np.testing.assert_allclose(g, [ref.kl_divergence(p, q), -ref.kl_divergence(q, p)], rtol=1e-6)


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_js_static_endpoint_beta_with_disjoint_supports(from_logits, beta):
  p, q = jnp.array([0.5, 0.5, 0.0, 0.0]), jnp.array([0.0, 0.0, 0.5, 0.5])
  pp, qq = (jnp.log(p), jnp.log(q)) if from_logits else (p, q)
  assert float(jaxdiv.js_divergence(pp, qq, beta, from_logits=from_logits)) == 0.0
  for argnum in (0, 1):
    g = jax.grad(lambda a, b: jaxdiv.js_divergence(a, b, beta, from_logits=from_logits),
                 argnums=argnum)(pp, qq)
    assert np.all(np.isfinite(np.asarray(g))), g


def test_hyperparameter_arrays_broadcast_over_the_batch():
  rng = np.random.default_rng(0)
  p = jnp.asarray(rng.dirichlet(np.ones(5), (4, 3)), jnp.float32)
  q = jnp.asarray(rng.dirichlet(np.ones(5), (4, 3)), jnp.float32)
  alphas = np.array([0.5, 2.0, 3.0])
  want = np.stack([ref.renyi_divergence(np.asarray(p[:, i]), np.asarray(q[:, i]), a)
                   for i, a in enumerate(alphas)], 1)
  # Jitted: an array alpha takes every branch, whose eager dispatch compiles op by op.
  renyi = jax.jit(jaxdiv.renyi_divergence, static_argnames="axis")
  np.testing.assert_allclose(np.asarray(renyi(p, q, alphas)), want, rtol=1e-5)
  moved = renyi(jnp.moveaxis(p, -1, 1), jnp.moveaxis(q, -1, 1), alphas, axis=1)
  np.testing.assert_allclose(np.asarray(moved), want, rtol=1e-5)
  betas = np.array([0.2, 0.5, 0.7])
  want_js = np.stack([ref.js_divergence(np.asarray(p[:, i]), np.asarray(q[:, i]), b)
                      for i, b in enumerate(betas)], 1)
  np.testing.assert_allclose(np.asarray(jaxdiv.js_divergence(p, q, betas)), want_js, rtol=1e-5)
  with pytest.raises(ValueError, match=r"`alpha` of shape \(4,\) must broadcast to the batch"):
    jaxdiv.renyi_divergence(p, q, jnp.ones(4))


def test_f_divergence_gradient_at_zero_probability_is_the_true_one(x64):
  p, q = jnp.array([0.5, 0.5, 0.0]), jnp.array([0.2, 0.3, 0.5])
  g = jax.grad(lambda a: jaxdiv.f_divergence(a, q, lambda t: (t - 1) ** 2))(p)
  np.testing.assert_allclose(np.asarray(g), 2 * (np.asarray(p) - np.asarray(q)) / np.asarray(q))
  g_tv = jax.grad(lambda a: jaxdiv.f_divergence(a, q, lambda t: 0.5 * jnp.abs(t - 1)))(p)
  np.testing.assert_allclose(np.asarray(g_tv), 0.5 * np.sign(np.asarray(p - q)))


def test_f_divergence_small_scale_superlinear_generator_is_infinite():
  p, q = jnp.array([0.6, 0.4, 0.0, 0.0]), jnp.array([0.0, 0.0, 0.5, 0.5])
  assert float(jaxdiv.f_divergence(p, q, lambda t: 1e-5 * t * jnp.log(t))) == np.inf


@pytest.mark.parametrize("name", ["4 - 4 sqrt t", "-log t", "-t^0.9", "2 - 3t - sqrt t",
                                  "2 - t - t^0.9", "t log t - 50 (t - 1)",
                                  "1e-3 t log t - 0.1 (t - 1)", "1 / (1 + t) - 1/2",
                                  "1 / (1 + t)"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_f_divergence_sublinear_generator_slope_at_infinity(name, dtype):
  # f(t)/t tends to f'(inf) slowly from below: -4e-5 at 1e10 and -4e-10 at 1e20 for the first
  # (taken as superlinear, +inf, at first), -0.1 and -0.01 for -t^0.9. 1 / (1 + t) in float32
  # (f(1) = 1/2 is no matter here): f(t)/t is 1e-20, 1e-40 (subnormal) and 0, and the product
  # of the steps underflowed, which made the slope +inf under jit (eager flushed the subnormal
  # and gave 0). 1 / (1 + t) - 1/2: the Aitken step's d_2^2 underflowed, which left the slope at
  # -5e-31 (p f'(inf) was -0.5 at p = 1e30).
  gens = {"4 - 4 sqrt t": (lambda m, t: 4 - 4 * m.sqrt(t), 0.0),
          "-log t": (lambda m, t: -m.log(t), 0.0),
          "-t^0.9": (lambda m, t: -(t ** 0.9), 0.0),
          "2 - 3t - sqrt t": (lambda m, t: 2 - 3 * t - m.sqrt(t), -3.0),
          "2 - t - t^0.9": (lambda m, t: 2 - t - t ** 0.9, -1.0),
          # Superlinear, though f(t)/t is still negative at 1e20 (-27, -4, 19 at 1e10..1e30).
          "t log t - 50 (t - 1)": (lambda m, t: t * m.log(t) - 50 * (t - 1), np.inf),
          "1e-3 t log t - 0.1 (t - 1)": (lambda m, t: 1e-3 * t * m.log(t) - 0.1 * (t - 1),
                                         np.inf),
          "1 / (1 + t) - 1/2": (lambda m, t: 1 / (1 + t) - 0.5, 0.0),
          "1 / (1 + t)": (lambda m, t: 1 / (1 + t), 0.0)}
  f, slope = gens[name]
  p, q = np.array([0.3, 0.5, 0.2]), np.array([0.6, 0.0, 0.4])
  with np.errstate(divide="ignore"):
    want = ref.f_divergence(p, q, lambda t: f(np, t), f_prime_inf=slope, f_zero=f(np, 0.0))
  for run in (lambda fn: fn, jax.jit):
    with jax.enable_x64(dtype == np.float64):
      got = float(run(lambda p, q: jaxdiv.f_divergence(p, q, lambda t: f(jnp, t)))(
          p.astype(dtype), q.astype(dtype)))
    if np.isinf(want):
      assert got == want
      continue
    # The extrapolation is exact for one power of t; 2 - t - t^0.9 has two (2/t too): 3e-12.
    np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-10)


@over_specs()
def test_row_of_neg_inf_logits_is_empty(spec):
  z = jnp.array([[-jnp.inf] * 4, [0.0, 1.0, -1.0, 0.5]])
  # Either argument's row being empty makes the row 0, as a fully masked row.
  np.testing.assert_array_equal(np.asarray(call(spec, z, z[::-1], from_logits=True))[0], 0.0)
  if spec.nargs == 2:
    np.testing.assert_array_equal(np.asarray(call(spec, z, z[::-1], from_logits=True)), 0.0)


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_scalars_are_not_distributions(spec):
  with pytest.raises(ValueError, match="scalar"):
    call(spec, jnp.float32(0.3), jnp.float32(0.6))


def test_masked_nan_does_not_poison_binary_gradient():
  p, q = jnp.array([0.2, jnp.nan, 0.4]), jnp.array([0.5, 0.3, 0.4])
  w = jnp.array([True, False, True])
  g = jax.grad(lambda a: jnp.sum(jaxdiv.binary_kl_divergence(a, q, where=w)))(p)
  np.testing.assert_allclose(np.asarray(g), [np.log(0.2 / 0.5) - np.log(0.8 / 0.5), 0.0, 0.0],
                             rtol=1e-6)


@pytest.mark.parametrize("fn", [
    # Renyi (7.3 s) in the slow tier; Tsallis and alpha stay fast.
    pytest.param(jaxdiv.renyi_divergence, marks=pytest.mark.slow), jaxdiv.tsallis_divergence,
    jaxdiv.alpha_divergence], ids=lambda f: f.__name__)
def test_gradient_where_t_times_log_ratio_is_exactly_one(fn):
  """Logits [0, 1, 2] against [2, 1, 0] at alpha 1.5 (guarded path: a mask), float32: (alpha - 1)
  times the log-ratio is exactly 1 in one entry, the switch point of the expm1 form, where a
  `minimum` used to halve that entry's gradient. Reference: float64 central differences."""
  p, q, w = np.array([[0.0, 1, 2]]), np.array([[2.0, 1, 0]]), np.ones((1, 3), bool)
  loss = lambda a, b: fn(a, b, alpha=1.5, from_logits=True, where=w).sum()
  got = np.asarray(jax.grad(loss)(p.astype(np.float32), q.astype(np.float32)))
  h = 1e-6
  with jax.enable_x64(True):
    f64 = jax.jit(loss)  # six evaluations at one shape: one compilation, not six eager runs
    f = lambda a: float(f64(a, q))
    want = [(f(p + h * e) - f(p - h * e)) / (2 * h) for e in np.eye(3)[:, None, :]]
  np.testing.assert_allclose(got[0], np.array(want), rtol=1e-5, atol=1e-6)


_EMPTY_CASES = [pytest.param(s, m, id=f"{i}-{'guarded' if m else 'fast'}")
                for s, i in zip(SPECS, SPEC_IDS) for m in (False, True)]


# The fast tier: one function of each mechanism (Shannon, order alpha, f-family, one input),
# on both paths; the others in the slow tier, and entropy's and Renyi 0.5's fast path (9 s,
# 6.6 s): kl_divergence and hellinger_distance keep that path fast.
@tiered("spec,masked", _EMPTY_CASES, fast=[
    c for c in _EMPTY_CASES if c.id.rsplit("-", 1)[0] in
    ("kl_divergence", "renyi_divergence[alpha=0.5]", "hellinger_distance", "entropy")
    and c.id not in ("entropy-fast", "renyi_divergence[alpha=0.5]-fast")])
def test_empty_row_has_zero_gradient_and_leaves_the_other_rows_alone(spec, masked):
  """Rows 0 and 1 have an argument of -inf logits (value 0, as a fully masked row): their
  gradient is 0, not NaN (a zero cotangent through a log-probability of -inf), and row 2's value
  and gradient are those it has alone. A mask of all True takes the guarded path."""
  a = jnp.array([[-jnp.inf] * 4, [0.3, -0.2, 0.1, 0.4], [0.0, 1.0, -1.0, 0.5]])
  b = jnp.array([[0.2, 0.1, -0.5, 0.0], [-jnp.inf] * 4, [1.0, 0.0, 0.5, -1.0]])
  args = (a, b)[:spec.nargs]
  w = jnp.ones(a.shape, bool) if masked else None
  loss = lambda *xs: jnp.sum(call(spec, *xs, from_logits=True, where=w if w is None else
                                  w[:xs[0].shape[0]]))
  grads = jax.grad(loss, argnums=tuple(range(len(args))))(*args)
  alone = jax.grad(loss, argnums=tuple(range(len(args))))(*(x[2:] for x in args))
  empty = slice(0, 2) if spec.nargs == 2 else slice(0, 1)
  for g, g_alone in zip(grads, alone):
    np.testing.assert_array_equal(np.asarray(g)[empty], 0.0)
    np.testing.assert_allclose(np.asarray(g)[2:], np.asarray(g_alone), rtol=1e-6, atol=1e-7)
  row = [np.float64(x[2]) for x in args]
  want = (logits_reference(spec, *row) if spec.logits_ref is not None else
          reference(spec, *(np.exp(x - x.max()) / np.exp(x - x.max()).sum() for x in row)))
  np.testing.assert_allclose(np.asarray(call(spec, *args, from_logits=True, where=w))[2], want,
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["renyi_divergence", "tsallis_divergence", "alpha_divergence"])
def test_traced_order_one_with_extreme_log_ratios_is_the_kl(name):
  """alpha = 1 as a traced order adds its Taylor terms (0 in value) to the KL; a log-ratio of
  3e13 overflows their third moment in float32, which must drop the term, not make the value
  0 * inf = NaN. The KL from float64 NumPy."""
  lp, lq = np.array([0.0, 0.0]), np.array([0.0, -3e13])
  log_p = lp - np.logaddexp.reduce(lp)
  log_q = lq - np.logaddexp.reduce(lq)
  want = np.sum(np.exp(log_p) * (log_p - log_q))
  f = getattr(jaxdiv, name)
  got = jax.jit(lambda a: f(jnp.float32(lp), jnp.float32(lq), alpha=a, from_logits=True))(1.0)
  np.testing.assert_allclose(float(got), want, rtol=1e-6)


# Generators linear in a parameter c: d/dc D_f = D_f at c = 1, the float64 reference with the
# perspective's limits (f(0), f'(inf)) stated. Rows: zeros in p (q f(0)), a zero in q where p is
# masked or, for the linear-growth generator, not (p f'(inf)), and a shared zero.
_GENERATORS = [
    ("kl", lambda c: (lambda t: c * t * jnp.log(t)), lambda t: t * np.log(t), np.inf, 0.0),
    ("chi2", lambda c: (lambda t: c * (t - 1) ** 2), lambda t: (t - 1) ** 2, np.inf, 1.0),
    ("tv", lambda c: (lambda t: c * jnp.abs(t - 1) / 2), lambda t: np.abs(t - 1) / 2, 0.5, 0.5),
]


# The fast tier runs no case of this test (two of its cases cost 30 s).
@pytest.mark.slow
@pytest.mark.parametrize(
    "gen,from_logits,masked,dtype",
    [(g, fl, m, d) for g in _GENERATORS for fl in (False, True) for m in (False, True)
     for d in ("float32", "float64")],
    ids=lambda v: v[0] if isinstance(v, tuple) else str(v))
def test_f_divergence_gradient_in_a_parameter_of_the_generator(gen, from_logits, masked, dtype):
  # The fast path's custom_jvp closed over the generator: jax.grad in a parameter it captures
  # raised UnexpectedTracerError, and on the guarded path the unselected f(0) = 0 log 0 of a
  # t log t generator made that gradient NaN.
  _, make, f64, slope, f_zero = gen
  rng = np.random.default_rng(3)
  p, q = rng.dirichlet(np.ones(6), 4), rng.dirichlet(np.ones(6), 4)
  p[0, 1] = 0.0
  q[2, 3] = p[2, 3] = 0.0
  mask = np.ones((4, 6), bool)
  if masked:
    mask = rng.random((4, 6)) > 0.3
    mask[:, 0] = True
  if np.isfinite(slope) or masked:
    q[1, 2] = 0.0
    if not np.isfinite(slope):
      mask[1, 2] = False
  if from_logits:
    # Zero probabilities are -inf logits; the mask's softmax is over the kept entries.
    with np.errstate(divide="ignore"):
      a, b = np.log(p) + 0.7, np.log(q) - 0.2
    pm, qm = (np.where(mask, ref.softmax64(np.where(mask, z, -np.inf)), 0.0) for z in (a, b))
  else:
    a, b = p, q
    pm, qm = np.where(mask, p, 0.0), np.where(mask, q, 0.0)
  want = ref.f_divergence(pm, qm, f64, slope, f_zero)
  with jax.enable_x64(dtype == "float64"):
    args = jnp.asarray(a, dtype), jnp.asarray(b, dtype)
    where = jnp.asarray(mask) if masked else None

    def d(c):
      return jaxdiv.f_divergence(*args, make(c), where=where, from_logits=from_logits)

    def total(c):
      return jnp.sum(d(c) * jnp.arange(1, 5))

    f32 = dtype == "float32"
    tol = dict(rtol=2e-5 if f32 else 1e-10, atol=1e-6 if f32 else 1e-12)
    c = jnp.asarray(1.5, dtype)
    np.testing.assert_allclose(np.asarray(d(c)), 1.5 * want, **tol)
    for grad in (jax.grad(total), jax.jit(jax.grad(total))):
      np.testing.assert_allclose(float(grad(c)), want @ np.arange(1, 5), **tol)
    np.testing.assert_allclose(np.asarray(jax.jacfwd(d)(c)), want, **tol)
    np.testing.assert_allclose(np.asarray(jax.jacrev(d)(c)), want, **tol)
    np.testing.assert_allclose(np.asarray(jax.vmap(d)(jnp.asarray([0.5, 2.0], dtype))),
                               np.outer([0.5, 2.0], want), **tol)


def test_f_divergence_gradient_in_a_traced_slope_at_infinity():
  # d/ds of the p f'(inf) = p s terms where q = 0 < p: the mass of p there (0.2 on the first row).
  p = jnp.array([[0.5, 0.3, 0.2], [0.3, 0.3, 0.4]])
  q = jnp.array([[0.6, 0.4, 0.0], [0.2, 0.5, 0.3]])
  tv = lambda t: jnp.abs(t - 1) / 2
  for grad in (jax.grad, lambda f: jax.jit(jax.grad(f))):
    g = grad(lambda s: jnp.sum(jaxdiv.f_divergence(p, q, tv, f_prime_inf=s)))(0.5)
    np.testing.assert_allclose(float(g), 0.2, rtol=1e-6)


# The fast tier runs no case of this test; it costs 10.5 s.
@pytest.mark.slow
@pytest.mark.parametrize("masked", [False, True])
def test_f_divergence_gradient_in_a_parameter_where_f0_is_infinite(masked):
  # -c log t and Neyman's c (1 - t)^2 / t have f(0) = inf: the limit term's zero cotangent met
  # its infinite derivative in c (NaN) even where every p and q is positive.
  rng = np.random.default_rng(5)
  p, q = rng.dirichlet(np.ones(5), 3), rng.dirichlet(np.ones(5), 3)
  mask = rng.random((3, 5)) > 0.3 if masked else np.ones((3, 5), bool)
  for make, f64 in ((lambda c: lambda t: -c * jnp.log(t), lambda t: -np.log(t)),
                    (lambda c: lambda t: c * (1 - t) ** 2 / t, lambda t: (1 - t) ** 2 / t)):
    want = ref.f_divergence(np.where(mask, p, 0), np.where(mask, q, 0), f64, np.inf, np.inf)
    where = jnp.asarray(mask) if masked else None

    def total(c, make=make, where=where):
      return jnp.sum(jaxdiv.f_divergence(jnp.asarray(p, jnp.float32), jnp.asarray(q, jnp.float32),
                                         make(c), where=where))

    for grad in (jax.grad(total), jax.jit(jax.grad(total))):
      np.testing.assert_allclose(float(grad(2.0)), want.sum(), rtol=2e-5)


# The fast tier runs no case of this test; it costs 12 s.
@pytest.mark.slow
def test_f_divergence_closing_generator_gradient_beside_a_nan_row():
  # The guarded values of a NaN row, differentiated in the generator's parameter and met by a
  # zero cotangent, made the other rows' gradients NaN (review reproducer).
  p = jnp.array([[0.2, 0.3, 0.5], [jnp.nan, 0.5, 0.5], [0.6, 0.4, 0.0]])
  q = jnp.array([[0.3, 0.3, 0.4], [0.2, 0.3, 0.5], [0.2, 0.8, 0.0]])

  def d(c, rows):
    # -c log t has f(0) = inf; the third row's shared zero takes the guarded path (finite).
    rows = jnp.asarray(rows)
    return jaxdiv.f_divergence(p[rows], q[rows], lambda t: -c * jnp.log(t))

  want = [jax.grad(lambda c, i=i: d(c, [i])[0])(1.5) for i in (0, 2)]
  for grad in (jax.grad, lambda f: jax.jit(jax.grad(f))):
    got = [grad(lambda c, i=i: d(c, [0, 1, 2])[i])(1.5) for i in (0, 2)]
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6)
    assert np.isnan(float(d(1.5, [0, 1, 2])[1]))
  # against the float64 reference: d/dc = the KL(q || p) of the rows at c = 1
  np.testing.assert_allclose(float(want[0]), float(np.sum(np.array([0.3, 0.3, 0.4]) * np.log(
      np.array([0.3, 0.3, 0.4]) / np.array([0.2, 0.3, 0.5])))), rtol=1e-6)


# A row whose value is not finite: a NaN input (row 0) and, for most functions, p > 0 where
# q = 0 (row 1: +inf for KL, cross-entropy, Renyi of order >= 1, chi-squared; finite for JS,
# total variation or Hellinger, whose row is then an ordinary one).
_LOST_PROBS = (np.array([[np.nan, 0.2, 0.3, 0.5], [0.5, 0.5, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4],
                         [0.4, 0.3, 0.2, 0.1]]),
               np.array([[0.3, 0.3, 0.2, 0.2], [0.0, 0.5, 0.5, 0.0], [0.25, 0.25, 0.25, 0.25],
                         [0.1, 0.6, 0.2, 0.1]]))
_LOST_LOGITS = (np.array([[np.nan, 0.2, -0.3, 0.5], [0.0, 0.0, -np.inf, -np.inf],
                          [0.1, -0.2, 0.3, 0.4], [0.4, 0.3, -0.2, 0.1]]),
                np.array([[0.3, -0.3, 0.2, 0.2], [-np.inf, 0.0, 0.0, -np.inf],
                          [0.25, 0.5, -0.25, 0.0], [0.1, 0.6, -0.2, 0.1]]))
def _lost_id(s, lg, m):
  return f"{s.name}-{'logits' if lg else 'probs'}-{'guarded' if m else 'fast'}"


_LOST_CASES = [pytest.param(s, lg, m, id=_lost_id(s, lg, m))
               for s in SPECS for lg in (False, True) for m in (False, True)]
# Cases of 5 s or more among those below: in the slow tier (entropy then has no fast case; the
# other specs keep each input form and path fast).
_LOST_SLOW = ("entropy-probs-fast", "entropy-logits-guarded", "kl_divergence-logits-fast",
              "renyi_divergence[alpha=0.5]-logits-fast",
              "renyi_divergence[alpha=2.0]-logits-guarded")


# The fast tier: each mechanism spec on both input forms and both paths, in two complementary
# cases ((probabilities, fast) with (logits, guarded), or the other pair, in turn): the four
# cases a spec cost 8 s.
_LOST_FAST = [(s, lg, m) for i, s in enumerate(
    [s for s in SPECS if s.name in MECHANISM_SPEC_IDS]) for lg, m in (
        ((False, False), (True, True)) if i % 2 == 0 else ((True, False), (False, True)))
    if _lost_id(s, lg, m) not in _LOST_SLOW]


@tiered("spec,from_logits,masked", _LOST_CASES, fast=_LOST_FAST)
def test_a_row_that_is_not_finite_is_a_constant(spec, from_logits, masked):
  """The usual way to drop such rows, `jnp.where(finite, d, 0)`, sends them a zero cotangent,
  and 0 * inf (their partials) was NaN in their inputs' gradient, and so in anything upstream
  that every row shares. Their gradient is now 0, and the other rows' values and gradients are
  those they have alone; jitted and not. A mask of all True takes the guarded path."""
  xs = tuple(jnp.asarray(x, jnp.float32) for x in (_LOST_LOGITS if from_logits
                                                   else _LOST_PROBS)[:spec.nargs])
  w = jnp.ones(xs[0].shape, bool) if masked else None

  def kept(*ys):
    d = call(spec, *ys, from_logits=from_logits, where=None if w is None else w[:len(ys[0])])
    return jnp.sum(jnp.where(jnp.isfinite(d), d, 0))

  values = np.asarray(call(spec, *xs, from_logits=from_logits, where=w))
  lost = ~np.isfinite(values)
  assert lost[0] and np.all(np.isfinite(values[2:]))
  good = np.flatnonzero(~lost)
  argnums = tuple(range(len(xs)))
  alone = jax.grad(kept, argnums)(*(x[good] for x in xs))
  for grad in (jax.grad(kept, argnums), jax.jit(jax.grad(kept, argnums))):
    for g, g_alone in zip(grad(*xs), alone):
      g = np.asarray(g)
      np.testing.assert_array_equal(g[lost], 0.0)
      np.testing.assert_allclose(g[good], np.asarray(g_alone), rtol=1e-6, atol=1e-7)
  # the other rows' values against the float64 reference
  rows = [np.float64(x)[2:] for x in xs]
  if from_logits:
    want = (logits_reference(spec, *rows) if spec.logits_ref is not None else reference(
        spec, *(np.exp(r - r.max(-1, keepdims=True))
                / np.exp(r - r.max(-1, keepdims=True)).sum(-1, keepdims=True) for r in rows)))
  else:
    want = reference(spec, *rows)
  np.testing.assert_allclose(values[2:], want, rtol=1e-5, atol=1e-6)


def _softmax64(x):
  x = np.float64(x)
  e = np.exp(x - x.max())
  return e / e.sum()


def _call_all(spec, cases):
  return [call(spec, *args[:spec.nargs], from_logits=True) for args, _ in cases]


@over_specs(fast_ids=MECHANISM_SPEC_IDS + ("bhattacharyya_distance",))
def test_edge_rows_a_jitted_function_closes_over(spec):
  """Arrays a jitted function closes over are constants to XLA, which folds an edge row's
  log-softmax into a NaN constant, and XLA:CPU's exp of an expression that holds one is an
  arbitrary number, not NaN (jax 0.10.2): the row skipped the guarded path. The Renyi
  divergence of order 2 of a row of -inf logits was 2.48, not 0; the Bhattacharyya distance of
  a row with a NaN logit was 0. Each edge row alone (1-D, 8 and 50 entries), in each
  argument, closed over: 0 for a row of -inf logits, NaN for a NaN or +inf logit (the
  documented values), and for a row with one -inf logit (outside the support) the float64
  reference on its softmax."""
  rng = np.random.default_rng(7)
  for n in (8, 50):
    x, y = (rng.normal(size=n).astype(np.float32) for _ in range(2))
    nan, inf, hole = x.copy(), x.copy(), x.copy()
    nan[3], inf[3], hole[3] = np.nan, np.inf, -np.inf
    rows = [(np.full(n, -np.inf, np.float32), 0.0), (nan, np.nan), (inf, np.nan), (hole, None)]
    cases = [((r, y), want) for r, want in rows]
    if spec.nargs == 2:
      cases += [((y, r), want) for r, want in rows]
    # the cases bound by `partial`: constants of the jitted function, not its arguments
    got = jax.jit(functools.partial(_call_all, spec, cases))()
    for (args, want), g in zip(cases, got):
      if want is None:
        want = reference(spec, *(_softmax64(a) for a in args[:spec.nargs]))
      np.testing.assert_allclose(float(g), want, rtol=1e-5, atol=1e-6,
                                 err_msg=f"n={n}, inputs {[list(a[:4]) for a in args]}")


_SHARED = [
    ("renyi", lambda h, p, q, **kw: jaxdiv.renyi_divergence(p, q, h, **kw)),
    ("tsallis_entropy", lambda h, p, q, **kw: jaxdiv.tsallis_entropy(p, h, **kw)),
    ("js_beta", lambda h, p, q, **kw: jaxdiv.js_divergence(p, q, h / 4, **kw)),
    ("f_closing", lambda h, p, q, **kw: jaxdiv.f_divergence(
        p, q, lambda t: h * t * jnp.log(t) + (h - 1) * (t - 1) ** 2, **kw)),
]
_SHARED_CASES = [pytest.param(name, fn, m, lg, id=f"{name}-{'masked' if m else 'unmasked'}-"
                              f"{'logits' if lg else 'probs'}")
                 for name, fn in _SHARED for m in (False, True) for lg in (False, True)]


# The fast tier: each parameter both masked and not, on both input forms, in two complementary
# cases, as `_LOST_FAST` (the four cost 16 s a parameter), less the cases of 5 s or more:
# renyi-unmasked-probs and f_closing's two (the fast tier runs no f_closing case).
@tiered("name,fn,masked,from_logits", _SHARED_CASES, fast=[
    (name, fn, m, lg) for i, (name, fn) in enumerate(_SHARED) for m, lg in (
        ((False, False), (True, True)) if i % 2 == 0 else ((False, True), (True, False)))
    if (name, m, lg) not in (("renyi", False, False), ("f_closing", False, True),
                             ("f_closing", True, False))])
def test_a_row_that_is_not_finite_leaves_a_shared_parameter_alone(name, fn, masked,
                                                                  from_logits):
  """d/dh of the finite rows' sum, h an order, a mixture weight or a generator's parameter
  shared by every row: a lost row's partial in h (NaN or inf) met its zero cotangent, and the
  gradient was NaN. It is now the other rows' alone."""
  p, q = (jnp.asarray(x, jnp.float32) for x in (_LOST_LOGITS if from_logits else _LOST_PROBS))
  w = jnp.ones(p.shape, bool) if masked else None

  def kept(h, p, q):
    d = fn(h, p, q, from_logits=from_logits, where=None if w is None else w[:len(p)])
    return jnp.sum(jnp.where(jnp.isfinite(d), d, 0))

  lost = ~np.isfinite(np.asarray(fn(1.5, p, q, from_logits=from_logits, where=w)))
  assert lost[0]
  good = np.flatnonzero(~lost)
  want = float(jax.grad(kept)(1.5, p[good], q[good]))
  for grad in (jax.grad(kept), jax.jit(jax.grad(kept))):
    np.testing.assert_allclose(float(grad(1.5, p, q)), want, rtol=1e-5)
  # the derivative itself, against central differences of the finite rows' values
  h = 1e-2
  fd = (float(kept(1.5 + h, p[good], q[good])) - float(kept(1.5 - h, p[good], q[good]))) / (2 * h)
  np.testing.assert_allclose(want, fd, rtol=2e-3, atol=1e-5)


def _incomplete_reference(name, p, q, alpha):
  """The order-alpha family on probabilities as their docstrings state it, float64 numpy: the
  sum averaged under p / sum(p) (under q / sum(q) for the alpha-divergence below 1/2) over the
  entries kept, the limits as those averages."""
  with np.errstate(divide="ignore", invalid="ignore"):
    if name == "alpha_divergence" and alpha < 0.5:
      return _incomplete_reference(name, q, p, 1 - alpha)
    z = p.sum()
    s = p > 0
    d = np.log(p[s]) - (0.0 if q is None else np.log(q[s]))  # log p (entropies) or log p / q
    kl = np.sum(p[s] * d) / z  # E_{p/z}[d]
    if alpha == 1:
      one = {"renyi_entropy": -kl, "tsallis_entropy": -kl}
      return one.get(name, kl)
    if alpha == np.inf:
      inf = {"renyi_entropy": -np.max(d), "tsallis_entropy": 0.0,
             "renyi_divergence": np.max(d),
             "tsallis_divergence": np.inf if np.max(d) > 0 else 0.0}
      return inf[name]
    t = alpha - 1
    mean = np.sum(p[s] * np.exp(t * d)) / z  # E_{p/z}[exp((alpha - 1) d)]
    return {"renyi_entropy": -np.log(mean) / t, "tsallis_entropy": (1 - mean) / t,
            "renyi_divergence": np.log(mean) / t, "tsallis_divergence": (mean - 1) / t,
            "alpha_divergence": (mean - 1) / (t * alpha)}[name]


@pytest.mark.parametrize("name,alpha", [
    *((n, a) for n in ("renyi_entropy", "tsallis_entropy", "renyi_divergence",
                       "tsallis_divergence") for a in (0.0, 0.5, 1.0, 2.0, 3.0, np.inf)),
    *(("alpha_divergence", a) for a in (0.0, 0.3, 0.5, 1.0, 2.0))])
def test_order_alpha_on_incomplete_probabilities_is_the_average_under_p_over_its_mass(
    x64, name, alpha):
  """helper-59: the docstrings stated the limits of a normalised p (H_0 = log |supp p|, H_1 =
  H(p)) while a mask or an unnormalised p gives Rényi's incomplete-distribution values; they
  now state those. Masked rows, unnormalised rows and zeros, against float64 numpy."""
  rng = np.random.default_rng(7)
  p = rng.uniform(0.05, 1.0, (6, 5))
  q = rng.uniform(0.05, 1.0, (6, 5))
  p[1, :2] = 0.0  # outside the support of p
  p[2] /= p[2].sum()  # normalised: masked below, so incomplete again
  q[3] /= 3.0
  keep = np.ones((6, 5), bool)
  keep[2, 3:] = False
  keep[4, 0] = False
  fn = getattr(jaxdiv, name)
  two = "divergence" in name
  got = (fn(p, q, alpha, where=keep) if two else fn(p, alpha, where=keep))
  want = [_incomplete_reference(name, p[i][keep[i]], q[i][keep[i]] if two else None, alpha)
          for i in range(6)]
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=1e-12)


def _js_rows_below_the_normal_range():
  """float32 rows with entries whose weighted mixture terms fall below the normal range
  (1.2e-38), where XLA:CPU flushes products to 0."""
  rng = np.random.default_rng(7)
  p, q = (rng.dirichlet(np.ones(64), 6).astype(np.float32) for _ in range(2))
  p[0, 3], q[0, 3] = 1.5e-38, 0.0  # p's weighted term alone, below the normal range
  p[1, 3], q[1, 3] = 1.5e-38, 1.3e-38  # both normal, both products below it
  p[2, 5], q[2, 5] = 0.0, 3e-38  # the same on q's side
  p[3], q[3] = rng.dirichlet(np.full(64, 0.02), 2).astype(np.float32)  # sparse: tiny entries
  p[4, 7], q[4, 7] = 2e-38, 1e-30  # one product below the range, the other far above
  q[5] = p[5]  # p = q: 0 (exactly at beta = 1/2, where m = p as rounded)
  return p, q


_JS_BELOW_CASES = [(path, beta) for path in ("fast", "masked", "traced beta")
                   for beta in (0.5, 0.3, 0.9)]


# fast-0.5 (9 s) in the slow tier; the other betas keep each path fast.
@tiered("path,beta", _JS_BELOW_CASES, fast=[c for c in _JS_BELOW_CASES if c != ("fast", 0.5)])
def test_js_of_probabilities_below_the_normal_range(beta, path):
  p, q = _js_rows_below_the_normal_range()
  assert np.sum(np.minimum(beta * p, (1 - beta) * q)[3] < np.finfo(np.float32).tiny) > 2
  where = np.ones(p.shape, bool) if path == "masked" else None
  b = np.full(p.shape[0], beta, np.float32) if path == "traced beta" else beta
  P, Q = p.astype(np.float64), q.astype(np.float64)
  M = beta * P + (1 - beta) * Q
  # scipy in float64: JS = beta KL(p||m) + (1 - beta) KL(q||m).
  want = (beta * scipy.special.rel_entr(P, M) + (1 - beta) * scipy.special.rel_entr(Q, M)).sum(-1)
  got = jaxdiv.js_divergence(p, q, b, where=where)
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-6, atol=5e-8)
  dist = jaxdiv.js_distance(p, q, b, where=where)
  np.testing.assert_allclose(np.asarray(dist)[:5], np.sqrt(want[:5]), rtol=2e-6)
  if beta == 0.5:
    assert float(got[5]) == 0.0 and float(dist[5]) == 0.0
  # d JS / d p_i = beta log(p_i / m_i), d JS / d q_i = (1 - beta) log(q_i / m_i) (closed form)
  # where both are normal numbers (XLA:CPU reads a subnormal input as 0); finite everywhere.
  gp, gq = jax.grad(lambda x, y: jnp.sum(jaxdiv.js_divergence(x, y, b, where=where)),
                    argnums=(0, 1))(p, q)
  assert np.all(np.isfinite(gp)) and np.all(np.isfinite(gq))
  tiny, eps = np.finfo(np.float32).tiny, np.finfo(np.float32).eps
  both = (p >= tiny) & (q >= tiny)
  # log p - log m in float32 is good to an ulp of log p (7.6e-6 near p = 1e-38).
  for g, w, x in ((gp, beta * np.log(P / M), P), (gq, (1 - beta) * np.log(Q / M), Q)):
    err = np.abs(np.asarray(g, np.float64) - w)[both]
    assert np.all(err <= 1e-5 * np.abs(w[both]) + 4 * eps * np.abs(np.log(x[both]))), err.max()
  assert both[1, 3] and both[4, 7]  # the entries whose mixture was flushed are among them


# Unmasked (5.2 s) in the slow tier; the masked case stays fast.
@pytest.mark.parametrize("masked", [pytest.param(False, marks=pytest.mark.slow), True])
def test_a_zero_value_is_positive_zero(masked):
  """A value that is exactly 0 is +0.0, as scipy's (`scipy.stats.entropy([1, 0])` is 0.0): a
  negated sum of zero terms was -0.0 (entropy, cross-entropy, Rényi and Tsallis entropies of a
  one-hot row; 1 / H was -inf)."""
  assert not np.signbit(scipy.stats.entropy([1.0, 0.0]))
  x, one = np.array([1.0, 0.0], np.float32), np.array([1.0], np.float32)
  kw = dict(where=np.ones(2, bool)) if masked else {}
  values = {
      "entropy": jaxdiv.entropy(x, **kw), "entropy of one entry": jaxdiv.entropy(one),
      "cross_entropy": jaxdiv.cross_entropy(x, x, **kw),
      "renyi_entropy 2": jaxdiv.renyi_entropy(x, 2.0, **kw),
      "renyi_entropy 0.5": jaxdiv.renyi_entropy(x, 0.5, **kw),
      "tsallis_entropy 2": jaxdiv.tsallis_entropy(x, 2.0, **kw),
      "tsallis_entropy 0.5": jaxdiv.tsallis_entropy(x, 0.5, **kw),
      "kl_divergence": jaxdiv.kl_divergence(x, x, **kw),
      "js_divergence": jaxdiv.js_divergence(x, x, **kw),
      "renyi_divergence 2": jaxdiv.renyi_divergence(x, x, 2.0, **kw),
      "tsallis_divergence 2": jaxdiv.tsallis_divergence(x, x, 2.0, **kw),
      "alpha_divergence 2": jaxdiv.alpha_divergence(x, x, 2.0, **kw),
      "total_variation_distance": jaxdiv.total_variation_distance(x, x, **kw),
      "hellinger_distance": jaxdiv.hellinger_distance(x, x, **kw),
      "chi_squared_divergence": jaxdiv.chi_squared_divergence(x, x, **kw),
      "jeffreys_divergence": jaxdiv.jeffreys_divergence(x, x, **kw),
  }
  for name, v in values.items():
    assert float(v) == 0.0 and not np.signbit(v), (name, float(v))
  # The derivative is untouched: d H / d p = -(log p + 1) at p = 1 (the convention 0 at p = 0).
  np.testing.assert_allclose(jax.grad(lambda p: jaxdiv.entropy(p, **kw))(x), [-1.0, 0.0])


def _power_sum_rows():
  """float32 rows whose powers p ** alpha fall below the normal range (1.2e-38, flushed to 0
  on XLA:CPU) where the terms p ** alpha q ** (1 - alpha) are not small (helper-61)."""
  rng = np.random.default_rng(11)
  p, q = (rng.dirichlet(np.ones(512), 4).astype(np.float32) for _ in range(2))
  p[0, :2], q[0, :2] = (1e-19, 3e-10), (1.2e-38, 2e-10)  # p ** 2 = 1e-38 over q = 1.2e-38
  p[1, :2], q[1, :2] = (2e-6, 2.5e-6), (1e-6, 6e-7)  # p ** 7 = 1.3e-40: a term of 0.01
  p[2, :2], q[2, :2] = (3.49e-6, 1e-3), (2.786e-6, 1e-3)  # near-equal small entries
  p[3, :2], q[3, :2] = (0.1, 1e-5), (1e-36, 1e-5)  # S ~ 1e34: each term over S below 1e-38
  return p / p.sum(-1, keepdims=True), q / q.sum(-1, keepdims=True)


_POWER_SUM_CASES = [
    *((n, a) for n in ("renyi_divergence", "tsallis_divergence", "alpha_divergence")
      for a in (2.0, 2.5, 7.0)),
    ("alpha_divergence", -1.0)]


# Renyi at 2.5 (8 s) in the slow tier; Renyi at 2 and 7 and the others at 2.5 stay fast.
@tiered("name,alpha", _POWER_SUM_CASES,
        fast=[c for c in _POWER_SUM_CASES if c != ("renyi_divergence", 2.5)])
def test_power_sums_below_the_normal_range(name, alpha):
  p, q = _power_sum_rows()
  if alpha < 0:  # the order -1 of (q, p) is the order 2 of (p, q): its powers are q ** 2
    p, q = q, p
  fn = getattr(jaxdiv, name)
  P, Q = p.astype(np.float64), q.astype(np.float64)
  # Beyond float32's range the float32 answer is +-inf (row 3 of the Tsallis and alpha forms).
  big = np.finfo(np.float32).max
  in_range = lambda w: np.where(np.abs(w) > big, np.copysign(np.inf, w), w)
  want = in_range(np.array([_incomplete_reference(name, P[i], Q[i], alpha)
                            for i in range(len(P))]))
  got = fn(p, q, alpha)
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=2e-5, atol=1e-7)
  if alpha < 0:
    return
  # d/dq_i, closed form for a normalised p: -(p_i / q_i) ** alpha / c with c = S (Rényi), 1
  # (Tsallis) and alpha (alpha-divergence), S = sum p ** alpha q ** (1 - alpha).
  g = np.asarray(jax.grad(lambda q: jnp.sum(fn(p, q, alpha)))(q), np.float64)
  ratio = (P / Q) ** alpha
  c = {"renyi_divergence": np.sum(P ** alpha * Q ** (1 - alpha), -1, keepdims=True),
       "tsallis_divergence": 1.0, "alpha_divergence": alpha}[name]
  want_g = in_range(-ratio / (c * P.sum(-1, keepdims=True)))
  want_g[~np.isfinite(want)] = 0.0  # a row whose value is not finite is a constant
  np.testing.assert_allclose(g[:, :2], want_g[:, :2], rtol=1e-4, atol=1e-30)  # float32: 0 below


@pytest.mark.parametrize("masked", [False, True])
def test_f_divergence_with_an_infinite_slope_at_zero_has_finite_gradients(masked):
  """helper-61: the generator (sqrt t - 1)^2 (finite at 0, infinite slope there) gave d/dq NaN
  at p = 0 (autodiff's q f'(0) d(p / q)/dq = -inf * 0). Closed forms: the value sum (sqrt p -
  sqrt q)^2; d/dq = f(r) - r f'(r) = 1 - sqrt(p / q), which is f(0) = 1 at p = 0; d/dp = f'(r)
  = 1 - sqrt(q / p), 0 at p = 0 (a zero entry's infinite slope, as `hellinger_distance`'s)."""
  gen = lambda t: (jnp.sqrt(t) - 1) ** 2
  p, q = np.array([0.0, 0.3, 0.7]), np.array([0.2, 0.4, 0.4])
  kw = dict(where=np.ones(3, bool)) if masked else {}
  fn = lambda p, q: jaxdiv.f_divergence(p, q, gen, **kw)
  np.testing.assert_allclose(float(fn(p, q)), np.sum((np.sqrt(p) - np.sqrt(q)) ** 2), rtol=1e-6)
  gp, gq = jax.grad(fn, argnums=(0, 1))(p, q)
  with np.errstate(divide="ignore"):
    want_p = np.where(p > 0, 1 - np.sqrt(q / p), 0.0)
  np.testing.assert_allclose(np.asarray(gq), 1 - np.sqrt(p / q), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(gp), want_p, rtol=1e-6)


# 0.999 (5.1 s) in the slow tier; 1.0 and the array stay fast.
@pytest.mark.parametrize("beta", [pytest.param(0.999, marks=pytest.mark.slow), 1.0, "array"])
def test_js_at_p_equal_q_with_an_entry_near_the_normal_range_is_exactly_zero(beta):
  """helper-62: where the mixture is below tiny / eps (1e-31 in float32) its log is taken from
  the scaled mixture, which left an ulp of log p at p = q: JS 1.2e-38 instead of 0, and the JS
  distance's gradient 3.5e13 instead of 0 (its root's subgradient at 0)."""
  p = np.array([[1.573928e-33, 0.25, 0.75], [1.573928e-33, 0.5, 0.5]], np.float32)
  b = np.array([0.0, 1.0], np.float32) if beta == "array" else beta
  for where in (None, np.ones(p.shape, bool)):
    assert np.all(np.asarray(jaxdiv.js_divergence(p, p, b, where=where)) == 0.0)
    g = jax.grad(lambda x, w=where: jnp.sum(jaxdiv.js_distance(x, x, b, where=w)))(p)
    np.testing.assert_array_equal(np.asarray(g), 0.0)


def test_f_divergence_custom_vjp_generator_keeps_its_slope_at_zero():
  """helper-62: a generator without a forward-mode derivative (`custom_vjp`) was sent to the
  limit branch at p = 0 (d/dp 0) by the check of f'(0); its f(0) is finite, so the term is
  q f(p / q) as written, with d/dp = f'(0) = -2 for (t - 1)^2 (closed form f'(r), r = p / q)."""
  @jax.custom_vjp
  def gen(t):
    return (t - 1) ** 2

  gen.defvjp(lambda t: ((t - 1) ** 2, t), lambda t, g: (2 * (t - 1) * g,))
  p, q = np.array([0.0, 0.4, 0.6]), np.array([0.2, 0.3, 0.5])
  g = jax.grad(lambda p: jaxdiv.f_divergence(p, q, gen, where=np.ones(3, bool)))(p)
  np.testing.assert_allclose(np.asarray(g), 2 * (p / q - 1), rtol=1e-6)


@pytest.mark.parametrize("masked", [False, True])
def test_chi_squared_with_a_difference_below_the_normal_range(masked):
  """helper-61: (p - q)^2 flushed to 0 (XLA:CPU) for |p - q| < 1.1e-19 where the term (p - q)^2
  / q is not small (q near 1e-38): the value 0 against 0.83, the masked path's d/dq -0.2223
  against -0.2347. float64 closed forms: sum (p - q)^2 / q; d/dq = 1 - (p / q)^2."""
  p = np.array([[1e-19, 0.5, 0.5], [9.597e-19, 0.5, 0.5]], np.float32)
  q = np.array([[1.2e-38, 0.5, 0.5], [8.637e-19, 0.5, 0.5]], np.float32)
  kw = dict(where=np.ones(p.shape, bool)) if masked else {}
  P, Q = p.astype(np.float64), q.astype(np.float64)
  got = jaxdiv.chi_squared_divergence(p, q, **kw)
  np.testing.assert_allclose(np.asarray(got), np.sum((P - Q) ** 2 / Q, -1), rtol=1e-5)
  g = jax.grad(lambda q: jnp.sum(jaxdiv.chi_squared_divergence(p, q, **kw)))(q)
  np.testing.assert_allclose(np.asarray(g)[1], 1 - (P[1] / Q[1]) ** 2, rtol=1e-4)


@pytest.mark.parametrize("masked", [False, True])
def test_total_variation_sign_where_the_difference_flushes(masked):
  """helper-61: p - q flushes to 0 (XLA:CPU) where p and q are both near 1.2e-38, and the
  gradient took the sign of that 0: d TV / d p +0.5 where p < q. Closed form: sign(p - q) / 2,
  +1/2 at p = q (as `jnp.abs`'s derivative at 0)."""
  p = np.array([1.42e-38, 0.5, 0.5], np.float32)
  q = np.array([1.5e-38, 0.3, 0.7], np.float32)
  kw = dict(where=np.ones(3, bool)) if masked else {}
  g = jax.grad(lambda p: jaxdiv.total_variation_distance(p, q, **kw))(p)
  np.testing.assert_array_equal(np.asarray(g), [-0.5, 0.5, -0.5])
  g = jax.grad(lambda x: jaxdiv.total_variation_distance(x, p, **kw))(p)  # q = p held
  np.testing.assert_array_equal(np.asarray(g), [0.5, 0.5, 0.5])


_BEYOND_CASES = [(mode, n, a) for mode in ("fast", "masked", "traced", "logits")
                 for n, a in (("tsallis_divergence", 7.0), ("alpha_divergence", 7.0),
                              ("alpha_divergence", 3.5), ("alpha_divergence", -6.0))]


# fast-tsallis_divergence-7.0 (7.4 s) in the slow tier; Tsallis on the other modes and the
# alpha-divergence on the fast one stay fast.
@tiered("mode,name,alpha", _BEYOND_CASES,
        fast=[c for c in _BEYOND_CASES if c != ("fast", "tsallis_divergence", 7.0)])
def test_power_sum_beyond_the_float32_range_with_a_value_within_it(name, alpha, mode):
  """helper-61: where only the power sum S overflows float32 (3.4e38) and the value, (S - 1) /
  c with c = alpha - 1 (Tsallis) or alpha (alpha - 1), fits, the value was +inf (expm1 of
  log S > 88.7). Rows: S about 1.5e39 and 1e40 (finite value), and 1e41 (inf for each); the
  reference is the float64 sum as the docstrings state it."""
  a_eff = max(alpha, 1 - alpha)
  # p = (1/2, 1/2) against q = (x, 1 - x): S = 2^-a_eff x^(1 - a_eff) + ... = target.
  xs = [(s * 2 ** a_eff) ** (1 / (1 - a_eff)) for s in (1.5e39, 1e40, 1e41)]
  p = np.full((3, 2), 0.5, np.float32)
  q = np.array([[x, 1 - x] for x in xs], np.float32)
  if alpha < 0.5:  # the order alpha of (q, p) is the order 1 - alpha of (p, q)
    p, q = q, p
  P, Q = p.astype(np.float64), q.astype(np.float64)
  big = np.finfo(np.float32).max
  want = np.array([_incomplete_reference(name, P[i], Q[i], alpha) for i in range(3)])
  want = np.where(want > big, np.inf, want)
  assert np.isfinite(want[0]) and np.isinf(want[2])  # the rows are what they should be
  fn = getattr(jaxdiv, name)
  if mode == "fast":
    got = fn(p, q, alpha)
  elif mode == "masked":
    got = fn(p, q, alpha, where=np.ones(p.shape, bool))
  elif mode == "traced":
    got = jax.jit(fn)(p, q, alpha)
  else:
    got = fn(np.log(p), np.log(q), alpha, from_logits=True)
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-4)
  # The gradient where it fits: d/dx_2 of (S / z - 1) / c, S = sum x^a y^(1 - a), z = sum x,
  # with (x, y, a) = (p, q, alpha), or (q, p, 1 - alpha) below 1/2; c = alpha (alpha - 1) or
  # alpha - 1 (Tsallis). The first entry's is +inf; no entry's may be NaN.
  c = a_eff - 1 if name == "tsallis_divergence" else alpha * (alpha - 1)
  x, y = (P[0], Q[0]) if alpha >= 0.5 else (Q[0], P[0])
  s, z = np.sum(x ** a_eff * y ** (1 - a_eff)), x.sum()
  want_g = a_eff * (x[1] / y[1]) ** (a_eff - 1) / (c * z) - s / (c * z * z)
  arg = 0 if alpha >= 0.5 else 1
  g = jax.grad(lambda *pq: fn(*pq, alpha, where=np.ones(p.shape, bool))[0], arg)(p, q)
  np.testing.assert_allclose(float(g[0, 1]), want_g, rtol=1e-4)
  assert np.isposinf(g[0, 0])


@pytest.mark.parametrize("masked", [False, True])
def test_jeffreys_gradient_where_the_difference_flushes(masked):
  """helper-61: p - q flushes to 0 (XLA:CPU) where p != q are both near 1.2e-38, and the
  quotients (p - q) / p, (p - q) / q of the gradient were 0. float64 closed forms: d/dp =
  log(p / q) + (p - q) / p, d/dq = -log(p / q) - (p - q) / q."""
  p = np.array([1.42e-38, 0.5, 0.5], np.float32)
  q = np.array([1.5e-38, 0.3, 0.7], np.float32)
  P, Q = p.astype(np.float64), q.astype(np.float64)
  kw = dict(where=np.ones(3, bool)) if masked else {}
  gp, gq = jax.grad(lambda p, q: jaxdiv.jeffreys_divergence(p, q, **kw), (0, 1))(p, q)
  # float32 log p - log q near p = 1e-38 is within eps |log p| = 5e-6 (absolute) of log(p / q)
  np.testing.assert_allclose(np.asarray(gp), np.log(P / Q) + (P - Q) / P, rtol=1e-6, atol=2e-5)
  np.testing.assert_allclose(np.asarray(gq), -np.log(P / Q) - (P - Q) / Q, rtol=1e-6, atol=2e-5)


@pytest.mark.parametrize("name", ["binary_kl_divergence", "binary_cross_entropy"])
def test_bernoulli_gradients_where_the_difference_flushes(name):
  """helper-61: p - q flushes to 0 (XLA:CPU) where p != q are both near 1.2e-38: the KL's
  log(p / q) (as log1p((p - q) / q)) and both forms' d/dq, (q - p) / (q (1 - q)), were 0.
  float64 closed forms: KL d/dp = log(p / q) - log((1 - p) / (1 - q)), d/dq of both =
  (1 - p) / (1 - q) - p / q."""
  p = np.array([1.42e-38, 1.5e-38, 0.3], np.float32)
  q = np.array([1.5e-38, 1.42e-38, 0.3], np.float32)
  P, Q = p.astype(np.float64), q.astype(np.float64)
  fn = getattr(jaxdiv, name)
  gp, gq = jax.grad(lambda p, q: jnp.sum(fn(p, q)), (0, 1))(p, q)
  np.testing.assert_allclose(np.asarray(gq), (1 - P) / (1 - Q) - P / Q, rtol=1e-5, atol=1e-7)
  if name == "binary_kl_divergence":
    want = np.log(P / Q) - np.log((1 - P) / (1 - Q))
    np.testing.assert_allclose(np.asarray(gp), want, rtol=1e-5, atol=1e-7)
