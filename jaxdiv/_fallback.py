"""A fast expression with a guarded fallback, row by row: the unguarded value where every row
is finite, the guarded implementation's value and derivative on the rows that are not.

Shared by the categorical divergences (`jaxdiv.discrete._fast`, which explains the design)
and the optax-form losses: XLA:CPU compiles an unguarded `sum(f(x))` into one loop over the
inputs, while every `where` that guards an edge case splits it into several loops and passes
over the data.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxdiv import _sharding

# JAX's trace classes, read by :func:`_traces` (internals: where a jax lacks them, every trace
# counts as a `vmap` that records a jaxpr, the behaviour before the check).
try:
  from jax._src import core as _core
  from jax._src.interpreters import ad as _ad
  from jax._src.interpreters import batching as _batching
  _BATCH = (_batching.BatchTrace,)
  _RUNS_NOW = (_core.EvalTrace, _ad.JVPTrace, _ad.LinearizeTrace)
  _BOTTOM = (_core.EvalTrace,)  # the stack's last trace; every other has a `parent_trace`
  _trace_ctx = _core.trace_ctx
except (ImportError, AttributeError):  # pragma: no cover
  _trace_ctx = None

# XLA:CPU (jax 0.10-0.11) compiles a row computation over a batch of at least this many rows
# into one loop that computes its row reductions and their consumers together; over fewer rows
# it splits it into several loops, and any [rows, n] intermediate read by two of them (the
# shifted logits `x - max` of a log-softmax, read by its own sum and by the caller's) is
# written out in full. Measured: KL from logits `sum(softmax(a) * (log_softmax(a) -
# log_softmax(b)))` at 4095x1024 ran 5.7x as long as at 4096x1024.
FUSED_ROWS = 4096


def mapped_size(*xs) -> int:
  """How many examples `jax.vmap` computes at once where the arrays `xs` are one example's (the
  product of the mapped axes' sizes over every enclosing `vmap`; 1 outside any).

  The size-based choices here (one fused loop from `FUSED_ROWS` rows, the one pass's blocks,
  the fallback's row blocks) compute on the whole mapped batch: a [256, 2048] example mapped 16
  times is a [4096, 2048] computation. Without the factor, the Renyi entropy of probabilities
  mapped over 16 x [256, 2048] took 2.1x the mapped hand-written line forward, its one pass's
  partials, sized for one example, 168 MiB of fresh pages a call.

  Read from a `custom_vmap` identity's batching rule (:func:`_probe`), which `vmap` calls as
  it traces the function (with its mapped size); where it is not called the result is 1, the
  example's own size, as before. The probe runs only where a `vmap` is in the trace stack
  (:func:`_traces`): elsewhere its rule cannot be called, and it would cost a jaxpr a call.
  Eager arrays are never mapped."""
  # Not an array whose type carries a sharding (Explicit mesh axes): its one element is a slice
  # of a sharded axis, which JAX refuses; the size-based choices leave such arrays whole anyway.
  tracers = [x for x in xs if isinstance(x, jax.core.Tracer) and math.prod(jnp.shape(x))
             and not _sharding.explicitly_sharded(x)]
  if not tracers or not _traces(_is_batch):
    return 1  # the probe's rule is called by a `vmap` tracing us, and none is
  outer = getattr(_PROBED, "sizes", None)
  _PROBED.sizes = []
  try:
    # One element of each input, a flag without derivatives: XLA drops it as dead code.
    flags = [jnp.isnan(lax.stop_gradient(jnp.ravel(x)[0])) for x in tracers]
    _probe(functools.reduce(jnp.logical_or, flags))
    return max(1, math.prod(_PROBED.sizes))  # a vmap over no examples computes none
  finally:
    _PROBED.sizes = outer


def _traces(pred: Callable) -> bool:
  """Whether `pred` holds for a trace in the stack that the current Python code runs under
  (the innermost and its parents), True where jax's internals do not say.

  Cheap beside what it saves: `mapped_size`'s probe and `any_in_batch`'s `custom_vmap` trace a
  jaxpr on every call, which under an eager `jax.grad` is most of a small call's time (KL from
  logits on 8x10, value+grad: 14.1 ms against 11.6-12.6 before them)."""
  trace = getattr(_trace_ctx, "trace", _Unknown)
  while trace is not None and trace is not _Unknown:
    if pred(trace):
      return True
    if isinstance(trace, _BOTTOM):
      return False
    trace = getattr(trace, "parent_trace", _Unknown)
  # A stack that does not end at a known bottom trace (a jax whose internals differ): True,
  # the behaviour before the check (helper-54).
  return True


class _Unknown:
  pass


def traces_staged() -> bool:
  """Whether the current code runs under a trace that records a jaxpr or batches (`jit`,
  `vmap`, ...), not only under traces that run each operation now (eager derivatives)."""
  return _traces(_is_staging)


def _is_batch(trace) -> bool:
  return isinstance(trace, _BATCH)


def _is_staging(trace) -> bool:
  """A `vmap` or a trace that records a jaxpr (`jit`, `checkpoint`, partial evaluation), which
  a later `vmap` can batch: anything but the traces that run each operation now."""
  return not isinstance(trace, _RUNS_NOW)


# The sizes :func:`_probe`'s rule saw during the current :func:`mapped_size` (per thread).
_PROBED = threading.local()


@jax.custom_batching.custom_vmap
def _probe(flag: jax.Array) -> jax.Array:
  """The identity, whose batching rule records the mapped size. Module-level (not a closure per
  call) so that a jaxpr holding it prints the same on every trace."""
  return flag


@_probe.def_vmap
def _probe_vmap(axis_size, in_batched, flag):
  sizes = getattr(_PROBED, "sizes", None)
  if sizes is not None:
    sizes.append(axis_size)
  return _probe(flag), in_batched[0]


def fused(x: jax.Array, axis: int) -> bool:
  """Whether a row computation over `x` along `axis` has the `FUSED_ROWS` rows for XLA:CPU's
  single fused loop (over the examples `jax.vmap` computes at once: :func:`mapped_size`)."""
  return x.size * mapped_size(x) >= FUSED_ROWS * x.shape[axis]


def shift_and_sum(x: jax.Array, axis: int):
  """`(x - max, sum exp(x - max))` along `axis` (the max under `stop_gradient`), the pieces of a
  log-softmax and a softmax.

  Below `FUSED_ROWS` rows the sum is computed from a copy of the max behind
  `optimization_barrier`: XLA then cannot merge the sum's `x - max` with the caller's, and
  recomputes it (and its `exp`) inside each loop instead of writing it out. KL from logits at
  2048x32768: 0.41x the time of the same expression through `jax.nn.log_softmax`, with the same
  values (the same operations)."""
  m, total = max_and_sum_exp(x, axis)
  return x - m, total


def max_and_sum_exp(x: jax.Array, axis: int):
  """`(m, sum exp(x - m))` along `axis` (keepdims), `m` the max under `stop_gradient`: a
  softmax's row statistics, which a closed-form derivative can take from the value instead of
  computing them again (two passes over the input below `FUSED_ROWS` rows)."""
  m = lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
  return m, sum_exp(x, m, axis)


def sum_exp(x: jax.Array, m: jax.Array, axis: int) -> jax.Array:
  """`sum exp(x - m)` along `axis` (keepdims), reading `m` behind `optimization_barrier` below
  `FUSED_ROWS` rows (see :func:`shift_and_sum`)."""
  if not fused(x, axis):
    m = lax.optimization_barrier(m)
  return jnp.sum(jnp.exp(x - m), axis=axis, keepdims=True)


def log_softmax(x: jax.Array, axis: int) -> jax.Array:
  """Unguarded log-softmax of the fast expressions (the categorical divergences' and the
  losses'), the max under `stop_gradient`: NaN for an empty or +inf row."""
  if fused(x, axis):
    return jax.nn.log_softmax(x, axis=axis)
  y, s = shift_and_sum(x, axis)
  return y - jnp.log(s)


def softmax(x: jax.Array, axis: int, *, written: bool = False) -> jax.Array:
  """Unguarded softmax, `exp(x - max) / sum`: in float32 more accurate than `exp(log_softmax)`
  (measured on 20k rows of 512 logits: median error of KL 8.7e-8 against 9.6e-8), and XLA
  shares the max and the sum with :func:`log_softmax` of the same logits.

  `written`: `jax.nn.softmax` at any row count, which writes `exp(x - max)` out once: for a
  value whose derivative reads the softmax again (`with_fallback`'s `value_for_coefs`), where
  below `FUSED_ROWS` the recomputing form wrote it twice (total variation from logits,
  value+grad at 2048x32768, bench/README.md)."""
  if written or fused(x, axis):
    return jax.nn.softmax(x, axis=axis)
  y, s = shift_and_sum(x, axis)
  return jnp.exp(y) / s


# The one-pass row reduction of :func:`row_reduce` on XLA:CPU: each row cut into chunks of
# `_CHUNK_STEPS // reads` vectors of one cache line (64 bytes: 16 float32, 8 float64), summed
# (or minimised) over the steps lane by lane, then the lanes and chunks of each row.
_LINE_BYTES = 64
_CHUNK_STEPS = 32
# From this many entries (256 KiB of float32) on. Stop 32 set 4M: then the guards were row
# minima beside the sums, and below 4M the ordinary reductions ran faster. Since the guards of
# a power sum became a select in the pass (`_fast.guarded_sum`), the one pass is the faster
# down to 64K entries: the order-alpha, total variation, chi-squared and f-divergence forms on
# probabilities at ten shapes of 64K-2M entries, forward and value+grad, took a median 0.66x
# their time through the ordinary reductions, faster in 114 of 160 cells and slower in 2
# (bench/README.md, "Probability forms: the one pass from 64K entries"). Below 64K entries
# the two are within the noise of a 20-100 us call, either way.
_MIN_ENTRIES = 1 << 16


def one_pass_runs(xs, axis: int, *, reads: int = 1) -> bool:
  """Whether :func:`row_reduce` over `xs` (arrays broadcastable to one shape) takes its one
  pass where it runs on XLA:CPU: the reduced axis last, its length a multiple of the chunk, at
  least `_MIN_ENTRIES` entries, float32 or float64 throughout, no explicit sharding."""
  dtype = xs[0].dtype
  if dtype not in (jnp.float32, jnp.float64) or any(y.dtype != dtype for y in xs):
    return False
  shape = jnp.broadcast_shapes(*(jnp.shape(x) for x in xs))
  ax = axis % len(shape)
  chunk = _LINE_BYTES // dtype.itemsize * max(1, _CHUNK_STEPS // reads)
  return (ax == len(shape) - 1 and shape[ax] % chunk == 0
          and math.prod(shape) * mapped_size(*xs) >= _MIN_ENTRIES
          and not any(map(_sharding.explicitly_sharded, xs)))


# The one pass over blocks of rows of at most this many entries (16 MiB of float32 an input)
# where its partial sums over the whole batch would exceed `_MAX_PARTIAL_BYTES`. The partials
# (1/16 or 1/32 of the inputs an output) are a temporary buffer of XLA's, and one above 32 MiB
# (glibc's largest mmap threshold) came from fresh pages on every call, as the fault counts
# show: this VM took a page fault every 4 KiB (~1.7 us each) to touch them. Total variation
# of 2048x32768 probabilities (48 MiB of partials): 12,300 faults and 23 ms of kernel time a
# call. Over blocks, forward after / before in one process (bench/README.md, "The one pass over
# row blocks"): total variation 0.72, chi-squared 0.70, `f_divergence` 0.68, the Renyi
# divergence 0.78 (1.21x -> 0.86x the hand-written line for total variation). Below the
# bound the partials are reused from call to call, and blocks ran slower: total variation at
# 32768x512 and 4096x4096 (12 MiB of partials) 1.26x the whole batch's time.
_BLOCK_ENTRIES = 1 << 22
_MAX_PARTIAL_BYTES = 16 << 20


@functools.cache
def _sums_and_minima(n_sums: int):
  """`lax.reduce`'s computation for `n_sums` sums then minima: one function object per
  `n_sums`, as `lax.reduce` caches its compiled reduction by the function (a closure made on
  each call compiled it again on every eager call: `renyi_divergence(p, q, 2.0)` at 128x512
  took 70-140 ms a call)."""
  def combine(a, b):
    return (tuple(u + v for u, v in zip(a[:n_sums], b[:n_sums]))
            + tuple(jnp.minimum(u, v) for u, v in zip(a[n_sums:], b[n_sums:])))
  return combine


def row_reduce(fn: Callable, xs, axis: int, *, one_pass: bool = True, reads: int = 1):
  """Row sums and row minima along `axis` of the terms `fn(*xs)`, in one pass over the inputs
  on XLA:CPU.

  The reason: XLA:CPU (jax 0.10) compiles two row reductions of the same inputs (the terms of a
  power sum beside the mass that normalises it, or beside the row minimum that guards it) into
  one YNNPACK fusion that reads the inputs once per reduction: `sum(p ** 2) / sum(p) ** 2` took
  2.2-2.5x the time of `sum(p ** 2)` alone (32768x512 and 2048x32768 float32). A variadic
  `lax.reduce` of them all over the whole row is one loop, but it adds sequentially (7x the
  median rounding error of the ordinary sum on rows of 512, 65x on rows of 32768) and does not
  vectorise (3.7-4.3x).
  Over `[chunks, steps, lanes]` (steps of one 64-byte line, the lanes and the chunks summed
  after by the ordinary reduction) it is one vectorised loop with the ordinary sum's rounding
  error (median relative error of `sum(p ** 2) / sum(p) ** 2` against float64 at 32768x512:
  6.1e-8, the single sum's 6.4e-8). XLA:CPU keeps that loop vectorised up to about 32 lines of
  input a chunk: 32 steps over one input read (`p ** 2` beside `p`: 1.0-1.3x `sum(p ** 2)`
  alone, where 16 steps ran at 1.2-1.5x and 8 at 2.2x), 16 over two (`|p - q|` beside the
  minima of p and q: 1.0x `sum(|p - q|)`, where 32 steps ran at 2.5-3.5x). Measured with
  `bench/row_reduce.py` and `bench/hand.py` (bench/README.md). Where the partial sums of the
  whole batch would exceed `_MAX_PARTIAL_BYTES`, the pass runs over blocks of rows
  (:func:`row_blocks`), which is why it takes the terms as a function of the inputs: computed
  outside, the terms would be a buffer of the batch's size.

  Elsewhere (other platforms through `lax.platform_dependent`, a reduced axis that is not the
  last, a row length that is not a multiple of the chunk, fewer than `_MIN_ENTRIES` entries,
  an array whose type carries a sharding (Explicit mesh axes: the chunks' reshape of a sharded
  row has no sharding to infer), another dtype, or `one_pass=False`: :func:`one_pass_runs`)
  it is the ordinary reductions. The minima carry no derivative (they are guards); the sums'
  derivative is the sum of the terms' tangents. A NaN entry makes its row's sums NaN, but not
  always its minimum: XLA:CPU's own row minimum drops a NaN in some shapes (jax 0.10.2,
  `jnp.min` over [3, 40, 512] or [7, 1024] float32).

  Args:
    fn: `(*xs) -> (sums, mins)`, two sequences of arrays computed elementwise from `xs` (and
      broadcast to their shape): the terms to sum and to minimise. It may close over traced
      values (a user's generator and its parameters); the pass then runs over the whole batch.
    xs: the inputs, arrays broadcastable to one shape.
    axis: the reduced axis.
    one_pass: whether the one pass may be used: the terms are sums, products and quotients.
      Roots, general powers and elementwise minima inside it are not vectorised by XLA:CPU
      (Hellinger, Bhattacharyya and a user's f-divergence ran at 3-7x the hand-written line).
    reads: how many input arrays the terms read (the steps of a chunk are `32 // reads`).

  Returns:
    `(sums, mins)`: tuples of the row sums and row minima, in the order given.
  """
  xs = tuple(xs)
  sums, mins = jax.eval_shape(fn, *xs)  # the terms computed only where a path needs them
  n_sums, n_terms = len(sums), len(sums) + len(mins)
  shape = jnp.broadcast_shapes(*(jnp.shape(x) for x in xs))
  ax = axis % len(shape)

  def plain(terms):
    terms = jnp.broadcast_arrays(*terms)
    return (tuple(jnp.sum(t, axis=ax) for t in terms[:n_sums])
            + tuple(jnp.min(t, axis=ax) for t in terms[n_sums:]))

  def split(out):
    return out[:n_sums], out[n_sums:]

  def flat(*xs):
    return tuple(t for ts in fn(*xs) for t in ts)

  if (not one_pass or n_terms < 2 or not one_pass_runs(xs, ax, reads=reads)
      or any(t.dtype != xs[0].dtype or jnp.broadcast_shapes(t.shape, shape) != shape
             for t in (*sums, *mins))):
    return split(plain(flat(*xs)))
  dtype = xs[0].dtype
  lanes, steps = _LINE_BYTES // dtype.itemsize, max(1, _CHUNK_STEPS // reads)

  def chunked(*terms):
    terms = jnp.broadcast_arrays(*terms)
    batch = terms[0].shape[:-1]

    inits = ((jnp.zeros((), dtype),) * n_sums
             + (jnp.array(jnp.inf, dtype),) * (n_terms - n_sums))
    parts = lax.reduce(tuple(t.reshape(-1, steps, lanes) for t in terms), inits,
                       _sums_and_minima(n_sums), (1,))
    return plain(tuple(p.reshape(*batch, -1) for p in parts))

  def pass_over(cpu, default, *args):
    return tuple(lax.platform_dependent(*args, cpu=cpu, default=default))

  # Over blocks of rows, each block's terms computed from its inputs in the loop, where `fn`
  # closes over no traced value (a user's generator with a traced parameter, which a
  # `custom_jvp` over the inputs would not differentiate) and its terms on a block are the
  # block's shape (a generator closing over a concrete array a row of the batch would broadcast
  # a block to the whole batch, or fail).
  mapped = mapped_size(*xs)  # under `jax.vmap`, a block's partials are this many examples'
  partial_bytes = n_terms * math.prod(shape) * mapped // steps * dtype.itemsize
  entries = max(1, _BLOCK_ENTRIES // mapped)
  block = (row_block_shape(shape, ax, entries)
           if partial_bytes > _MAX_PARTIAL_BYTES and all(jnp.shape(x) == shape for x in xs)
           else None)
  closed = None if block is None else trace_fresh(
      flat, *(jax.ShapeDtypeStruct(block, dtype),) * len(xs))
  if (closed is not None and not _holds_tracers(closed)
      and all(_broadcasts_to(o.shape, block) for o in closed.out_avals)):
    @jax.custom_jvp
    def over_blocks(*xs):
      return pass_over(
          # `entries` already counts the mapped examples: `mapped=1`, not read again inside
          # (eagerly `platform_dependent` runs its branch under the `vmap`, and the blocks
          # were divided by the mapped size twice).
          row_blocks(lambda *ys: chunked(*flat(*ys)), ax, entries=entries, mapped=1),
          lambda *xs: plain(flat(*xs)), *xs)

    @over_blocks.defjvp
    def over_blocks_jvp(primals, tangents):
      out = over_blocks(*primals)
      _, dterms = jax.jvp(flat, primals, tangents)
      return out, (tuple(jnp.sum(jnp.broadcast_to(t, shape), axis=ax) for t in dterms[:n_sums])
                   + tuple(jnp.zeros_like(o) for o in out[n_sums:]))

    return split(over_blocks(*xs))

  # Over the whole batch, on the terms computed outside (XLA fuses them into the pass).
  @jax.custom_jvp
  def whole(*terms):
    return pass_over(chunked, lambda *terms: plain(terms), *terms)

  @whole.defjvp
  def whole_jvp(primals, tangents):
    out = whole(*primals)
    return out, (tuple(jnp.sum(jnp.broadcast_to(t, shape), axis=ax) for t in tangents[:n_sums])
                 + tuple(jnp.zeros_like(o) for o in out[n_sums:]))

  return split(whole(*flat(*xs)))


def trace_fresh(fn: Callable, *xs):
  """`fn`'s closed jaxpr on arrays shaped like `xs`, traced with `jax.make_jaxpr` of a fresh
  function, so that nothing of `fn` is kept once the call returns (`jax.closure_convert`'s
  cache holds every function it converts); None where it fails to trace (a block that does not
  broadcast with an array `fn` closes over, say)."""
  try:
    return jax.make_jaxpr(lambda *ys: fn(*ys))(
        *(jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)) for x in xs))
  except Exception:  # pylint: disable=broad-except  # it fails in the computation too
    return None


