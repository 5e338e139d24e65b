"""Streaming, data-parallel evaluation of a divergence over inputs larger than memory: the loop.

The pipeline, per batch of `batch_size` rows (the distribution axis moved last):

    host rows (a view of an array or memmap, else read into a reused buffer and padded)
        -> device_put sharded over the mesh, one global block of rows at a time
        [background thread, queue of depth `prefetch`: reads overlap device work; none
         where every batch is a view the device takes in place, `_sources.zero_copy`]
    -> jitted divergence on every device, one call per block (one compiled shape)
    -> per-row results back to the host, in order -> output file / array, running reductions
    [rows with NaN or inf inputs: flagged by a second pass over the blocks whose values are
     not all finite, for the core divergences, which are never finite on such rows; by the
     step itself for the others]

Determinism: rows are computed independently of each other (the divergence reduces only the
distribution axis), the last batch is padded to whole blocks so that one shape is compiled,
and every cross-row reduction runs on the host in float64 over fixed chunks (:mod:`._reduce`). The
bytes of the per-row results and of the summary therefore do not depend on the batch size or
on the number of devices (tested on 1, 2 and 8 CPU devices, and on 2 processes x 2 devices).

The parts live beside this module, one concern each: `_registry` (the divergences by name),
`_sources` (rows from arrays, memmaps and iterators), `_prefetch` (the reading thread),
`_compile` (mesh, sharding, the cached jitted step), `_sink` (where per-row results go),
`_validate` (probabilities that are not, runs of only NaN), `_summary` (the per-batch tally
and the reductions); `jaxdiv._interrupt` turns Ctrl-C into an event.
"""

from __future__ import annotations

import math
import operator
import os
import sys
import time
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh

from jaxdiv import _interrupt
from jaxdiv.evaluation import _compile
from jaxdiv.evaluation import _io
from jaxdiv.evaluation import _sources
from jaxdiv.evaluation._prefetch import Prefetcher
from jaxdiv.evaluation._registry import DivergenceSpec
from jaxdiv.evaluation._registry import resolve
from jaxdiv.evaluation._sink import Sink
from jaxdiv.evaluation._summary import Tally
from jaxdiv.evaluation._validate import Validator

_REDUCTIONS = ("mean", "sum", "std", "min", "max", "quantiles", "histogram")


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


def _arguments(divergence, from_logits, batch_size, reductions, nan_policy, progress,
               divergence_kwargs) -> tuple[DivergenceSpec, dict, tuple[str, ...]]:
  """Checks the arguments that need no data; returns the spec, the divergence's keyword
  arguments and the reductions."""
  if nan_policy not in ("fail", "skip", "propagate"):
    raise ValueError(f"nan_policy must be 'fail', 'skip' or 'propagate'; got {nan_policy!r}")
  reductions = tuple(reductions)
  unknown = set(reductions) - set(_REDUCTIONS)
  if unknown:
    raise ValueError(f"unknown reductions {sorted(unknown)}; valid: {', '.join(_REDUCTIONS)}")
  if int(batch_size) < 1:
    raise ValueError(f"batch_size must be positive; got {batch_size}")
  if progress:
    try:
      import tqdm  # noqa: F401
    except ImportError:
      raise ImportError("progress=True needs tqdm: pip install tqdm") from None
  spec = resolve(divergence)
  kwargs = dict(divergence_kwargs)
  if spec.n_inputs:  # a named divergence: check its hyperparameters here, clearly
    extra, missing = spec.unknown_and_missing(set(kwargs) - {"where"})
    if extra:
      raise TypeError(f"{spec.name} takes no parameter(s) {extra}; it takes"
                      f" {list(spec.params) or 'none'}")
    if missing:
      raise TypeError(f"{spec.name} needs the parameter(s) {missing}")
    kwargs["from_logits"] = from_logits
  elif from_logits:
    kwargs["from_logits"] = True
  return spec, kwargs, reductions


# The most histogram bins: their counts and edges go into the summary (and its JSON).
MAX_BINS = 1 << 20


