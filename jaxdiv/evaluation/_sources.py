"""Where rows come from: arrays and memmaps read by row range, or iterators of batches, both cut
into host batches of a fixed number of rows (the distribution axis last)."""

from __future__ import annotations

import functools
import os
import queue
import threading
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence

import jax
import numpy as np

from jaxdiv.evaluation import _io

_ALIGN = 64  # XLA:CPU takes a host buffer as it is (no copy) only at this alignment


def empty(shape, dtype) -> np.ndarray:
  """An uninitialised C-contiguous array whose data starts on a 64-byte boundary, so that on a
  CPU device `jax.device_put` uses it in place instead of copying it (NumPy's large arrays
  start 16 bytes past a page)."""
  dtype = np.dtype(dtype)
  nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  raw = np.empty(nbytes + _ALIGN, np.uint8)
  start = -raw.ctypes.data % _ALIGN
  return raw[start:start + nbytes].view(dtype).reshape(shape)


def is_stream(x) -> bool:
  """Whether `x` is an iterator of batches rather than an array."""
  return (isinstance(x, Iterator)
          or (isinstance(x, Iterable)
              and not isinstance(x, (np.ndarray, list, tuple, str, bytes, _io.ZipStream))
              and not hasattr(x, "__array__")))


def check_float(dtype, name: str):
  if not (np.issubdtype(dtype, np.floating) or dtype.name == "bfloat16"
          or dtype.name.startswith("float8")):
    raise TypeError(f"{name} has dtype {dtype}; expected a floating-point array of"
                    " probabilities or logits")


def device_dtype(dtype: np.dtype) -> np.dtype:
  """The dtype an input is computed in: its own, except float64 without jax_enable_x64
  (float32, converted on the host without a warning) and the float8 types, which are storage
  formats the divergences do not compute in (their arithmetic with a float32 constant raised
  at trace time): float32, exactly."""
  if np.dtype(dtype).name.startswith("float8"):
    return np.dtype(np.float32)
  return np.dtype(jax.dtypes.canonicalize_dtype(dtype))


def input_file(x) -> str | None:
  """The file an input array is mapped from (a memmap, a compressed .npz member), if any."""
  if isinstance(x, _io.ZipStream):
    return x.path
  name = getattr(x, "filename", None)
  return os.fspath(name) if isinstance(name, (str, os.PathLike)) else None


class Rows:
  """Rows `[start, stop)` of an array seen as `(rows, n)`: the distribution axis moved last and
  the batch axes flattened, read without loading the array (memmaps stay memmaps)."""

  def __init__(self, x, axis: int, name: str):
    self.name = name
    self.file = input_file(x)
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
    self._release = _io.PageReleaser(self._flat) if self._flat is not None else None
    self._read = None

  def can_view(self, dtype) -> bool:
    """Whether :meth:`view` applies: rows in memory (or memory-mapped) in `dtype`, the
    distribution axis last."""
    return self._flat is not None and self._flat.dtype == dtype

  def in_place(self, start: int) -> bool:
    """Whether the rows from `start` on are one C-contiguous block starting on the boundary at
    which a CPU device takes host memory as it is (no copy); only for :meth:`view`'s
    sources."""
    flat = self._flat
    if flat.shape[0] > 1 and flat.strides[0] != flat.shape[1] * flat.itemsize:
      return False
    if flat.shape[1] > 1 and flat.strides[1] != flat.itemsize:
      return False
    return (flat.ctypes.data + start * flat.strides[0]) % _ALIGN == 0

  def view(self, start: int, stop: int) -> np.ndarray:
    """Rows `[start, stop)` without a copy (a memmap's pages are read when the device reads
    them); :meth:`done` releases them. A memmap's pages of these rows and of the next
    `stop - start` are asked for (`MADV_WILLNEED`), so that a disk reads the next rows while
    the device computes these."""
    self._release.willneed(self._flat[start:stop + (stop - start)])
    return self._flat[start:stop]

  def done(self, rows: np.ndarray) -> None:
    """Drops the pages of rows taken with :meth:`view` once the device has read them."""
    self._release(rows)

  def read_into(self, start: int, stop: int, out: np.ndarray) -> None:
    """Rows `[start, stop)` written into `out` (shape `(stop - start, n)`, any float dtype)."""
    if self._read is not None:
      out[...] = self._read(start, stop)
    elif self._flat is not None:
      view = self._flat[start:stop]
      np.copyto(out, view, casting="unsafe")  # the actual disk read for a memmap
      self._release(view)
    else:
      idx = np.unravel_index(np.arange(start, stop), self.batch_shape)
      out[...] = self._moved[idx]


