"""Shared test harness: one device fixture for every platform JAX sees, float64, hypothesis."""

from __future__ import annotations

import os

import hypothesis
import jax
import pytest

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