def _holds_tracers(closed) -> bool:
  return any(isinstance(c, jax.core.Tracer) for c in closed.consts)


def _broadcasts_to(shape, target) -> bool:
  try:
    return jnp.broadcast_shapes(shape, target) == tuple(target)
  except ValueError:
    return False


def closes_over_tracers(fn: Callable, *xs) -> bool:
  """Whether `fn(*xs)` holds traced values of an enclosing transformation (a parameter of a
  `jit`, `grad` or `vmap`), which a `custom_jvp` of `fn` would not differentiate; True where it
  fails to trace (:func:`trace_fresh`)."""
  closed = trace_fresh(fn, *xs)
  return closed is None or _holds_tracers(closed)


def any_in_batch(x: jax.Array) -> jax.Array:
  """`jnp.any(x)`; under `jax.vmap`, over the mapped axes too, and not mapped itself (see
  :func:`_any_mapped`). Eagerly, and under eager derivatives only, `jnp.any` itself: a
  `custom_vmap` builds a jaxpr on every call (225 us against 14; an eager `entropy` of 8x10
  took 2.1x as long). Under `jit` it stays a `custom_vmap`, for a `vmap` of the jitted
  function batches its jaxpr later."""
  if not isinstance(x, jax.core.Tracer) or not _traces(_is_staging):
    return jnp.any(x)  # eager, or under eager derivatives only
  return _any_mapped(x)