def _summary_arguments(quantiles, bins, names, reductions) -> tuple[tuple, int, tuple]:
  """Checks, before any work, what the summary at the end of the run needs (a bad value there
  lost the whole run): the quantiles' probabilities in [0, 1] (none: no quantiles) and a whole
  number of bins in [1, MAX_BINS] where those reductions are asked for, two different names."""
  qs = ()
  if "quantiles" in reductions:
    def bad():
      return TypeError(f"quantiles must be an iterable of probabilities; got {quantiles!r}")

    if isinstance(quantiles, (str, bytes)):
      raise bad()
    try:
      items = tuple(quantiles)
    except TypeError:
      raise bad() from None
    if any(isinstance(q, (str, bytes, bool, np.bool_)) for q in items):
      raise bad()
    try:
      qs = tuple(float(q) for q in items)
    except (TypeError, ValueError):
      raise bad() from None
    if any(not 0 <= q <= 1 for q in qs):  # NaN included
      raise ValueError(f"quantiles must lie in [0, 1]; got {list(items)}")
  if "histogram" in reductions:
    if isinstance(bins, (bool, np.bool_)):
      raise TypeError(f"bins must be a whole number; got {bins!r}")
    try:
      bins = operator.index(bins)
    except TypeError:
      raise TypeError(f"bins must be a whole number; got {bins!r}") from None
    if not 1 <= bins <= MAX_BINS:
      raise ValueError(f"bins must lie in [1, {MAX_BINS}]; got {bins}")
  names = tuple(str(n) for n in names)
  if len(names) != 2 or names[0] == names[1]:
    raise ValueError(f"names must be two different names; got {names!r}")
  return qs, bins, names


