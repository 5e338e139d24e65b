"""Order-alpha family: Rényi divergence and entropy, Tsallis entropy and divergence, and the
Cichocki–Amari alpha-divergence.

All of them are functions of one quantity, the log of the power mean under p,

    log S(t) = log E_p[exp(t d)] = log (sum_{i in supp p} p_i exp(t d_i) / sum_i p_i),

with `t = alpha - 1` and `d = log p - log q` (divergences) or `d = log p` (entropies, q = the
counting measure). Dividing by `sum p` is Rényi's own definition for incomplete distributions;
for a normalised p it changes nothing, and it keeps the float rounding of `sum p - 1` from being
divided by `alpha - 1`. The limits alpha -> 1 (Shannon/KL) and alpha -> inf (max log-ratio) are
exact branches, never a division by `alpha - 1`. Near alpha = 1 (every |t d| <= 1) each member
is a function of the centred power mean, `m = (E_p[exp(t x)] - 1) / t = E_p[x expm1(t x) / (t x)]`
with `x = d - c`, `c = E_p[d]`, formed without dividing by t (Renyi `c + log1p(t m) / t`,
Tsallis `(S - 1) / t = exp(t c) m + (exp(t c) - 1) / t`), so that its value and its derivatives
in alpha keep their relative precision as t -> 0; elsewhere the power mean is a shifted
log-sum-exp.
"""

from __future__ import annotations

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

# Below this max of |t*d| the expm1 form neither overflows nor cancels; above it the shifted
# log-sum-exp form is used.
_SMALL = 1.0


def _support(log_p):
  # From extreme logits p itself can underflow to 0 while p exp(t d) = exp(log p + t d) does
  # not: the support is where log p > -inf.
  return log_p > -jnp.inf


def _mass(p, log_p, axis):
  return jnp.sum(jnp.where(_support(log_p), p, 0), axis=axis)


def _log_power_mean(p, log_p, d, t, axis, in_t=False):
  """`(log S, (m, c), near)`: log S = log E_p[exp(t d)] over the support of p (p normalised by
  its total mass), and on the rows `near` (every |t d| <= 1, S finite and positive) the power
  mean about a shift c (a constant: no gradient), `m = (E_p[exp(t (d - c))] - 1) / t`, so that
  S = exp(t c) (1 + t m); m and c are 0 elsewhere. `in_t`: t is traced (an order that may be
  differentiated): m is formed so that its derivatives in t keep their precision, and c is
  E_p[d]; else c = 0 and m is summed as `expm1(t d) / t`, whose derivatives in p and q are
  as exact, at a fraction of the cost."""
  s = _support(log_p)
  z = jnp.sum(jnp.where(s, p, 0), axis=axis)  # the mass of p normalises, dead terms included
  # Terms with t d = -inf (q = 0 where p > 0, alpha < 1) are exactly 0: drop them from the
  # sums, so that no derivative d/dt = d = inf meets their zero weight.
  live = s & ~(jnp.isinf(d) & (t * jnp.where(s, d, 0) < 0))
  dead_mass = jnp.sum(jnp.where(s & ~live, p, 0), axis=axis)
  s = live
  d = jnp.where(s, d, 0)  # -inf - -inf = NaN outside the support
  td = t * d
  # The max only chooses a branch and a shift: it carries no gradient.
  top = lax.stop_gradient(jnp.max(jnp.where(s, td, -jnp.inf), axis=axis, keepdims=True,
                                  initial=-jnp.inf))
  # The near form is for a power mean near 1 (every |t d| small); elsewhere it would cancel
  # (sum p^a - 1 with sum p^a tiny) and the log-sum-exp form is exact.
  spread = lax.stop_gradient(jnp.max(jnp.where(s, jnp.abs(td), 0), axis=axis, initial=0))
  pos_inf = top == jnp.inf  # q = 0 where p > 0 with t > 0: S = inf exactly
  td = jnp.where(pos_inf, 0, td)
  z_safe = jnp.where(z > 0, z, 1)

  # m = E_p[(exp(t x) - 1) / t], x = d - c. A dead term is p (exp(-inf) - 1) / t = -p / t.
  # Only the rows with every |t d| <= 1 read it: elsewhere its log-ratios are 0 (no overflow,
  # and no gradient on the unused branch).
  is_small = spread <= _SMALL
  t_row = jnp.squeeze(t, axis) if jnp.ndim(t) == jnp.ndim(td) else t
  d_small = jnp.where(s & jnp.expand_dims(is_small, axis) & ~pos_inf, d, 0)
  if in_t:
    # As E_p[x expm1(t x) / (t x)]: no division by t, whose derivatives in t (d/dalpha)
    # cancelled as 1/t^k (at alpha = 1 + 1e-6, float32: d/dalpha of the alpha-divergence 18%
    # off, the second derivative by a factor of 1e5). The shift c = E_p[d] centres the
    # log-ratios, so that m's derivatives are central moments (the entropies' d = log p are
    # far from 0: Renyi's second derivative in alpha lost 100x to the raw moments).
    c = lax.stop_gradient(jnp.sum(p * d_small, axis=axis, keepdims=True)
                          / jnp.expand_dims(z_safe, axis))
    x = jnp.where(s, d_small - c, 0)  # |t x| <= 2
    excess = jnp.sum(p * x * _numerics.expm1_over_x(t * x), axis=axis)
    c = jnp.squeeze(c, axis)
  else:
    # A constant t: `expm1(t d) / t` is exact to rounding, and so are its derivatives in d.
    # The polynomial and the centring above took value+grad at alpha = 1.1 from 0.9x to 1.4x
    # the hand-written line (probabilities, `bench/hand.py`, hands36near*).
    excess = jnp.sum(p * jnp.expm1(t * d_small), axis=axis) / t_row
    c = jnp.zeros_like(excess)
  excess = (excess - dead_mass / t_row) / z_safe
  small = t_row * excess
  ok = small > -1
  log_small = jnp.where(ok, _numerics.log1p(jnp.where(ok, small, 0)) + t_row * c, -jnp.inf)

  log_big = _numerics.logsumexp(log_p + td, axis=axis, where=s) - jnp.log(z_safe)

  out = jnp.where(is_small, log_small, log_big)
  row_inf = jnp.squeeze(pos_inf, axis)
  out = jnp.where(row_inf, jnp.inf, out)
  near = is_small & ok & ~row_inf & (z > 0)
  return (jnp.where(z > 0, out, 0), (jnp.where(near, excess, 0), jnp.where(near, c, 0)), near)


