"""Shared test harness: one device fixture for every platform JAX sees, float64, hypothesis.

Before JAX starts its backends, the CPU platform is given 8 devices, so that the multi-device
tests (`tests/evaluation/test_multidevice.py`) run in the same process as the rest. Every other
test keeps running on one device: JAX's default device is the first one, and `jax.jit` places
its inputs there. Compilations that take a while are kept in a persistent cache under
`.cache/jax/` (ignored by git), shared by the xdist workers and by the fast and slow tiers.

The tests' arrays are small, so their time goes to compiling, not running: XLA's CPU backend
compiles them with LLVM's optimisation level 0 (`--xla_backend_optimization_level=0`), which
cuts a third of the suite's CPU time. That level changes how the generated loops are optimised,
not the HLO JAX emits nor IEEE arithmetic (XLA:CPU does not use fast-math), so the same code
paths run. `JAXDIV_TEST_XLA_OPT=1` keeps XLA's default level. Only this process's backend is
compiled that way: subprocesses (the CLI tests) get the caller's environment back, except those
whose results are compared bit for bit with this process's, which add
`JAXDIV_TEST_XLA_FLAGS` (the flags set here) to their XLA_FLAGS.
"""

from __future__ import annotations

import os
import pathlib

import hypothesis
import jax
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

N_CPU_DEVICES = 8
jax.config.update("jax_num_cpu_devices", N_CPU_DEVICES)
# What this process adds to XLA_FLAGS, also for the subprocesses whose results a test compares
# bit for bit with this process's (tests/evaluation/test_multihost.py reads it).
os.environ["JAXDIV_TEST_XLA_FLAGS"] = (
    "" if os.environ.get("JAXDIV_TEST_XLA_OPT") else "--xla_backend_optimization_level=0")
if os.environ["JAXDIV_TEST_XLA_FLAGS"]:
  _flags = os.environ.get("XLA_FLAGS")
  os.environ["XLA_FLAGS"] = f"{_flags or ''} {os.environ['JAXDIV_TEST_XLA_FLAGS']}".strip()
  try:
    jax.devices()  # XLA reads XLA_FLAGS once, when the first backend starts
  finally:
    if _flags is None:
      del os.environ["XLA_FLAGS"]
    else:
      os.environ["XLA_FLAGS"] = _flags
# `jaxdiv eval` run as a program (the CLI tests' subprocesses) keeps its compiled step in the
# user's cache folder by default: not from the tests, whose subprocesses compile afresh unless
# a test gives them a cache of its own (tests/evaluation/test_cli.py).
os.environ["JAXDIV_COMPILE_CACHE"] = ""
_CACHE = os.environ.get("JAXDIV_TEST_CACHE",  # "" turns the cache off
                        str(ROOT / ".cache" / "jax"))
if _CACHE:
  jax.config.update("jax_compilation_cache_dir", _CACHE)
  # Reading an entry back costs a few milliseconds: keep only the compilations that cost more.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

hypothesis.settings.register_profile(
    "ci", max_examples=40, deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
hypothesis.settings.register_profile(
    "dev", max_examples=25, deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
hypothesis.settings.load_profile("ci" if os.environ.get("CI") else "dev")


def pytest_addoption(parser):
  parser.addoption(
      "--devices", default=None,
      help="comma-separated platforms to run device-parametrised tests on (cpu,gpu,tpu);"
           " default: every platform JAX sees.",
  )


def _platforms(config) -> list[str]:
  present = []
  for platform in ("cpu", "gpu", "tpu"):
    try:
      if jax.devices(platform):
        present.append(platform)
    except RuntimeError:
      pass
  wanted = config.getoption("--devices")
  if wanted:
    wanted = [w.strip() for w in wanted.split(",") if w.strip()]
    missing = [w for w in wanted if w not in present]
    if missing:
      raise pytest.UsageError(f"--devices asks for {missing}, but JAX sees only {present}.")
    return wanted
  return present


def pytest_generate_tests(metafunc):
  if "device" in metafunc.fixturenames:
    metafunc.parametrize("device", _platforms(metafunc.config), indirect=True)


@pytest.fixture
def device(request):
  """Runs the test with the given platform's first device as JAX's default device."""
  dev = jax.devices(request.param)[0]
  with jax.default_device(dev):
    yield dev


@pytest.fixture
def x64():
  """Enables float64 for the test's duration."""
  with jax.enable_x64(True):
    yield


@pytest.fixture
def one_pass(monkeypatch):
  """`_fallback.row_reduce` takes its one pass on CPU from the first entry (it does from
  `_MIN_ENTRIES` = 64K entries, more than most tests compute), so that small rows test it.
  Call jaxdiv's functions through a new `jax.jit` wrapper (a lambda), not a cached trace."""
  from jaxdiv import _fallback
  monkeypatch.setattr(_fallback, "_MIN_ENTRIES", 1)


@pytest.fixture
def one_pass_blocks(one_pass, monkeypatch):
  """As `one_pass`, and the pass runs over blocks of two rows of 256 entries whatever the size
  of its partial sums (it does where they exceed `_MAX_PARTIAL_BYTES` = 16 MiB)."""
  from jaxdiv import _fallback
  monkeypatch.setattr(_fallback, "_MAX_PARTIAL_BYTES", 0)
  monkeypatch.setattr(_fallback, "_BLOCK_ENTRIES", 512)


# Fast-tier cases measured at 5 s or more (tests/retier.py): slow tier.
_SLOW_CASES = None


@pytest.hookimpl(tryfirst=True)  # before `-m "not slow"` deselects
def pytest_collection_modifyitems(config, items):
  global _SLOW_CASES
  if _SLOW_CASES is None:
    import retier  # tests/ is on sys.path (rootdir-relative conftest)
    _SLOW_CASES = retier.read_list()
  seen = set()
  for item in items:
    if item.nodeid in _SLOW_CASES:
      item.add_marker(pytest.mark.slow)
      seen.add(item.nodeid)
  # A listed case of a collected file that no longer exists (renamed, or its parameters
  # changed): say so, for its replacement is in the fast tier until the list is updated.
  if config.getoption("keyword") or any("::" in a for a in config.args):
    return  # some cases of a file chosen: the others are not collected, which is no news
  files = {item.nodeid.split("::")[0] for item in items}
  stale = [n for n in _SLOW_CASES if n.split("::")[0] in files and n not in seen]
  if stale:
    import warnings
    warnings.warn(f"tests/slow_cases.txt lists {len(stale)} cases that were not collected:"
                  f" {stale[:5]}", stacklevel=1)
