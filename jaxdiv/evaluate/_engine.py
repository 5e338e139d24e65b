"""Streaming, data-parallel evaluation of a divergence over inputs larger than memory.

The pipeline, per batch of `batch_size` rows (the distribution axis moved last):

    host read (memmap slice / iterator) -> pad to batch_size -> device_put sharded over the mesh
        [background thread, queue of depth `prefetch`: reads overlap device work]
    -> jitted divergence on every device (one compiled shape)
    -> per-row results back to the host, in order -> output file / array, running reductions

Determinism: rows are computed independently of each other (the divergence reduces only the
distribution axis), the last batch is padded so that one shape is compiled, and every
cross-row reduction runs on the host in float64 over fixed chunks (:mod:`._reduce`). The
bytes of the per-row results and of the summary therefore do not depend on the batch size or
on the number of devices (tested on 1, 2 and 8 CPU devices, and on 2 processes x 2 devices).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxdiv import discrete
from jaxdiv.evaluate import _io
from jaxdiv.evaluate import _reduce

try:
  from jax import shard_map
except ImportError:  # jax < 0.7
  from jax.experimental.shard_map import shard_map

# ------------------------------------------------------------------------------ registry ----

_CORE = (
    "kl_divergence", "cross_entropy", "jeffreys_divergence", "js_divergence", "js_distance",
    "entropy", "renyi_divergence", "renyi_entropy", "tsallis_divergence", "tsallis_entropy",
    "alpha_divergence", "hellinger_distance", "total_variation_distance",
    "chi_squared_divergence", "bhattacharyya_distance", "binary_entropy",
    "binary_cross_entropy", "binary_kl_divergence",
)
_HYPERPARAMETERS = ("alpha", "beta", "base")


class DivergenceSpec(NamedTuple):
  """A divergence that :func:`evaluate` (and the CLI) can select by name."""

  name: str
  fn: Callable[..., jax.Array]
  n_inputs: int  # 1: a function of p alone (entropies); 2: of p and q
  params: tuple[str, ...]  # accepted hyperparameters among alpha, beta, base
  required: tuple[str, ...]  # those without a default


def _spec(name: str) -> DivergenceSpec:
  fn = getattr(discrete, name)
  sig = inspect.signature(fn).parameters
  n_inputs = sum(k in sig for k in ("p", "q"))
  params = tuple(k for k in _HYPERPARAMETERS if k in sig)
  required = tuple(k for k in params if sig[k].default is inspect.Parameter.empty)
  return DivergenceSpec(name, fn, n_inputs, params, required)


DIVERGENCES: dict[str, DivergenceSpec] = {name: _spec(name) for name in _CORE}


def resolve(divergence: str | Callable) -> DivergenceSpec:
  """The :class:`DivergenceSpec` for a name of the core family, or a wrapped callable."""
  if callable(divergence):
    name = getattr(divergence, "__name__", type(divergence).__name__)
    return DivergenceSpec(name, divergence, 0, (), ())
  if divergence not in DIVERGENCES:
    raise ValueError(f"unknown divergence {divergence!r}; valid names: "
                     + ", ".join(sorted(DIVERGENCES)))
  return DIVERGENCES[divergence]


# --------------------------------------------------------------------------------- result ----

class EvalResult(NamedTuple):
  """What :func:`evaluate` returns.

  Attributes:
    per_row: the per-row results in input order, shaped like the inputs without the
      distribution axis (1-D for an iterator input); a NumPy array, a read-only memmap of the
      written `.npy` when `out` was a path, `out` itself when it was an array, None when
      `out=False` (and, multi-host, on processes other than 0 when `out` was a path). Rows
      skipped under `nan_policy="skip"` hold NaN.
    summary: the reductions and row counts; deterministic (same bytes for the same inputs).
    timing: wall time, rows and bytes per second, batch size, devices (not deterministic).
  """

  per_row: np.ndarray | None
  summary: dict[str, Any]
  timing: dict[str, Any]


class NonFiniteInputError(_io.InputError):
  """Raised under `nan_policy="fail"` when input rows hold NaN or +-inf."""


# ----------------------------------------------------------------------------- row sources ----

def _is_stream(x) -> bool:
  return (isinstance(x, Iterator)
          or (isinstance(x, Iterable)
              and not isinstance(x, (np.ndarray, list, tuple, str, bytes, _io.ZipStream))
              and not hasattr(x, "__array__")))


def _check_float(dtype, name: str):
  if not (np.issubdtype(dtype, np.floating) or dtype.name == "bfloat16"
          or dtype.name.startswith("float8")):
    raise TypeError(f"{name} has dtype {dtype}; expected a floating-point array of"
                    " probabilities or logits")


def _device_dtype(dtype: np.dtype) -> np.dtype:
  # float64 becomes float32 when jax_enable_x64 is off: convert on the host, without a warning.
  return np.dtype(jax.dtypes.canonicalize_dtype(dtype))


class _Rows:
  """Rows `[start, stop)` of an array seen as `(rows, n)`: the distribution axis moved last and
  the batch axes flattened, read without loading the array (memmaps stay memmaps)."""

  def __init__(self, x, axis: int, name: str):
    self.name = name
    if isinstance(x, _io.ZipStream):
      ax = axis % max(x.ndim, 1)
      if ax != x.ndim - 1:
        raise _io.InputError(f"{name}: a compressed .npz member can only be read along its last"
                             " axis; re-save it uncompressed (np.savez) or as .npy")
      self.shape, self.dtype = x.shape, x.dtype
      self.batch_shape, self.n = x.shape[:-1], x.shape[-1]
      self._read, self._flat = x.read_rows, None
      self.rows = int(np.prod(self.batch_shape, dtype=np.int64))
      return
    if not isinstance(x, np.ndarray):
      x = np.asarray(x)  # a jax.Array or nested lists: already in memory
    if x.ndim == 0:
      raise _io.InputError(f"{name} is a scalar; expected at least one (distribution) axis")
    if not -x.ndim <= axis < x.ndim:
      raise _io.InputError(f"axis {axis} is out of range for {name} of shape {x.shape}")
    self.shape, self.dtype = x.shape, x.dtype
    moved = np.moveaxis(x, axis, -1)
    self.batch_shape, self.n = moved.shape[:-1], moved.shape[-1]
    self.rows = int(np.prod(self.batch_shape, dtype=np.int64))
    try:
      self._flat = np.reshape(moved, (self.rows, self.n), copy=False)
    except ValueError:  # the axis is not last in memory: gather rows by index instead
      self._flat, self._moved = None, moved
    self._release = _Releaser(self._flat) if self._flat is not None else None
    self._read = None

  def read(self, start: int, stop: int) -> np.ndarray:
    if self._read is not None:
      return self._read(start, stop)
    if self._flat is not None:
      view = self._flat[start:stop]
      rows = np.array(view, copy=True)  # the actual disk read for a memmap
      self._release(view)
      return rows
    idx = np.unravel_index(np.arange(start, stop), self.batch_shape)
    return np.asarray(self._moved[idx])


class _Releaser:
  """Drops the pages of rows already read from a read-only memmap (`madvise(MADV_DONTNEED)`).

  Without it the process's resident memory grows with every page of the file it has touched
  (file-backed pages of a mapping count in RSS until the kernel needs them), although nothing
  is kept. Linux and macOS; a no-op wherever it is unavailable.
  """

  def __init__(self, flat):
    self._mm = None
    mm = getattr(flat, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise") or not hasattr(__import__("mmap"),
                                                                 "MADV_DONTNEED"):
      return
    try:
      self._base = np.frombuffer(mm, np.uint8).ctypes.data
    except (TypeError, ValueError):
      return
    self._mm = mm
    import mmap

    self._page = mmap.PAGESIZE
    self._flag = mmap.MADV_DONTNEED

  def __call__(self, view: np.ndarray):
    if self._mm is None or view.size == 0:
      return
    start = view.ctypes.data - self._base
    end = start + view.nbytes
    a = (start // self._page) * self._page
    b = (end // self._page) * self._page
    if b > a:
      with contextlib.suppress(Exception):
        self._mm.madvise(self._flag, a, b - a)


def _pad(rows: np.ndarray, size: int, dtype, filler: np.ndarray | None = None) -> np.ndarray:
  """`rows` as a fresh `(size, n)` array of `dtype`, missing rows copied from the last one."""
  out = np.empty((size, rows.shape[1] if rows.ndim == 2 else filler.shape[1]), dtype)
  k = rows.shape[0]
  out[:k] = rows
  if k < size:
    out[k:] = rows[-1] if k else filler[-1]
  return out


# ---------------------------------------------------------------------------------- output ----

class _Sink:
  """Where per-row results go, in order: memory, a user array, or an (atomic) .npy file."""

  def __init__(self, out, batch_shape, rows: int | None, dtype, writer: bool,
               reread: bool = True):
    """`writer`: whether this process writes a path `out`; `reread`: whether the summary reads
    the results back (quantiles, histogram): without it, results kept nowhere are dropped."""
    self.dtype, self.batch_shape, self.rows = np.dtype(dtype), batch_shape, rows
    self.pos = 0
    self._chunks: list[np.ndarray] | None = None
    self._writer: _io.AtomicNpyWriter | None = None
    self._array = None
    self._path = None
    self.keep = out is not False
    if isinstance(out, (str, os.PathLike)) and writer:
      self._path = os.fspath(out)
      self._writer = _io.AtomicNpyWriter(out, dtype)
    elif isinstance(out, np.ndarray):
      if rows is not None and out.size != rows:
        raise ValueError(f"out has shape {out.shape}; the per-row results have shape"
                         f" {tuple(batch_shape)}")
      try:
        self._array = np.reshape(out, (-1,), copy=False)
      except ValueError:
        raise ValueError("out must be C-contiguous (a view would be needed)") from None
      self._user = out
    elif out is None and rows is not None:
      self._array = np.empty((rows,), dtype)
    elif out is None:
      self._chunks = []
    elif not reread:  # out=False, or a path another process writes, and nothing to reread
      self._chunks = None
    else:  # out=False, or a path on a process that does not write: spool to a temp file
      self._writer = _io.AtomicNpyWriter(
          os.path.join(tempfile.gettempdir(), f"jaxdiv-spool-{os.getpid()}.npy"), dtype)

  def write(self, values: np.ndarray):
    if self._writer is not None:
      self._writer.write(values)
    elif self._array is not None:
      self._array[self.pos:self.pos + values.size] = values
    elif self._chunks is not None:
      self._chunks.append(np.array(values, self.dtype))
    self.pos += values.size

  def chunks(self) -> Iterator[np.ndarray]:
    """The per-row results written so far, in order, in chunks of bounded size."""
    if self._writer is not None:
      self._writer._f.flush()
      if self.pos == 0:
        return
      mm = np.memmap(self._writer.tmp, self.dtype, "r", offset=_io._HEADER_BYTES,
                     shape=(self.pos,))
      release = _Releaser(mm)
      for i in range(0, self.pos, _reduce.CHUNK):
        view = mm[i:i + _reduce.CHUNK]
        yield np.array(view)
        release(view)
      del mm
    else:
      arr = self._array if self._array is not None else (
          np.concatenate(self._chunks) if self._chunks else np.zeros(0, self.dtype))
      for i in range(0, arr.size, _reduce.CHUNK):
        yield arr[i:i + _reduce.CHUNK]

  def commit(self) -> np.ndarray | None:
    shape = tuple(self.batch_shape) if self.rows is not None else (self.pos,)
    if self._writer is not None:
      if self._path is None:
        self._writer.abort()
        return None
      path = self._writer.commit(shape)
      return np.load(path, mmap_mode="r")
    if self._array is not None:
      return self._user if hasattr(self, "_user") else self._array.reshape(shape)
    if self._chunks is None:  # dropped
      return None
    return np.concatenate(self._chunks) if self._chunks else np.zeros(0, self.dtype)

  def abort(self):
    if self._writer is not None:
      self._writer.abort()


# -------------------------------------------------------------------------------- prefetch ----

_END = object()


class _Prefetcher:
  """A background thread that runs `produce()` (host read + device_put) ahead, `depth` deep."""

  def __init__(self, items: Iterator, depth: int):
    self._items = items
    self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, name="jaxdiv-prefetch", daemon=True)
    self._thread.start()

  def _put(self, item) -> bool:
    while not self._stop.is_set():
      try:
        self._q.put(item, timeout=0.05)
        return True
      except queue.Full:
        continue
    return False

  def _run(self):
    try:
      for item in self._items:
        if not self._put(item):
          return
      self._put(_END)
    except BaseException as e:  # handed to the consumer, re-raised there
      self._put(("__error__", e))

  def __iter__(self):
    while True:
      item = self._q.get()
      if item is _END:
        return
      if isinstance(item, tuple) and len(item) == 2 and item[0] == "__error__":
        raise item[1]
      yield item

  def close(self):
    self._stop.set()
    with contextlib.suppress(queue.Empty):
      while True:
        self._q.get_nowait()
    self._thread.join(timeout=10)


# -------------------------------------------------------------------------------- evaluate ----

def _mesh_sharding(mesh: Mesh | None):
  if mesh is None:
    mesh = Mesh(np.array(jax.devices()), ("data",))
  axes = tuple(mesh.axis_names)
  return mesh, NamedSharding(mesh, P(axes, None)), NamedSharding(mesh, P(axes))


def _local_range(sharding: NamedSharding, batch: int, n: int) -> tuple[int, int]:
  """The contiguous rows of a global batch whose shards live on this process's devices."""
  idx = sharding.addressable_devices_indices_map((batch, n)).values()
  starts = sorted({(i[0].start or 0, i[0].stop if i[0].stop is not None else batch)
                   for i in idx})
  lo, hi = starts[0][0], starts[-1][1]
  if sum(b - a for a, b in starts) != hi - lo:
    raise ValueError("this process's devices do not hold a contiguous block of the batch;"
                     " order the mesh's devices by process")
  return lo, hi


