# %% [markdown]
# # 1. The divergence family
#
# Entropy, cross-entropy and KL divergence, how they relate, every core divergence of `jaxdiv`
# on a grid of Bernoulli pairs, and the inequalities between them checked on random pairs.
# Every statement below is followed by the output that shows it.
#
# Set `JAXDIV_NOTEBOOK_QUICK=1` for the small sizes that CI uses.

# %%
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jaxdiv

jax.config.update("jax_enable_x64", True)  # float64, so that the bounds are checked to 1e-12
QUICK = os.environ.get("JAXDIV_NOTEBOOK_QUICK") == "1"
plt.rcParams.update({"figure.dpi": 60, "savefig.dpi": 60, "font.size": 9})
N_PAIRS = 2_000 if QUICK else 20_000
GRID = 41 if QUICK else 99
print("jax", jax.__version__, "| jaxdiv", jaxdiv.__version__, "| pairs", N_PAIRS, "| grid", GRID)

# %% [markdown]
# ## Entropy, cross-entropy and KL
#
# $H(p) = -\sum_i p_i \log p_i$, $H(p, q) = -\sum_i p_i \log q_i$ and
# $\mathrm{KL}(p\,\|\,q) = \sum_i p_i \log(p_i / q_i)$, so that
# $H(p, q) = H(p) + \mathrm{KL}(p\,\|\,q)$: the cross-entropy is the cost of coding $p$ with a code
# built for $q$, the entropy is the best cost, and KL is the excess. `jaxdiv` follows the math
# order: `kl_divergence(p, q)` is KL(p‖q). On a batch of random distributions (with some exact
# zeros in p, where 0·log 0 = 0):

# %%
kp, kq, kz = jax.random.split(jax.random.key(0), 3)
p = jax.random.dirichlet(kp, jnp.full(10, 0.5), (N_PAIRS,))
p = jnp.where(jax.random.uniform(kz, p.shape) < 0.2, 0.0, p)
p = p / p.sum(-1, keepdims=True)
q = jax.random.dirichlet(kq, jnp.ones(10), (N_PAIRS,))

H, CE, KL = jaxdiv.entropy(p), jaxdiv.cross_entropy(p, q), jaxdiv.kl_divergence(p, q)
print("max |H(p, q) - H(p) - KL(p||q)| =", float(jnp.max(jnp.abs(CE - H - KL))))
print("min KL(p||q) =", float(KL.min()), " (Gibbs: KL >= 0)")
print("KL(p||p) max =", float(jnp.max(jnp.abs(jaxdiv.kl_divergence(p, p)))))
print("H(p) <= log 10:", bool(jnp.all(H <= jnp.log(10) + 1e-12)), " max H =", float(H.max()),
      " log 10 =", float(jnp.log(10)))
print("zeros in p:", int((p == 0).sum()), "| NaN in H, CE, KL:",
      bool(jnp.isnan(H).any() | jnp.isnan(CE).any() | jnp.isnan(KL).any()))

# %% [markdown]
# KL is not symmetric: KL(p‖q) and KL(q‖p) differ, and where p has a zero that q does not,
# KL(q‖p) is infinite (q puts mass where p has none) while KL(p‖q) stays finite.

# %%
KL_rev = jaxdiv.kl_divergence(q, p)
print("fraction of pairs with KL(p||q) != KL(q||p):", float(jnp.mean(jnp.abs(KL - KL_rev) > 1e-9)))
print("KL(p||q) finite everywhere:", bool(jnp.isfinite(KL).all()))
print("KL(q||p) infinite exactly where p has a zero:",
      bool(jnp.all(jnp.isinf(KL_rev) == jnp.any(p == 0, -1))))

# %% [markdown]
# ## Every core divergence on a grid of Bernoulli pairs
#
# A Bernoulli pair is p = (a, 1−a), q = (b, 1−b). Below, each panel is one divergence as a
# function of (a, b). The symmetric ones (Jeffreys, JS, Hellinger, TV, Bhattacharyya) are
# mirror images across the diagonal, and so are the Rényi and alpha divergences of order 1/2;
# KL, χ², and the other Rényi/Tsallis/alpha orders are not, and grow fastest where q puts almost
# no mass on an outcome that p has (the printed `max |D(p,q) - D(q,p)|` column shows which).