def _check_out(out, sources, names):
  """Refuses, before any work, an `out` path that cannot be written or that is an input."""
  path = _io.check_destination(out, "out")
  hit = _io.overwritten_input(path, ((name, s.file) for s, name in zip(sources or (), names)))
  if hit is not None:
    name, file = hit
    raise _io.InputError(
        f"out={path!r} is the input {name} ({file}): it would be overwritten; choose"
        " another path", f"--out {path} is the input {name}: it would be overwritten;"
        " choose another path")


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
    validate: bool = True,
    max_block_rows: int | None = None,
    **divergence_kwargs,
) -> EvalResult:
  r"""Evaluates a divergence row by row over inputs of any size, on every device.

  The inputs are streamed in batches of `batch_size` rows through the jitted divergence,
  sharded over the batch on `mesh` (data parallel); a background thread reads and transfers
  the next `prefetch` batches while the devices work, so host memory stays bounded by about
  `batch_size x row bytes x (prefetch + 3)` whatever the input size. Memory-mapped inputs
  (``np.load(path, mmap_mode="r")``) are read page by page and the pages are released after
  use (except from a copy-on-write memmap, ``mmap_mode="c"``, whose edited pages would be
  lost). Where the device can read every batch in place (one process; on a CPU, inputs in the
  device's dtype whose rows are contiguous, start on a 64-byte boundary and make batches of a
  multiple of 64 bytes: memory-mapped .npy files, say) there is nothing to read ahead and no
  thread, and the kernel is asked to read the next batch's pages ahead instead.

  Results are deterministic: the per-row values and the summary have the same bytes for any
  batch size and any number of devices (for the same `max_block_rows`, which can set the
  compiled block: :func:`block_rows`). Reductions run on the host in float64 over fixed chunks
  of rows; quantiles are exact (``np.quantile``'s linear interpolation) and found from the
  stored per-row results in two passes (four for float64), without sorting them in memory.

  Multi-host: call ``jax.distributed.initialize()`` in every process, then ``evaluate`` with
  the same arguments and the default mesh (all devices of all processes; an explicit mesh must
  order its devices by process). Each process reads only the rows of each batch that its own
  devices hold (arrays and memmaps; iterators raise ``NotImplementedError``), and the compiled
  step replicates each batch's results to every process: every process gets the same summary
  (and the same error under ``nan_policy="fail"``), and the same `per_row` when `out` is None
  or an array. A path `out` is written by process 0 alone, whose `per_row` is that file; the
  other processes get None (they hold the results only when quantiles or a histogram read
  them back: in memory up to 4 MiB, else in a temporary file removed at the end).
  On CPU the cross-process gather needs gloo collectives,
  ``jax.config.update("jax_cpu_collectives_implementation", "gloo")`` before ``initialize``
  (the default in jax 0.10). Tested with 2 processes x 2 CPU devices on localhost: the same
  bytes as on one device (``tests/evaluation/test_multihost.py``).

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
    batch_size: rows read per step, rounded up to a multiple of the number of devices times
      the rows of one compiled block (:func:`block_rows`: 4096 rows up to n = 1024, about
      2**20 entries above), which the devices compute one call at a time.
    axis: the distribution axis of the inputs.
    from_logits: the inputs are logits (passed to the divergence; for a callable only when
      True). With logits, -inf entries are legitimate (zero probability).
    mesh: the device mesh; the batch is split over all its axes. Default: every device.
    out: where the per-row results go: None (a NumPy array in memory), a path (a ``.npy``
      written to a temporary name and renamed on success, so an interrupted run leaves nothing
      under the final name), a C-contiguous array to fill, or False (not kept; quantiles and
      histograms then read them back from memory up to 4 MiB, else from a temporary file).
    reductions: any of ``"mean"``, ``"sum"``, ``"std"``, ``"min"``, ``"max"``,
      ``"quantiles"``, ``"histogram"``. Counts are always reported.
    quantiles: the probabilities for ``"quantiles"``, in [0, 1] (an empty sequence: none).
    bins: number of equal bins over [min, max] for ``"histogram"`` (infinities counted apart),
      1 to :data:`MAX_BINS`.
    nan_policy: rows whose inputs hold NaN or infinity: ``"fail"`` (raise
      :class:`NonFiniteInputError` with the count, after the pass; nothing is written),
      ``"skip"`` (NaN in `per_row`, left out of the reductions and counted), or
      ``"propagate"`` (computed as they are).
    progress: a tqdm progress bar (True needs tqdm installed); None: only when stderr is a
      terminal and tqdm is installed. Multi-host: process 0 alone draws it.
    prefetch: number of batches read ahead (where batches are copied: see above), 0 or more.
    names: how `p` and `q` are called in error messages and in the summary's counts (two
      different names).
    validate: check that inputs given as probabilities are probabilities: for a named
      divergence without `from_logits`, a row with a negative entry or a sum farther than 0.1
      from 1 (for the ``binary_*`` divergences, an entry outside [0, 1]) raises
      :class:`NotProbabilitiesError` at the first batch that holds one (logits passed without
      ``from_logits=True`` would otherwise give NaN or nonsense for every row); and a run whose
      every result is NaN raises :class:`AllNaNError` before anything is written. The row
      statistics it needs cost about a fifth more time on a CPU for probabilities (nothing with
      `from_logits`). False evaluates whatever it is given.
    max_block_rows: None, or a bound on the rows of the compiled block (:func:`block_rows`):
      below 4096, distributions of up to 1024 entries are computed in blocks of about 2**20
      entries instead of 4096 rows, about half as fast on a CPU. `jaxdiv eval` passes the rows
      that its memory budget holds. Each row's bits depend on the block, so runs compared bit
      for bit should use the same value.
    **divergence_kwargs: hyperparameters of the divergence (``alpha``, ``beta``, ``base``, ...).

  Returns:
    An :class:`EvalResult` ``(per_row, summary, timing)``.

  Raises:
    InputError: bad files or data (its subclasses :class:`NonFiniteInputError`,
      :class:`NotProbabilitiesError`, :class:`AllNaNError`); `out` names an input file (the
      same file through any symbolic or hard link), a directory, or a place that cannot be
      written. All are raised before anything is written under `out`.
    KeyboardInterrupt: Ctrl-C; it is caught by a handler that only sets a flag, checked
      between batches, so the run stops at the next batch and leaves no output and no
      temporary file (in the main thread, when the caller has not installed its own SIGINT
      handler; a second Ctrl-C raises at once).

  Example:
    >>> import numpy as np
    >>> from jaxdiv.evaluation import evaluate
    >>> rng = np.random.default_rng(0)
    >>> p = rng.dirichlet(np.ones(5), size=1000).astype(np.float32)
    >>> q = rng.dirichlet(np.ones(5), size=1000).astype(np.float32)
    >>> res = evaluate("kl_divergence", p, q, batch_size=256)
    >>> res.per_row.shape
    (1000,)
    >>> bool(np.isclose(res.summary["mean"], res.per_row.astype(np.float64).mean()))
    True
  """

  spec, kwargs, reductions = _arguments(divergence, from_logits, batch_size, reductions,
                                        nan_policy, progress, divergence_kwargs)
  quantiles, bins, names = _summary_arguments(quantiles, bins, names, reductions)
  if max_block_rows is not None and int(max_block_rows) < 1:
    raise ValueError(f"max_block_rows must be positive or None; got {max_block_rows}")
  try:
    ok = not isinstance(prefetch, bool) and operator.index(prefetch) >= 0
  except TypeError:
    ok = False
  if not ok:
    raise ValueError(f"prefetch must be a whole number, 0 or more; got {prefetch!r}")
  with _interrupt.handled() as interrupts:
    return _run(spec, kwargs, p, q, batch_size=int(batch_size), axis=axis,
                from_logits=from_logits, mesh=mesh, out=out, reductions=reductions,
                quantiles=quantiles, bins=bins, nan_policy=nan_policy, progress=progress,
                prefetch=prefetch, names=names, check=Validator(spec, from_logits, validate,
                                                                kwargs, names),
                interrupts=interrupts, max_block_rows=max_block_rows)


