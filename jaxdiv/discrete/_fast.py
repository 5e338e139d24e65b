"""The fast path of the categorical divergences: the hand-written expression, checked once per
batch.

XLA:CPU compiles `sum(exp(la) * (la - lb))` with `la, lb = jax.nn.log_softmax(a), ...` into a
single loop over the inputs (one fusion, the exponentials vectorised), while every `where` or
`isfinite` that guards an edge case (0 * log 0, -inf logits, empty rows) splits it into several
loops and passes over the data: that was a 4-5x cost over the hand-written line.

The unguarded expression is exact wherever its value is finite: every edge case that needs a
guard (an entry outside the support, an empty row, a NaN or +inf input, a divergence of +inf)
turns a row into NaN or +-inf (and where an expression would be silently wrong, on a zero or
negative probability say, its value function makes the row NaN itself). So the value is computed
unguarded, and only when some row of the batch is not finite does `lax.cond` run the guarded
implementation (`careful`, the path with all the documented semantics), whose values then
replace those rows. The derivative comes from a `custom_jvp` whose tangent is `sum(coef * dx)`
with the row-wise closed-form coefficients (the softmax Jacobian contracted by hand), again
replaced by the guarded implementation's gradient on the rows that are not finite: the
coefficients are primal values, so the `cond` selecting them leaves no tangent residuals.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxdiv import _fallback
from jaxdiv import _numerics
from jaxdiv.discrete import _common

FUSED_ROWS = _fallback.FUSED_ROWS
shift_and_sum = _fallback.shift_and_sum
max_and_sum_exp = _fallback.max_and_sum_exp
log_softmax = _fallback.log_softmax
softmax = _fallback.softmax
with_fallback = _fallback.with_fallback


def from_stats(x: jax.Array, stats) -> tuple[jax.Array, jax.Array]:
  """`(log_softmax(x), softmax(x))` from `stats = max_and_sum_exp(x, axis)`: the operations of
  :func:`log_softmax` and :func:`softmax` after their row reductions, so the same per-entry values
  bit for bit (row sums reduced in another fusion may round differently: gradients agree to about
  an ulp). For coefficients that form a value's per-entry arrays again from its row statistics
  inside `with_fallback`'s `cond`: passed in as the `cond`'s operands, those arrays were written
  out in full (KL from logits, value+grad: 198 MiB of temporaries at 4096x4096 against 70)."""
  m, total = stats
  y = x - m
  return y - jnp.log(total), jnp.exp(y) / total


def logaddexp(x: jax.Array, y: jax.Array) -> jax.Array:
  """`log(e^x + e^y)` in arithmetic only, `max + log1p(exp(-|x - y|))`: NaN where both are
  `-inf` (a row for the guarded path). `jnp.logaddexp`'s selects for that case kept XLA:CPU
  from fusing the JS divergence's row into its fast loops (5120x1024: 3.3x the time)."""
  return jnp.maximum(x, y) + jnp.log1p(jnp.exp(-jnp.abs(x - y)))


def run(fast, logits, probs, careful_body, base, *, nonnegative: bool,
        autodiff: bool = False) -> jax.Array:
  """Runs the unguarded row values with `careful_body` (the guarded maths on a
  `_common.Prepared`) as their fallback, then the units, the clamp at 0 and the result dtype.

  Args:
    fast: what `_common.fast_inputs` returned (not None).
    logits, probs: `(value, coefs)` pairs for the two input forms (see :func:`with_fallback`;
      each also takes the axis first).
    careful_body: `Prepared -> out`, the guarded row values before `_common.finish`.
    base: the logarithm base of the result.
    nonnegative: clamp rounding below 0 where the inputs were normalised by us (logits).
    autodiff: differentiate the unguarded values as written (their coefficients unused), for
      values that close over traced values (:func:`_fallback.with_fallback_autodiff`).
  """
  xs, ax, dtype, from_logits = fast
  value, coefs, *for_coefs = logits if from_logits else probs

  def careful(*xs):
    prep = _common.prepare(*xs, names=("p", "q")[:len(xs)], axis=ax, where=None,
                           from_logits=from_logits)
    return _common.finish(careful_body(prep), prep, nonnegative=nonnegative)

  if autodiff:
    out = _fallback.with_fallback_autodiff(lambda *xs: value(ax, *xs), careful, *xs, axis=ax)
  else:
    out = with_fallback(lambda *xs: value(ax, *xs),
                        lambda out, aux, *xs: coefs(ax, out, aux, *xs), careful, *xs, axis=ax,
                        value_for_coefs=(lambda *xs: for_coefs[0](ax, *xs)) if for_coefs
                        else None)
  return to_result(out, base, dtype, clamp=nonnegative and from_logits)


