"""Shared entry and exit of every categorical divergence: validation, log space, masks, units."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdiv import _fallback
from jaxdiv import _numerics
from jaxdiv import _validation


class Dist(NamedTuple):
  """A categorical distribution in both linear and log space, on the compute dtype.

  Entries outside the support (masked by `where`, zero probability, or -inf logit) have
  `prob == 0` and `log_prob == -inf`.
  """

  prob: jax.Array
  log_prob: jax.Array


class Prepared(NamedTuple):
  dists: tuple[Dist, ...]
  axis: int
  where: jax.Array | None
  result_dtype: jnp.dtype
  from_logits: bool
  axis_name: str | None = None
  # Rows (the batch shape) in which some input's logits are all -inf (or all masked): no
  # distribution, value 0 (see `finish`). None for probabilities.
  empty: jax.Array | None = None

  def sum(self, x: jax.Array) -> jax.Array:
    """Sum over the distribution axis, across shards when it is split over `axis_name`."""
    return _numerics.psum(jnp.sum(x, axis=self.axis), self.axis_name)


def _to_dist(x: jax.Array, axis: int, where, from_logits: bool, axis_name=None) -> Dist:
  if from_logits:
    log_prob = _numerics.log_softmax(x, axis=axis, where=where, axis_name=axis_name)
    return Dist(jnp.exp(log_prob), log_prob)
  prob = x if where is None else jnp.where(where, x, 0)
  return Dist(prob, _numerics.safe_log(prob))


def _inputs(arrays, names, axis):
  """The validated inputs (float arrays broadcast to one shape), the non-negative axis, the
  result dtype and the accumulation dtype; shared by :func:`prepare` and :func:`fast_inputs`."""
  xs = [_validation.as_float_array(x, n) for x, n in zip(arrays, names)]
  result_dtype, acc_dtype = _validation.compute_dtype(*xs)
  if len(xs) == 2:
    p, q, ax = _validation.broadcast_pair(xs[0], xs[1], axis, names)
    return [p, q], ax, result_dtype, acc_dtype
  if xs[0].ndim == 0:
    raise ValueError(
        f"`{names[0]}` is a scalar; a distribution needs at least one dimension"
        f" (axis={axis}). For a Bernoulli parameter use the binary_* functions."
    )
  return xs, _validation.normalize_axis(axis, xs[0].ndim), result_dtype, acc_dtype


def prepare(*arrays, names, axis, where, from_logits, axis_name=None) -> Prepared:
  """Validates and converts one or two distributions (probabilities or logits) on `axis`.

  With `axis_name` the distribution axis is the local shard of an axis split over that mesh
  axis (inside `shard_map`); normalisations and sums then reduce across shards.
  """
  from_logits = _validation.check_bool(from_logits, "from_logits")
  xs, ax, result_dtype, acc_dtype = _inputs(arrays, names, axis)
  shape = xs[0].shape
  mask = _validation.broadcast_where(where, shape)
  xs = [x.astype(acc_dtype) for x in xs]
  empty = None
  if from_logits:
    # An empty row's value is replaced by 0 in `finish`; its inputs are replaced by 0 here as
    # well, so that the computation there is finite and the zero cotangent of the replaced
    # value gives a zero gradient (not 0 * inf = NaN through a log-probability of -inf).
    for x in xs:
      e = _empty_rows(x, ax, mask, axis_name)
      empty = e if empty is None else empty | e
    xs = [jnp.where(jnp.expand_dims(empty, ax), jnp.zeros_like(x), x) for x in xs]
  dists = tuple(_to_dist(x, ax, mask, from_logits, axis_name) for x in xs)
  return Prepared(dists, ax, mask, result_dtype, from_logits, axis_name, empty)


def guarded(arrays, body, *, names, axis, where, from_logits, axis_name=None, hyper=(),
            base=None, nonnegative: bool = False, blocks: bool = True,
            autodiff: bool = False):
  """`finish(body(prep, *hyper), prep, base, nonnegative=...)` with `prep = prepare(*arrays,
  ...)`: the guarded implementation's row values, evaluated over blocks of rows when the batch
  is large (derivatives of the whole batch: `_fallback.forward_in_row_blocks`, which says why).
  Rows whose value is not finite are constants (`_fallback.lost_rows_constant_jvp`).

  `blocks=False` keeps the whole batch (a `body` whose generator may hold a row's array);
  `autodiff` differentiates `body` as written (one that closes over traced values, which a
  `custom_jvp` would not differentiate; `_fallback.lost_rows_constant_autodiff`).

  `hyper` are every value `body` reads besides the inputs (an order, a mixture weight): `body`
  must not close over any other array or tracer, for the blocks' custom JVP rule
  differentiates its explicit arguments only (`base` is passed to the blocks alike). A traced
  scalar is passed to the blocks as an argument; an array (one value a row, traced or not)
  keeps the whole batch, as do a reduction sharded over `axis_name` and an eager call (no
  tracer: each call would compile the blocks' loop again, 0.4 s against 0.015 s at 300x1024).
  """
  raw, n_hyper = body, len(hyper)
  hyper = (*hyper, base)

  def body(prep, *hs):
    return finish(raw(prep, *hs[:n_hyper]), prep, hs[n_hyper], nonnegative=nonnegative)

  kw = dict(names=names, from_logits=from_logits, axis_name=axis_name)
  traced = [i for i, h in enumerate(hyper) if isinstance(h, jax.core.Tracer)]
  eager = not any(isinstance(x, jax.core.Tracer) for x in (*arrays, where, *hyper))
  xs, ax, _, _ = _inputs(arrays, names, axis)
  masks = [] if where is None else [_validation.broadcast_where(where, xs[0].shape)]
  n_rows = len(xs) + len(masks)

  def run(*args):
    ys, m, hs = args[:len(xs)], (args[len(xs)] if masks else None), list(hyper)
    for i, h in zip(traced, args[n_rows:]):
      hs[i] = h
    return body(prepare(*ys, axis=ax, where=m, **kw), *hs)

  args = (*xs, *masks, *(hyper[i] for i in traced))
  if autodiff:
    return _fallback.lost_rows_constant_autodiff(run, ax, n_rows, *args)
  if eager or not blocks or axis_name is not None or any(np.ndim(h) for h in hyper):
    return _fallback.lost_rows_constant(run, ax, n_rows, *args)
  return _fallback.forward_in_row_blocks(run, ax, n_rows, *args)


def _empty_rows(x: jax.Array, axis: int, mask, axis_name) -> jax.Array:
  """Rows whose logits are all -inf where `mask` is True (a NaN is not -inf: a NaN row is NaN,
  never empty), across the shards of `axis_name`."""
  has = x != -jnp.inf
  if mask is not None:
    has = has & mask
  count = _numerics.psum(jnp.sum(has, axis=axis, dtype=jnp.int32), axis_name)
  return count == 0


def fast_inputs(*arrays, names, axis, where, from_logits, axis_name=None):
  """The inputs of the unguarded fast path (`_fast`), or None where it does not apply.

  It applies to probabilities and logits without a mask on one device: masks and sharded
  reductions take the guarded path. Validation is the same as :func:`prepare`'s.

  Returns:
    `(xs, axis, result_dtype, from_logits)`: the inputs broadcast to one shape in the compute
    dtype, the non-negative axis, the dtype of the result and whether they are logits; or None.
  """
  from_logits = _validation.check_bool(from_logits, "from_logits")
  if where is not None or axis_name is not None:
    return None
  xs, ax, result_dtype, acc_dtype = _inputs(arrays, names, axis)
  if xs[0].shape[ax] == 0 or _constant_edges(arrays):
    return None
  return tuple(x.astype(acc_dtype) for x in xs), ax, result_dtype, from_logits


def _constant_edges(arrays) -> bool:
  """Whether an input is an array that a staged function (`jit`) closes over, a constant to
  XLA, with an entry that is not finite: such inputs take the guarded path.

  The fast path's unguarded sums make a row that needs the guarded path NaN and test for it
  (`_fast`). XLA folds a constant input's edge row (a row of -inf logits, a NaN or +inf logit)
  into a NaN constant in the fused loop, and XLA:CPU's `exp` of an expression that holds a NaN
  constant beside run-time operands is an arbitrary number, not NaN (jax 0.10.2:
  `jit(lambda x: exp(x + nan))(x)` gave 1e-43 and -3.9e25): the row looked finite. The Renyi
  divergence of order 2 of a closed-over row of -inf logits was 2.48, not 0; the Bhattacharyya
  distance of one with a NaN logit 0, not NaN (`tests/discrete/test_discrete_edges.py`). The
  guarded path selects before it exponentiates. The check reads a closed-over array once per
  trace, where it lives; eager calls and traced inputs skip it. Not covered: inputs computed from
  constants inside the staged function (`jnp.asarray(p)` there is traced), which XLA folds alike.
  """
  constants = [x for x in arrays if not isinstance(x, jax.core.Tracer)]
  if not constants or not _fallback.traces_staged():
    return False
  for x in constants:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      continue  # another process's shards: not readable here
    with jax.ensure_compile_time_eval():  # run now, where the array lives: one flag read back
      finite = bool(jnp.all(jnp.isfinite(x)))
    if not finite:
      return True
  return False


def clamp_nonnegative(out: jax.Array) -> jax.Array:
  """Rounding below 0 of a divergence of normalised inputs, clamped; the gradient passes."""
  # Value clamped, gradient passed through: a rounding-level correction must not zero the
  # derivative (at beta = 0 of JS, say, the value is 0 to rounding but d/dbeta is not). NaN
  # stays NaN.
  return out + lax.stop_gradient(jnp.where(out < 0, -out, jnp.zeros_like(out)))


def finish(out: jax.Array, prep: Prepared, base=None, *, nonnegative: bool = False) -> jax.Array:
  """Units, all-masked rows (0), rounding below zero (only where we normalised), dtype."""
  out = _numerics.to_base(out, base)
  # A NaN or +inf input (or a negative probability, whose log is NaN) makes its row NaN,
  # whichever branch the computation took: never a silent number. Such an entry has a NaN or
  # +inf log-probability (a NaN or +inf logit makes the whole row's NaN), and a sum of the
  # log-probabilities is NaN or +inf exactly then: -inf entries (zeros, masked) keep it below
  # +inf. A plain sum is one vectorised pass on XLA:CPU, unlike `any(isnan(...))`.
  total = sum(jnp.sum(lax.stop_gradient(d.log_prob), axis=prep.axis) for d in prep.dists)
  total = _numerics.psum(total, prep.axis_name)
  bad = jnp.isnan(total) | (total == jnp.inf)
  if nonnegative and prep.from_logits:
    # The logits were normalised by us, so a negative value is float rounding, never data.
    out = clamp_nonnegative(out)
  if prep.empty is not None:
    # A row of -inf logits has no distribution, like a fully masked row: 0 for every function.
    out = jnp.where(prep.empty, jnp.zeros_like(out), out)
  if prep.where is not None:
    any_valid = jnp.any(prep.where, axis=prep.axis)
    if prep.axis_name is not None:
      any_valid = _numerics.psum(any_valid.astype(jnp.int32), prep.axis_name) > 0
    out = jnp.where(any_valid, out, jnp.zeros_like(out))
  # Last, so that no branch above (an "empty" row by its max) turns a NaN row into a number.
  out = jnp.where(bad, jnp.nan, out)
  return _numerics.positive_zero(out).astype(prep.result_dtype)


def batch_param(x, prep: Prepared, dtype, name: str = "alpha") -> jax.Array:
  """A hyperparameter broadcast against the batch shape: scalars stay scalars; an array is
  aligned with the batch dimensions (NumPy rules, from the right) and gets the distribution
  axis back as a dimension of size 1, so that it broadcasts with the inputs."""
  x = jnp.asarray(x, dtype)
  if x.ndim == 0:
    return x
  shape = prep.dists[0].prob.shape
  batch = shape[:prep.axis] + shape[prep.axis + 1:]
  try:
    if x.ndim > len(batch) or np.broadcast_shapes(x.shape, batch) != batch:
      raise ValueError
  except ValueError:
    raise ValueError(
        f"`{name}` of shape {x.shape} must broadcast to the batch shape {batch} (the inputs'"
        f" shape {shape} without the distribution axis {prep.axis})."
    ) from None
  x = jnp.reshape(x, (1,) * (len(batch) - x.ndim) + x.shape)
  return jnp.expand_dims(x, prep.axis)


def on_probabilities(arguments) -> bool:
  """For `_unit_axes.dropped(leading=...)`: on probabilities the one pass of
  `_fallback.row_reduce` runs at the 2-D speed with any batch axes, so only the leading size-1
  axes are dropped; on logits every one."""
  return not arguments.get("from_logits")