@jax.custom_batching.custom_vmap
def _any_mapped(x: jax.Array) -> jax.Array:
  """`jnp.any(x)`; under `jax.vmap`, over the mapped axes too, and not mapped itself.

  The guarded fallback runs in a `lax.cond` on whether any row needs it. Under `jax.vmap` a
  mapped predicate turns the `cond` into a `select` that computes both branches on every call:
  KL from logits over 16 x 256 x 2048, vmapped over the 16, took 4.5x its direct time forward
  and 2.6x value+grad, with 32x the temporaries. One predicate for the whole batch keeps the
  `cond`; which rows take the guarded values is decided row by row as before.

  For a boolean `x` only: `custom_vmap` has no reverse-mode derivative, and a flag needs none.
  """
  return jnp.any(x)


@_any_mapped.def_vmap
def _any_mapped_vmap(axis_size, in_batched, x):
  del axis_size, in_batched
  return _any_mapped(x), False


def cond(pred, true_fn, false_fn, *xs):
  """`lax.cond`, decided in Python when `pred` is concrete (eager calls): tracing and compiling
  both branches on every eager call would cost far more than the computation."""
  if isinstance(pred, jax.core.Tracer):
    return lax.cond(pred, true_fn, false_fn, *xs)
  return true_fn(*xs) if bool(pred) else false_fn(*xs)