def to_result(out: jax.Array, base, dtype, *, clamp: bool) -> jax.Array:
  """Unguarded row values in nats to the result: rounding below 0 clamped (`clamp`: inputs we
  normalised), the units, the result dtype."""
  if clamp:
    out = _common.clamp_nonnegative(out)
  return _numerics.positive_zero(_numerics.to_base(out, base)).astype(dtype)


def evaluate(arrays, careful_body: Callable, pairs, *, axis, where, from_logits, base=None,
             nonnegative: bool = False, axis_name=None, autodiff: bool = False) -> jax.Array:
  """One or two distributions through the fast path (:func:`run`) where it applies (no mask,
  one device, `pairs` not None), else through `careful_body` between `_common.prepare` and
  `_common.finish`.

  Args:
    arrays: `(p,)` or `(p, q)` as the user passed them.
    careful_body: `Prepared -> out`, the guarded row values.
    pairs: `(logits, probs)` value/coefficient pairs (see :func:`run`), or None.
    autodiff: see :func:`run`.
  """
  names = ("p", "q")[:len(arrays)]
  kw = dict(names=names, axis=axis, where=where, from_logits=from_logits, axis_name=axis_name)
  fast = None if pairs is None else _common.fast_inputs(*arrays, **kw)
  if fast is not None:
    return run(fast, *pairs, careful_body, base, nonnegative=nonnegative, autodiff=autodiff)
  # The whole batch, not `_common.guarded`'s row blocks: `careful_body` may close over a row's
  # array (a user's generator), or over traced values (`autodiff`), which the blocks'
  # custom_jvp cannot differentiate.
  return _common.guarded(arrays, lambda prep: careful_body(prep), base=base,
                         nonnegative=nonnegative, blocks=False, autodiff=autodiff, **kw)


# The primitives that XLA:CPU keeps vectorised inside the one-pass loop of
# `_fallback.row_reduce` (roots, general powers, exp/log and elementwise minima are not).
_ONE_PASS_PRIMITIVES = frozenset({"add", "sub", "mul", "div", "neg", "integer_pow", "abs",
                                  "square", "copy", "convert_element_type"})


def arithmetic_only(f: Callable, dtype) -> bool:
  """Whether a user's elementwise `f`, traced on a scalar of `dtype`, is sums, products,
  quotients and integer powers only: terms that :func:`guarded_sum`'s one pass keeps
  vectorised. False for anything else, nested calls included, and for an `f` that does not
  trace on a scalar."""
  try:
    jaxpr = jax.make_jaxpr(f)(jax.ShapeDtypeStruct((), dtype))
  except Exception:  # any failure: not provably arithmetic, so no one pass
    return False
  return all(eqn.primitive.name in _ONE_PASS_PRIMITIVES for eqn in jaxpr.eqns)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def slope_power(x: jax.Array, e: float) -> jax.Array:
  """`x ** e` for -1 < e < 0, the power in the derivative of a root `x ** (e + 1)`, with 0 at
  x = 0 (the guarded path's convention: a zero entry gets no gradient from the root, where the
  true slope is infinite) and NaN below; finite derivatives of its own.

  Differentiated as `e x ** e * (t / x)`: `lax.rsqrt`'s own rule cubes its value, which
  overflows below x ~ 2e-26 in float32, and a zero tangent (another entry's direction in a
  Hessian) then met inf: NaN where the guarded path's second derivative is finite."""
  zero = x == 0
  safe = jnp.where(zero, 1.0, x)
  return jnp.where(zero, 0.0, lax.rsqrt(safe) if e == -0.5 else safe ** e)


