"""Array files opened without loading them: .npy, .npz and .safetensors, and atomic .npy output.

Everything here is NumPy only (no JAX): the readers return `np.memmap` views whose pages the
operating system reads on demand, so a file larger than memory is never held whole. The one
exception is a *compressed* .npz member, which cannot be mapped: it is decompressed as a
forward-only stream of rows (:class:`ZipStream`), still in bounded memory.
"""

from __future__ import annotations

import ast
import contextlib
import json
import mmap
import os
import struct
import tempfile
import zipfile
from collections.abc import Callable
from collections.abc import Iterator

import numpy as np

from jaxdiv import _interrupt
from jaxdiv._interrupt import TEMPORARY as _TEMPORARY


class InputError(ValueError):
  """A problem with the user's data or files, reported as one line (no traceback) by the CLI.

  `str(error)` speaks to a Python caller (it names arguments, ``nan_policy="skip"``);
  `cli_message`, when the advice differs on the command line, names flags (``--nan skip``).
  """

  def __init__(self, message: str, cli_message: str | None = None):
    super().__init__(message)
    self.cli_message = cli_message if cli_message is not None else message


# safetensors dtype codes -> NumPy dtypes (bfloat16 and the float8s come from ml_dtypes, which
# JAX itself depends on).
def _safetensors_dtypes() -> dict[str, np.dtype]:
  import ml_dtypes

  return {
      "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
      "BF16": np.dtype(ml_dtypes.bfloat16),
      "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn), "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
      "I64": np.dtype(np.int64), "I32": np.dtype(np.int32), "I16": np.dtype(np.int16),
      "I8": np.dtype(np.int8), "U64": np.dtype(np.uint64), "U32": np.dtype(np.uint32),
      "U16": np.dtype(np.uint16), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
  }


def _pick(keys: list[str], key: str | None, path: str) -> str:
  if key is not None:
    if key not in keys:
      raise InputError(f"{path}: no array named {key!r}; it holds {sorted(keys)}")
    return key
  if len(keys) != 1:
    if not keys:
      raise InputError(f"{path}: holds no arrays")
    what = f"{path}: holds {len(keys)} arrays {sorted(keys)}; choose one with"
    raise InputError(f"{what} key=...", f"{what} --key")
  return keys[0]


def _open_npy(path: str) -> np.ndarray:
  try:
    return np.load(path, mmap_mode="r", allow_pickle=False)
  except ValueError as e:  # object arrays, bad header
    raise InputError(f"{path}: not a readable .npy array ({e})") from None


def _open_safetensors(path: str, key: str | None) -> np.ndarray:
  """Maps one tensor of a .safetensors file: an 8-byte little-endian header length, a JSON
  header `{name: {dtype, shape, data_offsets: [begin, end]}}`, then the raw little-endian data."""
  with open(path, "rb") as f:
    head = f.read(8)
    if len(head) != 8:
      raise InputError(f"{path}: not a .safetensors file (too short)")
    (n,) = struct.unpack("<Q", head)
    size = os.fstat(f.fileno()).st_size
    if n > size - 8 or n > 100 * 2**20:
      raise InputError(f"{path}: not a .safetensors file (bad header length {n})")
    try:
      header = json.loads(f.read(n))
    except ValueError:
      raise InputError(f"{path}: not a .safetensors file (header is not JSON)") from None
  header.pop("__metadata__", None)
  name = _pick(list(header), key, path)
  info = header[name]
  dtypes = _safetensors_dtypes()
  if info.get("dtype") not in dtypes:
    raise InputError(f"{path}: tensor {name!r} has unsupported dtype {info.get('dtype')!r}")
  dtype, shape = dtypes[info["dtype"]], tuple(int(s) for s in info["shape"])
  begin, end = (int(o) for o in info["data_offsets"])
  count = int(np.prod(shape, dtype=np.int64))
  if end - begin != count * dtype.itemsize or 8 + n + end > size:
    raise InputError(f"{path}: tensor {name!r} has inconsistent offsets")
  if count == 0:
    return np.zeros(shape, dtype)
  return np.memmap(path, dtype=dtype.newbyteorder("<"), mode="r", offset=8 + n + begin,
                   shape=shape)


