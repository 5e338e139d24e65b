"""f-divergences: the general one for a user's convex generator, and its named members."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from jaxdiv import _fallback
from jaxdiv import _numerics
from jaxdiv import _unit_axes
from jaxdiv import _validation
from jaxdiv.discrete import _common
from jaxdiv.discrete import _fast

# f'(inf) = lim f(t)/t is estimated from f(t)/t at these three points (see _slope_at_infinity).
_T1, _T2, _T3, _RTOL, _CONTRACT = 1e10, 1e20, 1e30, 1e-3, 0.5


def _slope_at_infinity(f, dtype):
  """f'(inf) = lim f(t)/t from l_k = f(t_k)/t_k at t = 1e10, 1e20, 1e30: l_3 where the last two
  agree to _RTOL (relatively: a small-scale superlinear f, 1e-5 t log t, is not linear); the
  Aitken extrapolation l_3 - d_2^2 / (d_2 - d_1) (d_k the steps) where the steps shrink
  geometrically, by at least _CONTRACT, with one sign: a convex f with a finite limit is L t
  plus a convex part whose share of f(t)/t decays, as a power of t (4 - 4 sqrt t: -4e-5,
  -4e-10, -4e-15; -t^0.9: -0.1, -0.01, -0.001; limit 0); +inf otherwise (superlinear: steps
  that stay or grow, t log t - 50 t: -27, -4, 19; or an f(t) that overflows)."""
  ls = [f(jnp.asarray(t, dtype)) / t for t in (_T1, _T2, _T3)]
  l1, l2, l3 = ls
  d1, d2 = l2 - l1, l3 - l2
  scale = jnp.maximum(jnp.abs(l2), jnp.abs(l3))
  finite = jnp.isfinite(l1) & jnp.isfinite(l2) & jnp.isfinite(l3)
  agree = finite & (jnp.abs(d2) <= _RTOL * scale)
  # Signs compared and the correction formed as d_2 (d_2 / (d_2 - d_1)), not from products of
  # steps: steps of 1e-20 and 1e-40 (1 / (1 + t) in float32) have products that underflow to 0,
  # which took the limit to +inf (d_1 d_2 > 0 false) or left l_3 uncorrected (d_2^2 = 0).
  decays = (finite & ~agree & (jnp.sign(d1) == jnp.sign(d2)) & (d2 != 0)
            & (jnp.abs(d2) <= _CONTRACT * jnp.abs(d1)))
  limit = lax.stop_gradient(jnp.where(
      decays, l3 - d2 * (d2 / jnp.where(decays, d2 - d1, 1)), l3))
  ok = lax.stop_gradient(agree | decays)
  # The slope's derivative (in parameters `f` closes over) is f's at _T3 where the limit is
  # finite; elsewhere f is read at 1, so that an overflowing f(_T3) leaves no inf in it.
  at_t3 = f(jnp.where(ok, jnp.asarray(_T3, dtype), 1)) / _T3
  return jnp.where(ok, at_t3 + lax.stop_gradient(jnp.where(ok, limit, 0) - at_t3), jnp.inf)


def _static_at(f, t, dtype):
  """`f(t)` as a NumPy value where it is known at trace time; None for an f that closes over
  traced values (or fails there)."""
  try:
    with jax.ensure_compile_time_eval():
      return np.asarray(f(jnp.asarray(t, dtype)))
  except Exception:  # pylint: disable=broad-except  # traced or failing: not known
    return None


def _static_finite_at_zero(f, dtype) -> bool:
  """Whether f(0) and f'(0) are known at trace time to be finite (then q f(p/q) is used at p =
  0 as is, with its true gradient); False for a NaN/inf f(0) or f'(0), or an f that closes over
  traced values (the limit branch: the value q f(0), d/dq = f(0), d/dp = 0, as a zero entry's
  other infinite slopes, `_numerics.safe_sqrt`'s). An infinite f'(0) (`(sqrt t - 1)^2`) made
  d/dq NaN there through autodiff's `q f'(0) d(p/q)/dq` = -inf * 0 (true: f(0) = 1)."""
  f0 = _static_at(f, 0.0, dtype)
  # An f without a forward-mode derivative (a `custom_vjp`) is judged by f(0) alone.
  slope = _static_at(lambda t: jax.jvp(f, (t,), (jnp.ones_like(t),))[1], 0.0, dtype)
  return (f0 is not None and bool(np.all(np.isfinite(f0)))
          and (slope is None or bool(np.all(np.isfinite(slope)))))


def _bounded_at_infinity(f, dtype, slope):
  """Whether `f(inf)` is a finite limit, the term of a ratio beyond the floating-point range
  then being `q f(inf)`: finite, below the largest float (a generator clamped there,
  `nan_to_num((t - 1)^2)`, is not bounded: its true term overflows) and with a slope at infinity
  of 0 (`slope`: `f_prime_inf` or its estimate; a clamped linear f has 1/2)."""
  f_inf = lax.stop_gradient(f(jnp.asarray(jnp.inf, dtype)))
  size = jnp.abs(f_inf)
  return (size < jnp.finfo(dtype).max) & (jnp.abs(lax.stop_gradient(slope)) * _T2 <= 1 + size)


def _overflow_needs_guard(f, inputs, f_prime_inf) -> bool:
  """Whether the fast path must send a row whose ratio overflows to the guarded path: unless it
  is known at trace time that `f(inf)` is not finite (the term is then inf or NaN itself) or
  that `f` is bounded at infinity (the term `q f(inf)` is the guarded path's)."""
  try:
    # the inputs' dtypes only (no copy of a host array to the device)
    dtype = jax.dtypes.canonicalize_dtype(np.result_type(
        *(x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype for x in inputs), np.float32))
    f_inf = _static_at(f, jnp.inf, dtype)
    if f_inf is None:  # f closes over traced values
      return True
    if not np.all(np.isfinite(f_inf)):
      return False
    with jax.ensure_compile_time_eval():
      slope = (_slope_at_infinity(f, dtype) if f_prime_inf is None
               else jnp.asarray(f_prime_inf, dtype))
      return not bool(np.all(np.asarray(_bounded_at_infinity(f, dtype, slope))))
  except Exception:  # pylint: disable=broad-except  # a traced f_prime_inf, odd inputs: guard
    return True


def _value_at_zero(f, dtype):
  zero = jnp.asarray(0.0, dtype)
  tiny = jnp.asarray(jnp.finfo(dtype).tiny, dtype)
  # A generator written as t * log(t) gives NaN at 0; its limit is f at the smallest normal.
  # f is evaluated at the point chosen, so that the NaN of f(0) has no derivative to leave in
  # the gradient of a parameter f closes over; an infinite f(0) (-log t) is that constant,
  # without the infinite derivative that a zero cotangent would meet.
  f0 = lax.stop_gradient(f(zero))
  bad = jnp.isnan(f0) | jnp.isinf(f0)
  return jnp.where(jnp.isinf(f0), f0, f(jnp.where(bad, tiny, zero)))


def _closes_over_tracers(f, f_prime_inf) -> bool:
  """Whether `f` (or `f_prime_inf`) holds traced values (a parameter of an enclosing `jit`,
  `grad` or `vmap`): the fast path's `custom_jvp` would not differentiate them (JAX raised
  UnexpectedTracerError under `jax.grad`, and under `jit` a later differentiation cannot be
  ruled out), so those calls differentiate the fast path's values as written
  (`_fast.run(autodiff=True)`)."""
  return _fallback.closes_over_tracers(lambda t: (f(t), f_prime_inf), jnp.zeros((), jnp.float32))


def _generator_holds_no_array(arguments) -> bool:
  """Whether the generator `f` closes over scalars only: one that holds an array (a weight a
  row, or even one of shape [1, 1, 1], which would broadcast the rows back to the inputs'
  rank) is computed on the inputs' own shape, batch axes of size 1 kept."""
  closed = _fallback.trace_fresh(lambda t: arguments["f"](t), jnp.zeros((), jnp.float32))
  return closed is not None and all(np.ndim(c) == 0 for c in closed.consts)


@_unit_axes.dropped(dists=("p", "q"), when=_generator_holds_no_array,
                    leading=_common.on_probabilities)
def f_divergence(
    p: ArrayLike, q: ArrayLike, f: Callable[[jax.Array], jax.Array], *, axis: int = -1,
    where: ArrayLike | None = None, from_logits: bool = False,
    f_prime_inf: float | None = None,
) -> jax.Array:
  r"""The f-divergence D_f(p‖q) for a convex generator ``f`` with ``f(1) = 0``.

  .. math::
    D_f(p \,\|\, q) = \sum_i q_i\, f\!\left(\frac{p_i}{q_i}\right),

  with the perspective's limits: ``0 f(0/0) = 0``, ``q f(0) = q lim_{t->0} f(t)`` and
  ``f(p/0) 0 = p f'(inf)``, ``f'(inf) = lim_{t->inf} f(t)/t``. Examples of ``f``:
  ``t log t`` (KL), ``-log t`` (reverse KL), ``|t - 1| / 2`` (total variation),
  ``(t - 1)^2`` (Pearson chi-squared), ``(sqrt t - 1)^2`` (twice the squared Hellinger).

  ``f`` must be elementwise, written with ``jax.numpy`` so that it can be differentiated; it is
  called on the ratios ``p/q`` (computed as ``exp(log p - log q)`` with ``from_logits``). A
  ratio beyond the floating-point range (``1e30 / 1e-10`` in float32) is taken at its limit:
  ``q f(inf)`` where ``f`` is bounded at infinity (``f(inf)`` finite and below the largest
  float, ``f'(inf) = 0``), else ``p f'(inf)`` (so a generator clamped with ``nan_to_num`` is
  not taken at its clamp). ``f`` itself may overflow at a large finite ratio (``(t - 1)^2`` at
  ``t = 1e30`` in float32); for the named divergences use the dedicated functions, which stay
  in log space throughout.

  Args:
    p: first distribution, shape ``[..., n, ...]``.
    q: second distribution, broadcastable with ``p``.
    f: convex generator, elementwise.
    axis: the axis that holds the distribution.
    where: boolean mask broadcastable to the inputs.
    from_logits: ``p`` and ``q`` are logits.
    f_prime_inf: ``lim f(t)/t`` as ``t -> inf``, used where ``q = 0 < p``. ``None`` estimates it
      from ``f(t)/t`` at ``t = 1e10``, ``1e20`` and ``1e30``: the last two equal to 0.1%
      give that value (a generator of linear growth, such as total variation or Hellinger),
      steps that shrink geometrically their extrapolated limit (``4 - 4 sqrt t``: 0),
      otherwise ``+inf`` (superlinear, such as KL or chi-squared). Pass it to be exact.

  Returns:
    D_f(p‖q), the broadcast batch shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv
    >>> p = jnp.array([0.5, 0.5]); q = jnp.array([0.9, 0.1])
    >>> tv = jaxdiv.f_divergence(p, q, lambda t: 0.5 * jnp.abs(t - 1))
    >>> print(round(float(tv), 4))
    0.4

  References:
    Csiszár, Information-Type Measures of Difference of Probability Distributions, 1967;
    Ali & Silvey, A General Class of Coefficients of Divergence, 1966.
  """
  _validation.check_callable(f, "f")
  if f_prime_inf is not None:
    _validation.check_real(f_prime_inf, "f_prime_inf", allow_inf=True)
  autodiff = _closes_over_tracers(f, f_prime_inf)
  guard = _overflow_needs_guard(f, (p, q), f_prime_inf)
  return _fast.evaluate((p, q), lambda prep: _f_divergence(prep, f, f_prime_inf),
                        _f_fast(f, autodiff, guard), axis=axis, where=where,
                        from_logits=from_logits, autodiff=autodiff)


@jax.custom_jvp
def _ratio(p, q):
  """`p / q`, with no derivative where it is beyond the floating-point range (+inf for a finite
  p over a positive q). The term there is `q f(inf)` where `f` is bounded at infinity, whose
  derivative in q is `f(inf)` and in p `q f'(inf) = 0`; autodiff through the ratio would form
  `f'(inf) * inf` (forward) or `0 * p q^-2` with an infinite `q^-2` (reverse), NaN either way.
  One division, as `p / q`, in the value and in first derivatives. `_numerics.ratio`'s
  derivative, `(dp - r dq) / q`, without that zero where r is +inf."""
  return p / q


@_ratio.defjvp
def _ratio_jvp(primals, tangents):
  (p, q), (tp, tq) = primals, tangents
  r = _ratio(p, q)
  live = ~jnp.isinf(r)
  return r, jnp.where(live, tp - jnp.where(live, r, 0) * tq, 0) / q


@jax.custom_jvp
def _exp_ratio(d):
  """`exp(d)`, the ratio from a difference of log-probabilities, as :func:`_ratio`."""
  return jnp.exp(d)


@_exp_ratio.defjvp
def _exp_ratio_jvp(primals, tangents):
  (d,), (t,) = primals, tangents
  r = _exp_ratio(d)
  return r, jnp.where(jnp.isinf(r), 0, r) * t


def _f_fast(f, autodiff=False, guard=True):
  """Unguarded `sum q f(p / q)` for `_fast.run`, on rows where every p and q is positive (and
  every logit finite): the perspective's limits at p = 0 or q = 0 are the guarded path's. A
  ratio beyond the floating-point range stays here where `f` is bounded at infinity (its term
  is `q f(inf)`, as the guarded path's), and makes the row infinite or NaN otherwise. `autodiff`:
  the value is differentiated as written (:func:`_fast.run`), through :func:`_ratio`. `guard`
  (:func:`_overflow_needs_guard`): a ratio beyond the range makes the row NaN, the guarded
  path's (a second use of the ratio, which XLA:CPU writes out: only for such generators)."""

  def overflow(terms, r):
    return terms + jnp.where(jnp.isinf(r), jnp.nan, 0) if guard else terms

  def f_and_slope(r):
    return jax.jvp(f, (r,), (jnp.ones_like(r),))

  def value_probs(ax, p, q):
    # `0 * (p + q)` is NaN at a NaN or infinite entry, which `f` may map to a number (and the
    # guard's row minima may drop a NaN). A negative or zero entry (the perspective's limits
    # there are the guarded path's) is in the row minima of p and q, in one pass with the sum
    # where `f` is arithmetic. Not `0 * r`: a second use of r made XLA:CPU write it out.
    def terms(p, q):
      r = _ratio(p, q) if autodiff else p / q
      return _fast.Terms(overflow(q * f(r) + 0 * (p + q), r), positive=(p, q))

    return _fast.guarded_sum(terms, (p, q), ax, reads=2,
                             one_pass=_fast.arithmetic_only(f, p.dtype)), None

  def coefs_probs(ax, out, aux, p, q):
    r = _ratio(p, q)
    fr, dfr = f_and_slope(r)
    # d/dq of q f(p / q) is f(r) - r f'(r), and f(inf) where p / q overflows (a row that stays
    # here only where f is bounded at infinity: r f'(r) -> 0, and inf * 0 would be NaN).
    return dfr, fr - jnp.where(jnp.isinf(r), 0.0, r) * dfr

  def value_logits(ax, a, b):
    la, lb = _fast.log_softmax(a, ax), _fast.log_softmax(b, ax)
    pb = jnp.exp(lb)
    r = _exp_ratio(la - lb) if autodiff else jnp.exp(la - lb)
    terms = overflow(pb * f(r), r)
    ok = (la > -jnp.inf) & (lb > -jnp.inf)
    return jnp.sum(jnp.where(ok, terms, jnp.nan), axis=ax), (la, lb)

  def coefs_logits(ax, out, aux, a, b):
    la, lb = aux
    pa, pb = jnp.exp(la), jnp.exp(lb)
    fr, dfr = f_and_slope(_exp_ratio(la - lb))
    g_a = pa * dfr  # d/d log p of q f(p/q); then through the log-softmax
    return (_fast.through_log_softmax(g_a, pa, ax),
            _fast.through_log_softmax(pb * fr - g_a, pb, ax))

  return (value_logits, coefs_logits), (value_probs, coefs_probs)


def _f_divergence(prep: _common.Prepared, f, f_prime_inf) -> jax.Array:
  dp, dq = prep.dists
  dtype = dp.prob.dtype
  if prep.from_logits:
    ratio = _exp_ratio(jnp.where(dq.prob > 0, dp.log_prob - dq.log_prob, 0))
  else:
    ratio = _ratio(dp.prob, jnp.where(dq.prob > 0, dq.prob, 1))
  if f_prime_inf is None:
    slope = _slope_at_infinity(f, dtype)
  else:
    slope = jnp.asarray(f_prime_inf, dtype)
  # A finite p over a positive q beyond the floating-point range, where f is bounded at
  # infinity: the term is q f(inf) (then f(t) / t -> 0, and p f'(inf) would drop q f(inf)), as
  # the fast path's.
  bounded = _bounded_at_infinity(f, dtype, slope)
  beyond = (dq.prob > 0) & jnp.isinf(ratio) & jnp.isfinite(dp.prob) & bounded
  finite = (dq.prob > 0) & jnp.isfinite(ratio) | beyond
  zero_p = dp.prob == 0
  as_is_at_zero = _static_finite_at_zero(f, dtype)  # once: it evaluates f and f' at 0
  safe_ratio = jnp.where(finite & ~(zero_p & ~as_is_at_zero), ratio, 1)
  inner = dq.prob * f(safe_ratio)
  # p f'(inf) and q f(0) can be infinite: each branch sees its argument only where it is
  # selected (0 elsewhere), so the zero cotangent of an unselected branch never meets inf.
  use_slope = ~finite & ~zero_p
  at_q_zero = jnp.where(use_slope, jnp.where(use_slope, dp.prob, 0) * slope, 0)
  # p = 0 < q: q f(0). Where f(0) and f'(0) are finite, f is evaluated at the ratio 0 itself,
  # so the gradient there is the true one; otherwise (f(0) NaN as in a naive t log t, or inf;
  # or f'(0) infinite) the limit value enters as a constant.
  use_f0 = finite & zero_p & (not as_is_at_zero)
  f0 = _value_at_zero(f, dtype)
  at_p_zero = jnp.where(use_f0, jnp.where(use_f0, dq.prob, 0) * f0, 0)
  terms = jnp.where(use_f0, at_p_zero, jnp.where(use_slope, at_q_zero, jnp.where(finite, inner, 0)))
  return prep.sum(terms)


@_unit_axes.dropped(dists=("p", "q"))
def hellinger_distance(
    p: ArrayLike, q: ArrayLike, *, axis: int = -1, where: ArrayLike | None = None,
    from_logits: bool = False,
) -> jax.Array:
  r"""Hellinger distance, a metric bounded by 1.

  .. math::
    H(p, q) = \sqrt{\tfrac12 \sum_i \left(\sqrt{p_i} - \sqrt{q_i}\right)^2}.

  The gradient at ``p == q`` is 0 (a subgradient), not NaN.

  Args:
    p: first distribution, shape ``[..., n, ...]``.
    q: second distribution, broadcastable with ``p``.
    axis: the axis that holds the distribution.
    where: boolean mask broadcastable to the inputs.
    from_logits: ``p`` and ``q`` are logits.

  Returns:
    H(p, q), the broadcast batch shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv
    >>> print(float(jaxdiv.hellinger_distance(jnp.array([1., 0.]), jnp.array([0., 1.]))))
    1.0

  References:
    Hellinger, Neue Begründung der Theorie quadratischer Formen, 1909.
  """
  return _fast.evaluate((p, q), _hellinger, _HELLINGER_FAST, axis=axis, where=where,
                        from_logits=from_logits)


def _hellinger(prep: _common.Prepared) -> jax.Array:
  dp, dq = prep.dists
  if prep.from_logits:
    sp, sq = jnp.exp(0.5 * dp.log_prob), jnp.exp(0.5 * dq.log_prob)
  else:
    sp, sq = _numerics.safe_sqrt(dp.prob), _numerics.safe_sqrt(dq.prob)
  return _numerics.safe_sqrt(0.5 * prep.sum((sp - sq) ** 2))


def _half_over(h, ax):
  """1 / (2 h), and 0 at h = 0: the subgradient of the outer square root at p == q."""
  h = jnp.expand_dims(h, ax)
  return jnp.where(h > 0, 0.5 / jnp.where(h > 0, h, 1), 0)


def _hellinger_probs(ax, p, q):
  # A negative entry makes its root NaN and +inf makes the term infinite: the guarded path. A
  # zero needs no guard: its value is the guarded path's, and `_fast.sqrt`'s slope there is the
  # guarded path's 0 (`jnp.sqrt`'s is inf).
  sp, sq = _fast.sqrt(p), _fast.sqrt(q)
  return jnp.sqrt(0.5 * jnp.sum((sp - sq) ** 2, axis=ax)), None


def _hellinger_probs_coefs(ax, h, aux, p, q):
  c = (_fast.sqrt(p) - _fast.sqrt(q)) * _half_over(h, ax)  # d h / d sqrt p, as the guarded
  return c * _fast.half_rsqrt(p), -c * _fast.half_rsqrt(q)


def _hellinger_logits(ax, a, b, for_coefs=False):
  # The roots of the softmaxes, as the hand-written line: XLA:CPU computes exp(a - max) once
  # for the row sum and the terms, where exp(log_softmax / 2) is a second exp an entry (forward
  # 1.17-1.20x the hand line at 32768x512). A probability that underflows has root 0, not
  # exp(log p / 2) < 4e-23 (float32): a term that moves by less than the sum's rounding; its
  # slope is the guarded path's 0 (`_fast.sqrt`), for the coefficients' own derivatives.
  # `for_coefs`: the value as its derivative reads it, as total variation's (`_tv_logits`).
  sp, sq = (_fast.sqrt(_fast.softmax(x, ax, written=for_coefs)) for x in (a, b))
  d = sp - sq
  h = jnp.sqrt(0.5 * jnp.sum(d * d, axis=ax))
  if not for_coefs:
    return h, None
  return h, (sp, sq, tuple(jnp.sum(d * s, axis=ax, keepdims=True) for s in (sp, sq)))


def _hellinger_logits_coefs(ax, h, aux, a, b):
  # through_log_softmax(c sp, sp^2) and through_log_softmax(-c sq, sq^2) for c = d h / d sp
  # over 2, their row sums from the value.
  sp, sq, (mean_a, mean_b) = aux
  c = 0.5 * (sp - sq) * _half_over(h, ax)
  k = 0.5 * _half_over(h, ax)
  return c * sp - sp * sp * (k * mean_a), sq * sq * (k * mean_b) - c * sq


_HELLINGER_FAST = ((_hellinger_logits, _hellinger_logits_coefs,
                    functools.partial(_hellinger_logits, for_coefs=True)),
                   (_hellinger_probs, _hellinger_probs_coefs))


@_unit_axes.dropped(dists=("p", "q"), leading=_common.on_probabilities)
def total_variation_distance(
    p: ArrayLike, q: ArrayLike, *, axis: int = -1, where: ArrayLike | None = None,
    from_logits: bool = False,
) -> jax.Array:
  r"""Total variation distance.

  .. math::
    \mathrm{TV}(p, q) = \tfrac12 \sum_i |p_i - q_i| = \max_A |p(A) - q(A)|.

  Args:
    p: first distribution, shape ``[..., n, ...]``.
    q: second distribution, broadcastable with ``p``.
    axis: the axis that holds the distribution.
    where: boolean mask broadcastable to the inputs.
    from_logits: ``p`` and ``q`` are logits.

  Returns:
    TV(p, q), the broadcast batch shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv
    >>> p = jnp.array([0.5, 0.5]); q = jnp.array([0.9, 0.1])
    >>> print(round(float(jaxdiv.total_variation_distance(p, q)), 4))
    0.4
  """
  return _fast.evaluate((p, q), _total_variation, _TV_FAST, axis=axis, where=where,
                        from_logits=from_logits)


def _total_variation(prep: _common.Prepared) -> jax.Array:
  dp, dq = prep.dists
  p, q = dp.prob, dq.prob
  # |p - q| by the comparison, not by the sign of p - q: that difference flushes to 0 (XLA:CPU)
  # where p and q are both near 1.2e-38, and `jnp.abs`'s derivative there, +1, had the wrong
  # sign where p < q (helper-61). At p = q, +1 as `jnp.abs`'s.
  return 0.5 * prep.sum(jnp.where(p >= q, p - q, q - p))


def _tv_probs(ax, p, q):
  # A negative probability would go unnoticed in |p - q|: such a row takes the guarded path
  # (+inf makes the term infinite or NaN itself; zeros need no guard).
  return 0.5 * _fast.guarded_sum(lambda p, q: _fast.Terms(jnp.abs(p - q), nonnegative=(p, q)),
                                 (p, q), ax, one_pass=True, reads=2), None


def _tv_sign(p, q):
  # p >= q, not p - q >= 0, which flushes (see `_total_variation`); 1/2 at p = q, as d|x|/dx of
  # jnp.abs at 0
  return jnp.where(p >= q, 0.5, -0.5).astype(p.dtype)


def _tv_probs_coefs(ax, tv, aux, p, q):
  g = _tv_sign(p, q)
  return g, -g


def _tv_logits(ax, a, b, for_coefs=False):
  # `for_coefs`: the value as its derivative reads it (`with_fallback`'s `value_for_coefs`).
  # The softmaxes from exp(x - max) written once an input (the forward's form recomputes it in
  # each loop below `FUSED_ROWS` rows, which here wrote it twice, the second time inside the
  # softmax's own loop), and the coefficients' row sums <g>_pa and <g>_pb (g = d TV / d p, the
  # sign's half) beside the value, so that the sign is an elementwise term of the coefficients
  # alone (summed there, it was one more [N, V] buffer). Value+grad at 2048x32768: 1052 MiB of
  # temporaries -> 540.
  pa, pb = (_fast.softmax(x, ax, written=for_coefs) for x in (a, b))
  tv = 0.5 * jnp.sum(jnp.abs(pa - pb), axis=ax)
  if not for_coefs:
    return tv, None
  g = _tv_sign(pa, pb)
  return tv, (pa, pb, tuple(jnp.sum(g * p, axis=ax, keepdims=True) for p in (pa, pb)))


def _tv_logits_coefs(ax, tv, aux, a, b):
  # through_softmax(g, pa) and through_softmax(-g, pb), their row sums from the value.
  pa, pb, (mean_a, mean_b) = aux
  g = _tv_sign(pa, pb)
  return pa * (g - mean_a), pb * (mean_b - g)


_TV_FAST = ((_tv_logits, _tv_logits_coefs, functools.partial(_tv_logits, for_coefs=True)),
            (_tv_probs, _tv_probs_coefs))


@_unit_axes.dropped(dists=("p", "q"), leading=_common.on_probabilities)
def chi_squared_divergence(
    p: ArrayLike, q: ArrayLike, *, axis: int = -1, where: ArrayLike | None = None,
    from_logits: bool = False,
) -> jax.Array:
  r"""Pearson's chi-squared divergence.

  .. math::
    \chi^2(p \,\|\, q) = \sum_i \frac{(p_i - q_i)^2}{q_i},

  ``+inf`` where ``q_i = 0 < p_i``; ``0/0 = 0``.

  Args:
    p: first distribution, shape ``[..., n, ...]``.
    q: second distribution (the denominator), broadcastable with ``p``.
    axis: the axis that holds the distribution.
    where: boolean mask broadcastable to the inputs.
    from_logits: ``p`` and ``q`` are logits.

  Returns:
    chi^2(p‖q), the broadcast batch shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv
    >>> p = jnp.array([0.5, 0.5]); q = jnp.array([0.9, 0.1])
    >>> print(round(float(jaxdiv.chi_squared_divergence(p, q)), 4))
    1.7778

  References:
    Pearson, On the Criterion that a Given System of Deviations..., 1900.
  """
  return _fast.evaluate((p, q), _chi_squared, _CHI2_FAST, axis=axis, where=where,
                        from_logits=from_logits)


def _chi2_terms(p, q):
  """(p - q)^2 / q as d (d / q), d = p - q: d^2 flushed to 0 below float32's normal range
  (XLA:CPU) where the term is not small (|d| < 1.1e-19 over q = 1.2e-38: 0 against 0.83,
  helper-61); d / q underflows only where the term does. The same operations."""
  d = p - q
  return d * (d / q)


def _chi2_probs(ax, p, q):
  # q = 0 or +inf makes a term inf or NaN (so does p = +inf); a negative p or q would go
  # unnoticed: guarded path.
  return _fast.guarded_sum(lambda p, q: _fast.Terms(_chi2_terms(p, q), nonnegative=(p, q)),
                           (p, q), ax, one_pass=True, reads=2), None


def _chi2_grads(p, q):
  r = p / q
  return 2 * (r - 1), 1 - r * r


def _chi2_probs_coefs(ax, chi2, aux, p, q):
  return _chi2_grads(p, q)


def _chi2_logits(ax, a, b, for_coefs=False):
  # (p - q)^2 / q of the softmaxes: where q underflows to 0 the row is not finite and the
  # guarded path's log-space form runs. `for_coefs`: the value as its derivative reads it, as
  # total variation's (`_tv_logits`), with the coefficients' terms p g (g = d chi2 / d p) and
  # their row sums (the closed forms of the sums, 2 chi2 and -chi2, hold only as far as each
  # softmax sums to 1: near p = q the gradient's largest error against float64 was 10x the hand
  # line's).
  pa, pb = (_fast.softmax(x, ax, written=for_coefs) for x in (a, b))
  chi2 = jnp.sum(_chi2_terms(pa, pb), axis=ax)
  if not for_coefs:
    return chi2, None
  return chi2, (pa, pb, tuple(jnp.sum(t, axis=ax, keepdims=True)
                              for t in _chi2_logits_terms(pa, pb)))


def _chi2_logits_terms(pa, pb):
  """(pa ga, pb gb) for (ga, gb) = `_chi2_grads(pa, pb)`: 2 d r and -d (1 + r), d = pa - pb,
  r = pa / pb. Finite wherever the value is (gb = 1 - r^2 overflows float32 beyond r = 1.8e19, a
  spread of 44 nats, where pb gb does not: the gradient was NaN there), and without
  cancellation near p = q (d is exact there)."""
  d, r = pa - pb, pa / pb
  return 2 * d * r, -d * (1 + r)


def _chi2_logits_coefs(ax, chi2, aux, a, b):
  # through_softmax(g, p) for g = d chi2 / d p, their row sums from the value.
  pa, pb, (mean_a, mean_b) = aux
  ta, tb = _chi2_logits_terms(pa, pb)
  return ta - pa * mean_a, tb - pb * mean_b


_CHI2_FAST = ((_chi2_logits, _chi2_logits_coefs, functools.partial(_chi2_logits, for_coefs=True)),
              (_chi2_probs, _chi2_probs_coefs))


def _chi_squared(prep: _common.Prepared) -> jax.Array:
  dp, dq = prep.dists
  if prep.from_logits:
    # (p - q)^2 / q = exp(log q + 2 log|expm1(log p - log q)|): neither p nor q is formed, so
    # neither can underflow (a tiny p over a tinier q is a large term).
    # Where |log p - log q| < 1, q expm1(d)^2 directly: smooth at d = 0, where the log form's
    # log|expm1(0)| = -inf has no curvature (the Hessian at p = q was 0 there), and q is within
    # a factor e of p (no underflow the log form would avoid).
    ok = dq.log_prob > -jnp.inf
    d = jnp.where(ok, dp.log_prob - dq.log_prob, 0)
    lq = jnp.where(ok, dq.log_prob, 0)
    near = jnp.abs(d) < 1
    far_terms = jnp.exp(lq + 2 * _numerics.log_abs_expm1(jnp.where(near, 1, d)))
    near_terms = jnp.exp(lq) * jnp.expm1(jnp.where(near, d, 0)) ** 2
    terms = jnp.where(ok, jnp.where(near, near_terms, far_terms),
                      jnp.where(dp.log_prob > -jnp.inf, jnp.inf, 0))
  else:
    d = dp.prob - dq.prob
    terms = d * _numerics.safe_div(d, dq.prob)  # `_chi2_terms`, q = 0 as its limits
  return prep.sum(terms)


@_unit_axes.dropped(dists=("p", "q"))
def bhattacharyya_distance(
    p: ArrayLike, q: ArrayLike, *, axis: int = -1, where: ArrayLike | None = None,
    from_logits: bool = False, base: float | None = None,
) -> jax.Array:
  r"""Bhattacharyya distance.

  .. math::
    D_B(p, q) = -\log \sum_i \sqrt{p_i q_i} = \tfrac12 D_{1/2}(p \,\|\, q),

  ``+inf`` for disjoint supports.

  Args:
    p: first distribution, shape ``[..., n, ...]``.
    q: second distribution, broadcastable with ``p``.
    axis: the axis that holds the distribution.
    where: boolean mask broadcastable to the inputs.
    from_logits: ``p`` and ``q`` are logits.
    base: logarithm base of the result (``None``: nats).

  Returns:
    D_B(p, q), the broadcast batch shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv
    >>> p = jnp.array([0.5, 0.5]); q = jnp.array([0.9, 0.1])
    >>> print(round(float(jaxdiv.bhattacharyya_distance(p, q)), 4))
    0.1116

  References:
    Bhattacharyya, On a Measure of Divergence between Two Statistical Populations, 1943.
  """
  _validation.check_base(base)
  # The fast path: `-log(sum(exp((log_softmax a + log_softmax b) / 2)))` from logits (a
  # small overlap, where terms could underflow, takes the guarded path's own shift by the max),
  # the sum of square roots from probabilities (at 32768x512: 15.5 against 80 ms for the
  # guarded path, the hand-written line 8.9).
  return _fast.evaluate((p, q), _bhattacharyya, _BHATTACHARYYA_FAST, axis=axis, where=where,
                        from_logits=from_logits, base=base, nonnegative=True)


def _bhattacharyya(prep: _common.Prepared) -> jax.Array:
  dp, dq = prep.dists
  return -_numerics.logsumexp(0.5 * (dp.log_prob + dq.log_prob), axis=prep.axis)


def _bhattacharyya_probs(ax, p, q):
  # sqrt p sqrt q, not sqrt(p q), which is positive where both are negative: a negative entry
  # makes its root NaN, +inf makes the sum infinite or NaN (the guarded path). A zero needs no
  # guard: its value is the guarded path's, and `_fast.sqrt`'s slope there is the guarded
  # path's 0 (sqrt(q / p) / 2 is infinite).
  total = jnp.sum(_fast.sqrt(p) * _fast.sqrt(q), axis=ax)
  return -jnp.log(total), total


def _bhattacharyya_probs_coefs(ax, out, total, p, q):
  # d(-log S) / dp = -(dS / dp) / S, dS / dp = sqrt q / (2 sqrt p). `_numerics.ratio`: its
  # second derivatives hold no S^-2, which overflows where the overlap is tiny (below 1e-19 in
  # float32: NaN beside the zero entries).
  total = jnp.expand_dims(total, ax)
  return (-_numerics.ratio(_fast.sqrt(q) * _fast.half_rsqrt(p), total),
          -_numerics.ratio(_fast.sqrt(p) * _fast.half_rsqrt(q), total))


def _bhattacharyya_logits(ax, a, b):
  # The overlap S = sum exp(z) without a max of its own (each exp(z) <= 1): the max was a pass
  # over z of its own (forward 1.27x the hand-written `-logsumexp(z)` at 32768x512, this form
  # 0.48x). Where S is below n tiny / eps, terms below the normal range (flushed to 0) could
  # be lost beyond S's rounding: NaN, the guarded path (which shifts by the max); for float32
  # S < 4e-27 at n = 32768, disjoint supports to 60 nats.
  la, lb = _fast.log_softmax(a, ax), _fast.log_softmax(b, ax)
  z = 0.5 * (la + lb)
  total = jnp.sum(jnp.exp(z), axis=ax)
  info = jnp.finfo(z.dtype)
  lowest = float(info.tiny) / float(info.eps) * z.shape[ax]
  log_s = jnp.log(jnp.where(total >= lowest, total, jnp.nan))
  return -log_s, (la, lb, z, jnp.expand_dims(log_s, ax))


def _bhattacharyya_logits_coefs(ax, out, aux, a, b):
  # d/da of -logsumexp(z), z = (log_softmax a + log_softmax b) / 2: (softmax a - r) / 2, with
  # r = softmax(z) the normalised geometric mean.
  la, lb, z, log_s = aux
  r = jnp.exp(z - log_s)
  return 0.5 * (jnp.exp(la) - r), 0.5 * (jnp.exp(lb) - r)


_BHATTACHARYYA_FAST = ((_bhattacharyya_logits, _bhattacharyya_logits_coefs),
                       (_bhattacharyya_probs, _bhattacharyya_probs_coefs))