class BufferPool:
  """Host buffers for the batches in flight, reused: a fresh 20 MiB array costs its page faults
  on every batch (measured: 3.3 GB/s for reading rows into fresh arrays, 6.5 GB/s into reused
  ones, on a 2-core CPU). A batch's buffers go back to the pool once its results are on the
  host, when the device has finished reading them (on a CPU the device arrays alias them)."""

  def __init__(self, shapes, dtypes, count: int):
    self._free: queue.Queue = queue.Queue()
    self._closed = threading.Event()
    self._specs, self._left = (tuple(shapes), tuple(dtypes)), count

  def take(self) -> list[np.ndarray] | None:
    """A set of buffers (one per input); waits for one to come back; None once closed."""
    while not self._closed.is_set():
      try:
        return self._free.get_nowait()
      except queue.Empty:
        pass
      if self._left:  # created on demand: a short run allocates only what it uses
        self._left -= 1
        return [empty(sh, d) for sh, d in zip(*self._specs)]
      try:
        return self._free.get(timeout=0.05)
      except queue.Empty:
        continue
    return None

  def give(self, buffers) -> None:
    self._free.put(buffers)

  def close(self) -> None:
    self._closed.set()


def pad(rows: np.ndarray, size: int, dtype) -> np.ndarray:
  """`rows` as a `(size, n)` C-contiguous array of `dtype`, missing rows copied from the last
  one: `rows` itself when it already is one (a full batch is not copied a second time)."""
  if (rows.ndim == 2 and rows.shape[0] == size and rows.dtype == dtype
      and rows.flags.c_contiguous):
    return rows
  out = empty((size, rows.shape[1]), dtype)
  k = rows.shape[0]
  out[:k] = rows
  if k < size:
    out[k:] = rows[-1]
  return out


def peek(it: Iterator):
  """The first item of `it` and an iterator over all of it; `(None, empty)` if it is empty."""
  try:
    first = next(it)
  except StopIteration:
    return None, iter(())

  def chain():
    yield first
    yield from it

  return first, chain()


def as_batch(item, n_inputs: int, axis: int, names, i: int) -> list[np.ndarray]:
  """One iterator item as `n_inputs` arrays of shape (rows, n), distribution axis last."""
  if n_inputs == 2:
    if not (isinstance(item, (tuple, list)) and len(item) == 2):
      raise _io.InputError(f"batch {i}: expected a (p_batch, q_batch) pair")
    xs = [np.asarray(x) for x in item]
  else:
    xs = [np.asarray(item[0] if isinstance(item, tuple) and len(item) == 1 else item)]
  for x, nm in zip(xs, names):
    check_float(x.dtype, f"{nm} (batch {i})")
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