def _max_log_ratio(log_p, d, axis):
  s = _support(log_p)
  out = jnp.max(jnp.where(s, d, -jnp.inf), axis=axis, initial=-jnp.inf)
  return jnp.where(jnp.any(s, axis=axis), out, 0)


def _moments(p, log_p, d, axis, *, higher=False):
  """E_p[d] (inf allowed, 0 log 0 = 0) and, if asked, the central moments (E_p[c^2], E_p[c^3]),
  c = d - E_p[d], where every d is finite.

  The higher moments only feed the derivatives with respect to alpha at alpha = 1, which exist
  where every log-ratio on the support is finite; elsewhere they are 0 (and no inf enters them).
  """
  s = _support(log_p)
  z = _mass(p, log_p, axis)
  z_safe = jnp.where(z > 0, z, 1)
  mean = jnp.sum(_numerics.mul_log(p, jnp.where(s, d, 0)), axis=axis) / z_safe
  if not higher:
    return mean, None
  finite_row = jnp.all(jnp.isfinite(d) | ~s, axis=axis, keepdims=True)
  fin = jnp.squeeze(finite_row, axis)
  c = jnp.where(s & finite_row, d - jnp.expand_dims(jnp.where(fin, mean, 0), axis), 0)
  pc2 = p * c * c
  c2 = jnp.where(fin, jnp.sum(pc2, axis=axis) / z_safe, 0)
  c3 = jnp.where(fin, jnp.sum(pc2 * c, axis=axis) / z_safe, 0)
  return mean, (c2, c3)


_static_alpha = _validation.static_scalar  # a float traces one branch; None traces them all


def _order_family(p, log_p, d, alpha, axis, general, near, at_one, at_inf, one_taylor=None):
  """Evaluates `general(log S, t)`, or `near(m, c, t)` on the rows where every |t d| <= 1 (S =
  exp(t c) (1 + t m), see `_log_power_mean`), with the exact branches `at_one(E_p d)` at
  alpha = 1 and `at_inf(max d)` at alpha = inf.

  A concrete scalar alpha traces only its branch. A traced or array alpha evaluates all three,
  each on a log-ratio that is 0 wherever that branch is not selected, so that no unselected
  branch meets an infinity (whose derivative times a zero cotangent is NaN). There,
  `one_taylor(E_p d, E_p c^2, E_p c^3)` (central moments, c = d - E_p d) gives the first and
  second derivatives with respect to alpha at alpha = 1, added as `s slope + s^2 curvature / 2`
  with `s = alpha - 1`: 0 in value, but the true first and second derivatives (Hessians
  included) for a traced alpha. Higher derivatives at exactly alpha = 1 are those of that
  quadratic (0 from the third on).
  """
  a = _static_alpha(alpha)
  if a is not None:
    if a == 1:
      return at_one(_moments(p, log_p, d, axis)[0])
    if np.isinf(a):
      return at_inf(_max_log_ratio(log_p, d, axis))
    t = jnp.asarray(a - 1, p.dtype)
    return _general_or_near(general, near, _log_power_mean(p, log_p, d, t, axis), t)
  alpha = jnp.asarray(alpha, p.dtype)
  is_one = alpha == 1
  is_inf = jnp.isinf(alpha)
  squeeze = (lambda x: jnp.squeeze(x, axis)) if alpha.ndim else (lambda x: x)
  t = jnp.where(is_inf | is_one, 1, alpha - 1)
  d_gen = jnp.where(is_one | is_inf, 0, d)
  gen = _general_or_near(general, near, _log_power_mean(p, log_p, d_gen, t, axis, in_t=True),
                         squeeze(t))
  mean, higher = _moments(p, log_p, jnp.where(is_one, d, 0), axis,
                          higher=one_taylor is not None)
  one = at_one(mean)
  if one_taylor is not None:
    fin = jnp.isfinite(mean)  # an infinite limit has no derivative to add
    slope, curvature = one_taylor(jnp.where(fin, mean, 0), *higher)
    # An overflowed moment drops its term (its derivative), never the value: 0 * inf is NaN.
    # The curvature only feeds the second derivative in alpha: held constant, so that its
    # overflow (it grows as the cube of the log-ratios) reaches no gradient in p or q.
    slope = jnp.where(jnp.isfinite(slope), slope, 0)
    curvature = lax.stop_gradient(curvature)
    curvature = jnp.where(jnp.isfinite(curvature), curvature, 0)
    s = squeeze(jnp.where(is_one, alpha, 1)) - 1
    one = one + jnp.where(fin, s * (slope + 0.5 * s * curvature), 0)
  inf = at_inf(_max_log_ratio(log_p, jnp.where(is_inf, d, 0), axis))
  return jnp.where(squeeze(is_one), one, jnp.where(squeeze(is_inf), inf, gen))