@jax.custom_jvp
def tangent_if(ok: jax.Array, x: jax.Array) -> jax.Array:
  """`x`, whose tangent (and so cotangent) is zeroed where `ok` is False.

  Trap avoided: a zero cotangent sent back through an expression with an infinite partial
  (`p * log p` at p = 0) is 0 * inf = NaN; a `where` on the tangent selects instead.
  """
  del ok
  return x


@tangent_if.defjvp
def _tangent_if_jvp(primals, tangents):
  ok, x = primals
  t = tangents[1]
  return x, jnp.where(ok, t, jnp.zeros_like(t))


def finite_rows_or(value: Callable, careful: Callable, *xs: jax.Array) -> jax.Array:
  """`value(*xs)`, row values computed unguarded, with `careful(*xs)`'s on the rows that are
  not finite (computed only when there is one). No derivative of its own: the caller's
  `custom_jvp` gives it (see :func:`with_fallback` for one from row-wise coefficients).

  A row's result does not depend on the other rows of its batch (a NaN row elsewhere leaves it
  bit for bit as it was)."""
  return _replace_bad_rows(value(*xs), careful, *xs)[2]


def coefs_of_finite_rows(out: jax.Array, axis, coefs: Callable, *xs: jax.Array) -> tuple:
  """`coefs(*xs)`, row-wise derivatives d out / d x shaped like `xs` (None for an input not
  differentiated), zero on the rows whose value `out` is not finite (a NaN input, a divergence
  of +inf): such a row is a constant.

  Why: its partials are infinite or NaN, and the zero cotangent of a row summed or masked away
  (`jnp.where(ok, d, 0)`) met them as 0 * inf = NaN in that row's inputs, and so in anything
  upstream that every row shares. The inputs the coefficients read are gated alike
  (:func:`tangent_if`), for the second derivatives through them.

  `axis`: the reduced axis, a tuple of them, or None (all: `out` is a scalar).
  """
  lost = lax.stop_gradient(jnp.logical_not(jnp.isfinite(out)))
  gone = lost if axis is None else jnp.expand_dims(lost, axis)
  cs = coefs(*(tangent_if(jnp.logical_not(gone), x) for x in xs))
  return tuple(None if c is None else jnp.where(gone, jnp.zeros_like(c), c) for c in cs)


