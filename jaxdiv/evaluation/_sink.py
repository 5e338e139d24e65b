"""Where the per-row results go, in order: memory, a caller's array, or an atomic .npy file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import numpy as np

from jaxdiv.evaluation import _io
from jaxdiv.evaluation import _reduce

# Results not kept (`out=False`, or a path `out` on a process that does not write it) but read
# again by the summary are held in memory up to this size (a million float32 rows), in a
# temporary file above it: the file's creation, writes, read-back and removal took about
# 0.6 ms of a 19 ms `jaxdiv eval` on 12288 rows.
SPOOL_IN_MEMORY = 1 << 22


class Sink:
  """Per-row results in order; read back in chunks by the summary, committed at the end."""

  def __init__(self, out, batch_shape, rows: int | None, dtype, writer: bool,
               reread: bool = True):
    """`writer`: whether this process writes a path `out`; `reread`: whether the summary reads
    the results back (quantiles, histogram): without it, results kept nowhere are dropped."""
    self.dtype, self.batch_shape, self.rows = np.dtype(dtype), batch_shape, rows
    self.pos = 0
    self._chunks: list[np.ndarray] | None = None
    self._writer: _io.AtomicNpyWriter | None = None
    self._array = None
    self._user = None
    self._path = None
    self._dropped = False  # results held only for the summary's second look, not returned
    final = tuple(batch_shape) if rows is not None else None
    if isinstance(out, (str, os.PathLike)) and writer:
      self._path = os.fspath(out)
      self._writer = _io.AtomicNpyWriter(out, dtype, final)
    elif isinstance(out, np.ndarray):
      if rows is not None and out.size != rows:
        raise ValueError(f"out has shape {out.shape}; the per-row results have shape"
                         f" {tuple(batch_shape)}")
      if not np.can_cast(self.dtype, out.dtype, "safe"):
        # The summary's quantiles and histogram read the results back from `out`: in a
        # narrower dtype they were those of other values than the moments'.
        raise TypeError(f"out has dtype {out.dtype}, which cannot hold the per-row results"
                        f" ({self.dtype}) exactly; pass an array of dtype {self.dtype} or wider")
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
    elif rows is not None and rows * self.dtype.itemsize <= SPOOL_IN_MEMORY:
      self._array, self._dropped = np.empty((rows,), dtype), True
    else:  # out=False, or a path on a process that does not write: spool to a temp file
      self._writer = _io.AtomicNpyWriter(
          os.path.join(tempfile.gettempdir(), f"jaxdiv-spool-{os.getpid()}.npy"), dtype, final)

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
      self._writer.flush()
      if self.pos == 0:
        return
      mm = np.memmap(self._writer.tmp, self._writer.dtype, "r",
                     offset=self._writer.header_bytes, shape=(self.pos,))
      release = _io.PageReleaser(mm)
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
    """Puts the results under their final name (a path `out`) and returns them."""
    shape = tuple(self.batch_shape) if self.rows is not None else (self.pos,)
    if self._writer is not None:
      if self._path is None:
        self._writer.abort()
        return None
      path = self._writer.commit(shape)
      return np.load(path, mmap_mode="r")
    if self._dropped:
      return None
    if self._array is not None:
      return self._user if self._user is not None else self._array.reshape(shape)
    if self._chunks is None:  # dropped
      return None
    return np.concatenate(self._chunks) if self._chunks else np.zeros(0, self.dtype)

  def abort(self):
    """Removes a temporary file; nothing appears under the final name."""
    if self._writer is not None:
      self._writer.abort()