def _general_or_near(general, near, parts, t):
  log_s, (m, c), is_near = parts
  return jnp.where(is_near, near(m, c, t), general(log_s, t))


def _excess_over_t(m, c, t):
  """`(S - 1) / t` from the shifted power mean (`_log_power_mean`): S = exp(t c) (1 + t m)."""
  return jnp.exp(t * c) * m + c * _numerics.expm1_over_x(t * c)


def _check_alpha(alpha, lo=0):
  return _validation.check_real(alpha, "alpha", lo=lo, allow_inf=True)


def _alpha_for(alpha, prep):
  """A concrete scalar alpha stays a Python float (one traced branch); else a batch array."""
  if _static_alpha(alpha) is not None:
    return alpha
  return _common.batch_param(alpha, prep, prep.dists[0].prob.dtype)


# Below this |alpha - 1| the power sum is within rounding of 1 and its log, divided by
# alpha - 1, loses relative precision (the error grows as 1/|alpha - 1|): the guarded path's
# expm1 form is kept there. Elsewhere the unguarded power sum of `_fast` is as exact.
_FAST_MIN_T = 0.25


def _fast_order(a):
  """Whether a static order takes the unguarded power sum: finite, > 0, away from 1."""
  return a is not None and 0 < a < np.inf and abs(a - 1) >= _FAST_MIN_T


def _power_sum_near(a, fast):
  """How a static order `a` takes the unguarded power sum (`_fast.power_sum`): None where it
  does not (a traced order, or `fast`, `_common.fast_inputs`' tuple, is None), else its `near`
  argument: False away from 1 (`_fast_order`), True within `_FAST_MIN_T` of 1 but not 1 on
  logits (`fast`'s last item). From probabilities the guarded path is already faster than the
  hand-written line near 1 (`bench/hand.py`, alpha = 1.1)."""
  if fast is None or a is None:
    return None
  if _fast_order(a):
    return False
  if fast[3] and 0 < abs(a - 1) < _FAST_MIN_T:
    return True
  return None


# A traced order at least this far from 1 takes the hand-written power sum. Its derivatives in
# alpha, as written, hold `log S / t` and its derivatives in t = alpha - 1, which cancel as
# 1 / t^k: float32, 64 rows of 256 logits against float64, the largest relative error of d/dalpha
# / d2/dalpha2, hand-written sum against the guarded path: at alpha = 0.75, 6e-6 / 3e-4 against
# 1e-7 / 4e-6 (Renyi); at 0.3, the Tsallis divergence's d2/dalpha2 1e-3 against 3e-5; at 2 and
# 3.5 within 3x of each other, every member and derivative at 1.3e-6 or below.
_TRACED_MIN_T = 1.0


def _generic_order(alpha):
  """Where a traced order takes the hand-written power sum (:func:`_traced_order`): finite,
  > 0 and at least `_TRACED_MIN_T` from 1 (>= 2). An order out of its domain (< 0, for
  `checkify`) stays on the guarded path."""
  return jnp.isfinite(alpha) & (alpha > 0) & (jnp.abs(alpha - 1) >= _TRACED_MIN_T)


@jax.custom_jvp
def _scaled_log(c, log_p):
  """`c * log_p`, c a scalar order, whose derivative in c is finite where log_p = -inf.

  An entry outside a support has a term `exp(c log_p + ...)` of 0 (or +inf, whose row takes the
  guarded path) and no derivative; as written, d/dc of its exponent is log_p = -inf, times the
  term, 0: NaN. Here that derivative is `log_p` clipped to +-big, finite, so the term's is 0; the
  value and the derivative in log_p are the product's (a `where` on log_p took value+grad from
  1.0x to 1.45x the hand-written line, a `max` in the value to 1.2x)."""
  return c * log_p


@_scaled_log.defjvp
def _scaled_log_jvp(primals, tangents):
  c, log_p = primals
  dc, d_log_p = tangents
  big = jnp.finfo(log_p.dtype).max / 16
  # The value through this rule again: its own derivatives (Hessians) hold the same finite one.
  # Clipped at +big too: a log-ratio is +inf where q = 0 (a term of 0 below order 0).
  return _scaled_log(c, log_p), dc * jnp.clip(log_p, -big, big) + c * d_log_p


