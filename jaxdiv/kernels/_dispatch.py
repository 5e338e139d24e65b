"""One dispatch helper for every accelerated op: a frozen registry of implementations.

Each op (cross-entropy over logits, fused linear cross-entropy, distillation divergences) keeps
an ordered, immutable table of `Implementation`s. An implementation says where it runs through
`supported_on(backend, **config)`; `implementation=None` takes the first supported one in the
table's order (the preferred first), and never a Pallas kernel in interpret mode: interpret mode is
only reached by asking for `"pallas"` explicitly on a backend without a Pallas compiler.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import types
import warnings
from collections.abc import Callable
from collections.abc import Mapping

import jax

NAMES = ("xla", "chunked", "pallas")


@dataclasses.dataclass(frozen=True)
class Implementation:
  """One way to compute an op.

  Attributes:
    name: `"xla"`, `"chunked"` or `"pallas"`.
    fn: the function; it takes the op's arguments and, for Pallas, `interpret=`.
    supported_on: `(backend, **config) -> bool`, whether `None` may pick it there (`backend` is
      `jax.default_backend()`'s answer: "cpu", "gpu", "tpu"); `config` holds the op's static
      description (shapes, dtypes, options).
    compiled_on: backends where the kernel compiles; elsewhere an explicit request runs it in
      Pallas interpret mode (slow, but the same code path). None: runs everywhere natively.
    fn_by_backend: (backend, function) pairs that replace `fn` on that backend (a Pallas entry
      with a Triton kernel for GPU and a Mosaic kernel for TPU).
  """

  name: str
  fn: Callable
  supported_on: Callable[..., bool] = lambda backend, **config: True
  compiled_on: frozenset[str] | None = None
  fn_by_backend: tuple[tuple[str, Callable], ...] = ()

  def fn_on(self, backend: str) -> Callable:
    """The function this implementation runs on `backend`."""
    return dict(self.fn_by_backend).get(backend, self.fn)


# The first jax release whose Pallas Triton lowering is deprecated (to be removed): 0.11.
TRITON_DEPRECATED_IN = (0, 11)


def _jax_version() -> tuple[int, ...]:
  parts = []
  for part in jax.__version__.split(".")[:3]:
    digits = "".join(c for c in part if c.isdigit())
    parts.append(int(digits) if digits else 0)
  return tuple(parts)


@functools.cache
def triton_supported() -> bool:
  """Whether the installed jax lowers Pallas to Triton without deprecation.

  False from jax 0.11 on (the Triton lowering is deprecated there, to be removed), and
  whenever `jax.experimental.pallas.triton` is missing or warns that it is deprecated on
  import. `implementation=None` then never picks a Triton kernel on GPU: the XLA paths run
  instead. An explicit `"pallas"` still runs the kernel where it lowers.
  """
  if _jax_version() >= TRITON_DEPRECATED_IN:
    return False
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
      importlib.import_module("jax.experimental.pallas.triton")
    except Exception:  # missing, or broken by a partial install: not a default
      return False
  return not any(issubclass(w.category, (DeprecationWarning, FutureWarning))
                 and "triton" in str(w.message).lower() for w in caught)


def _gpu_default(backend: str) -> bool:
  return backend == "gpu" and triton_supported()


def triton(fn: Callable, *, default: bool = True) -> Implementation:
  """The "pallas" entry of a registry for Pallas kernels with Triton lowering: `None` picks it
  on GPU where the installed jax supports Triton without deprecation (`triton_supported`),
  unless `default` is False (then it runs only when asked for by name); elsewhere an explicit
  request runs it in interpret mode."""
  return Implementation("pallas", fn, lambda backend, **_: default and _gpu_default(backend),
                        compiled_on=frozenset({"gpu"}))


def pallas(*, gpu: Callable, tpu: Callable) -> Implementation:
  """The "pallas" entry of a registry with a Triton kernel `gpu` and a Mosaic kernel `tpu`.

  An explicit `"pallas"` runs the backend's kernel on GPU and TPU, and the Triton kernel in
  interpret mode elsewhere. `None` picks it on GPU only, where `triton_supported()`; on TPU the
  Mosaic kernel runs only when asked for by name.
  """
  return Implementation("pallas", gpu, lambda backend, **_: _gpu_default(backend),
                        compiled_on=frozenset({"gpu", "tpu"}), fn_by_backend=(("tpu", tpu),))


def registry(*implementations: Implementation) -> Mapping[str, Implementation]:
  """An ordered, read-only table of implementations (the order is `None`'s preference)."""
  table = {}
  for impl in implementations:
    if impl.name not in NAMES or impl.name in table:
      raise ValueError(f"bad or repeated implementation name {impl.name!r}.")
    table[impl.name] = impl
  return types.MappingProxyType(table)


def backend() -> str:
  """The platform computations run on by default ("cpu", "gpu" or "tpu").

  `jax.default_device(...)` is honoured: under it a CPU device on a GPU machine gets the CPU
  implementations (and Pallas in interpret mode), not kernels compiled for the GPU.
  """
  device = jax.config.jax_default_device
  if device is None:
    return jax.default_backend()
  return device if isinstance(device, str) else device.platform


def select(table: Mapping[str, Implementation], implementation: str | None, op: str,
           other_names: tuple[str, ...] = (), **config) -> Callable:
  """Returns the function for `implementation`, or the first supported one for None.

  `other_names` are the op's names that its caller handles before `select` (listed in the
  error for an unknown name).

  Raises:
    ValueError: for a name the op does not have.
  """
  platform = backend()
  if implementation is None:
    for impl in table.values():
      native = impl.compiled_on is None or platform in impl.compiled_on
      if native and impl.supported_on(platform, **config):
        return impl.fn_on(platform)
    raise ValueError(f"{op}: no implementation supports backend {platform!r} with {config}.")
  if implementation not in table:
    raise ValueError(
        f"{op}: `implementation` must be None or one of {(*table, *other_names)}; got"
        f" {implementation!r}."
    )
  impl = table[implementation]
  fn = impl.fn_on(platform)
  if impl.compiled_on is not None:
    return functools.partial(fn, interpret=platform not in impl.compiled_on)
  return fn