class ZipStream:
  """A compressed .npz member read forwards as rows of its last axis (it cannot be mapped).

  Quacks like the part of an array that the evaluator uses: `shape`, `dtype`, `ndim`, and
  `read_rows(start, stop)` of the array reshaped to `(-1, shape[-1])`. Reading backwards
  restarts the decompression from the beginning.
  """

  def __init__(self, path: str, member: str, shape, dtype, fortran: bool, offset: int):
    if fortran and len(shape) > 1:
      raise InputError(f"{path}: member {member!r} is compressed and Fortran-ordered;"
                       " re-save it with np.savez (uncompressed) or as .npy")
    self.path, self.member, self.shape, self.dtype = path, member, tuple(shape), dtype
    self.ndim = len(self.shape)
    self._offset = offset  # bytes of .npy header inside the member
    self._stream = None
    self._row = 0

  def _restart(self):
    self.close()
    self._zip = zipfile.ZipFile(self.path)
    self._stream = self._zip.open(self.member)
    self._stream.read(self._offset)
    self._row = 0

  def read_rows(self, start: int, stop: int) -> np.ndarray:
    n = self.shape[-1] if self.ndim else 1
    row_bytes = n * self.dtype.itemsize
    if self._stream is None or start < self._row:
      self._restart()
    while self._row < start:  # skip forward in bounded pieces
      k = min(start - self._row, max(1, 2**26 // max(row_bytes, 1)))
      self._stream.read(k * row_bytes)
      self._row += k
    data = self._stream.read((stop - start) * row_bytes)
    if len(data) != (stop - start) * row_bytes:
      raise InputError(f"{self.path}: member {self.member!r} is truncated")
    self._row = stop
    return np.frombuffer(data, self.dtype).reshape(stop - start, n)

  def close(self):
    if self._stream is not None:
      self._stream.close()
      self._zip.close()
      self._stream = None

  def __del__(self):
    with contextlib.suppress(Exception):
      self.close()


def _open_npz(path: str, key: str | None):
  """Maps a member of an .npz stored uncompressed (np.savez); streams a compressed one."""
  try:
    zf = zipfile.ZipFile(path)
  except zipfile.BadZipFile:
    raise InputError(f"{path}: not a readable .npz (zip) file") from None
  with zf:
    names = {i.filename[:-4] if i.filename.endswith(".npy") else i.filename: i
             for i in zf.infolist()}
    info = names[_pick(list(names), key, path)]
    with zf.open(info) as m:
      try:
        version = np.lib.format.read_magic(m)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)  # 2.0 and 3.0 alike
        shape, fortran, dtype = read_header(m)
      except ValueError as e:
        raise InputError(f"{path}: member {info.filename!r} is not a .npy array ({e})") from None
      npy_header = m.tell()
  if dtype.hasobject:
    raise InputError(f"{path}: member {info.filename!r} holds Python objects")
  if info.compress_type != zipfile.ZIP_STORED:
    return ZipStream(path, info.filename, shape, dtype, fortran, npy_header)
  with open(path, "rb") as f:  # the member's data starts after its *local* header
    f.seek(info.header_offset)
    local = f.read(30)
    if local[:4] != b"PK\x03\x04":
      raise InputError(f"{path}: corrupt zip local header for {info.filename!r}")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
  offset = info.header_offset + 30 + name_len + extra_len + npy_header
  if int(np.prod(shape)) == 0:
    return np.zeros(shape, dtype)
  return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape),
                   order="F" if fortran else "C")


def open_array(path: str | os.PathLike, key: str | None = None):
  """Opens an array file without reading it: `.npy`, `.npz` or `.safetensors`.

  Args:
    path: the file. The format is chosen by its suffix.
    key: the array's name inside an `.npz` or `.safetensors` file (optional when the file holds
      exactly one array).

  Returns:
    A read-only `np.memmap` (or, for a compressed `.npz` member, a :class:`ZipStream`).

  Raises:
    InputError: the file is missing, unreadable, or not an array of that format.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise InputError(f"{path}: no such file")
  if os.path.isdir(path):
    raise InputError(f"{path}: is a directory, not an array file")
  if not os.access(path, os.R_OK):
    raise InputError(f"{path}: permission denied")
  suffix = os.path.splitext(path)[1].lower()
  try:
    if suffix == ".npz":
      return _open_npz(path, key)
    if suffix == ".safetensors":
      return _open_safetensors(path, key)
    if suffix == ".npy":
      if key is not None:
        raise InputError(f"{path}: a .npy file holds one array; key={key!r} does not apply",
                         f"{path}: a .npy file holds one array; --key does not apply")
      return _open_npy(path)
  except OSError as e:
    raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
  raise InputError(f"{path}: unknown array format {suffix!r} (expected .npy, .npz or"
                   " .safetensors)")


# ----------------------------------------------------------------------------------- output ----

_HEADER_BYTES = 256  # fixed so that the header can be rewritten once the row count is known



def temporary_files() -> list[str]:
  """The temporary output files this process has open (not yet committed or removed)."""
  return list(_TEMPORARY)


def _umask() -> int:
  """The process's umask, read without changing it where Linux allows (`os.umask` sets it)."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except (OSError, ValueError):
    pass
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
  """Whether two paths name one file (symbolic and hard links included); False if either is
  missing."""
  try:
    return os.path.samefile(a, b)
  except OSError:
    return False