def _traced_order(fast, alpha, general, guarded, base, generic=_generic_order, swap=False):
  """A traced scalar order (a `jit` argument, an order being learnt): the hand-written
  `general(log S, alpha)` of the power sum `S = sum exp(alpha la + (1 - alpha) lb)` (entropies:
  `alpha la`) where `generic(alpha)` and every row of it is finite, with its derivatives in the
  inputs and in alpha in closed form. From logits `la, lb` are the log-softmaxes; from
  probabilities each term is `p r ** (alpha - 1)` of the ratio `r = p / q` (entropies: r = p),
  and S is divided by the mass of p, as the guarded path does (`swap`, the alpha-divergence: by
  the mass of q where alpha < 1/2, the swapped form's first argument). None where `fast` is None
  (a mask, a sharded axis), the order is an array, or no trace stages the call (eager, or eager
  derivatives).

  Elsewhere the guarded path, `guarded(xs, ax, alpha)` on the fast path's inputs (the limits
  at 1 and inf, the centred sum near 1, and their derivatives in alpha; it evaluates them all
  on every row): on every row where the order is not generic (one predicate for a batch of
  orders under `jax.vmap`: `_fallback.any_in_batch`), on the rows that are not finite where it
  is (the others keep the hand line's values, so a row's result does not depend on its batch).
  An entry that needs the guarded path makes its row's S NaN or +inf: a negative, NaN or +inf
  input, a zero q where the exponent of q is negative.

  The derivative (`_traced_jvp`) is a sum of coefficients times the tangents, the coefficients
  chosen by `lax.cond`s on the primal values only. Differentiated as written, a `cond` between
  the hand line and the guarded path returns both branches' residuals (zeros for the one not
  taken) and holds the guarded path's derivative buffers beside the hand line's: value+grad at
  32768x512 held 1.46 GiB of temporaries (the hand line 0.45) and an order that is not generic
  took up to 2.3x its time before.
  """
  if (fast is None or jnp.ndim(alpha) != 0
      or not isinstance(alpha, jax.core.Tracer) or not _fallback.traces_staged()):
    return None
  xs, ax, dtype, from_logits = fast
  n = len(xs)

  def finish(out):
    return _fast.to_result(out, base, dtype, clamp=from_logits)

  def guarded_rows(xs, alpha):  # in the result's dtype (its inputs here are the compute dtype's)
    return guarded(xs, ax, alpha).astype(dtype)

  def not_generic(alpha):
    return _fallback.any_in_batch(jnp.logical_not(generic(lax.stop_gradient(alpha))))

  def normaliser(alpha):
    """On probabilities, which input's mass divides S: a one-hot tuple (traced with `swap`)."""
    if not swap:
      return (True,) + (False,) * (n - 1)
    first = alpha >= 0.5
    return first, jnp.logical_not(first)

  def log_power_sum(alpha, xs):
    """`(log S, parts)`. From logits, `parts = (logs, z, log S)` with the log-softmaxes `logs`
    and `z = sum_k c_k la_k`, c = (alpha, 1 - alpha). From probabilities, `parts = (d, e,
    log sum t, mass)` with the terms `t = x_0 exp(e)`, `e = (alpha - 1) d`, `d = log(x_0 / x_1)`
    (entropies: `log x_0`), and the mass that divides S. As `x_0 r ** (alpha - 1)` of the ratio,
    not `exp(alpha log p + (1 - alpha) log q)`: the logs' rounding, times the exponents, was
    the terms' relative error (`|log p|` up to 10 here, `|log r|` about 1), 1.5x the hand line's
    median error against float64 (`bench/hand.py`, 20000x512)."""
    if from_logits:
      lps = [_fast.log_softmax(x, ax) for x in xs]
      z = sum(_scaled_log(c, lp) for c, lp in zip((alpha, 1 - alpha), lps))
      log_s = _fast.log_positive(jnp.sum(jnp.exp(z), axis=ax))
      return log_s, (lps, z, log_s)
    if n == 2:
      # A +inf q has a term of 0 at alpha >= 2 (r = 0), where the guarded path's value is NaN:
      # `1 + 0 * q` is NaN there and 1 elsewhere (XLA keeps it). Elsewhere an entry that needs
      # the guarded path makes its term NaN or +inf: a negative or NaN input, a zero q (r =
      # inf) at alpha >= 2, a zero p (0 * inf) at alpha <= -1, a +inf p.
      d = jnp.log(xs[0] / xs[1] * (1 + 0 * xs[1]))
    else:
      d = jnp.log(xs[0])
    e = _scaled_log(alpha - 1, d)
    log_raw = _fast.log_positive(jnp.sum(xs[0] * jnp.exp(e), axis=ax))
    mass = sum(jnp.where(k, jnp.sum(x, axis=ax), 0) if swap else jnp.sum(x, axis=ax)
               for k, x in zip(normaliser(alpha), xs) if k is not False)
    return log_raw - jnp.log(mass), (d, e, log_raw, mass)

  def hand_order(alpha, off):
    """The order the hand line is evaluated at: `alpha`, or 2 where the guarded path takes
    every row (`off`). Its values there are discarded, and at a generic order their partials are
    finite, so the zero cotangent they are sent stays 0 (at alpha = 1, 1 / (alpha - 1) would
    make it NaN)."""
    return jnp.where(off, jnp.asarray(2, alpha.dtype), alpha)

  @jax.custom_jvp
  def traced(alpha, *xs):
    off = not_generic(alpha)
    a = hand_order(alpha, off)
    value = general(log_power_sum(a, xs)[0], a)
    rows = off | jnp.logical_not(jnp.isfinite(value))
    return _fallback.cond(_fallback.any_in_batch(rows),
                          lambda: jnp.where(rows, guarded_rows(xs, alpha), finish(value)),
                          lambda: finish(value))

  mapped = _fallback.mapped_size(*xs)  # read here: a `cond` branch does not see `jax.vmap`

  def guarded_coefs(alpha, xs):
    def block(*ys):
      # The order as one value a row: its row derivatives from one reverse pass.
      rows = tuple(d for i, d in enumerate(ys[0].shape) if i != ax)
      out, pullback = jax.vjp(lambda a, *zs: guarded(zs, ax, a), jnp.broadcast_to(alpha, rows),
                              *ys)
      c_alpha, *c_ys = pullback(jnp.ones_like(out))
      return out.astype(dtype), c_alpha, tuple(c_ys)

    # Over row blocks: XLA allocates a `cond` branch's buffers whether it runs or not, and the
    # guarded path's reverse pass on the whole batch holds many [N, V] arrays.
    return _fallback.careful_blocks(block, ax, keep_axis=True, mapped=mapped)(*xs)

  def hand_coefs(alpha, xs):
    log_s, parts = log_power_sum(alpha, xs)
    value, g_log_s = jax.jvp(lambda ls: general(ls, alpha), (log_s,), (jnp.ones_like(log_s),))
    g_alpha = jax.jvp(lambda a: general(log_s, a), (alpha,), (jnp.ones_like(alpha),))[1]
    g = jnp.expand_dims(g_log_s, ax)
    big = jnp.finfo(log_s.dtype).max / 16
    if from_logits:
      # d log S / d x_k = c_k (w - softmax x_k), w = exp(z) / S; d log S / d alpha = sum w dz,
      # dz = la - lb (entropies: la), entries outside a support (w = 0) at a finite stand-in.
      lps, z, log_raw = parts
      w = jnp.exp(z - jnp.expand_dims(log_raw, ax))
      dz = sum(s * jnp.maximum(lp, -big) for s, lp in zip((1, -1), lps))
      c_xs = tuple(g * c * (w - jnp.exp(lp)) for c, lp in zip((alpha, 1 - alpha), lps))
    else:
      # S's terms x_0 exp(e), e = (alpha - 1) d: d log S / d x_0 = alpha exp(e) / sum t, d / d
      # x_1 = (1 - alpha) exp(alpha d) / sum t, d / d alpha = sum w d (w = t / sum t; d at a
      # finite stand-in where w = 0), minus (x != 0) / mass for the input whose mass divides
      # S: the guarded path's convention, no gradient at a zero entry (the mass's included).
      d, e, log_raw, mass = parts
      log_raw = jnp.expand_dims(log_raw, ax)
      u = jnp.exp(e - log_raw)
      w = xs[0] * u
      dz = jnp.clip(d, -big, big)
      c_xs = [alpha * u]
      if n == 2:
        c_xs.append((1 - alpha) * jnp.exp(_scaled_log(alpha, d) - log_raw))
      inv_mass = jnp.expand_dims(1 / mass, ax)
      c_xs = tuple(g * (cx - jnp.where(k, jnp.where(x != 0, inv_mass, 0), 0))
                   if k is not False else g * cx
                   for cx, x, k in zip(c_xs, xs, normaliser(alpha)))
    c_alpha = g_log_s * jnp.sum(w * dz, axis=ax) + g_alpha
    unit = _numerics.to_base(jnp.ones((), w.dtype), base)
    return value, c_alpha * unit, tuple(cx * unit for cx in c_xs)

  @traced.defjvp
  def _traced_jvp(primals, tangents):
    alpha, *xs = primals
    t_alpha, *t_xs = tangents
    off = not_generic(alpha)
    a = hand_order(alpha, off)
    value, c_alpha, c_xs = hand_coefs(a, xs)
    rows = off | jnp.logical_not(jnp.isfinite(value))

    def mixed(alpha, xs):
      # The rows that take the guarded values are ones in the hand line's inputs: finite
      # partials where the coefficients are differentiated again (second derivatives).
      f_value, f_alpha, f_xs = hand_coefs(a, _fallback.ones_in_rows(rows, ax, n, xs))
      g_out, g_alpha, g_xs = guarded_coefs(alpha, xs)
      keep = jnp.expand_dims(rows, ax)
      return (jnp.where(rows, g_out, finish(f_value)), jnp.where(rows, g_alpha, f_alpha),
              tuple(jnp.where(keep, g, f) for g, f in zip(g_xs, f_xs)))

    # One `cond`, so that the guarded path and its derivatives are traced (and, differentiated
    # again, compiled) once: with a `cond` on the order outside one on the rows, they were
    # twice, and jit(grad(grad)) in alpha of the alpha-divergence or the Renyi entropy (float64,
    # 4x16) took 37-43 s to trace and compile, about 20-23 s now (the guarded path alone: 10-14).
    out, c_alpha, c_xs = _fallback.cond(_fallback.any_in_batch(rows), mixed,
                                        lambda alpha, xs: (finish(value), c_alpha, c_xs),
                                        alpha, tuple(xs))
    tangent = c_alpha * t_alpha + sum(jnp.sum(c * t, axis=ax) for c, t in zip(c_xs, t_xs))
    return out, tangent.astype(out.dtype)

  return traced(jnp.asarray(alpha, xs[0].dtype), *xs)