@slope_power.defjvp
def _slope_power_jvp(e, primals, tangents):
  (x,), (t,) = primals, tangents
  y = slope_power(x, e)
  return y, e * y * (t / jnp.where(x == 0, 1.0, x))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def root(x: jax.Array, c: float) -> jax.Array:
  """`x ** c` for 0 < c < 1 (`jnp.sqrt` at 1/2; NaN below 0, which sends a negative
  probability's row to the guarded path), differentiated as the guarded path: slope 0 at
  x = 0 (`_numerics.safe_sqrt`'s subgradient) where the true one is infinite. So a zero
  probability needs no row guard of its own in the forward, which on XLA:CPU was a second pass
  over the inputs (their row minimum beside the row sum)."""
  return jnp.sqrt(x) if c == 0.5 else x ** c


@root.defjvp
def _root_jvp(c, primals, tangents):
  (x,), (t,) = primals, tangents
  return root(x, c), t * (c * slope_power(x, c - 1))


def sqrt(x: jax.Array) -> jax.Array:
  """:func:`root` of order 1/2."""
  return root(x, 0.5)


def half_rsqrt(x: jax.Array) -> jax.Array:
  """`1 / (2 sqrt x)`, the derivative of the square root, 0 at x = 0 (:func:`slope_power`)."""
  return 0.5 * slope_power(x, -0.5)


