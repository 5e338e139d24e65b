"""A background thread that reads and transfers the next batches while the devices work."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator

_END = object()


class _Failed:
  def __init__(self, error: BaseException):
    self.error = error


class Prefetcher:
  """Runs the iterator `items` (host read + device_put) in a thread, `depth` items ahead; with
  `depth=0`, in the consumer as it asks for them (nothing to read ahead: see
  :func:`jaxdiv.evaluation._sources.zero_copy`).

  An exception in the thread is raised again in the consumer, at the item where it happened.
  """

  def __init__(self, items: Iterator, depth: int):
    self._items = items
    self._thread = None
    if depth <= 0:
      return
    self._q: queue.Queue = queue.Queue(maxsize=depth)
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
      self._put(_Failed(e))

  def __iter__(self):
    if self._thread is None:
      yield from self._items
      return
    while True:
      item = self._q.get()
      if item is _END:
        return
      if isinstance(item, _Failed):
        raise item.error
      yield item

  def close(self):
    if self._thread is None:
      close = getattr(self._items, "close", None)
      if close is not None:
        close()
      return
    self._stop.set()
    with contextlib.suppress(queue.Empty):
      while True:
        self._q.get_nowait()
    self._thread.join(timeout=10)
