"""`implementation=None` on GPU: Triton only where the installed jax supports it undeprecated.

The backend and jax's capabilities are faked (monkeypatch), so this runs on the CPU.
"""

import sys
import types
import warnings

import jax
import jax.numpy as jnp
import pytest

from jaxdiv.kernels import _dispatch
from jaxdiv.kernels.cross_entropy import api as ce_api
from jaxdiv.kernels.distillation import api as distill_api
from jaxdiv.kernels.linear_cross_entropy import api as lce_api

TRITON_MODULE = "jax.experimental.pallas.triton"


@pytest.fixture
def fake(monkeypatch):
  """Fakes the backend, jax's version and the Triton module; clears the capability cache."""

  def apply(*, backend="gpu", version="0.10.2", triton="ok"):
    monkeypatch.setattr(_dispatch, "backend", lambda: backend)
    monkeypatch.setattr(jax, "__version__", version)
    if triton == "missing":
      monkeypatch.setitem(sys.modules, TRITON_MODULE, None)  # import raises ImportError
    elif triton == "deprecated":
      module = types.ModuleType(TRITON_MODULE)
      monkeypatch.delitem(sys.modules, TRITON_MODULE, raising=False)

      def fake_import(name, *args, **kwargs):
        if name == TRITON_MODULE:
          warnings.warn("Pallas Triton lowering is deprecated", DeprecationWarning,
                        stacklevel=2)
          return module
        return real_import(name, *args, **kwargs)

      real_import = _dispatch.importlib.import_module
      monkeypatch.setattr(_dispatch.importlib, "import_module", fake_import)
    else:
      monkeypatch.setitem(sys.modules, TRITON_MODULE, types.ModuleType(TRITON_MODULE))
    _dispatch.triton_supported.cache_clear()

  yield apply
  _dispatch.triton_supported.cache_clear()


def _defaults():
  ce = _dispatch.select(ce_api.IMPLEMENTATIONS, None, "ce", shape=(8, 16), dtype=jnp.float32)
  lce = _dispatch.select(lce_api.IMPLEMENTATIONS, None, "lce")
  distill = _dispatch.select(distill_api.IMPLEMENTATIONS, None, "distill")
  return ce, lce, distill


@pytest.mark.parametrize("version", ["0.10.2", "0.10.0", "0.9.1"])
def test_gpu_default_is_triton_where_supported(fake, version):
  fake(version=version)
  assert _dispatch.triton_supported()
  ce, lce, _ = _defaults()
  assert ce is ce_api.IMPLEMENTATIONS["pallas"].fn_on("gpu")
  assert lce is lce_api.IMPLEMENTATIONS["pallas"].fn


@pytest.mark.parametrize("version", ["0.11.0", "0.11.2", "0.12.0.dev20270101", "1.0.0"])
def test_gpu_default_skips_deprecated_triton(fake, version):
  fake(version=version)
  assert not _dispatch.triton_supported()
  ce, lce, distill = _defaults()
  pallas = {ce_api.IMPLEMENTATIONS["pallas"].fn_on("gpu"), lce_api.IMPLEMENTATIONS["pallas"].fn,
            distill_api.IMPLEMENTATIONS["pallas"].fn}
  assert not {ce, lce, distill} & pallas
  assert ce is ce_api.IMPLEMENTATIONS["xla"].fn
  assert lce is lce_api.IMPLEMENTATIONS["chunked"].fn  # the blockwise XLA path


@pytest.mark.parametrize("triton", ["missing", "deprecated"])
def test_gpu_default_skips_missing_or_warning_triton(fake, triton):
  fake(triton=triton)
  assert not _dispatch.triton_supported()
  ce, lce, _ = _defaults()
  assert ce is ce_api.IMPLEMENTATIONS["xla"].fn
  assert lce is lce_api.IMPLEMENTATIONS["chunked"].fn


def test_cpu_default_unchanged_and_explicit_pallas_still_interprets(fake):
  fake(backend="cpu", version="0.11.2")
  ce, lce, _ = _defaults()
  assert ce is ce_api.IMPLEMENTATIONS["xla"].fn
  assert lce is lce_api.IMPLEMENTATIONS["chunked"].fn
  explicit = _dispatch.select(ce_api.IMPLEMENTATIONS, "pallas", "ce")
  assert explicit.keywords == {"interpret": True}


@pytest.mark.parametrize("backend", ["cpu", "gpu", "tpu"])
@pytest.mark.parametrize("devices", [1, 2, 8])
def test_fused_loss_default_forward_grad_only_for_reduced_float32_losses_on_one_cpu(
    monkeypatch, backend, devices):
  """`implementation=None` takes "forward_grad" for a reduced float32 loss on a CPU backend
  with one device, and nowhere else: not for per-token losses, float64, float16 (loss
  scaling), bfloat16 (temporaries), `axis_name`, a gradient filter, a `block_size`, a
  vocabulary above 65536 (fewer than 128 tokens a block), several devices (token-sharded
  inputs would be gathered), GPU or TPU."""
  counted = []

  def device_count(platform=None):
    counted.append(platform)
    return devices

  monkeypatch.setattr(_dispatch, "backend", lambda: backend)
  monkeypatch.setattr(jax, "device_count", device_count)
  h = jnp.zeros((4, 3))
  pick = lce_api.forward_grad_by_default
  here = backend == "cpu" and devices == 1
  for reduction in ("mean", "sum"):
    for vocab in (1, 32768, 65536):
      assert pick(h, vocab, reduction=reduction) == here
  assert not pick(h, 65537, reduction="mean")
  assert not pick(h, 131072, reduction="mean")
  assert not pick(h, 1000, reduction="none")
  assert not pick(h, 1000, reduction="mean", axis_name="vocab")
  assert not pick(h, 1000, reduction="mean", grad_filter_eps=1e-3)
  assert not pick(h, 1000, reduction="mean", block_size=64)
  for dtype in (jnp.float16, jnp.bfloat16):
    assert not pick(h.astype(dtype), 1000, reduction="mean")
    assert not pick(h, 1000, reduction="mean", weight=jnp.zeros((3, 5), dtype))
  assert pick(h, 1000, reduction="mean", weight=jnp.zeros((3, 5))) == here
  with jax.enable_x64(True):
    assert not pick(jnp.zeros((4, 3), jnp.float64), 1000, reduction="mean")
  if backend == "cpu":  # the devices counted are the backend's
    assert set(counted) == {"cpu"}