def array_batches(sources: Sequence[Rows], dtypes, pool: BufferPool, batch: int, block: int,
                  lo: int, hi: int) -> Iterator[tuple[list[np.ndarray], int, Callable]]:
  """`(parts, valid, done)` per global batch of `batch` rows: each source's rows of the batch
  that this process holds, block by block (rows `[lo, hi)` of each global block of `block`
  rows), padded with the batch's last row; the number of real rows in the batch; and what to
  call once the device has read them.

  A whole batch held by one process in the device's dtype is a view of the source, not a copy
  (on a CPU the device computes on it in place: 1.6 -> 2.1 GB/s for KL from logits read from
  a memory-mapped .npy); the others are copied into a buffer of `pool`. Yields nothing more
  once `pool` is closed."""
  rows, local = sources[0].rows, hi - lo
  whole = _views_apply(sources, dtypes, block, lo, hi)
  for start in range(0, rows, batch):
    stop = min(rows, start + batch)
    # Views only where the device can take them as they are: an unaligned array (NumPy's own
    # large arrays start 16 bytes past a page) it copies itself, at 2.2 GB/s against 11 for
    # the copy into a pooled buffer below (16 MiB, 2-core CPU).
    if whole and stop - start == batch and all(s.in_place(start) for s in sources):
      parts = [s.view(start, stop) for s in sources]
      yield parts, batch, functools.partial(_views_done, sources, parts)
      continue
    buffers = pool.take()
    if buffers is None:
      return
    for s, buf in zip(sources, buffers):
      if local == block:  # this process holds whole blocks: one read
        s.read_into(start, stop, buf[:stop - start])
        filled = [(stop - start, batch)]
      else:
        filled = []
        for j, first in enumerate(range(start, start + batch, block)):
          a, b = min(first + lo, stop), min(first + hi, stop)
          s.read_into(a, b, buf[j * local:j * local + b - a])
          filled.append((j * local + b - a, (j + 1) * local))
      for k, end in filled:
        if k < end:  # padding: the batch's last real row (this process may hold none)
          s.read_into(stop - 1, stop, buf[k:k + 1])
          buf[k + 1:end] = buf[k]
    yield buffers, stop - start, functools.partial(pool.give, buffers)


def zero_copy(sources: Sequence[Rows], dtypes, batch: int, block: int, lo: int,
              hi: int) -> bool:
  """Whether :func:`array_batches` gives every whole batch as views of the sources, with
  nothing to read ahead of the device (a memmap's pages are read as the device reads them;
  only a last, partial batch is copied). A reading thread then only costs: 12.3 ms against
  13.7 ms for KL from logits on 2 x 48 MiB of memory-mapped .npy files (2-core CPU)."""
  if not _views_apply(sources, dtypes, block, lo, hi):
    return False
  return all(s.in_place(0) and batch * s.n * np.dtype(d).itemsize % _ALIGN == 0
             for s, d in zip(sources, dtypes))


def _views_apply(sources: Sequence[Rows], dtypes, block: int, lo: int, hi: int) -> bool:
  """Whether :meth:`Rows.view` applies to every source: this process holds whole blocks, and
  the rows are in the device's dtype with the distribution axis last."""
  return hi - lo == block and all(s.can_view(d) for s, d in zip(sources, dtypes))


def _views_done(sources: Sequence[Rows], parts: Sequence[np.ndarray]) -> None:
  for s, rows in zip(sources, parts):
    s.done(rows)


def stream_batches(items: Iterable, n_inputs: int, axis: int, names, n: int, dtypes,
                   batch: int) -> Iterator[tuple[list[np.ndarray], int]]:
  """`(parts, valid)` per batch of `batch` rows regrouped from an iterator's batches."""
  pending: list[list[np.ndarray]] = [[] for _ in range(n_inputs)]
  have = 0
  for i, item in enumerate(items):
    xs = as_batch(item, n_inputs, axis, names, i)
    if xs[0].shape[1] != n:
      raise _io.InputError(f"batch {i} has {xs[0].shape[1]} entries on the distribution"
                           f" axis; the first batch had {n}")
    for k, x in enumerate(xs):
      pending[k].append(x)
    have += xs[0].shape[0]
    while have >= batch:
      cat = [np.concatenate(pk) for pk in pending]
      yield [pad(c[:batch], batch, d) for c, d in zip(cat, dtypes)], batch
      pending = [[c[batch:]] for c in cat]
      have -= batch
  if have:
    cat = [np.concatenate(pk) for pk in pending]
    yield [pad(c, batch, d) for c, d in zip(cat, dtypes)], have