class _Inputs(NamedTuple):
  sources: list[_sources.Rows] | None  # arrays and memmaps; None for an iterator
  items: Iterator | None  # the iterator's batches
  n_inputs: int
  n: int
  dtypes: list[np.dtype]
  rows: int | None  # None for an iterator
  batch_shape: tuple[int, ...] | None


def _inputs(spec: DivergenceSpec, p, q, axis: int, names) -> _Inputs:
  """The row sources of `p` (and `q`), their width, dtypes and row count."""
  if not _sources.is_stream(p):
    n_inputs = spec.n_inputs or (1 if q is None else 2)
    if n_inputs == 2 and q is None:
      raise ValueError(f"{spec.name} compares two distributions; q is missing")
    if n_inputs == 1 and q is not None:
      raise ValueError(f"{spec.name} is a function of one distribution; q must be None")
    sources = [_sources.Rows(a, axis, nm) for a, nm in zip([p, q][:n_inputs], names)]
    for s in sources:
      _sources.check_float(s.dtype, s.name)
    if n_inputs == 2 and sources[0].shape != sources[1].shape:
      raise _io.InputError(f"{names[0]} and {names[1]} have different shapes:"
                           f" {tuple(sources[0].shape)} and {tuple(sources[1].shape)}")
    return _Inputs(sources, None, n_inputs, sources[0].n,
                   [_sources.device_dtype(s.dtype) for s in sources], sources[0].rows,
                   sources[0].batch_shape)
  if q is not None:
    raise ValueError("with an iterator `p` yields (p_batch, q_batch) pairs; q must be None")
  if jax.process_count() > 1:
    raise NotImplementedError("iterator inputs are single-process; pass arrays or memmaps"
                              " (each process then reads its own rows)")
  first, items = _sources.peek(iter(p))
  pair = isinstance(first, tuple) and len(first) == 2
  n_inputs = spec.n_inputs or (2 if pair else 1)
  if first is None:
    return _Inputs(None, items, n_inputs, 1, [np.dtype(np.float32)] * n_inputs, None, None)
  xs = _sources.as_batch(first, n_inputs, axis, names, 0)
  return _Inputs(None, items, n_inputs, xs[0].shape[1],
                 [_sources.device_dtype(x.dtype) for x in xs], None, None)