def _fetch(x: jax.Array) -> np.ndarray:
  """The whole array on the host: across processes the step's outputs are replicated, so
  every process reads its own copy."""
  if x.is_fully_addressable:
    return np.asarray(x)
  return np.asarray(x.addressable_data(0))


def _bad_rows(x: jax.Array, from_logits: bool) -> jax.Array:
  """Rows holding NaN or infinity; with logits, -inf is a legitimate zero probability."""
  bad = jnp.isnan(x) | (x == jnp.inf) if from_logits else ~jnp.isfinite(x)
  return jnp.any(bad, axis=-1)


def block_rows(n: int) -> int:
  """Rows per compiled block for a distribution of `n` entries: about 2**20 entries a block,
  between 1 and 256 rows, a power of two. It depends on `n` only (see :func:`evaluate`)."""
  r = 1
  while r < 256 and 2 * r * n <= 2**20:
    r *= 2
  return r


_CACHE: dict = {}


def _compiled(fn, kwargs, from_logits, mesh, sharding, row_sharding, r, n, n_inputs):
  """The per-block function and the jitted, sharded step; cached so that repeated evaluations
  (several models, several files) with the same settings compile once."""
  try:
    key = (fn, tuple(sorted(kwargs.items())), from_logits, mesh, r, n, n_inputs)
    hash(key)
  except TypeError:  # an unhashable hyperparameter (an array): no caching
    key = None
  if key is not None and key in _CACHE:
    return _CACHE[key]

  def block(*xs):  # one block of rows, (r, n)
    vals = fn(*xs, axis=-1, **kwargs)
    return vals, tuple(_bad_rows(x, from_logits) for x in xs)

  def local(*xs):  # this device's rows, (k * r, n)
    k = xs[0].shape[0] // r
    vals, bads = lax.map(lambda b: block(*b), tuple(x.reshape(k, r, n) for x in xs))
    return vals.reshape(-1), tuple(b.reshape(-1) for b in bads)

  # Across processes the results are replicated by the step itself (one all-gather that XLA
  # schedules with the computation) instead of gathered on the host after it.
  replicated = NamedSharding(mesh, P()) if jax.process_count() > 1 else None
  jitted = jax.jit(shard_map(local, mesh=mesh, in_specs=(sharding.spec,) * n_inputs,
                             out_specs=row_sharding.spec), out_shardings=replicated)
  if key is not None:
    if len(_CACHE) >= 64:
      _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = (block, jitted)
  return block, jitted