def _family(arrays, alpha, base, *, axis, where, from_logits, general, near, at_one, at_inf,
            one_taylor=None, sign=1.0):
  """`sign` times the order-alpha family (see `_order_family`) of one (entropy: d = log p) or
  two (divergence: d = log p - log q) distributions, with the units and the finish.

  A static order away from 1 takes the unguarded power sum (`_fast.power_sum`), falling back
  to the guarded evaluation below where a row needs it."""
  _check_alpha(alpha)
  names = ("p", "q")[: len(arrays)]

  def careful(prep, alpha=alpha):
    dp = prep.dists[0]
    d = dp.log_prob if len(arrays) == 1 else dp.log_prob - prep.dists[1].log_prob
    return sign * _order_family(dp.prob, dp.log_prob, d, _alpha_for(alpha, prep), prep.axis,
                                general=general, near=near, at_one=at_one, at_inf=at_inf,
                                one_taylor=one_taylor)

  a = _static_alpha(alpha)
  fast = _common.fast_inputs(*arrays, names=names, axis=axis, where=where,
                             from_logits=from_logits)
  near_form = _power_sum_near(a, fast)
  if near_form is not None:
    t = a - 1
    exponents = (a, 1 - a)[: len(arrays)]
    return _fast.run(fast, *_fast.power_sum(exponents, lambda ls: sign * general(ls, t), norm=0,
                                            near=near_form),
                     careful, base, nonnegative=True)
  def guarded(xs, ax, alpha):
    return _common.guarded(xs, careful, names=names, axis=ax, where=None,
                           from_logits=from_logits, hyper=(alpha,), base=base, nonnegative=True)

  out = _traced_order(fast, alpha, lambda ls, a: sign * general(ls, a - 1), guarded, base)
  if out is not None:
    return out
  return _common.guarded(arrays, careful, names=names, axis=axis, where=where,
                         from_logits=from_logits, hyper=(alpha,), base=base, nonnegative=True)