def overwritten_input(path: str | os.PathLike, inputs) -> tuple[str, str] | None:
  """The first `(name, file)` of `inputs` (pairs; a None file is skipped) that writing `path`
  would overwrite, or None; the callers (`evaluate`, the CLI) word the error."""
  for name, file in inputs:
    if file is not None and same_file(path, file):
      return name, os.fspath(file)
  return None


def check_destination(path: str | os.PathLike, what: str | None = None) -> str:
  """Checks, before any work, that a file can be created at `path`; returns it as a string.

  Args:
    path: the output file.
    what: how the caller calls it in messages (``"out"``, ``"--summary"``); default the path.

  Raises:
    InputError: `path` is a directory, its folder does not exist or is not a folder, or the
      folder is not writable.
  """
  path = os.fspath(path)
  label = f"{what} {path}" if what else path
  directory = os.path.dirname(os.path.abspath(path))
  if os.path.isdir(path):
    raise InputError(f"{label}: is a directory; name a file")
  if not os.path.isdir(directory):
    raise InputError(f"{label}: directory {directory} does not exist")
  if not os.access(directory, os.W_OK | os.X_OK):
    raise InputError(f"{label}: cannot create a file in {directory} (permission denied)")
  return path


def _create_temporary(path: str, binary: bool):
  """A new file beside `path`, mode 0666 minus the umask (as `open` would create `path`)."""
  check_destination(path)
  directory = os.path.dirname(os.path.abspath(path))
  try:
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".partial",
                               dir=directory)
  except OSError as e:
    raise InputError(f"{path}: cannot create a file in {directory}"
                     f" ({e.strerror or type(e).__name__})") from None
  _TEMPORARY.add(tmp)
  os.fchmod(fd, 0o666 & ~_umask())  # mkstemp creates 0600
  return os.fdopen(fd, "wb" if binary else "w"), tmp


def _commit(tmp: str, path: str):
  """Renames the finished temporary file to `path`; an error names `path`, not the temp."""
  try:
    os.replace(tmp, path)
  except OSError as e:
    _discard(tmp)
    raise InputError(f"{path}: cannot write ({e.strerror or type(e).__name__})") from None
  _TEMPORARY.discard(tmp)
  _interrupt.committed(path)


def _discard(tmp: str):
  with contextlib.suppress(FileNotFoundError):
    os.unlink(tmp)
  _TEMPORARY.discard(tmp)


