# %% [markdown]
# # 4. Large vocabularies
#
# The last layer of a language model maps hidden states `h [N, D]` through a weight `W [D, V]` to
# logits `[N, V]` and takes a cross-entropy against the next tokens. With V ~ 10⁵ and N ~ 10⁴, the
# logits and their gradient dominate training memory. Three ways to compute the same loss and its
# gradient with respect to `h` and `W`:
#
# * **optax**: `logits = h @ W`, then `optax.losses.softmax_cross_entropy_with_integer_labels`;
#   XLA keeps the `[N, V]` logits (and their gradient) alive;
# * **chunked cross-entropy**: `jaxdiv.kernels.cross_entropy_with_integer_labels(h @ W, y,
#   implementation="chunked")`: the loss over the logits in vocabulary blocks, with a custom VJP;
#   the logits themselves are still materialised by the matmul;
# * **fused linear cross-entropy**: `jaxdiv.kernels.fused_linear_cross_entropy(h, W, y)`: the
#   matmul and the loss in blocks of tokens and vocabulary, so that `[N, V]` never exists.
#
# Memory is XLA's own accounting (`jax.jit(f).lower(...).compile().memory_analysis()`, temporary
# bytes: compiled, not run, so it can go to sizes this CPU could not run). Time is measured
# (value-and-grad, median of repeats after warm-up) at smaller sizes.

# %%
import os
import statistics
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

from jaxdiv import kernels

QUICK = os.environ.get("JAXDIV_NOTEBOOK_QUICK") == "1"
plt.rcParams.update({"figure.dpi": 60, "savefig.dpi": 60, "font.size": 9})
MiB = 1 << 20


def optax_loss(h, w, y):
  logits = jnp.dot(h, w, preferred_element_type=jnp.float32)
  return jnp.mean(optax.losses.softmax_cross_entropy_with_integer_labels(logits, y))


def chunked_loss(h, w, y):
  logits = jnp.dot(h, w, preferred_element_type=jnp.float32)
  return jnp.mean(kernels.cross_entropy_with_integer_labels(logits, y, implementation="chunked"))


def fused_loss(h, w, y):
  return jnp.mean(kernels.fused_linear_cross_entropy(h, w, y))


METHODS = {"optax": optax_loss, "chunked CE": chunked_loss, "fused linear CE": fused_loss}
value_and_grad = {k: jax.jit(jax.value_and_grad(f, (0, 1))) for k, f in METHODS.items()}
print("jax", jax.__version__, "| backend", jax.default_backend())

# %% [markdown]
# **They compute the same thing.** Loss and gradients against optax, float32, at a small size:

# %%
kh, kw, ky = jax.random.split(jax.random.key(0), 3)
n, d, v = 256, 64, 5000
h = jax.random.normal(kh, (n, d))
w = jax.random.normal(kw, (d, v)) / np.sqrt(d)
y = jax.random.randint(ky, (n,), 0, v)
ref_val, (ref_dh, ref_dw) = value_and_grad["optax"](h, w, y)
for name in ["chunked CE", "fused linear CE"]:
  val, (dh, dw) = value_and_grad[name](h, w, y)
  print(f"{name:16s} |loss - optax| {abs(float(val - ref_val)):.1e}   max |dh - optax| "
        f"{float(jnp.max(jnp.abs(dh - ref_dh))):.1e}   max |dW - optax| {float(jnp.max(jnp.abs(dw - ref_dw))):.1e}")

# %% [markdown]
# ## Memory as the vocabulary grows (compiled, not run)
#
# N = 8192 tokens, D = 1024, float32, value and gradient with respect to `h` and `W`. The
# `[N, V]` float32 logits alone take N·V·4 bytes, drawn as the dashed line.

# %%
N, D = (2048, 512) if QUICK else (8192, 1024)
VOCABS = [8192, 32768, 131072] if QUICK else [8192, 16384, 32768, 65536, 131072, 262144]
memory = {k: [] for k in METHODS}
t0 = time.perf_counter()
for V in VOCABS:
  args = (jax.ShapeDtypeStruct((N, D), jnp.float32), jax.ShapeDtypeStruct((D, V), jnp.float32),
          jax.ShapeDtypeStruct((N,), jnp.int32))
  for name, f in METHODS.items():
    mem = jax.jit(jax.value_and_grad(f, (0, 1))).lower(*args).compile().memory_analysis()
    memory[name].append(mem.temp_size_in_bytes)
print(f"N = {N}, D = {D}; compiled {len(VOCABS) * len(METHODS)} programs in {time.perf_counter() - t0:.1f} s")
print(f"{'V':>8s} " + " ".join(f"{k:>18s}" for k in METHODS) + "   logits N*V*4   fused / optax")
for i, V in enumerate(VOCABS):
  print(f"{V:8d} " + " ".join(f"{memory[k][i] / MiB:15.1f} MiB" for k in METHODS)
        + f"   {N * V * 4 / MiB:9.1f} MiB   {memory['fused linear CE'][i] / memory['optax'][i]:.4f}")

# %% [markdown]
# ## Time as the vocabulary grows (measured on this machine)

# %%
Nt, Dt = (256, 128) if QUICK else (512, 256)
VOCABS_T = [2048, 8192] if QUICK else [2048, 4096, 8192, 16384, 32768]
REPS = 3 if QUICK else 7


def median_time(f, *args):
  jax.block_until_ready(f(*args))  # compile and warm up
  times = []
  for _ in range(REPS):
    t = time.perf_counter()
    jax.block_until_ready(f(*args))
    times.append(time.perf_counter() - t)
  return statistics.median(times)


timing = {k: [] for k in METHODS}
for V in VOCABS_T:
  h = jax.random.normal(kh, (Nt, Dt))
  w = jax.random.normal(kw, (Dt, V)) / np.sqrt(Dt)
  y = jax.random.randint(ky, (Nt,), 0, V)
  for name, f in value_and_grad.items():
    timing[name].append(median_time(f, h, w, y))
print(f"N = {Nt}, D = {Dt}, value and gradient, median of {REPS} (ms); ratio to optax")
for i, V in enumerate(VOCABS_T):
  print(f"V = {V:6d}: " + "   ".join(
      f"{k} {1e3 * timing[k][i]:8.2f} ({timing[k][i] / timing['optax'][i]:.2f}x)" for k in METHODS))

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4), constrained_layout=True)
for name in METHODS:
  axes[0].loglog(VOCABS, np.array(memory[name]) / MiB, "o-", label=name)
axes[0].loglog(VOCABS, np.array(VOCABS) * N * 4 / MiB, "k--", label="[N, V] float32 logits")
axes[0].set(xlabel="vocabulary V", ylabel="XLA temporary memory (MiB)",
            title=f"Memory, value+grad, N={N}, D={D} (compiled)")
axes[0].legend(fontsize=7)
for name in METHODS:
  axes[1].loglog(VOCABS_T, 1e3 * np.array(timing[name]), "o-", label=name)
axes[1].set(xlabel="vocabulary V", ylabel="time (ms)",
            title=f"Time, value+grad, N={Nt}, D={Dt} ({jax.default_backend()})")
axes[1].legend(fontsize=7)
plt.show()

# %% [markdown]
# The measured times are printed above as ratios to optax; the memory is where the methods part:
# optax's and the chunked loss's temporary memory grow with the `[N, V]` logits, the fused loss's
# stays flat (the `fused / optax` column). On a GPU, `bench/kernels.py` makes the same comparison
# at LLM head shapes, with the Pallas kernels.