_identity = lambda x: x
_renyi_general = lambda log_s, t: log_s / t
_renyi_near = lambda m, c, t: c + m * _numerics.log1p_over_x(t * m)  # log(S) / t
# (d/d(alpha), d^2/d(alpha)^2) at alpha = 1 of each member, from the mean m of d under p and
# its central moments c2, c3, with t = alpha - 1: log E_p[e^(t d)] = m t + c2 t^2/2 + c3 t^3/6
# + ... (cumulants), and the raw moments E_p[d^2] = c2 + m^2, E_p[d^3] = c3 + 3 m c2 + m^3 of
# E_p[e^(t d)] = 1 + m t + E[d^2] t^2/2 + E[d^3] t^3/6 + ...
# Renyi, log E[e^(t d)] / t: (c2/2, c3/3); Tsallis divergence, (E[e^(t d)] - 1) / t:
# (E[d^2]/2, E[d^3]/3); alpha-divergence, the same over alpha = 1 + t:
# (E[d^2]/2 - m, E[d^3]/3 - E[d^2] + 2 m).
_renyi_taylor = lambda m, c2, c3: (0.5 * c2, c3 / 3)


def _raw(m, c2, c3):
  return c2 + m * m, c3 + m * (3 * c2 + m * m)


def _tsallis_taylor(m, c2, c3):
  m2, m3 = _raw(m, c2, c3)
  return 0.5 * m2, m3 / 3


def _alpha_taylor(m, c2, c3):
  m2, m3 = _raw(m, c2, c3)
  return 0.5 * m2 - m, m3 / 3 - m2 + 2 * m


@_unit_axes.dropped(dists=("p", "q"), params=("alpha",),
                    leading=_common.on_probabilities)
def renyi_divergence(
    p: ArrayLike, q: ArrayLike, alpha: ArrayLike, *, axis: int = -1,
    where: ArrayLike | None = None, from_logits: bool = False, base: float | None = None,
) -> jax.Array:
  r"""Rényi divergence of order ``alpha``, D_alpha(p‖q).

  .. math::
    D_\alpha(p \,\|\, q) = \frac{1}{\alpha - 1} \log \sum_i p_i^\alpha q_i^{1-\alpha},

  for every ``alpha`` in ``[0, inf]``, with the exact limits
  ``D_0 = -log q(supp p)``, ``D_1 = KL(p‖q)`` and ``D_inf = log max_{p_i>0} p_i / q_i``.
  Non-decreasing in ``alpha``.

  On probabilities the sum is an average under ``p / sum(p)``, Rényi's definition for
  incomplete distributions: where ``p`` does not sum to 1, or ``where`` leaves part of its mass
  out, the sum above is divided by ``sum_i p_i`` (over the entries kept), and so are the limits
  (``D_1 = sum_i p_i log(p_i / q_i) / sum_i p_i``, which :func:`kl_divergence` does not divide).
  For a ``p`` that sums to 1 nothing changes.

  Args:
    p: the reference distribution, shape ``[..., n, ...]``.
    q: the second distribution, broadcastable with ``p``.
    alpha: the order, ``>= 0`` (``jnp.inf`` allowed); a scalar, or an array over the batch
      shape; may be traced (differentiable).
    axis: the axis that holds the distribution.
    where: boolean mask broadcastable to the inputs.
    from_logits: ``p`` and ``q`` are logits.
    base: logarithm base of the result (``None``: nats).

  Returns:
    D_alpha(p‖q), the broadcast batch shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv
    >>> p = jnp.array([0.5, 0.5]); q = jnp.array([0.9, 0.1])
    >>> print(round(float(jaxdiv.renyi_divergence(p, q, alpha=2.0)), 4))
    1.0217

  References:
    Rényi, On Measures of Entropy and Information, 1961; van Erven & Harremoës, Rényi
    Divergence and Kullback–Leibler Divergence, 2014.
  """
  _validation.check_base(base)
  return _family((p, q), alpha, base, axis=axis, where=where, from_logits=from_logits,
                 general=_renyi_general, near=_renyi_near, at_one=_identity, at_inf=_identity,
                 one_taylor=_renyi_taylor)


@_unit_axes.dropped(dists=("p",), params=("alpha",),
                    leading=_common.on_probabilities)