# %%
a = jnp.linspace(0.01, 0.99, GRID)
A, B = jnp.meshgrid(a, a, indexing="ij")       # A: first argument p, B: second argument q
P = jnp.stack([A, 1 - A], -1)
Q = jnp.stack([B, 1 - B], -1)

panels = {
    "cross_entropy H(p,q)": jaxdiv.cross_entropy(P, Q),
    "KL(p||q)": jaxdiv.kl_divergence(P, Q),
    "KL(q||p)": jaxdiv.kl_divergence(Q, P),
    "jeffreys": jaxdiv.jeffreys_divergence(P, Q),
    "JS": jaxdiv.js_divergence(P, Q),
    "JS distance": jaxdiv.js_distance(P, Q),
    "renyi a=0.5": jaxdiv.renyi_divergence(P, Q, 0.5),
    "renyi a=2": jaxdiv.renyi_divergence(P, Q, 2.0),
    "renyi a=inf": jaxdiv.renyi_divergence(P, Q, jnp.inf),
    "tsallis a=2": jaxdiv.tsallis_divergence(P, Q, 2.0),
    "alpha a=0.5": jaxdiv.alpha_divergence(P, Q, 0.5),
    "hellinger": jaxdiv.hellinger_distance(P, Q),
    "total variation": jaxdiv.total_variation_distance(P, Q),
    "chi squared": jaxdiv.chi_squared_divergence(P, Q),
    "bhattacharyya": jaxdiv.bhattacharyya_distance(P, Q),
}
fig, axes = plt.subplots(3, 5, figsize=(13, 7.5), constrained_layout=True)
for ax, (name, z) in zip(axes.flat, panels.items()):
  z = np.asarray(z)
  im = ax.imshow(np.log1p(z).T, origin="lower", extent=(0.01, 0.99, 0.01, 0.99), cmap="viridis")
  ax.set_title(name)
  ax.set_xlabel("a  (p = Bern(a))")
  ax.set_ylabel("b  (q = Bern(b))")
  fig.colorbar(im, ax=ax, shrink=0.8, label="log(1 + D)")
plt.show()

for name, z in panels.items():
  z = np.asarray(z)
  print(f"{name:22s} min {z.min():9.4f}  max {z.max():9.4f}  "
        f"max |D(p,q) - D(q,p)| {np.abs(z - z.T).max():8.3g}  on diagonal max {np.abs(np.diag(z)).max():.2g}")

# %% [markdown]
# The `binary_*` functions take the Bernoulli parameters directly and agree with the two-class
# categorical form; the alpha divergence at α = 1/2 is 4(1 − Σ√(pq)) = 4 − 4·exp(−Bhattacharyya),
# and Rényi at α = 1/2 is twice the Bhattacharyya distance:

# %%
print("binary_kl vs kl:", float(jnp.max(jnp.abs(jaxdiv.binary_kl_divergence(A, B) - panels["KL(p||q)"]))))
print("binary_cross_entropy vs cross_entropy:",
      float(jnp.max(jnp.abs(jaxdiv.binary_cross_entropy(A, B) - panels["cross_entropy H(p,q)"]))))
print("alpha(1/2) vs 4(1 - exp(-B)):",
      float(jnp.max(jnp.abs(panels["alpha a=0.5"] - 4 * (1 - jnp.exp(-panels["bhattacharyya"]))))))
print("renyi(1/2) vs 2 B:", float(jnp.max(jnp.abs(panels["renyi a=0.5"] - 2 * panels["bhattacharyya"]))))
print("JS distance^2 vs JS:", float(jnp.max(jnp.abs(panels["JS distance"] ** 2 - panels["JS"]))))

# %% [markdown]
# ## Bounds between them, on random pairs
#
# On random pairs of distributions over 2 to 50 outcomes with concentrations from very peaked to
# nearly uniform, we check
#
# * Pinsker: TV(p, q) ≤ √(KL(p‖q)/2);
# * JS(p, q) ≤ log 2 (and JS ≤ TV·log 2 is a sharper form of it);
# * Hellinger: H² ≤ TV ≤ √2·H;
# * KL(p‖q) ≤ log(1 + χ²(p‖q)) ≤ χ²(p‖q);
# * Rényi divergences increase with the order: D_{1/2} ≤ KL = D_1 ≤ D_2 ≤ D_∞.
#
# Each line prints the largest violation (a bound holds when it is ≤ 0 up to rounding).

