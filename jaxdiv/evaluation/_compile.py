"""The device side: the mesh and shardings, the compiled step (cached), batch sizing."""

from __future__ import annotations

import math
from collections.abc import Callable
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

try:
  from jax import shard_map
except ImportError:  # jax < 0.7
  from jax.experimental.shard_map import shard_map


def mesh_sharding(mesh: Mesh | None):
  """The mesh (default: every device) and the shardings of a batch and of its per-row results."""
  if mesh is None:
    mesh = Mesh(np.array(jax.devices()), ("data",))
  axes = tuple(mesh.axis_names)
  return mesh, NamedSharding(mesh, P(axes, None)), NamedSharding(mesh, P(axes))


def local_range(sharding: NamedSharding, batch: int, n: int) -> tuple[int, int]:
  """The contiguous rows of a global batch whose shards live on this process's devices."""
  idx = sharding.addressable_devices_indices_map((batch, n)).values()
  starts = sorted({(i[0].start or 0, i[0].stop if i[0].stop is not None else batch)
                   for i in idx})
  lo, hi = starts[0][0], starts[-1][1]
  if sum(b - a for a, b in starts) != hi - lo:
    raise ValueError("this process's devices do not hold a contiguous block of the batch;"
                     " order the mesh's devices by process")
  return lo, hi


def fetch(x: jax.Array) -> np.ndarray:
  """The whole array on the host: across processes the step's outputs are replicated, so
  every process reads its own copy."""
  if isinstance(x, np.ndarray) or x.is_fully_addressable:
    return np.asarray(x)
  return np.asarray(x.addressable_data(0))


def block_rows(n: int, max_rows: int | None = None) -> int:
  """Rows per device in one call of the compiled step for a distribution of `n` entries: 4096
  rows up to n = 1024 (at most 16 MiB of float32 a block) unless `max_rows` is below that,
  else a power of two of about 2**20 entries (4 MiB), between 1 and 4096 rows. It depends on
  `n` and `max_rows` only, not on the batch size or the devices (see :func:`evaluate`).

  XLA:CPU (jax 0.10-0.11) computes a row computation over 4096 rows or more in one fused loop
  and over fewer in several (`jaxdiv._fallback.FUSED_ROWS`). Measured (2026-12-03, 2-core
  CPU, jax 0.10.2; the step as jitted here over 2 x 32 MiB of float32 held in memory): at
  n = 512 and 1024, 4096-row blocks took 0.41x-0.91x the time of 2**20-entry blocks for the
  registry's divergences from logits and from probabilities (KL from logits 0.48x, JS 0.69x);
  the functions then without a fast path (the JS distance, and until 1e20e31 the two-input
  order-alpha family at orders below 1) were 1.6x-2.3x slower over 4096 rows until their
  guarded path took its own row blocks (`jaxdiv.discrete._common.guarded`). At n = 4096 a
  4096-row block (64 MiB an input) was 1.9x faster for KL as well, but one step would need
  about 1 GiB of `jaxdiv eval`'s memory budget; below 4096 rows the time barely depends on
  the rows (KL from logits at n = 4096: 4.0-4.5 GB/s from 512 to 2048 rows). Earlier (one
  call per block of 1024 rows at 3.9 GB/s against a `lax.map` over 256-row blocks at
  2.7 GB/s): one call a block.

  Args:
    n: entries in one distribution.
    max_rows: None, or the most rows a block may hold (`jaxdiv eval` passes the rows its
      memory budget holds, so that a small budget keeps 2**20-entry blocks).
  """
  if n * 4096 <= 2**22 and (max_rows is None or max_rows >= 4096):
    return 4096
  r = 1
  while r < 4096 and 2 * r * n <= 2**20:
    r *= 2
  return r


def _bad_rows(x: jax.Array, from_logits: bool) -> jax.Array:
  """Rows holding NaN or infinity; with logits, -inf is a legitimate zero probability.

  Elementwise tests, not a max a row: XLA:CPU's vectorised max does not always return NaN for
  a row that holds one."""
  bad = jnp.isnan(x) | (x == jnp.inf) if from_logits else ~jnp.isfinite(x)
  return jnp.any(bad, axis=-1)