def renyi_entropy(
    p: ArrayLike, alpha: ArrayLike, *, axis: int = -1, where: ArrayLike | None = None,
    from_logits: bool = False, base: float | None = None,
) -> jax.Array:
  r"""Rényi entropy of order ``alpha``.

  .. math::
    H_\alpha(p) = \frac{1}{1 - \alpha} \log \sum_i p_i^\alpha,

  with the exact limits ``H_0 = log |supp p|`` (Hartley), ``H_1 = H(p)`` (Shannon) and
  ``H_inf = -log max_i p_i`` (min-entropy). Non-increasing in ``alpha``.

  On probabilities the sum is an average under ``p / sum(p)``, Rényi's definition for
  incomplete distributions: where ``p`` does not sum to 1, or ``where`` leaves part of its mass
  out, ``sum_i p_i^alpha`` is divided by ``sum_i p_i`` (over the entries kept), and the limits
  are ``H_0 = log(|supp p| / sum p)`` and ``H_1 = -sum_i p_i log p_i / sum_i p_i``. For a ``p``
  that sums to 1 nothing changes.

  Args:
    p: probabilities (or logits), shape ``[..., n, ...]``.
    alpha: the order, ``>= 0`` (``jnp.inf`` allowed); scalar or batch-shaped, may be traced.
    axis: the axis that holds the distribution.
    where: boolean mask broadcastable to ``p``.
    from_logits: ``p`` holds logits.
    base: logarithm base of the result (``None``: nats).

  Returns:
    H_alpha(p), the batch shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv
    >>> print(float(jaxdiv.renyi_entropy(jnp.array([0.25] * 4), alpha=2.0, base=2)))
    2.0

  References:
    Rényi, On Measures of Entropy and Information, 1961.
  """
  _validation.check_base(base)
  # H_alpha(p) = -D_alpha(p || counting measure): the divergence with log q = 0.
  return _family((p,), alpha, base, axis=axis, where=where, from_logits=from_logits,
                 general=_renyi_general, near=_renyi_near, at_one=_identity, at_inf=_identity,
                 one_taylor=_renyi_taylor, sign=-1.0)


@_unit_axes.dropped(dists=("p",), params=("alpha",),
                    leading=_common.on_probabilities)
def tsallis_entropy(
    p: ArrayLike, alpha: ArrayLike, *, axis: int = -1, where: ArrayLike | None = None,
    from_logits: bool = False,
) -> jax.Array:
  r"""Tsallis entropy of order ``alpha`` (the ``q`` of statistical physics).

  .. math::
    S_\alpha(p) = \frac{1 - \sum_i p_i^\alpha}{\alpha - 1},

  with the exact limits ``S_1 = H(p)`` (Shannon, nats) and ``S_inf = 0``; ``S_0`` is
  ``|supp p| - 1`` and ``S_2`` the Gini impurity.

  On probabilities the sum is an average under ``p / sum(p)``, as in :func:`renyi_entropy`:
  where ``p`` does not sum to 1, or ``where`` leaves part of its mass out, ``sum_i p_i^alpha``
  is divided by ``sum_i p_i`` (over the entries kept), so ``S_0 = |supp p| / sum p - 1`` and
  ``S_1 = -sum_i p_i log p_i / sum_i p_i``.

  Args:
    p: probabilities (or logits), shape ``[..., n, ...]``.
    alpha: the order, ``>= 0`` (``jnp.inf`` allowed); scalar or batch-shaped, may be traced.
    axis: the axis that holds the distribution.
    where: boolean mask broadcastable to ``p``.
    from_logits: ``p`` holds logits.

  Returns:
    S_alpha(p), the batch shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv
    >>> print(float(jaxdiv.tsallis_entropy(jnp.array([0.5, 0.5]), alpha=2.0)))
    0.5

  References:
    Tsallis, Possible Generalization of Boltzmann–Gibbs Statistics, 1988.
  """
  return _family((p,), alpha, None, axis=axis, where=where, from_logits=from_logits,
                 general=lambda log_s, t: _numerics.expm1_over(log_s, -t),
                 near=lambda m, c, t: -_excess_over_t(m, c, t),
                 at_one=lambda mean: -mean, at_inf=jnp.zeros_like,
                 one_taylor=lambda m, c2, c3: tuple(-x for x in _tsallis_taylor(m, c2, c3)))


def _inf_if_positive(dmax):
  return jnp.where(dmax > 0, jnp.inf, 0.0).astype(dmax.dtype)


@_unit_axes.dropped(dists=("p", "q"), params=("alpha",),
                    leading=_common.on_probabilities)
def tsallis_divergence(
    p: ArrayLike, q: ArrayLike, alpha: ArrayLike, *, axis: int = -1,
    where: ArrayLike | None = None, from_logits: bool = False,
) -> jax.Array:
  r"""Tsallis relative entropy of order ``alpha``.

  .. math::
    D^T_\alpha(p \,\|\, q) = \frac{\sum_i p_i^\alpha q_i^{1-\alpha} - 1}{\alpha - 1}
      = \frac{\exp((\alpha - 1) D_\alpha(p\|q)) - 1}{\alpha - 1},

  with the exact limit ``KL(p‖q)`` at ``alpha = 1``; at ``alpha = inf`` it is ``+inf`` unless
  ``p == q`` on the support of ``p``.

  On probabilities the sum is an average under ``p / sum(p)``, as in :func:`renyi_divergence`:
  where ``p`` does not sum to 1, or ``where`` leaves part of its mass out, it is divided by
  ``sum_i p_i`` (over the entries kept), and so is the limit at ``alpha = 1``; at
  ``alpha = inf`` it is ``+inf`` where some ``p_i > q_i``, else 0.

  Args:
    p: the reference distribution, shape ``[..., n, ...]``.
    q: the second distribution, broadcastable with ``p``.
    alpha: the order, ``>= 0`` (``jnp.inf`` allowed); scalar or batch-shaped, may be traced.
    axis: the axis that holds the distribution.
    where: boolean mask broadcastable to the inputs.
    from_logits: ``p`` and ``q`` are logits.

  Returns:
    The Tsallis divergence, the broadcast batch shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv
    >>> p = jnp.array([0.5, 0.5]); q = jnp.array([0.9, 0.1])
    >>> print(round(float(jaxdiv.tsallis_divergence(p, q, alpha=2.0)), 4))
    1.7778

  References:
    Furuichi, Yanagi & Kuriyama, Fundamental Properties of Tsallis Relative Entropy, 2004.
  """
  return _family((p, q), alpha, None, axis=axis, where=where, from_logits=from_logits,
                 general=_numerics.expm1_over, near=_excess_over_t, at_one=_identity,
                 at_inf=_inf_if_positive, one_taylor=_tsallis_taylor)


