"""Ctrl-C: a SIGINT handler that only sets an event, checked between batches (`_interrupt`).

In-process tests check the mechanism; the real command runs in a subprocess, interrupted at
random moments (from Python's start-up to the writing of the outputs): every run must exit
with 130 and leave neither output nor temporary file. The default run tries a handful of
moments; `pytest -m slow` measures 50 and prints the count.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from jaxdiv import _interrupt
from jaxdiv.evaluation import _io
from jaxdiv.evaluation import evaluate

ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}
ROWS, N = 16384, 1024  # 64 MiB per input: about 3 s of streaming on a shared 2-core CPU


def test_sigint_sets_the_event_and_raises_nothing():
  before = signal.getsignal(signal.SIGINT)
  with _interrupt.handled() as interrupts:
    os.kill(os.getpid(), signal.SIGINT)
    deadline = time.time() + 5
    while not interrupts.event.is_set() and time.time() < deadline:
      time.sleep(0.001)  # the handler runs between bytecodes of the main thread
    assert interrupts.event.is_set()
    with pytest.raises(KeyboardInterrupt):
      interrupts.check()
  assert signal.getsignal(signal.SIGINT) is before


def _wait_for(event):
  deadline = time.time() + 5
  while not event.is_set() and time.time() < deadline:
    time.sleep(0.001)


def test_a_ctrl_c_before_the_command_starts_is_kept():
  """`python -m jaxdiv` catches Ctrl-C from its first line; the command's scope inherits it."""
  _interrupt.catch_early()
  try:
    os.kill(os.getpid(), signal.SIGINT)
    _wait_for(_interrupt._early)
    with _interrupt.handled() as interrupts:
      with pytest.raises(KeyboardInterrupt):
        interrupts.check()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    _interrupt.catch_early()
    os.kill(os.getpid(), signal.SIGINT)
    _wait_for(_interrupt._early)
    with pytest.raises(KeyboardInterrupt):  # commands without a handler get it back at once
      _interrupt.release_early()
  finally:
    _interrupt._early.clear()
    signal.signal(signal.SIGINT, signal.default_int_handler)


def test_evaluate_stops_between_batches_and_writes_nothing(tmp_path):
  rng = np.random.default_rng(0)
  fed = []

  def batches():  # Ctrl-C arrives while the third batch is read
    for i in range(50):
      if i == 2:
        os.kill(os.getpid(), signal.SIGINT)
      fed.append(i)
      yield rng.dirichlet(np.ones(8), size=256).astype(np.float32)

  with pytest.raises(KeyboardInterrupt):
    evaluate("entropy", batches(), batch_size=256, out=tmp_path / "o.npy", prefetch=1)
  assert len(fed) < 10, fed  # it stopped soon, not at the end
  assert os.listdir(tmp_path) == [] and _io.temporary_files() == []
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_evaluate_outside_the_main_thread_leaves_signals_alone():
  p = np.random.default_rng(1).dirichlet(np.ones(8), size=300).astype(np.float32)
  got = []
  t = threading.Thread(target=lambda: got.append(evaluate("entropy", p).summary["rows"]))
  t.start()
  t.join(120)
  assert got == [300]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  d = tmp_path_factory.mktemp("interrupt")
  rng = np.random.default_rng(2)
  for name in ("p", "q"):
    m = np.lib.format.open_memmap(d / f"{name}.npy", "w+", np.float32, (ROWS, N))
    for i in range(0, ROWS, 4096):
      m[i:i + 4096] = rng.standard_normal((4096, N), dtype=np.float32)
    m.flush()
    del m
  return d


def _start(d, out_dir):
  return subprocess.Popen(
      [sys.executable, "-m", "jaxdiv", "eval", str(d / "p.npy"), str(d / "q.npy"), "-d",
       "renyi_divergence", "--alpha", "3", "--from-logits", "--batch-size", "256", "--out",
       str(out_dir / "o.npy"), "--summary", str(out_dir / "o.json")],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def _interrupted(d, out_dir, after: float, twice: bool = False) -> tuple[bool, str]:
  """One run sent SIGINT `after` seconds after its start (twice, 50 ms apart, if asked):
  whether it exited with 130, left nothing in `out_dir` and printed no traceback."""
  out_dir.mkdir()
  proc = _start(d, out_dir)
  time.sleep(after)
  if proc.poll() is not None:
    return False, f"finished before {after:.2f} s (status {proc.returncode})"
  proc.send_signal(signal.SIGINT)
  if twice:
    time.sleep(0.05)
    if proc.poll() is None:
      proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=120)
  left = os.listdir(out_dir)
  ok = proc.returncode == 130 and not left and "Traceback" not in err
  return ok, f"at {after:.2f} s: status {proc.returncode}, left {left}, stderr {err[-300:]!r}"


def _moments(count: int, seed: int) -> np.ndarray:
  """Random moments over an uninterrupted run's span (start-up, compile, stream, write)."""
  return np.random.default_rng(seed).uniform(0.1, 6.5, count)


def test_the_command_interrupted_at_random_moments(inputs, tmp_path):
  failures = []
  for i, after in enumerate(_moments(3, seed=0)):
    ok, what = _interrupted(inputs, tmp_path / str(i), after, twice=(i == 2))
    if not ok:
      failures.append(what)
  assert not failures, failures


@pytest.mark.slow
def test_fifty_interrupted_runs(inputs, tmp_path):
  results = [_interrupted(inputs, tmp_path / str(i), after)
             for i, after in enumerate(_moments(50, seed=1))]
  good = sum(ok for ok, _ in results)
  print(f"\n{good} of {len(results)} interrupted runs exited 130 and left nothing")
  assert good == len(results), [what for ok, what in results if not ok]