def _row_stats(x: jax.Array, inputs: str) -> tuple[jax.Array, jax.Array]:
  """What the host needs to tell probabilities from logits: each row's smallest entry and its
  sum (a distribution) or its largest entry (Bernoulli probabilities), in float32."""
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  second = jnp.sum(x, axis=-1) if inputs == "distribution" else jnp.max(x, axis=-1)
  return jnp.min(x, axis=-1), second


_CACHE: dict = {}


class Step(NamedTuple):
  """The compiled work of a run (see :func:`compiled`).

  Attributes:
    block: the per-device function of one `(r, n)` block of each input.
    call: the jitted, sharded step over one global block: `(values, bad_rows, stats)`.
    bad_rows: None when `call` computes the bad-row flags itself; else the jitted flags of one
      global block, for `call` returns none (`bad_rows == ()`) and the flags are only needed
      where a value is not finite (:meth:`flags`).
  """

  block: Callable
  call: Callable
  bad_rows: Callable | None

  def flags(self, values: np.ndarray, arrays) -> tuple:
    """The bad-row flags of one global block whose step gave `values` (on the host).

    Without a flag pass in the step, a block of finite values has no bad row (a NaN or inf
    input row gives a non-finite value: what the caller vouched for); otherwise the flag pass
    runs on that block. Across processes every one holds the same `values`, so all of them make
    the same calls.
    """
    if self.bad_rows is None:
      raise ValueError("this step computes its flags itself")
    if np.isfinite(values).all():
      return tuple(np.zeros(values.shape, bool) for _ in arrays)
    return tuple(fetch(b) for b in self.bad_rows(*arrays))


def compiled(fn, kwargs, from_logits, mesh, sharding, row_sharding, r, n, n_inputs,
             check: str | None, flags_from_values: bool = False) -> Step:
  """The per-block function and the jitted, sharded step over one global block (`r` rows on
  each device of `mesh`); cached so that repeated evaluations (several models, several files)
  with the same settings compile once.

  The step returns `(values, bad_rows, stats)`: one value a row, a NaN-or-inf flag a row per
  input, and, when `check` names what the inputs should hold, :func:`_row_stats` per input.
  Every call computes the same shape, `(r, n)` a device, so every row's bits are the same
  whatever the batch size and the number of devices.

  With `flags_from_values` (for a function whose value is NaN or infinite on every row that
  holds a NaN or +-inf input, or a +inf logit) the step leaves the flags out, `bad_rows` is
  `()`, and :meth:`Step.flags` computes them only for blocks with a non-finite value: the flag
  pass reads every input once more, which on a CPU doubled the step's time (KL from logits,
  4096 x 1024 blocks: 22 ms -> 44 ms for 2 x 64 MiB; XLA does not fuse it into the
  divergence's own reductions).
  """
  try:
    key = (fn, tuple(sorted(kwargs.items())), from_logits, mesh, r, n, n_inputs, check,
           flags_from_values)
    hash(key)
  except TypeError:  # an unhashable hyperparameter (an array): no caching
    key = None
  if key is not None and key in _CACHE:
    return _CACHE[key]

  def flags(*xs):
    return tuple(_bad_rows(x, from_logits) for x in xs)

  def block(*xs):  # one device's block of rows, (r, n)
    vals = fn(*xs, axis=-1, **kwargs)
    stats = tuple(_row_stats(x, check) for x in xs) if check else ()
    return vals, () if flags_from_values else flags(*xs), stats

  # Across processes the results are replicated by the step itself (one all-gather that XLA
  # schedules with the computation) instead of gathered on the host after it.
  replicated = NamedSharding(mesh, P()) if jax.process_count() > 1 else None

  def sharded(f):
    return jax.jit(shard_map(f, mesh=mesh, in_specs=(sharding.spec,) * n_inputs,
                             out_specs=row_sharding.spec), out_shardings=replicated)

  out = Step(block, sharded(block), sharded(flags) if flags_from_values else None)
  if key is not None:
    if len(_CACHE) >= 64:
      _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = out
  return out


