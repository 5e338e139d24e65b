"""Batch axes of size 1 dropped before a row computation and put back on its result.

XLA:CPU (jax 0.10.2) compiles a row reduction over an array of three or more axes of which a
batch axis has size 1 (`[1, T, V]`: one sequence of tokens; `[B, 1, V]`: one decoding step)
into a loop many times slower than the same reduction over the array without that axis, the
hand-written line as much as ours. Measured (2-core CPU, 2048 rows of 8192 float32, forward,
`[2048, 8192]` against `[1, 2048, 8192]`; `[2, 1024, 8192]` and `[8, 256, 8192]` ran at the 2-D
time): `sum(p * (log p - log q), -1)` 9.5 -> 284 ms, `kl_divergence(p, q)` 8.4 -> 284 ms,
`entropy(a, from_logits=True)` 14 -> 270 ms, `optax.losses.kl_divergence` 3.6x. A reshape that
drops the axes costs nothing (a bitcast), so the row functions of `jaxdiv.discrete` and the row
losses of `jaxdiv.losses` drop them on entry (:func:`dropped`) and their results get them back
(bench/README.md, "Batch axes of size 1"). Computations that run at the 2-D speed with any
batch axes drop only the leading ones (`leading=`): XLA copies a gradient computed over
`[B, V]` once more when it is reshaped to `[B, 1, V]`.
"""

from __future__ import annotations

import functools
import inspect
import operator
from collections.abc import Callable
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiv import _sharding


def _reshape(x, shape):
  if isinstance(x, jax.Array):  # a tracer is one too
    return jnp.reshape(x, shape)
  return np.reshape(np.asarray(x), shape)


def _padded(shape, nd: int) -> tuple | None:
  return None if len(shape) > nd else (1,) * (nd - len(shape)) + tuple(shape)


def _without(shape, axes) -> tuple:
  return tuple(d for i, d in enumerate(shape) if i not in axes)


def _plan(arguments: dict, dists: Sequence[str], params: Sequence[str], where: str,
          axis: str, where_by_rank: bool, keep: Sequence[str],
          leading: bool | Callable[[dict], bool]):
  """`(unit, ax, nd, per_row_mask)`: the size-1 batch axes of the inputs' broadcast shape, the
  distribution axis, the broadcast rank and whether the mask is one value a row; None where
  nothing is dropped (fewer than three axes, no such axis, an argument that is not an array of
  a fitting shape, or another array argument: the function then takes it as it is)."""
  if arguments.get("axis_name") is not None:  # the distribution axis split over devices
    return None
  ax = arguments.get(axis, -1)
  if not isinstance(ax, (int, np.integer)) or isinstance(ax, bool):
    return None
  xs = [arguments[n] for n in dists if n in arguments]
  try:
    shapes = [np.shape(x) for x in xs]
    shape = np.broadcast_shapes(*shapes)
  except (ValueError, TypeError):
    return None
  nd = len(shape)
  if nd < 3 or not -nd <= ax < nd:
    return None
  ax = operator.index(ax) % nd
  # Distributions of one length: a distribution axis broadcast from 1 is the function's error.
  if any(len(s) > nd or _padded(s, nd)[ax] != shape[ax] for s in shapes):
    return None
  unit = tuple(i for i in range(nd) if i != ax and shape[i] == 1)
  if leading(arguments) if callable(leading) else leading:
    unit = tuple(i for i in unit if all(shape[j] == 1 for j in range(i) if j != ax))
  if not unit or any(_sharding.explicitly_sharded(x) for x in xs):
    return None
  batch = _without(shape, (ax,))
  mask = arguments.get(where)
  per_row_mask = where_by_rank and mask is not None and np.ndim(mask) == nd - 1
  if mask is not None and not (
      _fits(mask, batch) if per_row_mask else
      (not where_by_rank or np.ndim(mask) == nd) and _fits(mask, shape)):
    return None
  for n in params:
    value = arguments.get(n)
    if not (value is None or callable(value) or _fits(value, batch)):
      return None
  for n, value in arguments.items():
    if n in (*dists, *params, where, axis):
      continue
    if n in keep:  # an array along the distribution axis alone (per-class weights)
      if value is not None and (np.ndim(value) != 1 or np.size(value) != shape[ax]):
        return None
    elif not (value is None or callable(value) or isinstance(value, str)
              or np.ndim(value) == 0):
      return None  # an array the function broadcasts itself (a traced coefficient a row)
  return unit, ax, nd, per_row_mask