@_unit_axes.dropped(dists=("p", "q"), params=("alpha",),
                    leading=_common.on_probabilities)
def alpha_divergence(
    p: ArrayLike, q: ArrayLike, alpha: ArrayLike, *, axis: int = -1,
    where: ArrayLike | None = None, from_logits: bool = False,
) -> jax.Array:
  r"""Cichocki–Amari alpha-divergence.

  .. math::
    D^{(\alpha)}(p \,\|\, q) = \frac{\sum_i p_i^\alpha q_i^{1-\alpha} - 1}{\alpha(\alpha - 1)},

  with the exact limits ``KL(p‖q)`` at ``alpha = 1`` and ``KL(q‖p)`` at ``alpha = 0``. Every
  real ``alpha`` is allowed: ``D^(alpha)(p‖q) = D^(1-alpha)(q‖p)``, so ``alpha = 2`` is half
  Pearson's chi-squared, ``alpha = -1`` half Neyman's and ``alpha = 1/2`` four times the squared
  Hellinger distance.

  On probabilities the sum is an average under ``p / sum(p)`` for ``alpha >= 1/2`` and under
  ``q / sum(q)`` below (the form ``D^(1-alpha)(q‖p)``): where that argument does not sum to 1,
  or ``where`` leaves part of its mass out, the sum is divided by its mass over the entries
  kept, and so are the limits (``KL(p‖q) / sum p`` at 1, ``KL(q‖p) / sum q`` at 0).

  Args:
    p: first distribution, shape ``[..., n, ...]``.
    q: second distribution, broadcastable with ``p``.
    alpha: the order, any real (``+-jnp.inf`` allowed); scalar or batch-shaped, may be traced.
    axis: the axis that holds the distribution.
    where: boolean mask broadcastable to the inputs.
    from_logits: ``p`` and ``q`` are logits.

  Returns:
    The alpha-divergence, the broadcast batch shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv
    >>> p = jnp.array([0.5, 0.5]); q = jnp.array([0.9, 0.1])
    >>> print(round(float(jaxdiv.alpha_divergence(p, q, alpha=2.0)), 4))
    0.8889

  References:
    Amari, Differential-Geometrical Methods in Statistics, 1985; Cichocki & Amari, Families of
    Alpha- Beta- and Gamma-Divergences, 2010.
  """
  _validation.check_real(alpha, "alpha", allow_inf=True)
  a = _static_alpha(alpha)
  fast = _common.fast_inputs(p, q, names=("p", "q"), axis=axis, where=where,
                             from_logits=from_logits)
  # The power sum p^a q^(1 - a) is the same after the swap below; its normalising mass is that
  # of the argument in the first place.
  a_eff = None if a is None else max(a, 1 - a)
  near_form = _power_sum_near(a_eff, fast)
  if near_form is not None:
    scale = (a_eff - 1) * a_eff
    return _fast.run(fast, *_fast.power_sum((a, 1 - a), lambda ls: jnp.expm1(ls) / scale,
                                            norm=0 if a >= 0.5 else 1,
                                            near=near_form),
                     lambda prep: _alpha_divergence(prep, alpha), None, nonnegative=True)
  def guarded(xs, ax, alpha):
    return _common.guarded(xs, _alpha_divergence, names=("p", "q"), axis=ax, where=None,
                           from_logits=from_logits, hyper=(alpha,), nonnegative=True)

  # Generic where the swapped form's order, max(alpha, 1 - alpha), is (any real alpha).
  out = _traced_order(fast, alpha, lambda ls, a: jnp.expm1(ls) / (a * (a - 1)), guarded, None,
                      generic=lambda a: _generic_order(jnp.maximum(a, 1 - a)), swap=True)
  if out is not None:
    return out
  return _common.guarded((p, q), _alpha_divergence, names=("p", "q"), axis=axis, where=where,
                         from_logits=from_logits, hyper=(alpha,), nonnegative=True)


def _alpha_divergence(prep: _common.Prepared, alpha) -> jax.Array:
  dp, dq = prep.dists
  a = _static_alpha(alpha)
  if a is not None:
    # D^(a)(p||q) = D^(1-a)(q||p): evaluate with an order >= 1/2, where p^a q^(1-a) needs only
    # the support of the first argument.
    if a < 0.5:
      dp, dq, a_eff = dq, dp, 1.0 - a
    else:
      a_eff = a
  else:
    alpha = _alpha_for(alpha, prep)
    swap = alpha < 0.5
    a_eff = jnp.where(swap, 1 - alpha, alpha)
    dp, dq = (
        _common.Dist(jnp.where(swap, dq.prob, dp.prob), jnp.where(swap, dq.log_prob, dp.log_prob)),
        _common.Dist(jnp.where(swap, dp.prob, dq.prob), jnp.where(swap, dp.log_prob, dq.log_prob)),
    )
  d = dp.log_prob - dq.log_prob
  a_b = a_eff if (np.ndim(a_eff) == 0) else jnp.squeeze(a_eff, prep.axis)
  a_b = jnp.where(jnp.isinf(a_b), 2.0, a_b)  # only read where the finite branch is selected
  return _order_family(
      dp.prob, dp.log_prob, d, a_eff, prep.axis,
      general=lambda log_s, t: _numerics.expm1_over(log_s, t * a_b),
      near=lambda m, c, t: _excess_over_t(m, c, t) / a_b,
      at_one=_identity, at_inf=_inf_if_positive,
      one_taylor=_alpha_taylor,
  )