def _device_batches(ins: _Inputs, sharding, batch: int, block: int, lo: int, hi: int, pool,
                    axis: int, names) -> Iterator:
  """`(blocks, valid, done)` per batch: this process's rows put on its devices, one global
  array per input and global block of `block` rows; the number of real rows (the last batch
  is padded); and what to call once the batch's results are on the host (its host rows are
  then free: a pooled buffer goes back to `pool`, a memmap's pages are released). This
  process holds rows `[lo, hi)` of each global block."""
  if ins.sources is not None:
    host = _sources.array_batches(ins.sources, ins.dtypes, pool, batch, block, lo, hi)
  else:
    host = ((parts, valid, _nothing) for parts, valid in _sources.stream_batches(
        ins.items, ins.n_inputs, axis, names, ins.n, ins.dtypes, batch))
  local = hi - lo
  for parts, valid, done in host:
    # Only the global blocks that hold real rows (the last batch is padded to a whole batch):
    # 12288 rows in batches of 8192 computed 16384 rows.
    used = -(-valid // block) * local
    blocks = [tuple(jax.make_array_from_process_local_data(
        sharding, x[i:i + local], (block, ins.n)) for x in parts)
        for i in range(0, used, local)]
    yield blocks, valid, done


def _nothing() -> None:
  pass


def _run(spec, kwargs, p, q, *, batch_size, axis, from_logits, mesh, out, reductions,
         quantiles, bins, nan_policy, progress, prefetch, names, check: Validator,
         max_block_rows: int | None = None,
         interrupts: _interrupt.Interrupts) -> EvalResult:
  """The evaluation loop: read ahead, compute, consume in order, summarize, commit."""
  ins = _inputs(spec, p, q, axis, names)
  writes = jax.process_index() == 0
  if isinstance(out, (str, os.PathLike)) and writes:
    _check_out(out, ins.sources, names)
  mesh, sharding, row_sharding = _compile.mesh_sharding(mesh)
  started = time.perf_counter()
  batch, block, work, out_dtype = _compile.step(
      spec.name, spec.fn, kwargs, from_logits, mesh, sharding, row_sharding, ins.n,
      ins.n_inputs, ins.dtypes, ins.rows, batch_size, check.kind(),
      spec.nonfinite_on_bad_rows(kwargs), max_block_rows)
  sink = Sink(out, ins.batch_shape, ins.rows, out_dtype, writer=writes,
              reread=bool({"quantiles", "histogram"} & set(reductions)))
  bar = _progress(progress, ins.rows) if writes else None
  tally = Tally(sink, nan_policy, ins.n_inputs, check, bar)
  lo, hi = _compile.local_range(sharding, block, ins.n)  # this process's rows of a block
  pool = _sources.BufferPool([(batch // block * (hi - lo), ins.n)] * ins.n_inputs, ins.dtypes,
                             prefetch + 3)
  ahead = prefetch
  if ins.sources is not None and _sources.zero_copy(ins.sources, ins.dtypes, batch, block, lo,
                                                    hi):
    ahead = 0
  prefetcher = Prefetcher(
      _device_batches(ins, sharding, batch, block, lo, hi, pool, axis, names), ahead)
  try:
    pending = None
    for blocks, valid, done in prefetcher:
      interrupts.check()  # Ctrl-C stops between batches
      # Dispatched asynchronously: the previous batch is collected and the next one read
      # meanwhile. One call per block: a loop over blocks inside one call is slower on a CPU.
      results = [work.call(*arrays) for arrays in blocks]
      if pending is not None:
        _collect(tally, work, *pending)
      pending = (results, blocks, valid, done)
    if pending is not None:
      _collect(tally, work, *pending)
    tally.finish(names)
    interrupts.check()
    summary = tally.summary(spec.name, names, reductions, quantiles, bins, out_dtype)
    interrupts.check()  # the last moment to stop: nothing is under its final name yet
    per_row = sink.commit()
  except BaseException:
    sink.abort()
    raise
  finally:
    pool.close()
    prefetcher.close()
    if bar is not None:
      bar.close()
  seconds = time.perf_counter() - started
  # The bytes of the inputs as stored (float64 computed in float32, float8 in float32).
  stored = [src.dtype for src in ins.sources] if ins.sources is not None else ins.dtypes
  in_bytes = tally.done * ins.n * sum(np.dtype(d).itemsize for d in stored)
  timing = {"seconds": seconds, "rows": tally.done,
            "rows_per_second": tally.done / seconds if seconds else math.inf,
            "bytes_read": in_bytes, "bytes_per_second": in_bytes / seconds if seconds
            else math.inf, "batch_size": batch, "block_rows": block // mesh.size,
            "devices": mesh.size,
            "platform": mesh.devices.flat[0].platform, "processes": jax.process_count()}
  return EvalResult(per_row, summary, timing)


def _collect(tally: Tally, work: _compile.Step, results, blocks, valid: int, done) -> None:
  """One batch's per-block results to the tally, with their bad-row flags where the step left
  them to :meth:`Step.flags`; then its host rows are let go (the results are on the host, so
  the device has finished reading them)."""
  if work.bad_rows is not None:
    filled = []
    for (values, _, stats), arrays in zip(results, blocks):
      values = _compile.fetch(values)
      filled.append((values, work.flags(values, arrays), stats))
    results = filled
  tally.add(results, valid)
  done()


def _progress(progress: bool | None, total: int | None):
  if progress is None:
    progress = sys.stderr.isatty()
  if not progress:
    return None
  try:
    from tqdm.auto import tqdm
  except ImportError:  # progress=True was checked on entry: this is the automatic choice
    return None
  return tqdm(total=total, unit="row", unit_scale=True, dynamic_ncols=True, delay=0.5,
              file=sys.stderr, desc="jaxdiv")