def bounded(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`(x, max - x)`, whose minima are non-negative exactly where `x` is finite and
  non-negative: the inputs for :func:`guarded_sum` of an input whose +inf entries need the
  guarded path too (`max - x` is -inf there). Two arrays, not their elementwise minimum, which
  made XLA:CPU's one-pass loop 2x slower."""
  return x, jnp.finfo(x.dtype).max - x


class Terms(NamedTuple):
  """What :func:`guarded_sum` sums and what guards it, elementwise from the inputs."""
  terms: jax.Array
  nonnegative: Sequence[jax.Array] = ()
  positive: Sequence[jax.Array] = ()
  also: Sequence[jax.Array] = ()


def guarded_sum(fn: Callable[..., Terms], xs: Sequence[jax.Array], ax: int,
                one_pass: bool = False, reads: int = 1):
  """The row sum of `fn(*xs).terms`, NaN on the rows where an entry of an array in
  `nonnegative` is negative or one in `positive` is not positive: the rows that need the
  guarded path although the unguarded expression may be finite there (a negative probability
  in `|p - q|` or `p * p`, a zero where the f-divergence's perspective takes its limit). Pass
  :func:`bounded` of an input whose +inf entries need it too. A NaN entry must reach `terms` to
  make its row NaN: XLA:CPU's row minimum drops a NaN in some shapes. With `also`, returns
  `(sum, sums)`: the row sums of those arrays beside it (the mass that normalises a power sum).
  `one_pass`: the terms are sums, products and quotients (no roots, powers or minima), which
  XLA:CPU's one-pass loop of `_fallback.row_reduce` keeps vectorised; `reads`: how many inputs
  they read. `fn` computes the arrays from the inputs `xs` (elementwise) so that the one pass
  can run over blocks of rows.

  A row minimum over the inputs of each kind (`sqrt` of it is NaN below 0, `0 * rsqrt` of it
  NaN at or below 0), in place of a guard on every entry: XLA:CPU's `sqrt` has a fraction of
  the throughput of a read (32768x512 float32, forward: total variation 11.2 -> 8.0 ms, the
  hand-written line 6.4; chi-squared 12.9 -> 9.6, 8.0). With `one_pass`, the minima and the
  sums are one pass over the inputs; with `also` as well, the guards are a select on the terms
  in that pass, and there are no minima.
  """
  def least(xs):
    m = xs[0]
    for x in xs[1:]:
      m = jnp.minimum(m, x)
    return m

  shapes = jax.eval_shape(fn, *xs)
  also = bool(shapes.also)
  one_pass = one_pass and _fallback.one_pass_runs(xs, ax, reads=reads)
  if one_pass and also:
    # Beside another sum (the mass of a power sum) the one pass is XLA:CPU's own loop, which
    # runs a select at the speed of arithmetic: the guards become NaN terms, and there are no
    # row minima. Forward of the order-alpha forms of order 2 against the hand-written line
    # (`bench/hand.py`, hand-s18fold{B,A}{1,2}): Renyi divergence 1.27-1.48x -> 0.57-0.94x,
    # the entropies 1.01-1.78x -> 0.90-1.08x; value+grad even or better. A lone sum is a
    # YNNPACK reduction, which a select slowed 3-5x: there the minima stay.
    def select(*xs):
      t = fn(*xs)
      ok = [x >= 0 for x in t.nonnegative] + [x > 0 for x in t.positive]
      terms = t.terms
      if ok:
        terms = jnp.where(functools.reduce(jnp.logical_and, ok), terms, jnp.nan)
      return (terms, *t.also), ()

    (total, *sums), _ = _fallback.row_reduce(select, xs, ax, reads=reads)
    return total, tuple(sums)

  # In the one pass each input is its own minimum (an elementwise `minimum` of two inputs made
  # its loop 2x slower); else one row minimum of their elementwise minimum (four row minima for
  # the f-family's generic form took its forward from 2.2x to 4.4x the hand line at 2048x32768).
  sizes = [len(k) for k in (shapes.nonnegative, shapes.positive) if k]

  def with_minima(*xs):
    t = fn(*xs)
    kinds = [k for k in (t.nonnegative, t.positive) if k]
    mins = [x for k in kinds for x in k] if one_pass else [least(k) for k in kinds]
    return (t.terms, *t.also), mins

  (total, *sums), mins = _fallback.row_reduce(with_minima, xs, ax, one_pass=one_pass,
                                              reads=reads)
  if one_pass:  # the least row minimum of each kind
    flat, mins = list(mins), []
    for n in sizes:
      mins.append(least(flat[:n]))
      flat = flat[n:]
  nonnegative, positive = bool(shapes.nonnegative), bool(shapes.positive)

  # The guard's own derivative is 0, but autodiff would form 0 * inf (sqrt' at a zero entry,
  # rsqrt' at a tiny one: a probability of 1e-27 made the whole Hessian NaN): no derivative.
  mins = [lax.stop_gradient(m) for m in mins]
  if nonnegative:
    total = total + 0 * jnp.sqrt(mins.pop(0))
  if positive:
    total = total + 0 * lax.rsqrt(mins.pop(0))
  return (total, tuple(sums)) if also else total


def through_softmax(g: jax.Array, p: jax.Array, axis: int) -> jax.Array:
  """d out / d logits from g = d out / d softmax(logits): p (g - <g>_p)."""
  return p * (g - jnp.sum(p * g, axis=axis, keepdims=True))


def through_log_softmax(g: jax.Array, p: jax.Array, axis: int) -> jax.Array:
  """d out / d logits from g = d out / d log_softmax(logits): g - p sum(g)."""
  return g - p * jnp.sum(g, axis=axis, keepdims=True)


def _slope(general: Callable, log_s: jax.Array) -> jax.Array:
  return jax.jvp(general, (log_s,), (jnp.ones_like(log_s),))[1]


def log_positive(s: jax.Array) -> jax.Array:
  """`log S` of a power sum, NaN where S is 0 (or +inf): S underflowed (orders in (0, 1), where
  S <= 1, at logits far apart), so its row takes the guarded path. `log 0 = -inf` would leave a
  finite value where `general(-inf)` is finite (Tsallis: -1 / (alpha - 1)) beside derivatives
  of 0 / 0. `l + (l - l)` instead of a select: XLA:CPU runs a fusion that holds a select
  outside YNNPACK, and it took the probability forms' forward from 1.5x to 2.0x the hand line."""
  log_s = jnp.log(s)
  return log_s + (log_s - log_s)


# `near` power sums below this S take the guarded path: `log1p(S - 1)` from a sum of terms up to
# p in size has a relative error of about eps / (S |log S|), 2.9 eps here. A divergence's S is
# that small only where KL(p||q) > 1.4 / |alpha - 1| (alpha < 1).
_NEAR_MIN_S = 0.25
# The entropies' S = sum p^alpha is about exp(-t H) and at least V^-t (V entries; t < 1/4): under
# 1/4 on every row of 4096 logits N(0, 1) from alpha = 1.19, where the guarded path on every row
# took 3.7x the hand line's time (alpha = 1.2). Their rows take it below 1/32 only (V > 2^20),
# the relative error up to 9 eps.
_NEAR_MIN_S_ONE = 1 / 32


def _log_near(e: jax.Array, min_s: float) -> jax.Array:
  """`log S = log1p(e)` of `e = S - 1`, NaN where S < `min_s` (the row takes the guarded path)
  or e is not finite. The NaN by arithmetic (a root of a negative), not a select: see
  :func:`log_positive`."""
  return jnp.log1p(e) + 0 * jnp.sqrt(e + (1 - min_s))


def power_sum(exponents: Sequence[float], general: Callable, norm: int | None = None,
              near: bool = False):
  """`(logits, probs)` value/coefficient pairs for :func:`run` of `general(log S)`, with the
  power sum `S = sum_i prod_k x_k,i ** c_k` over one or two distributions (the order-alpha
  family: `c = (alpha, 1 - alpha)` or `(alpha,)`).

  `near`: an order near 1 (one exponent `c_i = 1 + t`, `|t| < 1/4`, and for two inputs the other
  `-t`), where `log S / t` from the plain sum loses relative precision as 1 / |t|. Its logits
  form sums `S - 1 = sum_k p_k expm1(t d_k)` instead, with `p = x_i`'s softmax and `d` its
  log-softmax minus the other's (the entropies: its log-softmax), and differentiates as
  `p expm1(t d - log S) = r - p`, the difference of the weights of S and of p that the plain
  form takes by subtraction. Rows where S is not near 1 (below `_NEAR_MIN_S`, for one input
  `_NEAR_MIN_S_ONE`) take the guarded path. Its probabilities form is the plain one (the caller
  takes the guarded path there).

  On probabilities `log S` is divided by the mass of input `norm` (None: not normalised), as
  the guarded path does; the powers are `x ** c`, which XLA turns into products, divisions or
  square roots for the orders 2, -1 and 1/2. An entry that needs the guarded path makes the row
  NaN (:func:`guarded_sum`): a negative probability and +inf for an exponent c <= 0 (where the
  power is 0 or 1). A zero stays on this path: for 0 < c < 1, where the power's derivative is
  infinite there, :func:`root` and :func:`slope_power` give it the guarded path's 0. On logits the
  power sum is `sum exp(sum_k c_k log_softmax(x_k))`, each logit shifted by its row max only:
  where it overflows or underflows to 0 the row is not finite and the guarded path runs too.
  """
  cs = tuple(float(c) for c in exponents)

  def power(x, c):
    if c == 1:
      return x
    if 0 < c < 1:  # slope 0 at a zero entry, as the guarded path's
      return root(x, c)
    if c == -0.5:  # a general power is several times slower
      return lax.rsqrt(x)
    if c.is_integer():
      return lax.integer_pow(x, int(c))
    return x ** c

  # Two inputs at an order outside (0, 1): c_i = max(c) >= 1 and c_j = 1 - c_i <= 0, and each
  # term is x_i r ** (c_i - 1) of the ratio r = x_i / x_j (the derivatives' factors r ** (c_i -
  # 1) and r ** c_i), not x_i ** c_i * x_j ** c_j: that power flushed to 0 below float32's
  # normal range (XLA:CPU) where the term is not small (p ** 7 = 1.3e-40 at p = 2e-6, q = 6e-7:
  # the term 0.01 dropped, `renyi_divergence(.., 7.0)` -3.5e-6 against 0.0022 on a row of 512;
  # p ** 2 at p < 1.1e-19). r ** e underflows only where the term is below that range itself;
  # where it overflows the row is not finite and takes the guarded path. (A zero x_j, where the
  # ratio is inf, is guarded anyway: c_j <= 0.)
  ratio = len(cs) == 2 and not 0 < cs[0] < 1
  i = 0 if ratio and cs[0] >= 1 else 1

  def ratio_and_power(xs):
    """`(r, r ** (c_i - 1))`."""
    r = xs[i] / xs[1 - i]
    e = cs[i] - 1
    return r, (jnp.ones_like(r) if e == 0 else power(r, e))

  def terms(xs, skip=None):
    """prod_k x_k ** c_k, with x_skip ** (c_skip - 1) in place of that factor (0 at a zero
    entry for 0 < c_skip < 1: the guarded path's convention there)."""
    if ratio and skip is None:
      return xs[i] * ratio_and_power(xs)[1]
    w = None
    for k, (c, x) in enumerate(zip(cs, xs)):
      if k != skip:
        t = power(x, c)
      else:
        t = slope_power(x, c - 1) if 0 < c < 1 else power(x, c - 1)
      w = t if w is None else w * t
    return w

  # Integer powers are products and quotients (`guarded_sum`'s one pass).
  one_pass = all(c.is_integer() for c in cs)

  # The inputs whose entries need the guarded path where the powers alone are finite. A root
  # (0 < c < 1) needs none: it is NaN at a negative entry, and its slope at a zero is the
  # guarded path's (:func:`root`).
  def guarded(terms, xs, also=()):
    nonnegative = []
    for c, x in zip(cs, xs):
      if c <= 0:
        nonnegative.extend(bounded(x))
      elif c.is_integer():
        nonnegative.append(x)
    return Terms(terms, nonnegative=nonnegative, also=also)

  def on_support(xs):
    # The guarded path's convention at a zero entry: outside the support, no derivative of any
    # order (the mass's included). Identity in value; zeroes the tangents of the zero entries,
    # so second derivatives through the mass and the powers match the guarded path's.
    return tuple(_fallback.tangent_if(x != 0, x) for x in xs)

  def value_probs(ax, *xs):
    xs = on_support(xs)
    z = None
    if norm is None:
      s = guarded_sum(lambda *xs: guarded(terms(xs), xs), xs, ax, one_pass=one_pass,
                      reads=len(xs))
    elif one_pass and _fallback.one_pass_runs(xs, ax, reads=len(xs)):
      # The terms and the mass in one pass (`_fallback.row_reduce`), S = sum(t) / z.
      s, (z,) = guarded_sum(lambda *xs: guarded(terms(xs), xs, also=(xs[norm],)), xs, ax,
                            one_pass=True, reads=len(xs))
      s = s / z
      z = jnp.expand_dims(z, ax)
    else:
      # Divided entry by entry, not sum(t) / z: XLA:CPU runs an output that reads two row
      # reductions of one fusion several times slower than one whose reductions feed each other.
      z = jnp.sum(xs[norm], axis=ax, keepdims=True)
      s = guarded_sum(lambda *xs: guarded(terms(xs) / z, xs), xs, ax)
    log_s = log_positive(s)
    return general(log_s), (s, z, log_s)

  def coefs_probs(ax, out, aux, *xs):
    xs = on_support(xs)
    s, z, log_s = aux
    slope = jnp.expand_dims(_slope(general, log_s), ax)
    total = jnp.expand_dims(s, ax) if z is None else jnp.expand_dims(s, ax) * z  # S itself
    if ratio:
      r, b = ratio_and_power(xs)
      scaled = (slope / total) * b
    out = []
    for k, c in enumerate(cs):
      # d S_i / d x_k,i = c x_k,i ** (c - 1) (the other factors), finite at a zero entry for
      # c >= 1 (the rows that reach here; zeros below 1 are guarded). In the ratio form that
      # factor is a power of the ratio, and the slope is divided by S first: the factor over S
      # underflowed where S is large (alpha-divergence of order 2 with q = 1e-36 beside p = 0.1:
      # d/dq 0 against -0.5, where slope / S is 1 / (alpha (alpha - 1))). Otherwise, for c < 0,
      # as (the term over S) (c / x), the term over S at most 1: x ** (c - 1) overflowed where x
      # is tiny and the gradient is not (q = 6e-14 at order 3, float32: q ** -3 = 4e39, d/dq
      # -1.6e13).
      if ratio:
        # d/dx_i: c_i r ** (c_i - 1), d/dx_j: c_j r ** c_i, over S; r ** c_i as (r ** (c_i -
        # 1) / S) r, which overflowed neither where S is huge.
        g = c * (scaled if k == i else scaled * r)
      elif c < 0:
        g = slope * ((terms(xs) / total) * (c / xs[k]))
      else:
        g = slope * (c * terms(xs, skip=k) / total)
      if k == norm:
        # The guarded path's convention: a zero entry is outside the support and gets no
        # gradient (the mass's -1 / z included; the power's part is 0 there for c > 1).
        g = g - slope * ((xs[k] != 0) / z)
      out.append(g)
    return tuple(out)

  # The near form: the input i whose exponent is 1 + t, the log-ratio d of the terms' powers.
  t_near = max(cs) - 1
  i_near = cs.index(max(cs))
  if len(cs) == 1:
    near_ratio = lambda lps: lps[0]
  else:
    near_ratio = lambda lps: lps[i_near] - lps[1 - i_near]

  def value_logits_near(ax, *xs):
    # S - 1 = sum_k p_k expm1(t d_k), not sum exp(sum_k c_k lp_k) - 1: this keeps the precision
    # of S - 1 (about t KL), which that difference loses as 1 / |t| (and `log S / t` with it).
    stats = row_stats(xs, ax)
    lps = log_softmaxes(xs, stats)
    e = jnp.sum(jnp.exp(lps[i_near]) * jnp.expm1(t_near * near_ratio(lps)), axis=ax)
    log_s = _log_near(e, _NEAR_MIN_S_ONE if len(cs) == 1 else _NEAR_MIN_S)
    return general(log_s), (e, log_s, stats)

  def coefs_logits_near(ax, out, aux, *xs):
    # d log S / d x_k = c_k (r - p_k) with r = p_i exp(t d - log S) the weights of S; for the
    # input i, r - p_i as p_i expm1(t d - log S), which the subtraction would cancel (r - p_i is
    # about t p_i (d - KL), and the slope of Renyi's log S / t is 1 / t).
    _, log_s, stats = aux
    lps = log_softmaxes(xs, stats)
    p = jnp.exp(lps[i_near])
    r_minus_p = p * jnp.expm1(t_near * near_ratio(lps) - jnp.expand_dims(log_s, ax))
    slope = jnp.expand_dims(_slope(general, log_s), ax)
    return tuple(slope * c * (r_minus_p if k == i_near else (p + r_minus_p) - jnp.exp(lps[k]))
                 for k, c in enumerate(cs))

  def value_logits(ax, *xs):
    # log S = log sum exp(sum_k c_k log_softmax(x_k)), as the hand-written line. With the
    # log-normalisers subtracted after the sum instead (`log sum exp(sum_k c_k y_k) - sum_k c_k
    # lse_k`, the same value to rounding) XLA:CPU ran the forward 3x slower (32768x512, both
    # one fusion): an output that reads two of the fusion's row reductions is slow there, one
    # whose reductions feed each other is not.
    stats = row_stats(xs, ax)
    s = jnp.sum(jnp.exp(sum(c * lp for c, lp in zip(cs, log_softmaxes(xs, stats)))), axis=ax)
    log_s = log_positive(s)
    return general(log_s), (s, log_s, stats)

  def row_stats(xs, ax):
    """Each input's row max and log-normaliser, `(m, log sum exp(x - m))`."""
    return [(m, jnp.log(total)) for m, total in (max_and_sum_exp(x, ax) for x in xs)]

  def log_softmaxes(xs, stats):
    return [(x - m) - lse for x, (m, lse) in zip(xs, stats)]

  def coefs_logits(ax, out, aux, *xs):
    # From the value's row statistics (its maxima and log-normalisers, row-sized operands of
    # the fallback's `cond`) and the logits, not from the value's [N, V] arrays, which would
    # cross the `cond` written out in full: one pass over the inputs. Recomputing the
    # statistics here took two more passes (a max and a sum of exps) an input: value+grad took
    # 1.06-1.5x its time now (bench/README.md, "Order-alpha forms from logits: the derivative
    # from the value's row statistics").
    # The terms over S as exp(t - log S), not exp(t) / S: differentiated again (second
    # derivatives), the division holds S^2, which underflows to 0 where S is tiny but positive
    # (S <= 1 at orders in (0, 1): 1e-218 at logits 1e4 apart in float64) and made the Hessian
    # NaN. (For one input, p^c exp(-log S) from the softmax p saves an exp an entry; it was
    # tried and is not kept: the same gradient to rounding, this one bit for bit the previous
    # one's, and the saving within this comparison's noise, bench/README.md.)
    _, log_s, stats = aux
    lps = log_softmaxes(xs, stats)
    r = jnp.exp(sum(c * lp for c, lp in zip(cs, lps)) - jnp.expand_dims(log_s, ax))
    ps = [jnp.exp(lp) for lp in lps]
    slope = jnp.expand_dims(_slope(general, log_s), ax)
    return tuple(slope * c * (r - p) for c, p in zip(cs, ps))

  if near:
    return (value_logits_near, coefs_logits_near), (value_probs, coefs_probs)
  return (value_logits, coefs_logits), (value_probs, coefs_probs)