def step(name, fn, kwargs, from_logits, mesh, sharding, row_sharding, n: int, n_inputs: int,
         dtypes, rows: int | None, batch_size: int, check: str | None,
         flags_from_values: bool = False, max_block_rows: int | None = None):
  """The global batch size, the rows of one call of the step (a global block), the
  :class:`Step` and the per-row result's dtype for a run.

  Rows are computed in blocks of a fixed shape (R, n) a device, R chosen from n alone, so that
  the compiled reduction, and so every row's bits, are the same for any batch size and device
  count (XLA picks a different reduction strategy for, e.g., 8 rows than for 4096): a batch is
  read as a whole and computed as one call per global block of R times the devices rows.
  """
  r = block_rows(n, max_block_rows)
  step_rows = mesh.size * r
  batch = int(math.ceil(batch_size / step_rows) * step_rows)
  if rows is not None and rows < batch:  # small inputs: one batch, as small as allowed
    batch = max(step_rows, int(math.ceil(max(rows, 1) / step_rows) * step_rows))
  work = compiled(fn, kwargs, from_logits, mesh, sharding, row_sharding, r, n, n_inputs, check,
                  flags_from_values)
  # The result's shape from the step's own trace, which its first call then reuses (tracing
  # the divergence, guarded path included, is most of a run's fixed cost: 0.08-0.1 s for KL
  # from logits on a CPU, where a traced `work.block` cost it twice); the block's, for the
  # error, where that fails or is not one value a row.
  try:
    vals = work.call.eval_shape(
        *[jax.ShapeDtypeStruct((step_rows, n), d, sharding=sharding) for d in dtypes])[0]
  except Exception:  # pylint: disable=broad-except  # raised again below, or named there
    vals = None
  if vals is None or vals.shape != (step_rows,):
    vals, _, _ = jax.eval_shape(work.block, *[jax.ShapeDtypeStruct((r, n), d) for d in dtypes])
    if vals.shape != (r,):
      raise ValueError(f"{name} returned shape {vals.shape} for a batch of shape {(r, n)}; it"
                       " must reduce the distribution axis to one value a row")
  return batch, step_rows, work, np.dtype(vals.dtype)


def batch_size_for_budget(budget_bytes: int, n: int, itemsizes: Sequence[int],
                          prefetch: int = 2) -> int:
  """The largest batch whose rows in flight fit in `budget_bytes` of host memory.

  In flight at once: `prefetch` queued batches, one being read, one on the device and one
  whose results are being collected (the host buffers are reused in that cycle), plus the
  device's float32 temporaries (about four arrays of the batch's shape for the log-space
  divergences). On a CPU backend device buffers are host memory, so all of it counts.

  Args:
    budget_bytes: host memory for the batches in flight.
    n: entries in one distribution (the length of the distribution axis).
    itemsizes: bytes per entry of each input.
    prefetch: batches read ahead (as :func:`evaluate`'s `prefetch`).

  Returns:
    The batch size in rows, at least 1.
  """
  per_row = n * (sum(itemsizes) * (prefetch + 3) + 4 * 4)
  return max(1, budget_bytes // max(per_row, 1))


def budget_batch(budget_bytes: int, n: int, itemsizes: Sequence[int], devices: int,
                 limit: int = 65536) -> tuple[int, int]:
  """`(batch_size, max_block_rows)` for :func:`evaluate` under a host memory budget, as
  `jaxdiv eval` picks them: the rows that fit (:func:`batch_size_for_budget`), shared by the
  `devices` (a step is one block on each), bound the compiled block, and the batch is those
  rows (at most `limit`) rounded down to whole steps where they hold one; below one step
  `evaluate` rounds up.

  The block is bounded by the budget over the devices, so a row's last bits depend on the
  device count as well as the budget (4096-row blocks or 2**20-entry ones, see
  :func:`block_rows`): bounding it by the budget alone let one step of 4096 rows a device hold
  up to the devices times the budget (7x on 8 devices at n = 1024 under 256M)."""
  rows = batch_size_for_budget(budget_bytes, n, itemsizes)
  per_device = max(1, rows // max(int(devices), 1))
  batch = min(limit, rows)
  step = block_rows(n, per_device) * devices
  return max(batch // step * step, min(batch, step)), per_device