# %%
rng = np.random.default_rng(0)
pairs = []
for i in range(N_PAIRS):
  k = int(rng.integers(2, 51))
  conc = 10.0 ** rng.uniform(-1.5, 1.5)
  pairs.append((rng.dirichlet(np.full(k, conc)), rng.dirichlet(np.full(k, conc)), k))
# Pad to 50 outcomes and mask the padding out with `where`.
Pr = np.zeros((N_PAIRS, 50)); Qr = np.zeros((N_PAIRS, 50)); M = np.zeros((N_PAIRS, 50), bool)
for i, (pp, qq, k) in enumerate(pairs):
  Pr[i, :k], Qr[i, :k], M[i, :k] = pp, qq, True
Pr, Qr, M = jnp.asarray(Pr), jnp.asarray(Qr), jnp.asarray(M)

kl = jaxdiv.kl_divergence(Pr, Qr, where=M)
tv = jaxdiv.total_variation_distance(Pr, Qr, where=M)
js = jaxdiv.js_divergence(Pr, Qr, where=M)
hel = jaxdiv.hellinger_distance(Pr, Qr, where=M)
chi2 = jaxdiv.chi_squared_divergence(Pr, Qr, where=M)
r_half, r_2, r_inf = (jaxdiv.renyi_divergence(Pr, Qr, a, where=M) for a in (0.5, 2.0, jnp.inf))
finite = jnp.isfinite(kl)
# The most peaked Dirichlet draws underflow to exact zeros; where q has a zero that p has not,
# KL(p||q) is +inf and the bound is trivial, so those pairs are left out of the maxima.
print(f"{int(finite.sum())} of {N_PAIRS} pairs with finite KL; KL ranges up to {float(kl[finite].max()):.3g}")
checks = {
    "TV - sqrt(KL/2)          (Pinsker)": tv - jnp.sqrt(kl / 2),
    "JS - log 2": js - jnp.log(2),
    "JS - TV log 2": js - tv * jnp.log(2),
    "H^2 - TV": hel**2 - tv,
    "TV - sqrt(2) H": tv - jnp.sqrt(2) * hel,
    "KL - log(1 + chi2)": kl - jnp.log1p(chi2),
    "log(1 + chi2) - chi2": jnp.log1p(chi2) - chi2,
    "D_1/2 - KL": r_half - kl,
    "KL - D_2": kl - r_2,
    "D_2 - D_inf": r_2 - r_inf,
}
for name, slack in checks.items():
  print(f"max {name:34s} = {float(jnp.max(slack[finite])):+.3e}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
t = np.linspace(0, float(tv.max()), 200)
axes[0].scatter(np.asarray(kl), np.asarray(tv), s=2, alpha=0.3)
axes[0].plot(2 * t**2, t, "r", label="Pinsker: TV = sqrt(KL/2)")
axes[0].set(xscale="log", xlabel="KL(p||q)", ylabel="TV(p, q)", title="Pinsker's inequality")
axes[0].legend()
axes[1].scatter(np.asarray(tv), np.asarray(js), s=2, alpha=0.3)
axes[1].axhline(np.log(2), color="r", label="log 2")
axes[1].plot([0, 1], [0, np.log(2)], "k--", label="TV log 2")
axes[1].set(xlabel="TV(p, q)", ylabel="JS(p, q)", title="JS ≤ TV·log 2 ≤ log 2")
axes[1].legend()
axes[2].scatter(np.asarray(hel), np.asarray(tv), s=2, alpha=0.3)
h = np.linspace(0, 1, 100)
axes[2].plot(h, h**2, "r", label="H²")
axes[2].plot(h, np.minimum(np.sqrt(2) * h, 1), "k--", label="√2 H")
axes[2].set(xlabel="Hellinger H(p, q)", ylabel="TV(p, q)", title="H² ≤ TV ≤ √2 H")
axes[2].legend()
plt.show()