def finite_coefs(coefs: Callable, *xs: jax.Array) -> tuple:
  """`coefs(*xs)`, derivatives d out / d x shaped like `xs` (None for an input not
  differentiated), each entry that is infinite or NaN taken as 0: optax's partials wherever
  they are finite, and none that a zero cotangent (a row summed or masked away) turns into
  0 * inf = NaN. Unlike :func:`coefs_of_finite_rows`, no row value is read: the derivative in
  one input alone does not compute the forward. For coefficients computed entry by entry: an
  entry where some input's partial is not finite has its inputs gated (:func:`tangent_if`), for
  the second derivatives through them."""
  ok = None
  for c in coefs(*(lax.stop_gradient(x) for x in xs)):
    if c is not None:
      ok = jnp.isfinite(c) if ok is None else ok & jnp.isfinite(c)
  if ok is None:
    return coefs(*xs)
  # `ok` gates the second derivatives only; a first derivative reads each coefficient once.
  # An input smaller than `ok` (a row parameter: size 1 along the reduced axis) is gated where
  # every entry it meets is finite, its tangent keeping its own shape.
  cs = coefs(*(tangent_if(_all_to_shape(ok, jnp.shape(x)), x) for x in xs))
  return tuple(None if c is None else jnp.where(jnp.isfinite(c), c, jnp.zeros_like(c))
               for c in cs)


def _all_to_shape(ok: jax.Array, shape) -> jax.Array:
  """`ok` reduced with `all` over the axes where an array of `shape` (broadcastable to it) has
  size 1 or none."""
  lead = ok.ndim - len(shape)
  axes = tuple(range(lead)) + tuple(lead + i for i, d in enumerate(shape)
                                    if d == 1 and ok.shape[lead + i] != 1)
  return jnp.all(ok, axis=axes, keepdims=False).reshape(shape) if axes else ok


def finite_rows_with_coefs(value: Callable, careful: Callable, coefs: Callable, *xs: jax.Array,
                           axis) -> jax.Array:
  """:func:`finite_rows_or` with a closed-form derivative given by `coefs`.

  Args:
    value, careful: as :func:`finite_rows_or`.
    coefs: `(need, *xs) -> tuple`, one entry an input: d out / d x shaped like `xs` where
      `need[i]` is True (that input is being differentiated), anything (None) where it is not.
      It must be right on every row whose value is finite.
    *xs: the inputs, of one shape; or row parameters (a per-example coefficient, its size 1
      along an int `axis`), whose `coefs` entry has their shape too (and so its derivatives).
    axis: the reduced axis or axes.

  The derivative's terms exist only for the inputs being differentiated (symbolic zeros).
  """

  ax = axis[0] if isinstance(axis, tuple) and len(axis) == 1 else axis
  if isinstance(ax, int):
    # its cond branch's buffers: a block's, not the batch's (`row_blocks` takes inputs it
    # cannot cut, of other shapes, whole)
    careful = careful_blocks(careful, ax, mapped=mapped_size(*xs))

  @jax.custom_jvp
  def f(*xs):
    return finite_rows_or(value, careful, *xs)

  def f_jvp(primals, tangents):
    need = tuple(not isinstance(t, jax.custom_derivatives.SymbolicZero) for t in tangents)
    out = f(*primals)
    cs = finite_coefs(lambda *xs: coefs(need, *xs), *primals)
    tangent = jnp.zeros(out.shape, out.dtype)
    for c, t, live in zip(cs, tangents, need):
      if live:
        tangent = tangent + jnp.sum(c * t, axis=axis)
    return out, tangent

  f.defjvp(f_jvp, symbolic_zeros=True)
  return f(*xs)


# The guarded fallback's `cond` branch (:func:`careful_blocks`): over blocks of this many
# entries, where the batch has more than twice as many. Its temporaries are some ten of the
# block's size, allocated on every call whichever branch runs, and glibc serves an allocation
# over 32 MiB with a fresh `mmap`, whose pages fault again on every call: with blocks of 1M
# entries (38 MiB of temporaries) the Tsallis entropy of 512x4096 probabilities took 0.47 ms
# against 0.15 for the hand-written line, 0.18 with blocks of 256K (5 MiB).
_CAREFUL_BLOCK_ENTRIES = 1 << 18


def careful_blocks(fn: Callable, axis: int, *, keep_axis: bool = False,
                   mapped: int | None = None) -> Callable:
  """:func:`row_blocks` for a guarded fallback's rows (or, with `keep_axis`, derivatives).
  `mapped`: :func:`mapped_size` of the inputs, read by the caller outside the `cond` whose
  branch runs the blocks (a branch is traced where `jax.vmap` is not seen)."""
  return row_blocks(fn, axis, keep_axis=keep_axis, entries=_CAREFUL_BLOCK_ENTRIES,
                    whole=2 * _CAREFUL_BLOCK_ENTRIES, mapped=mapped)


def _replace_bad_rows(out, careful, *xs):
  """`(any bad, bad rows, out with careful(*xs)'s rows where out is not finite)`; `careful`
  runs only when some row is bad."""
  row_bad = jnp.logical_not(jnp.isfinite(out))
  bad = any_in_batch(row_bad)
  return bad, row_bad, cond(bad, lambda *xs: jnp.where(row_bad, careful(*xs), out),
                            lambda *_: out, *xs)


def _split_axis(shape, axis: int, entries: int) -> int:
  """The batch axis :func:`row_blocks` cuts: the first one (not `axis`) whose rows, each with
  the axes after it and `axis` whole, hold at most `entries` entries; the last one if none
  does. The batch axes before it are taken one index at a time."""
  nd = len(shape)
  batch = [i for i in range(nd) if i != axis]
  for s in batch:
    if shape[axis] * math.prod(shape[j] for j in batch if j > s) <= entries:
      return s
  return batch[-1]


