"""The few stable primitives every divergence shares.

Each helper names the NaN trap it avoids. The recurring one: `jnp.where(ok, f(x), 0)` has the
right value but a NaN gradient when `f(x)` is inf/NaN on the unselected branch, because the
cotangent 0 is multiplied by an infinite derivative. The cure is the *double where*: first make
the argument safe on the unselected branch, then select.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax


def safe_log(x: jax.Array) -> jax.Array:
  """`log(x)`, -inf at x == 0, with gradient 0 (not inf) there.

  Trap avoided: `d log(x)/dx = 1/x = inf` at 0; multiplied by the zero cotangent of an entry
  outside the support it gives NaN. The value keeps the scipy edge (`log 0 = -inf`).
  """
  ok = x > 0
  return jnp.where(ok, jnp.log(jnp.where(ok, x, 1)), jnp.where(x == 0, -jnp.inf, jnp.nan))


def mul_log(x: jax.Array, log_y: jax.Array) -> jax.Array:
  """`x * log_y` with the convention `0 * log 0 = 0` (also `0 * (+-inf)` and `0 * nan` = 0).

  The derivative with respect to `x` is `log_y` where that is finite (the true one), and 0 at
  the 0 * inf corner, where the true one is infinite: that is the convention which keeps
  gradients finite wherever the value is. Trap avoided: `0 * -inf = NaN` in value and gradient.
  """
  keep = (x != 0) | jnp.isfinite(log_y)
  return x * jnp.where(keep, log_y, 0)


@jax.custom_jvp
def mul_log_of(x: jax.Array, y: jax.Array) -> jax.Array:
  """`mul_log(x, safe_log(y))`, ``x log y`` for y >= 0 (NaN below), its derivative in y formed
  as the one quotient ``x / y`` (0 where y is 0 or x is).

  Trap avoided: autodiff formed that derivative as ``x * (1/y)``, and differentiated again as
  ``x * y**-2``, whose square underflows (float32 y < 1e-19, float64 < 1e-154) where ``x /
  y**2`` does not: the Bernoulli cross-entropy's d²/dq² was inf and d²/dp dq NaN at p = 1e-37,
  q = 1e-20 (true: 1e3 and -1e20); for x = y (an entropy's ``p log p``), d²/dp² = 1/p came
  out -inf through ``p * (-p**-2)``.
  """
  return mul_log(x, safe_log(y))


@mul_log_of.defjvp
def _mul_log_of_jvp(primals, tangents):
  x, y = primals
  dx, dy = tangents
  log_y = safe_log(y)
  keep = (x != 0) | jnp.isfinite(log_y)
  log_y = jnp.where(keep, log_y, 0)
  slope = quotient(x, y, y > 0)  # d/dy = x / y
  return x * log_y, log_y * dx + slope * dy


@jax.custom_jvp
def mul_log_ratio(x: jax.Array, y: jax.Array) -> jax.Array:
  """`mul_log(x, safe_log(x) - safe_log(y))`, ``x log(x / y)`` for x, y >= 0, its derivative
  in y the one quotient ``-x / y`` (0 where y is 0 or x is), as in :func:`mul_log_of` (whose
  trap it avoids: a q**-2 that underflows in the KL's d²/dq²)."""
  return mul_log(x, safe_log(x) - safe_log(y))


@mul_log_ratio.defjvp
def _mul_log_ratio_jvp(primals, tangents):
  x, y = primals
  dx, dy = tangents
  d = safe_log(x) - safe_log(y)
  d = jnp.where((x != 0) | jnp.isfinite(d), d, 0)
  # -d/dy; held at 0 where x is 0 (not only its value: its own d/dx there, 1/y, would make the
  # mixed second derivative -1/y one way and 0, d/dx's convention at x = 0, the other)
  slope = quotient(x, y, (y > 0) & (x != 0))
  return x * d, (d + (x > 0).astype(d.dtype)) * dx - slope * dy


@jax.custom_jvp
def mul_log_ratio_scaled(x: jax.Array, y: jax.Array, y_scaled: jax.Array,
                         scale: jax.Array) -> jax.Array:
  """:func:`mul_log_ratio` ``x log(x / y)`` for a `y` formed as a sum of products that may
  fall below the normal range (a mixture ``beta p + (1 - beta) q``), given also `y_scaled`,
  the same sum formed with its weights multiplied by `scale` (a power of two, so that
  ``y_scaled = scale y`` rounds alike): below ``tiny / eps``, where a product flushed to 0 (as
  XLA:CPU flushes subnormals) may have lost a digit of `y` or all of it, ``log y`` is taken as
  ``log(y_scaled) - log(scale)`` and ``x / y`` as ``scale x / y_scaled``. Elsewhere this is
  :func:`mul_log_ratio` of `x` and `y` itself: ``log x - log y`` is exactly 0 at ``x = y``
  (``log(scale x) - log(y_scaled)`` is too, but its logs of scaled values are not the
  ``log x`` that other terms share). Derivatives are those in `x` and `y`; `y_scaled` and
  `scale` must not be differentiated (their tangents are ignored)."""
  return _mul_log_ratio_scaled_parts(x, y, y_scaled, scale)[0]


def _mul_log_ratio_scaled_parts(x, y, y_scaled, scale):
  info = jnp.finfo(y.dtype)
  small = y < info.tiny / info.eps
  yy = jnp.where(small, y_scaled, y)
  d = safe_log(x) - (safe_log(yy) - jnp.where(small, jnp.log(scale), 0))
  # Exactly 0 where scale x = y_scaled (x = y, as rounded): the two logs there leave an ulp of
  # log x (7.6e-6 near 1e-33), which the JS distance's root made a gradient of 3e13 at p = q.
  # The value only: its derivatives are d's (a select of 0 dropped the JS Hessian at p = q).
  d = d + lax.stop_gradient(jnp.where(small & (scale * x == y_scaled), -d, 0))
  return mul_log(x, d), d, small, yy


@mul_log_ratio_scaled.defjvp
def _mul_log_ratio_scaled_jvp(primals, tangents):
  x, y, y_scaled, scale = primals
  dx, dy = tangents[:2]
  out, d, small, yy = _mul_log_ratio_scaled_parts(x, y, y_scaled, scale)
  d = jnp.where((x != 0) | jnp.isfinite(d), d, 0)
  slope = quotient(jnp.where(small, scale * x, x), yy, (yy > 0) & (x != 0))
  return out, (d + (x > 0).astype(d.dtype)) * dx - slope * dy


@jax.custom_jvp
def mul_log_diff(x: jax.Array, y: jax.Array) -> jax.Array:
  """`mul_log(x - y, safe_log(x) - safe_log(y))`, ``(x - y) log(x / y)`` for x, y >= 0 (the
  Jeffreys term), with autodiff's first derivatives (``log(x/y) + (x - y)/x`` in x, where x >
  0) and their quotients ``(x - y)/x``, ``(x - y)/y`` each formed whole (as in
  :func:`mul_log_of`: no y**-2 to underflow in the second derivatives)."""
  return mul_log(x - y, safe_log(x) - safe_log(y))


@mul_log_diff.defjvp
def _mul_log_diff_jvp(primals, tangents):
  x, y = primals
  dx, dy = tangents
  w, d = x - y, safe_log(x) - safe_log(y)
  d = jnp.where((w != 0) | jnp.isfinite(d), d, 0)
  return w * d, ((d + difference_quotient(x, y, x, x > 0)) * dx
                  - (d + difference_quotient(x, y, y, y > 0)) * dy)


def logistic(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """`(sigmoid x, sigmoid -x, sigmoid -|x|, log1p(exp(-|x|)))`: with s = sigmoid -|x| (XLA's
  logistic), sigmoid |x| = 1 - s (no cancellation: s <= 1/2), and log sigmoid(+-x) =
  -(max(-+x, 0) + log1p(exp(-|x|))). Exact at +-inf; differentiable to any order (at x = 0
  through `abs`'s derivative 1 there). (s as e / (1 + e) from the same exp made the binary
  entropy's median float32 error 1.09x the hand-written line's; this, 0.86x.)

  Trap avoided: `sigmoid(x)` near 1 and `1 - sigmoid(x)` formed from it lose every digit of
  the small side (1 - sigmoid(20) = 0 in float32; sigmoid(-20) = 2.1e-9)."""
  ax = jnp.abs(x)
  small = jax.nn.sigmoid(-ax)
  big = 1 - small
  pos = x >= 0
  return jnp.where(pos, big, small), jnp.where(pos, small, big), small, jnp.log1p(jnp.exp(-ax))


def positive_zero(x: jax.Array) -> jax.Array:
  """`x` with a zero as +0.0 (as scipy gives it), the derivative the identity. A negated sum of
  zero terms is -0.0 (the entropy of a one-hot row: 1 / H was -inf); `x + 0.0` would not do,
  as XLA drops it."""
  return x + lax.stop_gradient(jnp.where(x == 0, -x, 0))


def safe_sqrt(x: jax.Array) -> jax.Array:
  """`sqrt(x)` for x >= 0 with gradient 0 (a subgradient) at x == 0 instead of inf.

  Trap avoided: distances such as Hellinger or the JS distance are 0 at p == q, where the
  inner sum has zero gradient: `inf * 0 = NaN`.
  """
  ok = x > 0
  return jnp.where(ok, jnp.sqrt(jnp.where(ok, x, 1)), jnp.where(x == 0, 0.0, jnp.nan))


def safe_div(x: jax.Array, y: jax.Array, *, zero_over_zero=0.0) -> jax.Array:
  """`x / y` with `0/0 = zero_over_zero` and `x/0 = sign(x) inf`, NaN-free gradients."""
  ok = y != 0
  q = x / jnp.where(ok, y, 1)
  return jnp.where(ok, q, jnp.where(x == 0, zero_over_zero, jnp.sign(x) * jnp.inf))


def log1p(x: jax.Array) -> jax.Array:
  """`jnp.log1p`, in float64 within an ulp where XLA:CPU's is not: on about [1 - sqrt 2, -0.354)
  its float64 log1p is up to 121 ulp off (measured against 50-digit mpmath), which reached
  2257 ulp in the Beta KL and 254 in the Poisson KL. There ``log(u) - ((u - 1) - x) / u``, u =
  1 + x rounded: the log of the rounded sum, less the first-order effect of its rounding
  (exact: u - 1 is, by Sterbenz). Other dtypes and arguments: `jnp.log1p` as it is."""
  if x.dtype != jnp.float64:
    return jnp.log1p(x)
  bad = (x >= -0.5) & (x < -0.3)
  u = jnp.where(bad, 1 + x, 1.0)
  fixed = jnp.log(u) - ((u - 1) - jnp.where(bad, x, 0.0)) / u
  return jnp.where(bad, fixed, jnp.log1p(x))


@jax.custom_jvp
def fast_log1p(x: jax.Array) -> jax.Array:
  """`log(1 + x)` from one `log`: log u, u = 1 + x rounded, less the first-order effect of that
  rounding, ((u - 1) - x) / u, where u is within [1/2, 2] (there u - 1 is exact, by Sterbenz;
  below 1/2, 1 + x is exact; above 2, its rounding moves log u by at most eps / 2, under an
  ulp of log u >= log 2).

  For elementwise forms on large arrays: XLA:CPU's own `log1p` is a log, a rational
  approximation and a select, about 2.5x a `log` (float32 1024x512: 0.19 ms against 0.07).
  This is within 1.8 ulp in float32 and 1.5 in float64 over (-1, 1e30) (against float128), a
  better worst case than :func:`log1p`'s, but in float32 its mean error is higher (0.38 ulp
  against 0.29 on (-1/2, 0)): :func:`log1p` serves where cancellation amplifies it (the
  parametric KLs). The select on u keeps XLA's algebraic simplifier from folding ``(1 + x) -
  1`` into ``x``, which would drop the correction. The derivative is jax's, ``1 / (1 + x)``.

  Used twice, `x` should be cheap to recompute: XLA:CPU does not fuse an expensive producer (a
  division, an `exp`) into a consumer that reads it twice, and writes it to memory instead.
  Pass ``a * (1 / b)``, not ``a / b``.
  """
  u = 1 + x
  near = (u >= 0.5) & (u <= 2)
  un = jnp.where(near, u, 1)
  return jnp.log(u) - ((un - 1) - jnp.where(near, x, 0)) / un


fast_log1p.defjvps(lambda t, ans, x: t / (1 + x))


@jax.custom_jvp
def ratio(x: jax.Array, y: jax.Array) -> jax.Array:
  """``x / y`` whose derivative is ``(dx - (x/y) dy) / y``: autodiff's ``x dy / y**2``
  overflows where y is tiny though the quotient and its derivative are not (float32 Gamma KL
  at concentrations 1e-20 and 1e-19: y**-2 = 1e40 = inf, and the gradient NaN for -9e20)."""
  return x / y


@ratio.defjvp
def _ratio_jvp(primals, tangents):
  x, y = primals
  dx, dy = tangents
  r = x / y
  return r, (dx - r * dy) / y


@jax.custom_jvp
def log_quotient(x: jax.Array) -> jax.Array:
  """``log(x)`` whose derivative is ``dx * (1 / x)`` with the reciprocal a :func:`ratio`, whose
  own derivative has no square: autodiff's second derivative ``-dx**2 / x**2`` flushed ``x**2``
  to 0 (float32 x < 1e-19) and came out ``inf``, then ``0 * inf = NaN`` (the float32 focal
  loss's Hessian at label 1e-30 and logit -60). ``ratio(dx, x)`` itself would not do: its
  derivative in `x` reads ``dx / x`` twice."""
  return jnp.log(x)


@log_quotient.defjvp
def _log_quotient_jvp(primals, tangents):
  (x,), (dx,) = primals, tangents
  return jnp.log(x), dx * ratio(jnp.ones_like(x), x)


def quotient(x: jax.Array, y: jax.Array, ok: jax.Array) -> jax.Array:
  """:func:`ratio` ``x / y`` where `ok`, 0 elsewhere, with both operands replaced there (the
  double where: no inf or NaN from the unselected entries reaches a derivative)."""
  return ratio(jnp.where(ok, x, 0), jnp.where(ok, y, 1))


def difference_quotient(x: jax.Array, y: jax.Array, z: jax.Array, ok=True) -> jax.Array:
  """:func:`quotient` ``(x - y) / z`` where `ok`, 0 elsewhere, with ``x - y`` exact (Sterbenz)
  where it is formed, and ``x / z - y / z`` where it flushed to 0 (XLA:CPU: x != y within
  float32's subnormal spacing of each other, both near 1.2e-38, where the quotient is not
  small: the Jeffreys and Bernoulli gradients were 0 there against 0.05)."""
  w = x - y
  flushed = (w == 0) & (x != y)
  split = ok & flushed  # the split form's operands replaced elsewhere (no 0 / 0 in a derivative)
  return jnp.where(flushed, quotient(x, z, split) - quotient(y, z, split), quotient(w, z, ok))


def psum(x: jax.Array, axis_name=None) -> jax.Array:
  """`lax.psum` over `axis_name` inside `shard_map`; the identity when `axis_name` is None."""
  return x if axis_name is None else lax.psum(x, axis_name)


def pmax(x: jax.Array, axis_name=None) -> jax.Array:
  """`lax.pmax` over `axis_name` (under `stop_gradient`: it only shifts); identity for None."""
  return x if axis_name is None else lax.pmax(lax.stop_gradient(x), axis_name)


def _shift_and_sum_exp(x: jax.Array, axis, axis_name) -> tuple[jax.Array, jax.Array]:
  """`(m, sum(exp(x - m)))` over `axis` (kept), `m` the row max under `stop_gradient`, 0 where
  it is not finite (a row of -inf, or an empty axis, sums to 0; a +inf entry to inf)."""
  if x.size:
    m = lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
  else:  # max of an empty axis is undefined; the sum below is 0 and the result -inf anyway
    m = jnp.zeros_like(jnp.sum(x, axis=axis, keepdims=True))
  m = pmax(m, axis_name)
  m = jnp.where(jnp.isfinite(m), m, 0)
  return m, psum(jnp.sum(jnp.exp(x - m), axis=axis, keepdims=True), axis_name)


def logsumexp(x: jax.Array, axis=-1, where=None, keepdims: bool = False,
              axis_name=None) -> jax.Array:
  """`log(sum(exp(x)))` over `axis`; -inf (with zero gradient) for a row of -inf or masked.

  Traps avoided: `jax.nn.logsumexp` of an all -inf row has a NaN gradient (`exp(-inf + inf)`),
  and a max that is not under `stop_gradient` sends a spurious gradient to the arg-max. Sums
  accumulate in the input dtype, which callers have already raised to at least float32.
  With `axis_name`, `axis` is sharded over that mesh axis (inside `shard_map`): the max and the
  sum are reduced across it, so every shard gets the global value.
  """
  if where is not None:
    x = jnp.where(where, x, -jnp.inf)
  m, s = _shift_and_sum_exp(x, axis, axis_name)
  ok = s > 0
  # NaN inputs give NaN (never a silent -inf); +inf entries give inf, the right value.
  out = jnp.where(ok, jnp.log(jnp.where(ok, s, 1)) + m, jnp.where(jnp.isnan(s), s, -jnp.inf))
  return out if keepdims else jnp.squeeze(out, axis=axis)


def lost_rows(lse: jax.Array) -> jax.Array:
  """The rows whose logsumexp is NaN or +inf (a NaN or a +inf logit): their softmax is
  undefined, their loss NaN or +inf, and the cross-entropy family takes them as constants, with
  no gradient. (A row of every logit -inf has lse -inf: no mass, not lost.) `lse < inf` rather
  than `isfinite`, so that it lowers inside Triton kernels."""
  return jnp.logical_not(lse < jnp.inf)


def log_softmax(logits: jax.Array, axis: int = -1, where=None, axis_name=None) -> jax.Array:
  """Log-probabilities from logits; masked entries and all-masked rows come out as -inf.

  Trap avoided: `jax.nn.log_softmax` of an all -inf row is NaN (and so is its gradient).
  Computed as `(x - max) - log(sum(exp(x - max)))`, as `jax.nn.log_softmax` does: `x - lse`
  rounds `lse = max + log(sum)` to the ulp of the max first, which made the guarded paths'
  float32 errors against float64 3-7x the hand-written line's on logits of scale 8 (helper-60:
  cross-entropy with a mask of all True, median 1.09e-5 against 1.51e-6).
  """
  if where is not None:
    logits = jnp.where(where, logits, -jnp.inf)
  m, s = _shift_and_sum_exp(logits, axis, axis_name)
  ok = (s > 0) & (s < jnp.inf)
  # The barrier keeps `logits - m` here from being one value with the sum's `exp(logits - m)`
  # (XLA's CSE): shared, it was written out in full between two loops (masked at 2048x4096,
  # forward 1.2x the `x - lse` form's time; with the barrier, the same time).
  m, log_s = lax.optimization_barrier((m, jnp.log(jnp.where(ok, s, 1))))
  out = (logits - m) - log_s
  # A row with nothing in its support has no distribution: every entry is outside it. A +inf
  # or NaN logit has no normalisation either: NaN, so that it is never silently a number.
  return jnp.where(ok, out, jnp.where(s == 0, -jnp.inf, jnp.nan))


def log_add_exp(a: jax.Array, b: jax.Array, wa=1.0, wb=1.0) -> jax.Array:
  """`log(wa exp(a) + wb exp(b))` for weights >= 0; -inf (zero gradient) when it is log 0.

  Traps avoided: `jnp.logaddexp(-inf, -inf)` has a NaN gradient, and folding a weight in as
  `log(w) + a` loses d/dw at w = 0 (where d log(w)/dw is infinite). Written with
  `abs(m) < inf` rather than `isfinite` so that it also lowers inside Triton (Pallas) kernels.
  """
  m = lax.stop_gradient(jnp.maximum(a, b))
  m = jnp.where(jnp.abs(m) < jnp.inf, m, 0)
  s = wa * jnp.exp(a - m) + wb * jnp.exp(b - m)
  ok = s > 0
  return jnp.where(ok, jnp.log(jnp.where(ok, s, 1)) + m, -jnp.inf)


def expm1_minus_x(x: jax.Array) -> jax.Array:
  """`exp(x) - 1 - x` (>= 0), i.e. `r - 1 - log r` at `x = log r`.

  Trap avoided: catastrophic cancellation near 0, where `expm1(x) - x` subtracts two nearly equal
  numbers: its relative error is about `2 eps / |x|` (200 ulp at |x| = 0.01). For |x| < 1 the
  Taylor series `sum_{k >= 2} x^k / k!` is summed instead, to as many terms as the dtype needs
  (truncation below one ulp: 18 terms in float64, 11 otherwise); beyond 1 the difference loses
  at most a few ulp. The double-`where` keeps the gradient finite.
  """
  return _series_near_zero(x, lambda k: 1.0 / math.factorial(k), lambda xb: jnp.expm1(xb) - xb)


def _series_tail(x: jax.Array, coef: Callable[[int], float]) -> jax.Array:
  """`sum_{k >= 2} coef(k) x^k` (Horner), to 18 terms in float64 and 11 otherwise (truncation
  below one ulp for the series here, at |x| < 1)."""
  terms = 18 if x.dtype == jnp.float64 else 11
  series = jnp.zeros_like(x)
  for k in range(terms + 1, 1, -1):
    series = series * x + coef(k)
  return x * x * series


def _series_near_zero(x: jax.Array, coef: Callable[[int], float],
                      far: Callable[[jax.Array], jax.Array]) -> jax.Array:
  """:func:`_series_tail` where |x| < 1, else `far(x)`; each branch sees a safe value where it
  is not selected (finite gradients)."""
  x = jnp.asarray(x)
  small = jnp.abs(x) < 1
  xb = jnp.where(small, 1.0, x)
  return jnp.where(small, _series_tail(jnp.where(small, x, 0), coef), far(xb))


def expm1_over_x(x: jax.Array) -> jax.Array:
  """`expm1(x) / x` (1 at 0), with derivatives of every order free of cancellation.

  Trap avoided: autodiff of the quotient forms `e^x / x - expm1(x) / x^2` for the first
  derivative, two terms of size 1/x that cancel to 1/2 (relative error about `2 eps / x^2`),
  and worse for the second. For |x| < 1 the Taylor series `sum_k x^k / (k + 1)!` is summed
  (a polynomial, differentiated exactly), beyond it the quotient."""
  x = jnp.asarray(x)
  rest = _series_near_zero(x, lambda k: 1.0 / math.factorial(k + 1),
                           lambda xb: jnp.expm1(xb) / xb - 1 - 0.5 * xb)
  return 1 + 0.5 * x + rest


def log1p_over_x(y: jax.Array) -> jax.Array:
  """`log1p(y) / y` for y > -1 (1 at 0), with derivatives of every order free of cancellation
  (as :func:`expm1_over_x`). Near 0 as `2 atanh(u) / y = (2 / (2 + y)) sum_k u^(2k) / (2k + 1)`
  with `u = y / (2 + y)`, a series in `u^2 < 1/16` (|y| up to 0.4), beyond as the quotient."""
  y = jnp.asarray(y)
  near = jnp.abs(y) < 0.4  # u^2 < 1/16 there
  ys = jnp.where(near, y, 0)
  w = (ys / (2 + ys)) ** 2
  yb = jnp.where(near, 1.0, y)
  series = 1 + w / 3 + _series_tail(w, lambda k: 1.0 / (2 * k + 1))
  return jnp.where(near, 2 / (2 + ys) * series, log1p(yb) / yb)


def xexpx_bregman(x: jax.Array) -> jax.Array:
  """`1 + (x - 1) exp(x)` (>= 0), i.e. `(1 + u) log1p(u) - u` at `x = log1p(u)`.

  The same trap as :func:`expm1_minus_x`: near 0 the terms cancel (the value is about x^2/2),
  so for |x| < 1 the Taylor series `sum_{k >= 2} (k - 1) x^k / k!` is summed (18 terms in
  float64, 11 otherwise); beyond 1 `1 + (x - 1) e^x` loses at most a few ulp.
  """
  # Beyond 1, `1 + (x - 1) e^x`, not `x e^x - expm1(x)`: JAX differentiates expm1 as
  # `expm1(x) + 1`, which has an absolute error of eps where e^x is tiny (5% in float32 at
  # x = -20).
  return _series_near_zero(x, lambda k: (k - 1) / math.factorial(k),
                           lambda xb: 1 + (xb - 1) * jnp.exp(xb))


# Above this, e^x - 1 rounds to e^x in float64 too (e^37 > 2^53).
_EXPM1_IS_EXP = 37.0


@jax.custom_jvp
def expm1_over(x: jax.Array, c: jax.Array) -> jax.Array:
  """`expm1(x) / c` (c != 0), finite wherever the quotient is, its derivatives too.

  Trap avoided: `expm1(x)` overflows for x > 88.7 (float32) while `expm1(x) / c` fits up to
  log|c| beyond that (the order-7 alpha-divergence is S / 42). Where e^x is that large, -1 is
  below its rounding and the quotient is `e^(x/2) (e^(x/2) / c)` (x/2 is exact: no error grows
  with x, as it would in `exp(x - log|c|)`). Autodiff of that product would form
  `e^(x/2) e^(x/2) / 2` before the division (inf), hence the rule: d/dx = e^x / c, which is the
  value itself there, and d/dc = -value / c.
  """
  big = x > _EXPM1_IS_EXP
  small = jnp.expm1(jnp.where(big, 0, x)) / c
  half = jnp.exp(0.5 * jnp.where(big, x, _EXPM1_IS_EXP))
  return jnp.where(big, half * (half / c), small)


@expm1_over.defjvp
def _expm1_over_jvp(primals, tangents):
  x, c = primals
  dx, dc = tangents
  out = expm1_over(x, c)
  big = x > _EXPM1_IS_EXP
  slope = jnp.where(big, out, jnp.exp(jnp.where(big, 0, x)) / c)
  return out, slope * dx - out / c * dc


def log_abs_expm1(x: jax.Array) -> jax.Array:
  """`log|exp(x) - 1|` without overflow for large x nor cancellation near 0; -inf at 0.

  Traps avoided: `expm1(x)` overflows for x > 88 (float32) before the log could shrink it, and
  the derivative `1/expm1(x)` is infinite at 0 (double-`where`).
  """
  pos = x > 0
  nz = x != 0
  xs = jnp.where(nz, x, 1.0)
  out = jnp.where(pos, xs + jnp.log(-jnp.expm1(-jnp.abs(xs))), jnp.log(-jnp.expm1(-jnp.abs(xs))))
  return jnp.where(nz, out, -jnp.inf)


def masked_sum(x: jax.Array, axis, where=None) -> jax.Array:
  """Sum over `axis` of the entries `where` selects (masked entries may hold inf or NaN)."""
  if where is not None:
    x = jnp.where(where, x, 0)
  return jnp.sum(x, axis=axis)


def to_base(x: jax.Array, base) -> jax.Array:
  """Converts a quantity in nats to the units of `base` (None: nats)."""
  if base is None:
    return x
  return x / jnp.log(jnp.asarray(base, x.dtype))


def softcap(x: jax.Array, cap: float, scale: float = 1.0) -> jax.Array:
  """Logit soft-capping, `scale * cap * tanh(x / cap)` (Gemma 2), with -inf kept -inf.

  Trap avoided: tanh maps a -inf (masked) logit to -1, i.e. to the finite logit -cap, which
  would give a masked entry probability back. Its derivative there, 1 - tanh^2 = 0, is finite.
  A NaN stays NaN, with derivative 1 (its row is lost: the zero cotangent of a row summed away
  met tanh's NaN derivative as 0 * NaN).
  """
  keep = (x == -jnp.inf) | jnp.isnan(x)
  capped = (cap * scale) * jnp.tanh(jnp.where(keep, 0, x) * (1.0 / cap))
  return jnp.where(keep, x, capped)
