"""The fast path of the Shannon family: the hand-written expression, checked once per batch.

XLA:CPU compiles `sum(exp(la) * (la - lb))` with `la, lb = jax.nn.log_softmax(a), ...` into a
single loop over the inputs (one fusion, the exponentials vectorised), while every `where` or
`isfinite` that guards an edge case (0 * log 0, -inf logits, empty rows) splits it into several
loops and passes over the data: that was a 4-5x cost over the hand-written line.

The unguarded expression is exact wherever its value is finite: every edge case that needs a
guard (an entry outside the support, an empty row, a NaN or +inf input, a divergence of +inf)
turns a row into NaN or +-inf. So the value is computed unguarded, and only when some row of the
batch is not finite does `lax.cond` run the guarded implementation (`careful`, the path with all
the documented semantics) instead. The derivative comes from a `custom_jvp` whose tangent is
`sum(coef * dx)` with the row-wise closed-form coefficients (the softmax Jacobian contracted by
hand), again replaced by the guarded implementation's gradient when some row is not finite: the
coefficients are primal values, so the `cond` selecting them leaves no tangent residuals.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax


def log_softmax(x: jax.Array, axis: int) -> jax.Array:
  """Unguarded log-softmax (the max under `stop_gradient`): NaN for an empty or +inf row."""
  return jax.nn.log_softmax(x, axis=axis)


def _cond(pred, true_fn, false_fn, *xs):
  """`lax.cond`, decided in Python when `pred` is concrete (eager calls): tracing and compiling
  both branches on every eager call would cost far more than the computation."""
  if isinstance(pred, jax.core.Tracer):
    return lax.cond(pred, true_fn, false_fn, *xs)
  return true_fn(*xs) if bool(pred) else false_fn(*xs)


@jax.custom_jvp
def _tangent_if(ok: jax.Array, x: jax.Array) -> jax.Array:
  """`x`, whose tangent (and so cotangent) is zeroed where `ok` is False.

  Trap avoided: a zero cotangent sent back through an expression with an infinite partial
  (`p * log p` at p = 0) is 0 * inf = NaN; a `where` on the tangent selects instead.
  """
  del ok
  return x


@_tangent_if.defjvp
def _tangent_if_jvp(primals, tangents):
  ok, x = primals
  t = tangents[1]
  return x, jnp.where(ok, t, jnp.zeros_like(t))


def softmax(x: jax.Array, axis: int) -> jax.Array:
  """Unguarded softmax, `exp(x - max) / sum`: in float32 more accurate than `exp(log_softmax)`
  (measured on 20k rows of 512 logits: median error of KL 8.7e-8 against 9.6e-8), and XLA
  shares the max and the sum with :func:`log_softmax` of the same logits."""
  return jax.nn.softmax(x, axis=axis)


def with_fallback(value: Callable, coefs: Callable, careful: Callable, *xs: jax.Array,
                  axis: int) -> jax.Array:
  """`value(*xs)` where every row is finite, else `careful(*xs)`, with a matching derivative.

  Args:
    value: `(*xs) -> (out, aux)`, the unguarded row values (NaN or inf where a guard is needed)
      and any row statistics the coefficients need.
    coefs: `(out, aux, *xs) -> tuple` of arrays shaped like `xs`: d out / d x, row by row
      (valid where every row of `out` is finite).
    careful: `(*xs) -> out`, the guarded implementation (same dtype as `value`'s out).
    *xs: the inputs, already broadcast to one shape, in the compute dtype.
    axis: the distribution axis.

  Returns:
    The row values, the batch shape.
  """
  n = len(xs)

  def pick(*xs):
    out, aux = value(*xs)
    bad = jnp.logical_not(jnp.all(jnp.isfinite(out)))
    return bad, _cond(bad, careful, lambda *_: out, *xs), aux

  @jax.custom_jvp
  def f(*xs):
    return pick(*xs)[1]

  @f.defjvp
  def f_jvp(primals, tangents):
    bad, out, _ = pick(*primals)
    # The coefficients are differentiated again for second derivatives, back through `value`,
    # whose unguarded expression has 0 * inf partials exactly where a guard was needed. When the
    # guarded branch is taken, that path gets zero cotangents, and 0 * inf is NaN: gate it at
    # the inputs (`_tangent_if`, identity in value). XLA merges this `value` with `pick`'s.
    ok = jnp.logical_not(lax.stop_gradient(bad))
    out_g, aux_g = value(*(_tangent_if(ok, x) for x in primals))

    def careful_grads(*xs):
      return jax.grad(lambda *ys: jnp.sum(careful(*ys)), argnums=tuple(range(n)))(*xs)

    cs = _cond(bad, careful_grads, lambda *xs: tuple(coefs(out_g, aux_g, *xs)), *primals)
    tangent = sum(jnp.sum(c * t, axis=axis) for c, t in zip(cs, tangents))
    return out, tangent

  return f(*xs)
