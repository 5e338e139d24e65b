"""Ctrl-C, the standard way: the SIGINT handler only sets an event, and the streaming loop
checks it between batches (and before anything is committed) and stops there.

Raising KeyboardInterrupt from the handler, Python's default, can land anywhere, including in
a callback whose exceptions Python can only print and drop (jax runs one at every garbage
collection): the run then carries on and writes its outputs. An event cannot be lost.

Standard library only, so that the command can install the handler before it imports JAX.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

# Temporary files being written (their final names appear only on success): a second Ctrl-C,
# which exits at once, removes them first. Writers add and discard their paths here.
TEMPORARY: set[str] = set()
# Outputs put under their final names inside the current scope: a second Ctrl-C removes them
# too, so that an interrupted command leaves nothing, even between its two outputs.
COMMITTED: set[str] = set()


class Interrupts:
  """Whether Ctrl-C was pressed in the scope of :func:`handled`."""

  def __init__(self, exit_on_second: bool = False):
    self.event = threading.Event()
    self._exit_on_second = exit_on_second
    self._previous = None
    # Set by a program whose result is committed and reported: when the scope ends, a Ctrl-C
    # (during JAX's shutdown, which takes a while) ends the process at once with this status,
    # instead of a KeyboardInterrupt that would make a finished run look interrupted.
    self.done_status: int | None = None

  def _handle(self, signum, frame):
    if self.event.is_set() and self._exit_on_second:
      # A second Ctrl-C: remove what is half-written and leave at once.
      for path in list(TEMPORARY) + list(COMMITTED):
        with contextlib.suppress(OSError):
          os.unlink(path)
      os.write(2, b"jaxdiv: interrupted again; exiting at once\n")
      os._exit(130)
    self.event.set()
    if not self._exit_on_second:  # a library caller's second Ctrl-C raises as usual
      signal.signal(signal.SIGINT, self._previous)

  def check(self):
    """Raises KeyboardInterrupt if Ctrl-C was pressed."""
    if self.event.is_set():
      raise KeyboardInterrupt


_active: Interrupts | None = None
_early = threading.Event()


def _handle_early(signum, frame):
  if _early.is_set():  # a second Ctrl-C before the command has started: nothing to clean
    os._exit(130)
  _early.set()


def catch_early():
  """Turns Ctrl-C into an event from the first line of `python -m jaxdiv`, before the command
  has imported what it needs; :func:`handled` (or :func:`release_early`) takes over."""
  if (threading.current_thread() is threading.main_thread()
      and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
    _early.clear()
    signal.signal(signal.SIGINT, _handle_early)


def committed(path: str):
  """Records an output just put in place, for a second Ctrl-C in the current scope to undo."""
  if _active is not None:
    COMMITTED.add(path)


def _exit_with(status: int):
  """A SIGINT handler for a command whose result is out: end at once with its status."""

  def handler(signum, frame):
    for stream in (sys.stdout, sys.stderr):
      with contextlib.suppress(Exception):
        stream.flush()
    os._exit(status)

  return handler


def release_early():
  """Gives Ctrl-C back to Python (for commands that need no handler); raises KeyboardInterrupt
  if it was pressed meanwhile."""
  if signal.getsignal(signal.SIGINT) is _handle_early:
    signal.signal(signal.SIGINT, signal.default_int_handler)
  if _early.is_set():
    _early.clear()
    raise KeyboardInterrupt


@contextlib.contextmanager
def handled(exit_on_second: bool = False) -> Iterator[Interrupts]:
  """Catches SIGINT into an event for the duration of the block.

  Nested scopes share the outer one (the CLI's scope covers the `evaluate` it calls). Where a
  handler cannot or should not be installed (not the main thread, or the caller installed its
  own), the event is never set and Ctrl-C behaves as the caller arranged.

  Args:
    exit_on_second: a second Ctrl-C removes temporary files and exits the process with status
      130 at once (the command line); otherwise the default handler is restored after the
      first, so that a second raises KeyboardInterrupt where it lands (a library caller).
  """
  global _active
  if _active is not None:
    yield _active
    return
  interrupts = Interrupts(exit_on_second)
  current = signal.getsignal(signal.SIGINT)
  if current is _handle_early:  # `python -m jaxdiv`: a Ctrl-C already pressed counts
    interrupts.event = _early
    current = signal.default_int_handler
  if (threading.current_thread() is not threading.main_thread()
      or current is not signal.default_int_handler):
    yield interrupts
    return
  signal.signal(signal.SIGINT, interrupts._handle)
  interrupts._previous = current
  _active = interrupts
  try:
    yield interrupts
  finally:
    _active = None
    COMMITTED.clear()
    # One call replaces the handler: no moment with Python's default in between.
    signal.signal(signal.SIGINT, interrupts._previous if interrupts.done_status is None
                  else _exit_with(interrupts.done_status))