def batch_size_for_budget(budget_bytes: int, n: int, itemsizes: Sequence[int],
                          prefetch: int = 2) -> int:
  """The largest batch whose rows in flight fit in `budget_bytes` of host memory.

  In flight at once: `prefetch` queued batches, one being read, one on the device, plus the
  device's float32 temporaries (about four arrays of the batch's shape for the log-space
  divergences). On a CPU backend device buffers are host memory, so all of it counts.
  """
  per_row = n * (sum(itemsizes) * (prefetch + 2) + 4 * 4)
  return max(1, budget_bytes // max(per_row, 1))


def evaluate(
    divergence: str | Callable[..., jax.Array],
    p,
    q=None,
    *,
    batch_size: int = 1024,
    axis: int = -1,
    from_logits: bool = False,
    mesh: Mesh | None = None,
    out=None,
    reductions: Sequence[str] = ("mean",),
    quantiles: Sequence[float] = (0.01, 0.1, 0.5, 0.9, 0.99),
    bins: int = 20,
    nan_policy: str = "fail",
    progress: bool | None = None,
    prefetch: int = 2,
    names: tuple[str, str] = ("p", "q"),
    **divergence_kwargs,
) -> EvalResult:
  r"""Evaluates a divergence row by row over inputs of any size, on every device.

  The inputs are streamed in batches of `batch_size` rows through the jitted divergence,
  sharded over the batch on `mesh` (data parallel); a background thread reads and transfers
  the next `prefetch` batches while the devices work, so host memory stays bounded by about
  `batch_size x row bytes x (prefetch + 2)` whatever the input size. Memory-mapped inputs
  (``np.load(path, mmap_mode="r")``) are read page by page and the pages are released after
  use.

  Results are deterministic: the per-row values and the summary have the same bytes for any
  batch size and any number of devices. Reductions run on the host in float64 over fixed chunks
  of rows; quantiles are exact (``np.quantile``'s linear interpolation) and found from the
  stored per-row results in two passes (four for float64), without sorting them in memory.

  Multi-host: call ``jax.distributed.initialize()`` in every process, then ``evaluate`` with
  the same arguments and the default mesh (all devices of all processes; an explicit mesh must
  order its devices by process). Each process reads only the rows of each batch that its own
  devices hold (arrays and memmaps; iterators raise ``NotImplementedError``), and the compiled
  step replicates each batch's results to every process: every process gets the same summary
  (and the same error under ``nan_policy="fail"``), and the same `per_row` when `out` is None
  or an array. A path `out` is written by process 0 alone, whose `per_row` is that file; the
  other processes get None (they spool the results to a temporary file, removed at the end,
  only when quantiles or a histogram read them back).
  On CPU the cross-process gather needs gloo collectives,
  ``jax.config.update("jax_cpu_collectives_implementation", "gloo")`` before ``initialize``
  (the default in jax 0.10). Tested with 2 processes x 2 CPU devices on localhost: the same
  bytes as on one device (``tests/evaluate/test_multihost.py``).

  Args:
    divergence: a name of the core family (``"kl_divergence"``, ``"js_divergence"``,
      ``"entropy"``, ... see :data:`DIVERGENCES`) or a callable ``f(p, q, *, axis, **kw)``
      (``f(p, *, axis, **kw)`` with ``q=None``) that reduces `axis` and returns one value per
      row.
    p: first distribution: an array or ``np.memmap`` with the distribution on `axis`; or an
      iterator of ``(p_batch, q_batch)`` pairs (of ``p_batch`` alone when `q` is None), each of
      shape ``[rows, n]`` with the distribution on `axis`, in any batch sizes.
    q: second distribution, same shape as `p`; None for a function of one distribution (or
      when `p` is an iterator).
    batch_size: rows per step, rounded up to a multiple of the number of devices times the
      rows of one compiled block (:func:`block_rows`: 256 for n <= 4096, fewer above).
    axis: the distribution axis of the inputs.
    from_logits: the inputs are logits (passed to the divergence; for a callable only when
      True). With logits, -inf entries are legitimate (zero probability).
    mesh: the device mesh; the batch is split over all its axes. Default: every device.
    out: where the per-row results go: None (a NumPy array in memory), a path (a ``.npy``
      written to a temporary name and renamed on success, so an interrupted run leaves nothing
      under the final name), a C-contiguous array to fill, or False (not kept; quantiles and
      histograms then spool them to a temporary file).
    reductions: any of ``"mean"``, ``"sum"``, ``"std"``, ``"min"``, ``"max"``,
      ``"quantiles"``, ``"histogram"``. Counts are always reported.
    quantiles: the probabilities for ``"quantiles"``.
    bins: number of equal bins over [min, max] for ``"histogram"`` (infinities counted apart).
    nan_policy: rows whose inputs hold NaN or infinity: ``"fail"`` (raise
      :class:`NonFiniteInputError` with the count, after the pass; nothing is written),
      ``"skip"`` (NaN in `per_row`, left out of the reductions and counted), or
      ``"propagate"`` (computed as they are).
    progress: a tqdm progress bar; None: only when stderr is a terminal. Multi-host: process 0
      alone draws it.
    prefetch: number of batches read ahead.
    names: how `p` and `q` are called in error messages.
    **divergence_kwargs: hyperparameters of the divergence (``alpha``, ``beta``, ``base``, ...).

  Returns:
    An :class:`EvalResult` ``(per_row, summary, timing)``.

  Example:
    >>> import numpy as np
    >>> from jaxdiv.evaluate import evaluate
    >>> rng = np.random.default_rng(0)
    >>> p = rng.dirichlet(np.ones(5), size=1000).astype(np.float32)
    >>> q = rng.dirichlet(np.ones(5), size=1000).astype(np.float32)
    >>> res = evaluate("kl_divergence", p, q, batch_size=256)
    >>> res.per_row.shape
    (1000,)
    >>> bool(np.isclose(res.summary["mean"], res.per_row.astype(np.float64).mean()))
    True
  """
  if nan_policy not in ("fail", "skip", "propagate"):
    raise ValueError(f"nan_policy must be 'fail', 'skip' or 'propagate'; got {nan_policy!r}")
  reductions = tuple(reductions)
  unknown = set(reductions) - {"mean", "sum", "std", "min", "max", "quantiles", "histogram"}
  if unknown:
    raise ValueError(f"unknown reductions {sorted(unknown)}; valid: mean, sum, std, min, max,"
                     " quantiles, histogram")
  if int(batch_size) < 1:
    raise ValueError(f"batch_size must be positive; got {batch_size}")
  spec = resolve(divergence)
  kwargs = dict(divergence_kwargs)
  if spec.n_inputs:  # a named divergence: check its hyperparameters here, clearly
    extra = set(kwargs) - set(spec.params) - {"where"}
    if extra:
      raise TypeError(f"{spec.name} takes no parameter(s) {sorted(extra)}; it takes"
                      f" {list(spec.params) or 'none'}")
    missing = [k for k in spec.required if k not in kwargs]
    if missing:
      raise TypeError(f"{spec.name} needs the parameter(s) {missing}")
    kwargs["from_logits"] = from_logits
  elif from_logits:
    kwargs["from_logits"] = True
  stream = _is_stream(p)
  first = None
  if stream:
    first, p = _peek(iter(p))
    pair = isinstance(first, tuple) and len(first) == 2
    n_inputs = spec.n_inputs or (2 if pair else 1)
  else:
    n_inputs = spec.n_inputs or (1 if q is None else 2)

  # ---- the sources
  if stream:
    if q is not None:
      raise ValueError("with an iterator `p` yields (p_batch, q_batch) pairs; q must be None")
    if jax.process_count() > 1:
      raise NotImplementedError("iterator inputs are single-process; pass arrays or memmaps"
                                " (each process then reads its own rows)")
    sources = None
    n, dtypes, batch_shape, rows = None, None, None, None
  else:
    if n_inputs == 2 and q is None:
      raise ValueError(f"{spec.name} compares two distributions; q is missing")
    if n_inputs == 1 and q is not None:
      raise ValueError(f"{spec.name} is a function of one distribution; q must be None")
    arrays = [p] if n_inputs == 1 else [p, q]
    sources = [_Rows(a, axis, nm) for a, nm in zip(arrays, names)]
    for s in sources:
      _check_float(s.dtype, s.name)
    if n_inputs == 2 and sources[0].shape != sources[1].shape:
      raise _io.InputError(f"{names[0]} and {names[1]} have different shapes:"
                           f" {tuple(sources[0].shape)} and {tuple(sources[1].shape)}")
    n, rows = sources[0].n, sources[0].rows
    batch_shape = sources[0].batch_shape
    dtypes = [_device_dtype(s.dtype) for s in sources]

  mesh, sharding, row_sharding = _mesh_sharding(mesh)
  ndev = mesh.size
  started = time.perf_counter()
  it_items: Iterator | None = p if stream else None
  if stream:
    if first is None:
      n, dtypes = 1, [np.dtype(np.float32)] * n_inputs
    else:
      xs = _as_batch(first, n_inputs, axis, names, 0)
      n = xs[0].shape[1]
      dtypes = [_device_dtype(x.dtype) for x in xs]

  # Rows are computed in blocks of a fixed shape (R, n), R chosen from n alone, so that the
  # compiled reduction, and so every row's bits, are the same for any batch size and device
  # count (XLA picks a different reduction strategy for, e.g., 64 rows than for 128).
  r = block_rows(n)
  step_rows = ndev * r
  batch = int(math.ceil(int(batch_size) / step_rows) * step_rows)
  if rows is not None and rows < batch:  # small inputs: one batch, as small as allowed
    batch = max(step_rows, int(math.ceil(max(rows, 1) / step_rows) * step_rows))

  block, jitted = _compiled(spec.fn, kwargs, from_logits, mesh, sharding, row_sharding, r, n,
                            n_inputs)
  shapes = [jax.ShapeDtypeStruct((r, n), d) for d in dtypes]
  vals_struct, _ = jax.eval_shape(block, *shapes)
  if vals_struct.shape != (r,):
    raise ValueError(f"{spec.name} returned shape {vals_struct.shape} for a batch of shape"
                     f" {(r, n)}; it must reduce the distribution axis to one value a row")
  out_dtype = np.dtype(vals_struct.dtype)

  lo, hi = _local_range(sharding, batch, n)

  def host_batches() -> Iterator[tuple[list[np.ndarray], int]]:
    if sources is not None:
      for start in range(0, rows, batch):
        stop = min(rows, start + batch)
        a, b = min(start + lo, stop), min(start + hi, stop)
        parts = []
        for s, d in zip(sources, dtypes):
          r = s.read(a, b)
          filler = s.read(stop - 1, stop) if a == b else None
          parts.append(_pad(r, hi - lo, d, filler))
        yield parts, stop - start
      return
    pending: list[list[np.ndarray]] = [[] for _ in range(n_inputs)]
    have = 0
    for i, item in enumerate(it_items):
      xs = _as_batch(item, n_inputs, axis, names, i)
      if xs[0].shape[1] != n:
        raise _io.InputError(f"batch {i} has {xs[0].shape[1]} entries on the distribution"
                             f" axis; the first batch had {n}")
      for k, x in enumerate(xs):
        pending[k].append(x)
      have += xs[0].shape[0]
      while have >= batch:
        cat = [np.concatenate(pk) for pk in pending]
        yield [_pad(c[:batch], batch, d) for c, d in zip(cat, dtypes)], batch
        pending = [[c[batch:]] for c in cat]
        have -= batch
    if have:
      cat = [np.concatenate(pk) for pk in pending]
      yield [_pad(c, batch, d) for c, d in zip(cat, dtypes)], have

  def device_batches():
    for parts, valid in host_batches():
      arrays = [jax.make_array_from_process_local_data(sharding, x, (batch, n)) for x in parts]
      yield arrays, valid

  writes = jax.process_index() == 0
  sink = _Sink(out, batch_shape, rows, out_dtype, writer=writes,
               reread=bool({"quantiles", "histogram"} & set(reductions)))
  moments = _reduce.Moments()
  bad_counts = [0] * n_inputs
  bad_total, first_bad = 0, None
  done = 0
  bar = _progress(progress, rows) if jax.process_index() == 0 else None
  prefetcher = _Prefetcher(device_batches(), prefetch)
  try:
    pending = None

    def consume(item):
      nonlocal done, bad_total, first_bad
      (vals, bads), valid = item
      v = _fetch(vals)[:valid]
      bad_any = np.zeros(valid, bool)
      for k, b in enumerate(bads):
        bk = _fetch(b)[:valid]
        bad_counts[k] += int(bk.sum())
        bad_any |= bk
      nb = int(bad_any.sum())
      if nb:
        if first_bad is None:
          first_bad = done + int(np.argmax(bad_any))
        bad_total += nb
        if nan_policy == "skip":
          v = np.where(bad_any, np.array(np.nan, v.dtype), v)
      keep = ~bad_any if nan_policy == "skip" else None
      if nan_policy != "fail" or bad_total == 0:
        sink.write(v)
        moments.add(v, keep)
      done += valid
      if bar is not None:
        bar.update(valid)

    for arrays, valid in prefetcher:
      result = jitted(*arrays)  # dispatched asynchronously
      if pending is not None:
        consume(pending)
      pending = (result, valid)
    if pending is not None:
      consume(pending)
    moments.finish()
    if nan_policy == "fail" and bad_total:
      detail = " and ".join(f"{c} row{'s' if c != 1 else ''} of {nm}"
                            for c, nm in zip(bad_counts, names) if c)
      raise NonFiniteInputError(
          f"NaN or inf in {detail} ({bad_total} of {done} rows; first at row {first_bad});"
          " use nan_policy='skip' (--nan skip) to leave them out")
    summary = _summary(spec.name, moments, sink, done, bad_total, bad_counts, names,
                       nan_policy, reductions, quantiles, bins, out_dtype)
    per_row = sink.commit()
  except BaseException:
    sink.abort()
    raise
  finally:
    prefetcher.close()
    if bar is not None:
      bar.close()
  seconds = time.perf_counter() - started
  in_bytes = done * n * sum(d.itemsize for d in dtypes)
  timing = {"seconds": seconds, "rows": done, "rows_per_second": done / seconds if seconds else
            math.inf, "bytes_read": in_bytes, "bytes_per_second": in_bytes / seconds if seconds
            else math.inf, "batch_size": batch, "devices": ndev,
            "platform": mesh.devices.flat[0].platform, "processes": jax.process_count()}
  return EvalResult(per_row, summary, timing)


def _peek(it: Iterator):
  try:
    first = next(it)
  except StopIteration:
    return None, iter(())

  def chain():
    yield first
    yield from it

  return first, chain()


def _as_batch(item, n_inputs: int, axis: int, names, i: int) -> list[np.ndarray]:
  """One iterator item as `n_inputs` arrays of shape (rows, n), distribution axis last."""
  if n_inputs == 2:
    if not (isinstance(item, (tuple, list)) and len(item) == 2):
      raise _io.InputError(f"batch {i}: expected a (p_batch, q_batch) pair")
    xs = [np.asarray(x) for x in item]
  else:
    xs = [np.asarray(item[0] if isinstance(item, tuple) and len(item) == 1 else item)]
  for x, nm in zip(xs, names):
    _check_float(x.dtype, f"{nm} (batch {i})")
    if x.ndim == 0:
      raise _io.InputError(f"batch {i}: {nm} is a scalar")
  if n_inputs == 2 and xs[0].shape != xs[1].shape:
    raise _io.InputError(f"batch {i}: {names[0]} and {names[1]} have different shapes:"
                         f" {xs[0].shape} and {xs[1].shape}")
  out = []
  for x in xs:
    m = np.moveaxis(x, axis, -1)
    out.append(m.reshape(-1, m.shape[-1]))
  return out


def _progress(progress: bool | None, total: int | None):
  if progress is None:
    progress = sys.stderr.isatty()
  if not progress:
    return None
  try:
    from tqdm.auto import tqdm
  except ImportError:
    return None
  return tqdm(total=total, unit="row", unit_scale=True, dynamic_ncols=True, delay=0.5,
              file=sys.stderr, desc="jaxdiv")


def _summary(name, moments, sink, rows, bad_total, bad_counts, names, nan_policy, reductions,
             qs, bins, dtype) -> dict[str, Any]:
  s: dict[str, Any] = {
      "divergence": name,
      "rows": rows,
      "nonfinite_input_rows": {nm: c for nm, c in zip(names, bad_counts)},
      "skipped_rows": bad_total if nan_policy == "skip" else 0,
      "nan_results": moments.nan_results,
  }
  if "mean" in reductions:
    s["mean"] = moments.mean
  if "sum" in reductions:
    s["sum"] = moments.total
  if "std" in reductions:
    s["std"] = moments.std
  if "min" in reductions:
    s["min"] = moments.min if moments.count > moments.nan_results else math.nan
  if "max" in reductions:
    s["max"] = moments.max if moments.count > moments.nan_results else math.nan
  bits = 64 if dtype.itemsize == 8 else 32
  wide = np.float64 if bits == 64 else np.float32

  def clean():
    for c in sink.chunks():
      c = c.astype(wide, copy=False)
      yield c[~np.isnan(c)]

  if "quantiles" in reductions:
    n_ok = moments.count - moments.nan_results
    s["quantiles"] = {repr(float(k)): v for k, v in
                      _reduce.quantiles(clean, n_ok, qs, bits).items()}
  if "histogram" in reductions:
    finite_lo, finite_hi = _finite_range(clean)
    s["histogram"] = _reduce.histogram(clean, finite_lo, finite_hi, bins)
  return s


def _finite_range(chunks) -> tuple[float, float]:
  lo, hi = math.inf, -math.inf
  for c in chunks():
    c = c[np.isfinite(c)]
    if c.size:
      lo, hi = min(lo, float(c.min())), max(hi, float(c.max()))
  return lo, hi