def _fits(x, shape) -> bool:
  if x is None:
    return True
  try:
    return np.broadcast_shapes(np.shape(x), shape) == tuple(shape)
  except (ValueError, TypeError):
    return False


def dropped(*, dists: Sequence[str], params: Sequence[str] = (), where: str = "where",
            axis: str = "axis", where_by_rank: bool = False, keep: Sequence[str] = (),
            when: Callable[[dict], bool] | None = None,
            leading: bool | Callable[[dict], bool] = False) -> Callable:
  """A row function of arrays of distributions that drops their size-1 batch axes on entry and
  puts them back on its result (see the module's docstring for why).

  Args:
    dists: the names of the distribution arguments (broadcast together).
    params: the names of arguments broadcast against the batch shape (an order per row); a
      scalar or a callable is passed as it is.
    where: the name of the mask argument (broadcast against the inputs).
    axis: the name of the distribution axis argument.
    where_by_rank: the mask is per entry at the inputs' rank and per row one axis fewer (the
      optax cross-entropies' rule).
    keep: names of array arguments along the distribution axis alone (per-class weights),
      passed as they are.
    when: `arguments -> bool`, False where the axes must be kept (a user's function that may
      close over an array of the batch's shape).
    leading: True (or `arguments -> bool` True) where only the size-1 axes in front of every other
      batch axis are dropped (`[1, T, V]`, not `[B, 1, V]`): for computations that XLA:CPU runs at
      the 2-D speed whatever the axes (the one pass of `_fallback.row_reduce` on probabilities),
      whose gradient over `[B, V]` reshaped to `[B, 1, V]` XLA copies once more (1.2-1.4x the
      value+grad time at 2048 x 1 x 8192).

  The wrapped function is called unchanged where nothing is dropped: fewer than three axes, no
  batch axis of size 1, an argument it would reject, a mask or parameter that does not
  broadcast to the (batch) shape, another array argument, explicitly sharded inputs, or a
  distribution axis split over devices (`axis_name`). Where the call without the axes raises
  `ValueError` or `TypeError`, the function is called again with the caller's arguments, so
  that its error names what the caller passed.
  """

  def wrap(fn: Callable) -> Callable:
    signature = inspect.signature(fn)
    kinds = {p.kind for p in signature.parameters.values()}
    if kinds - {inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY}:
      raise TypeError(f"{fn.__name__}: every argument must be passable by keyword")

    @functools.wraps(fn)
    def run(*args, **kwargs):
      try:
        bound = signature.bind(*args, **kwargs)
      except TypeError:
        return fn(*args, **kwargs)
      bound.apply_defaults()
      arguments = bound.arguments
      plan = _plan(arguments, dists, params, where, axis, where_by_rank, keep, leading)
      if plan is None or (when is not None and not when(arguments)):
        return fn(*args, **kwargs)
      unit, ax, nd, per_row_mask = plan
      rows = tuple(i - (i > ax) for i in unit)
      changed = dict(arguments)
      for n in dists if per_row_mask else (*dists, where):
        x = arguments.get(n)
        if x is not None:
          changed[n] = _reshape(x, _without(_padded(np.shape(x), nd), unit))
      for n in (*params, where) if per_row_mask else params:
        x = arguments.get(n)
        if x is not None and not callable(x) and np.ndim(x) > 0:
          changed[n] = _reshape(x, _without(_padded(np.shape(x), nd - 1), rows))
      changed[axis] = ax - sum(i < ax for i in unit)
      try:
        out = fn(**changed)
      except (ValueError, TypeError):
        return fn(*args, **kwargs)  # its error, naming the caller's arguments
      return jax.tree_util.tree_map(lambda o: jnp.expand_dims(o, rows), out)

    run.drops_unit_axes = True  # `run.__wrapped__` is the function itself (bench/batch_axes.py)
    return run

  return wrap