def row_block_shape(shape, axis: int, entries: int) -> tuple | None:
  """The shape of :func:`row_blocks`' blocks of arrays of `shape`: about `entries` entries
  along the batch axis of :func:`_split_axis` (size 1 along the batch axes before it, whole
  along `axis` and the axes after it), or None where it takes the batch whole."""
  if len(shape) < 2 or math.prod(shape) == 0:
    return None
  ax = axis % len(shape)
  s = _split_axis(shape, ax, entries)
  outer = [i for i in range(s) if i != ax]
  per_row = math.prod(d for i, d in enumerate(shape) if i > s or i == ax)
  rows = shape[s]
  chunk = max(1, entries // max(1, per_row))
  if rows <= chunk and math.prod(shape[i] for i in outer) <= 1:
    return None
  return tuple(1 if i in outer else min(chunk, d) if i == s else d for i, d in enumerate(shape))


def row_shaped(x_shape, shape, axis: int) -> bool:
  """Whether an input of `x_shape` goes with a batch of `shape` row by row along `axis`: the
  same shape, or a row parameter's (size 1 along `axis`, the same batch axes)."""
  return len(x_shape) == len(shape) and all(
      d == n or (i == axis and d == 1) for i, (d, n) in enumerate(zip(x_shape, shape)))


def row_blocks(fn: Callable, axis: int, *, keep_axis: bool = False,
               entries: int = 1 << 20, whole: int = 0, mapped: int | None = None) -> Callable:
  """`fn(*xs)` on arrays of one shape, row by row along the int `axis`, computed over blocks of
  about `entries` entries, one block at a time (a `fori_loop` over dynamic slices, so the
  inputs are not copied; the last block of a run starts early and recomputes a few rows, to
  the same bits). `fn` returns row values (the batch shape), or with `keep_axis` arrays shaped
  like the inputs (a gradient), with row values beside them or not; any pytree of them. A
  batch of at most `whole` entries, or one that fits in a block, is taken whole. Under
  `jax.vmap` a block is computed for every mapped example at once: its entries and `whole`
  count them all (`mapped`, or :func:`mapped_size` of the inputs where None).

  The blocks are cut along the first batch axis, or where one index of it holds more than
  `entries` entries (a sequence of tokens, `[1, 2048, 32768]`), along the first batch axis
  whose rows fit, one index of the batch axes before it at a time (:func:`row_block_shape`).
  `fn` is first traced on a block: where that fails or its results do not have the block's
  shape (it closes over an array of the batch's), the batch is taken whole. An input of size 1
  along `axis` (a row parameter, e.g. a per-example coefficient with keepdims) is cut with the
  others along the batch axes; the first input has the full shape.

  Why: XLA allocates the buffers of both branches of a `lax.cond` statically, taken or not, so
  a guarded fallback evaluated on the whole batch holds its [N, V] intermediates on every call
  (Rényi entropy of 2048 x 32768 probabilities: 1344 MiB of temporaries against 0 for the
  hand-written line); over blocks it holds a block's. Differentiable (each block is
  rematerialised in the backward pass)."""

  def run(*xs):
    nd = xs[0].ndim
    if nd < 2 or any(map(_sharding.explicitly_sharded, xs)):
      return fn(*xs)
    shape = xs[0].shape
    ax = axis % nd
    if any(not row_shaped(x.shape, shape, ax) for x in xs):
      return fn(*xs)
    size = mapped_size(*xs) if mapped is None else mapped
    block_shape = row_block_shape(shape, axis, max(1, entries // size))
    if block_shape is None or math.prod(shape) * size <= whole:
      return fn(*xs)
    s = _split_axis(shape, ax, max(1, entries // size))
    outer = [i for i in range(s) if i != ax]
    # each input's block: a row parameter's has its size 1 along `axis`
    blocks = [block_shape[:ax] + x.shape[ax:ax + 1] + block_shape[ax + 1:] for x in xs]
    try:
      shapes = jax.eval_shape(fn, *(jax.ShapeDtypeStruct(b, x.dtype) for b, x in zip(blocks, xs)))
    except Exception:  # pylint: disable=broad-except  # it closes over an array of the batch
      return fn(*xs)

    def out_shape(in_shape, kept):  # a result's shape (keeping `axis` or not) for those inputs
      return in_shape if kept else tuple(d for i, d in enumerate(in_shape) if i != ax)

    # Whether each result keeps `axis` (with `keep_axis`, those shaped like the inputs).
    kept = jax.tree_util.tree_map(lambda o: keep_axis and o.ndim == nd, shapes)
    if any(o.shape != out_shape(block_shape, k) for o, k in zip(
        jax.tree_util.tree_leaves(shapes), jax.tree_util.tree_leaves(kept))):
      return fn(*xs)
    rows, chunk = shape[s], block_shape[s]
    steps = -(-rows // chunk)
    sizes = [shape[i] for i in outer]
    block = jax.checkpoint(fn)

    if not outer:  # one batch axis cut: the slices along it
      def take(i):
        start = jnp.minimum(i * chunk, rows - chunk)
        return (tuple(lax.dynamic_slice_in_dim(x, start, chunk, axis=s) for x in xs),
                lambda o, p, k: lax.dynamic_update_slice_in_dim(o, p, start,
                                                                axis=s if k else s - (s > ax)))
    else:
      def take(i):
        o, j = divmod(i, steps)
        index = [jnp.zeros((), i.dtype)] * nd
        for a, n in zip(reversed(outer), reversed(sizes)):
          o, index[a] = divmod(o, n)
        index[s] = jnp.minimum(j * chunk, rows - chunk).astype(i.dtype)
        return (tuple(lax.dynamic_slice(x, index, b) for x, b in zip(xs, blocks)),
                lambda o, p, k: lax.dynamic_update_slice(o, p, index if k else
                                                         index[:ax] + index[ax + 1:]))

    def body(i, out):
      ins, put = take(i)
      return jax.tree_util.tree_map(put, out, block(*ins), kept)

    def first(p, k):
      # The buffer starts from the first block's values, not from zeros alone: inside
      # `shard_map` it then has their varying manual axes, as the loop's carry must.
      return lax.dynamic_update_slice(jnp.zeros(out_shape(shape, k), p.dtype), p,
                                      (0,) * p.ndim)

    part = block(*(lax.slice(x, (0,) * nd, b) for x, b in zip(xs, blocks)))
    return lax.fori_loop(1, math.prod(sizes) * steps, body,
                         jax.tree_util.tree_map(first, part, kept))

  return run


# Entries a row block of the guarded paths' forward pass (:func:`forward_in_row_blocks`).
GUARDED_BLOCK_ENTRIES = 1 << 18
# The largest block it takes, in blocks of `GUARDED_BLOCK_ENTRIES`, where one row of each mapped
# example is already more (helper-54, minimal blocks of mapped x row entries: faster than the
# whole batch at 512K, mixed at 1M, 1.6-2x slower from 2M).
_WIDEST_BLOCK = 2


def forward_in_row_blocks(fn: Callable, axis: int, n_rows: int, *args: jax.Array,
                          entries: int | None = None) -> jax.Array:
  """`fn(*args)`, row values of a row computation along `axis`, evaluated over row blocks of
  about `entries` entries (:func:`row_blocks`; None: `GUARDED_BLOCK_ENTRIES`, read when traced)
  when the batch is larger (under `jax.vmap`, the mapped examples' batch: :func:`mapped_size`);
  its derivatives (any order, either mode) are those of `fn` on the whole batch.

  The first `n_rows` of `args` are arrays of one shape, sliced into the blocks; the others
  (scalars) are passed whole. Why: the guarded implementations make several passes over
  their [N, V] intermediates, which stay in cache over a block and do not over a large batch.
  Measured (2-core CPU, jax 0.10.2): the Rényi divergence of order 1/2 and the JS distance from
  logits, forward at 32768x512, 4096x4096 and 2048x32768, took 0.42x-0.53x the time over
  blocks of 2**18 entries, bit for bit the same values. Over blocks their reverse pass ran
  0.7x-1.35x (the blocks rematerialised or their residuals stacked), so the derivatives stay
  whole-batch: a `custom_jvp` whose rule is `fn`'s own JVP.
  """
  entries = GUARDED_BLOCK_ENTRIES if entries is None else entries
  xs = args[:n_rows]
  whole = xs[0].ndim < 2 or not all(x.shape == xs[0].shape for x in xs)
  if not whole:
    mapped = mapped_size(*xs)  # a block holds every mapped example's rows (see `row_blocks`)
    # Whole, also where a block of one row of each mapped example would be over
    # `_WIDEST_BLOCK` blocks' entries: slices across the mapped axis ran slower than the whole
    # batch (helper-54: the JS distance from logits, jit(vmap) over 8192 x [2, 512], 450 ms in
    # blocks of [8192, 1, 512] against 230 whole; over 256 x [64, 512], 93 against 230).
    whole = (xs[0].size * mapped <= entries
             or mapped * xs[0].shape[axis] > _WIDEST_BLOCK * entries)

  if whole:
    return lost_rows_constant(fn, axis, n_rows, *args)

  def over_blocks(*args):
    scalars = args[n_rows:]
    return row_blocks(lambda *ys: fn(*ys, *scalars), axis, entries=entries,
                      mapped=mapped)(*args[:n_rows])

  return lost_rows_constant(fn, axis, n_rows, *args, forward=over_blocks)


def lost_rows_constant(fn: Callable, axis: int, n_rows: int, *args: jax.Array,
                       forward: Callable | None = None) -> jax.Array:
  """`fn(*args)`, row values along `axis` (computed by `forward` where given: the same values
  another way), differentiated by :func:`lost_rows_constant_jvp` on `fn`. `fn` may close over
  constants, not over traced values (see :func:`lost_rows_constant_autodiff`)."""
  @jax.custom_jvp
  def f(*args):
    return (fn if forward is None else forward)(*args)

  f.defjvp(lambda primals, tangents: lost_rows_constant_jvp(fn, axis, n_rows, primals, tangents),
           symbolic_zeros=True)
  return f(*args)


def ones_in_rows(rows: jax.Array, axis: int, n_rows: int, xs) -> tuple:
  """`xs` with the first `n_rows` (row-shaped arrays) set to ones on `rows` (the batch shape):
  every entry positive and finite, so that every partial there is finite."""
  gone = jnp.expand_dims(rows, axis)
  return tuple(jnp.where(gone, jnp.ones_like(x), x) if i < n_rows else x
               for i, x in enumerate(xs))


def lost_rows_constant_autodiff(fn: Callable, axis: int, n_rows: int,
                                *args: jax.Array) -> jax.Array:
  """:func:`lost_rows_constant` for an `fn` that closes over traced values (a user's generator
  with a traced parameter), which a `custom_jvp` would not differentiate: `fn` differentiated
  as written, with the rows whose value is not finite constants, computed on inputs with those
  rows set to ones (:func:`with_fallback_autodiff` says why each branch computes its own
  values). Where no row is lost, one `cond` branch computes `fn` again: twice the forward."""
  out = lax.stop_gradient(fn(*args))
  lost = jnp.logical_not(jnp.isfinite(out))

  def mixed(args):
    return jnp.where(lost, out, fn(*ones_in_rows(lost, axis, n_rows, args)))

  return cond(any_in_batch(lost), jax.checkpoint(mixed), lambda args: fn(*args), args)


def lost_rows_constant_jvp(fn: Callable, axis: int, n_rows: int, primals, tangents):
  """`jax.jvp(fn, primals, tangents)` for row values `fn(*primals)` (the batch shape) of a row
  computation along `axis`, with the rows whose value is not finite (a NaN input, a divergence
  of +inf) constants: their tangents are 0, and so is their part of every gradient. A
  `custom_jvp` rule with symbolic zeros (`defjvp(..., symbolic_zeros=True)`).

  Why: such a row's partials are infinite or NaN, and the zero cotangent of a row summed or
  masked away (`jnp.where(ok, d, 0)`) met them as 0 * inf = NaN, in that row's inputs and in
  any scalar argument every row shares.

  How: the row inputs' tangents are zeroed on the lost rows (:func:`tangent_if`, whose
  transpose selects after `fn`'s own). Under `jit` XLA merges the value computed to find the
  lost rows with the JVP's own, so this costs a select. A scalar argument (the first `n_rows`
  of `primals` are arrays of one shape with `axis`, the others scalars) sums its partials over
  every row, where a select on the rows' inputs comes too late: where one is differentiated,
  the lost rows' inputs are set to ones (finite partials), which computes `fn` once more.
  Inputs that are not floating (boolean masks) have no tangent.
  """
  live = [not isinstance(t, jax.custom_derivatives.SymbolicZero) for t in tangents]
  if not any(live):
    out = fn(*primals)
    return out, jnp.zeros_like(out)
  ts = tuple(t for t, lv in zip(tangents, live) if lv)

  def jvp_at(xs, kept=None):
    def on_live(*d):
      it = iter(d)
      ys = tuple(next(it) if lv else x for x, lv in zip(xs, live))
      return fn(*(tangent_if(kept, y) if kept is not None and i < n_rows and lv else y
                  for i, (y, lv) in enumerate(zip(ys, live))))
    return jax.jvp(on_live, tuple(x for x, lv in zip(xs, live) if lv), ts)

  if traces_staged():
    # Under `jit` or `vmap`: the values alone first (XLA merges them with the JVP's below). A
    # JVP here, whose tangent XLA dropped, was traced (and differentiated again for second
    # derivatives) for nothing: jit(grad(grad)) of the alpha-divergence in its order traced in
    # 3.3-4.6 s, not 4.2-5.1 (float64, 4x16).
    out, t_out = fn(*primals), None
  else:
    # Eager calls and eager derivatives: `fn`'s own JVP first; where no row is lost (decided
    # in Python), it is the answer.
    out, t_out = jvp_at(primals)
  lost = lax.stop_gradient(jnp.logical_not(jnp.isfinite(out)))
  if t_out is not None and not isinstance(lost, jax.core.Tracer) and not bool(jnp.any(lost)):
    return out, t_out
  kept = jnp.logical_not(jnp.expand_dims(lost, axis))
  xs = ones_in_rows(lost, axis, n_rows, primals) if any(live[n_rows:]) else primals
  _, t_out = jvp_at(xs, kept)
  return out, jnp.where(lost, jnp.zeros_like(t_out), t_out)


def with_fallback_autodiff(value: Callable, careful: Callable, *xs: jax.Array,
                           axis: int) -> jax.Array:
  """:func:`with_fallback` without a custom derivative: `value(*xs)[0]` where every row is
  finite, else `careful(*xs)` on the rows that are not, differentiated as written.

  For a `value` that closes over traced values (a user's `f_divergence` generator capturing a
  parameter), which a `custom_jvp` cannot differentiate. The unguarded values are kept when
  every row is finite (`lax.cond`: one branch runs); otherwise the rows that need it take
  `careful`'s values and the others `value`'s again, on inputs whose rows that need the
  guarded path are set to ones (every entry positive and finite), so that no derivative of a
  non-finite row reaches the result; rows whose guarded value is not finite either are
  constants.
  """
  # The rows' test has no derivative; each branch computes its own values, so that the NaN
  # partials of a non-finite row stay in the branch not taken (a value computed outside and
  # returned by a branch met a zero cotangent there: NaN).
  bad = jnp.logical_not(jnp.isfinite(lax.stop_gradient(value(*xs)[0])))

  def mixed(xs):
    # Rows whose guarded value is not finite either (a NaN input, a divergence of +inf) keep
    # that value as a constant: their derivatives in a value the generator closes over, met by
    # a zero cotangent, made every row's gradient NaN.
    careful_rows = lax.stop_gradient(careful(*xs))
    lost = jnp.logical_not(jnp.isfinite(careful_rows))
    guarded = jnp.where(lost, careful_rows, careful(*ones_in_rows(lost, axis, len(xs), xs)))
    return jnp.where(bad, guarded, value(*ones_in_rows(bad, axis, len(xs), xs))[0])

  # `mixed` rematerialised: differentiated, a `cond` returns the residuals of both branches
  # (zeros for the one not taken), and the guarded path's are many [N, V] arrays (4096x1024
  # float32, value+grad: 69 ms against 33 ms).
  return lax.cond(any_in_batch(bad), jax.checkpoint(mixed), lambda xs: value(*xs)[0], xs)


def with_fallback(value: Callable, coefs: Callable, careful: Callable, *xs: jax.Array,
                  axis: int, value_for_coefs: Callable | None = None) -> jax.Array:
  """`value(*xs)` where every row is finite, else `careful(*xs)`, with a matching derivative.

  Args:
    value: `(*xs) -> (out, aux)`, the unguarded row values (NaN or inf where a guard is needed)
      and any row statistics the coefficients need.
    coefs: `(out, aux, *xs) -> tuple` of arrays shaped like `xs`: d out / d x, row by row
      (valid where every row of `out` is finite).
    careful: `(*xs) -> out`, the guarded implementation (same dtype as `value`'s out).
    *xs: the inputs, already broadcast to one shape, in the compute dtype.
    axis: the distribution axis.
    value_for_coefs: `value` as the derivative evaluates it (the same row values, computed in
      the form its coefficients read best), or None for `value` itself.

  Returns:
    The row values, the batch shape.
  """
  n = len(xs)
  value_for_coefs = value if value_for_coefs is None else value_for_coefs
  mapped = mapped_size(*xs)
  careful_rows = careful_blocks(careful, axis, mapped=mapped)
  careful_grads = careful_blocks(
      lambda *ys: jax.grad(lambda *zs: jnp.sum(careful(*zs)), argnums=tuple(range(n)))(*ys),
      axis, keep_axis=True, mapped=mapped)

  def pick(*xs, value=value):
    out, aux = value(*xs)
    # The guarded values replace only the rows that need them: a row's result does not depend
    # on the other rows of its batch (a NaN row elsewhere leaves it bit for bit as it was).
    return (*_replace_bad_rows(out, careful_rows, *xs), aux)

  @jax.custom_jvp
  def f(*xs):
    return pick(*xs)[2]

  @f.defjvp
  def f_jvp(primals, tangents):
    bad, row_bad, out, _ = pick(*primals, value=value_for_coefs)
    row_bad = jnp.expand_dims(lax.stop_gradient(row_bad), axis)
    # The coefficients are differentiated again for second derivatives, back through `value`,
    # whose unguarded expression has 0 * inf partials exactly where a guard was needed. On the
    # rows that take the guarded values, that path gets zero cotangents, and 0 * inf is NaN:
    # gate it at the inputs (`tangent_if`, identity in value). XLA merges this `value` with
    # `pick`'s.
    # The coefficients' own reads of the inputs are gated alike.
    def gate(xs):
      return tuple(tangent_if(jnp.logical_not(row_bad), x) for x in xs)

    out_g, aux_g = value_for_coefs(*gate(primals))

    def fast_coefs(*xs):
      return tuple(coefs(out_g, aux_g, *gate(xs)))

    def mixed_coefs(*xs):
      # over row blocks, as the value; a row whose guarded value is not finite either is a
      # constant (the fast rows' values are finite)
      guarded = coefs_of_finite_rows(out, axis, careful_grads, *xs)
      return tuple(jnp.where(row_bad, g, c) for g, c in zip(guarded, fast_coefs(*xs)))

    cs = cond(bad, mixed_coefs, fast_coefs, *primals)
    tangent = sum(jnp.sum(c * t, axis=axis) for c, t in zip(cs, tangents))
    return out, tangent

  return f(*xs)