def _npy_header_text(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
  d = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
  return repr(d).encode("latin1")


def npy_header_bytes(dtype, shape: tuple[int, ...]) -> int:
  """The header size (a multiple of 64, at least `_HEADER_BYTES`) that holds the header of
  `shape`: reserved when the file is created, so that the final shape fits in it (a results
  shape of many axes did not fit 256 bytes, and the run failed at its commit)."""
  need = len(_npy_header_text(np.dtype(dtype), tuple(shape))) + 11
  return max(_HEADER_BYTES, -(-need // 64) * 64)


def _npy_header(dtype: np.dtype, shape: tuple[int, ...], size: int = _HEADER_BYTES) -> bytes:
  text = _npy_header_text(dtype, shape)
  body = size - 10  # magic (6) + version (2) + length (2)
  if len(text) + 1 > body or body > 0xFFFF:
    raise ValueError(f"shape {shape} too long for the .npy header")
  text = text + b" " * (body - len(text) - 1) + b"\n"
  return b"\x93NUMPY\x01\x00" + struct.pack("<H", body) + text


def file_dtype(dtype) -> np.dtype:
  """The dtype a .npy holds for results of `dtype`: the format has no name for bfloat16 or the
  float8 types (NumPy writes them as raw bytes, '<V2', which `np.load` cannot read as numbers),
  so those are stored widened to float32, exactly."""
  dtype = np.dtype(dtype)
  if np.lib.format.dtype_to_descr(dtype).lstrip("<>|=").startswith("V"):
    return np.dtype(np.float32)
  return dtype


class AtomicNpyWriter:
  """Writes a 1-D .npy of unknown final length, appending rows; the file appears under its
  final name only on :meth:`commit` (temp file in the same directory + `os.replace`), with the
  mode the umask gives a new file, and :meth:`abort` (or an exception inside `with`) removes
  it."""

  def __init__(self, path: str | os.PathLike, dtype, shape: tuple[int, ...] | None = None):
    """`dtype`: the rows' (stored as :func:`file_dtype`); `shape`: the final shape if known, for
    the header's size."""
    self.path = os.fspath(path)
    self.dtype = file_dtype(dtype)
    self.header_bytes = npy_header_bytes(self.dtype, (0,) if shape is None else shape)
    self._f, self.tmp = _create_temporary(self.path, binary=True)
    self._f.write(_npy_header(self.dtype, (0,), self.header_bytes))
    self.rows = 0

  def write(self, rows: np.ndarray):
    rows = np.ascontiguousarray(rows, self.dtype).reshape(-1)
    self._f.write(rows.tobytes())
    self.rows += rows.size

  def flush(self):
    self._f.flush()

  def commit(self, shape: tuple[int, ...] | None = None) -> str:
    shape = (self.rows,) if shape is None else tuple(shape)
    if int(np.prod(shape)) != self.rows:
      raise ValueError(f"{self.rows} rows written, cannot be shaped {shape}")
    self._f.seek(0)
    self._f.write(_npy_header(self.dtype, shape, self.header_bytes))
    self._f.flush()
    os.fsync(self._f.fileno())
    self._f.close()
    _commit(self.tmp, self.path)
    return self.path

  def abort(self):
    with contextlib.suppress(Exception):
      self._f.close()
    _discard(self.tmp)

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    if exc_type is not None or not self._f.closed:
      self.abort()
    return False


@contextlib.contextmanager
def atomic_write_text(path: str | os.PathLike,
                      before_commit: Callable[[], None] | None = None) -> Iterator:
  """Opens a text file for writing that appears under `path` only if the block succeeds.

  Args:
    path: the final name.
    before_commit: called after the block, before the rename; an exception from it (a
      KeyboardInterrupt when the run was interrupted) removes the temporary file instead.
  """
  path = os.fspath(path)
  f, tmp = _create_temporary(path, binary=False)
  try:
    with f:
      yield f
    if before_commit is not None:
      before_commit()
  except BaseException:
    _discard(tmp)
    raise
  _commit(tmp, path)


class PageReleaser:
  """Drops the pages of rows already read from a read-only memmap (`madvise(MADV_DONTNEED)`).

  Without it the process's resident memory grows with every page of the file it has touched
  (file-backed pages of a mapping count in RSS until the kernel needs them), although nothing
  is kept. Linux and macOS; a no-op wherever it is unavailable, and for a copy-on-write memmap
  (``mode="c"``), whose edited pages the drop would discard: its rows would read the file's
  data again.
  """

  def __init__(self, array):
    self._mm = None
    mm = getattr(array, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
      return
    if getattr(array, "mode", None) not in ("r", "r+", "w+"):  # shared or read-only mappings
      return
    try:
      self._base = np.frombuffer(mm, np.uint8).ctypes.data
    except (TypeError, ValueError):
      return
    self._mm = mm

  def __call__(self, view: np.ndarray):
    self._advise(view, "MADV_DONTNEED", outward=False)

  def willneed(self, view: np.ndarray):
    """Asks the kernel to read `view`'s pages ahead (`MADV_WILLNEED`), without waiting."""
    self._advise(view, "MADV_WILLNEED", outward=True)

  def _advise(self, view: np.ndarray, advice: str, outward: bool):
    if self._mm is None or view.size == 0 or not hasattr(mmap, advice):
      return
    start = view.ctypes.data - self._base
    end = start + view.nbytes
    a = (start // mmap.PAGESIZE) * mmap.PAGESIZE
    # Dropped: only the pages wholly inside `view` (the last one may hold the next rows).
    b = (-(-end // mmap.PAGESIZE) if outward else end // mmap.PAGESIZE) * mmap.PAGESIZE
    b = min(b, len(self._mm))
    if b > a:
      with contextlib.suppress(Exception):
        self._mm.madvise(getattr(mmap, advice), a, b - a)


def parse_size(text: str) -> int:
  """'512M', '2G', '1.5GiB', '1000000' -> bytes: a whole number (negative ones too: the caller
  decides); ValueError for anything else ('0.5', 'inf', 'nan', '2j')."""
  s = text.strip().upper().removesuffix("B").removesuffix("I")
  mult = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
  try:
    if s and s[-1] in mult:
      size = float(s[:-1]) * mult[s[-1]]
    else:
      size = ast.literal_eval(s)
    if isinstance(size, bool) or not isinstance(size, (int, float)) or size != int(size):
      raise ValueError
    return int(size)
  except (ValueError, TypeError, SyntaxError, OverflowError, MemoryError, RecursionError):
    raise ValueError(f"not a size: {text!r} (examples: 512M, 2G)") from None
