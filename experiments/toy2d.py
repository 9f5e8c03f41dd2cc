"""Toy 2-D Boltzmann sampling with Reverse Flow Matching: one run per estimator mode.

A flow v_theta(x, t) on the linear path x_t = t x1 + (1 - t) x0, x0 ~ N(0, I), learns to sample
p(x) ∝ exp(-E(x)) from the energy alone, never seeing a sample of p. Each step mirrors the actor
update of docs/method.md section 7 with the critic replaced by the exact energy:

  1. endpoints: B samples x1 of the CURRENT flow (stop-gradient). ``--resample K > 1`` draws each
     endpoint from softmax(-E) over K flow samples (the reference's Boltzmann resampling); the
     default K = 1 keeps plain on-policy samples, since here E is exact and the endpoints only
     decide where x_t lands;
  2. loss: batch mean of ``rfm_jax.method.losses.rfm_velocity_loss``, which draws t ~ U[t_min, 1 - t_min],
     x_t = t x1 + (1 - t) x0 and regresses v_theta(x_t, t) onto mu1 - mu0 from the SNIS posterior
     means with N particles and the chosen control variate.

The target depends on x_t and E only, so the fixed point is the true flow up to the finite-N bias
of the estimator; its bias and variance are what the modes change, all at the same N:

  none                 eta = 0, plain SNIS of the noise (QNE / MaxEntDP family)
  eta1                 eta = 1, SNIS of the energy gradient (DQS / iDEM family)
  optimal_isotropic    one plug-in optimal Stein coefficient
  optimal              per-dimension optimal Stein coefficients (the RFM default)
  oracle               reference run, not an estimator: the closed-form velocity of the mixture,
                       showing what the network, optimiser and Euler sampler reach with exact targets

Every mode uses the same seed, initial network, training keys and step count.

Sampler and t_min. Near t = 0 the noise posterior is a tiny cluster of width ~t around x_t: with
N = 16-32 particles from N(0, I) the ESS is ~1 and the SNIS means are biased toward the origin,
an outward velocity bias ~0.25 / t that no control variate removes (the optimal coefficient needs
ESS > 1). With the reference t_min = 0.01 every mode blows the samples outward, so t_min defaults
to 0.1. The sampler starts at beta(t_min) x0 (the path marginal at t_min up to the small
alpha x1 term), runs Euler to 1 - t_min and ends with one Euler step of length t_min to t = 1, so
the network is queried only on [t_min, 1 - t_min], where ``rfm_velocity_loss`` trains it.

Metric: sliced Wasserstein-2 between flow samples (training step count) and exact samples, next to
the same distance between independent exact sets (the noise floor, mean over 5 sets); also mean
energy and the total variation between target and sample mode weights (nearest component).

Usage:  python experiments/toy2d.py [--quick] [--target eight_gaussians|unequal_mixture] [--modes ...]
Writes ``toy2d.json`` and ``toy2d.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import platform
import time
from pathlib import Path
from typing import NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rfm_jax.method import losses, schedules

Array = jax.Array

ORACLE = "oracle"
MODES = {"none": "none", "eta1": 1.0, "optimal_isotropic": "optimal_isotropic", "optimal": "optimal", ORACLE: None}


# ----------------------------------------------------------------------------- targets


class Mixture(NamedTuple):
    """Gaussian mixture with diagonal covariances: weights [K], means [K, 2], stds [K, 2]."""

    weights: Array
    means: Array
    stds: Array


def eight_gaussians(radius: float = 2.5, std: float = 0.4) -> Mixture:
    """Eight equal-weight isotropic Gaussians evenly spaced on a circle."""
    angles = 2.0 * jnp.pi * jnp.arange(8) / 8
    means = radius * jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=-1)
    return Mixture(jnp.full(8, 1.0 / 8), means, jnp.full((8, 2), std))


def unequal_mixture() -> Mixture:
    """Four anisotropic Gaussians with weights 0.4 / 0.3 / 0.2 / 0.1 (tests relative mode mass)."""
    weights = jnp.array([0.4, 0.3, 0.2, 0.1])
    means = jnp.array([[-2.0, -1.5], [2.0, -1.0], [0.5, 2.5], [-2.5, 2.0]])
    stds = jnp.array([[0.6, 0.25], [0.3, 0.7], [0.5, 0.5], [0.25, 0.25]])
    return Mixture(weights, means, stds)


TARGETS = {"eight_gaussians": eight_gaussians, "unequal_mixture": unequal_mixture}


def gaussian_log_probs(weights: Array, means: Array, variances: Array, x: Array) -> Array:
    """log (w_k N(x; m_k, diag v_k)) for one point.  x [2] -> [K]."""
    log_norm = -0.5 * jnp.sum(jnp.log(2.0 * jnp.pi * variances), axis=-1)
    return jnp.log(weights) + log_norm - 0.5 * jnp.sum((x - means) ** 2 / variances, axis=-1)


def log_density(mixture: Mixture, x: Array) -> Array:
    """Normalised log p(x) = -E(x) for one point.  x [2] -> []."""
    return jax.nn.logsumexp(gaussian_log_probs(mixture.weights, mixture.means, mixture.stds**2, x))


def sample_mixture(mixture: Mixture, key: Array, num: int) -> Array:
    """Exact samples [num, 2]."""
    key_comp, key_noise = jax.random.split(key)
    comp = jax.random.choice(key_comp, mixture.weights.shape[0], (num,), p=mixture.weights)
    return mixture.means[comp] + mixture.stds[comp] * jax.random.normal(key_noise, (num, 2))


def exact_velocity(mixture: Mixture, x: Array, t: Array) -> Array:
    """Closed-form linear-path velocity (E[X1 | x_t] - x_t) / (1 - t) of the mixture.  x [2], t [] -> [2].

    Component k gives x_t ~ N(t m_k, t^2 s_k^2 + (1 - t)^2) and E[X1 | x_t, k] = m_k + t s_k^2 (x_t - t m_k) / var.
    """
    variances = t**2 * mixture.stds**2 + (1.0 - t) ** 2
    resp = jax.nn.softmax(gaussian_log_probs(mixture.weights, t * mixture.means, variances, x))
    data_means = mixture.means + t * mixture.stds**2 / variances * (x - t * mixture.means)
    return (resp @ data_means - x) / (1.0 - t)


# ----------------------------------------------------------------------------- model


def time_embedding(t: Array, num_freqs: int = 8) -> Array:
    """[t, sin(f t), cos(f t)] with geometric frequencies f in [1, 100].  t [...] -> [..., 2F + 1]."""
    freqs = jnp.exp(jnp.linspace(0.0, jnp.log(100.0), num_freqs))
    angles = t[..., None] * freqs
    return jnp.concatenate([t[..., None], jnp.sin(angles), jnp.cos(angles)], axis=-1)


class VelocityMLP(nn.Module):
    """v_theta(x, t): SiLU MLP on [x, emb(t)]. The zero-initialised output layer makes v = 0 at
    the start, so the first samples are the (scaled) source."""

    width: int = 128
    depth: int = 3

    @nn.compact
    def __call__(self, x: Array, t: Array) -> Array:
        h = jnp.concatenate([x, time_embedding(jnp.asarray(t, x.dtype))], axis=-1)
        for _ in range(self.depth):
            h = nn.silu(nn.Dense(self.width)(h))
        return nn.Dense(x.shape[-1], kernel_init=nn.initializers.zeros)(h)


# ----------------------------------------------------------------------------- sampling


def sample_flow(model: nn.Module, params, key: Array, num: int, *, num_steps: int, t_min: float) -> Array:
    """Flow samples [num, 2]: beta(t_min) x0 with x0 ~ N(0, I), Euler to 1 - t_min, a last step to 1."""
    velocity_fn = lambda x, t: model.apply(params, x, t)  # noqa: E731
    integrate = functools.partial(schedules.sample_euler, num_steps=num_steps, t_start=t_min, t_end=1.0 - t_min)
    x_start = (1.0 - t_min) * jax.random.normal(key, (num, 2))
    x_end = jax.vmap(lambda x: integrate(velocity_fn, x))(x_start)
    return x_end + t_min * model.apply(params, x_end, jnp.full(num, 1.0 - t_min))


def sample_endpoints(model: nn.Module, params, key: Array, log_prob_fn, *, batch: int, resample: int, **flow_kw):
    """B training endpoints [B, 2] (stop-gradient); with resample K > 1, one of K flow samples per
    endpoint drawn from softmax(log p)."""
    key_flow, key_pick = jax.random.split(key)
    x = jax.lax.stop_gradient(sample_flow(model, params, key_flow, batch * resample, **flow_kw))
    if resample == 1:
        return x
    x = x.reshape(batch, resample, 2)
    pick = jax.random.categorical(key_pick, jax.vmap(jax.vmap(log_prob_fn))(x), axis=-1)
    return jnp.take_along_axis(x, pick[:, None, None], axis=1)[:, 0]


# ----------------------------------------------------------------------------- metrics


def sliced_w2(key: Array, x: Array, y: Array, num_projections: int) -> Array:
    """Sliced Wasserstein-2 between two equal-size point sets [n, 2] (random directions on the circle)."""
    angles = jax.random.uniform(key, (num_projections,), maxval=2.0 * jnp.pi)
    directions = jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=-1)
    px, py = jnp.sort(x @ directions.T, axis=0), jnp.sort(y @ directions.T, axis=0)
    return jnp.sqrt(jnp.mean((px - py) ** 2))


def mode_tv(mixture: Mixture, x: Array) -> Array:
    """Total variation between the target weights and the share of samples per most likely component."""
    log_probs = jax.vmap(lambda xi: gaussian_log_probs(mixture.weights, mixture.means, mixture.stds**2, xi))(x)
    share = jnp.bincount(jnp.argmax(log_probs, axis=-1), length=mixture.weights.shape[0]) / x.shape[0]
    return 0.5 * jnp.sum(jnp.abs(share - mixture.weights))


def sample_metrics(mixture: Mixture, key_proj: Array, samples: Array, exact: Array, num_projections: int) -> dict:
    """SW2 to the exact set, mean energy E = -log p, mode-weight TV and finite fraction of samples [n, 2]."""
    finite = jnp.all(jnp.isfinite(samples), axis=-1)
    return {
        "sw2": sliced_w2(key_proj, samples, exact, num_projections),
        "mean_energy": -jnp.mean(jax.vmap(functools.partial(log_density, mixture))(samples)),
        "mode_tv": mode_tv(mixture, samples),
        "finite_frac": jnp.mean(finite),
    }


def to_float(tree: dict) -> dict:
    return {k: float(v) for k, v in tree.items()}


def noise_floor(mixture: Mixture, key: Array, key_proj: Array, exact: Array, cfg: Config, repeats: int = 5) -> dict:
    """Metrics of ``repeats`` independent exact sets against ``exact``: what a perfect sampler gets."""
    metrics_fn = jax.jit(
        lambda k: sample_metrics(mixture, key_proj, sample_mixture(mixture, k, len(exact)), exact, cfg.num_projections)
    )
    rows = [to_float(metrics_fn(k)) for k in jax.random.split(key, repeats)]
    floor = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    return {**floor, "sw2_std": float(np.std([r["sw2"] for r in rows])), "sw2_all": [r["sw2"] for r in rows]}


# ----------------------------------------------------------------------------- training


class Config(NamedTuple):
    target: str
    steps: int
    chunk: int
    batch: int
    num_particles: int
    resample: int
    euler_steps: int
    t_min: float
    lr: float
    lr_final_frac: float
    grad_clip: float
    width: int
    depth: int
    eval_samples: int
    num_projections: int
    seed: int


def make_optimizer(cfg: Config) -> optax.GradientTransformation:
    lr = optax.cosine_decay_schedule(cfg.lr, cfg.steps, alpha=cfg.lr_final_frac)
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), optax.adam(lr))


def rfm_example_loss(key, x1, velocity_fn, *, mixture: Mixture, cfg: Config, control_variate):
    """RFM velocity loss for one endpoint; returns (loss [], ESS [])."""
    loss, aux = losses.rfm_velocity_loss(
        key,
        velocity_fn,
        functools.partial(log_density, mixture),
        x1,
        schedule=schedules.linear(),
        num_particles=cfg.num_particles,
        control_variate=control_variate,
        t_min=cfg.t_min,
    )
    return loss, aux.estimate.ess


def oracle_example_loss(key, x1, velocity_fn, *, mixture: Mixture, cfg: Config):
    """Same regression onto the exact velocity (same x_t and t draws); ESS is reported as NaN."""
    t, x_t = losses.noisy_point(key, x1, schedule=schedules.linear(), t_min=cfg.t_min)
    return jnp.mean((velocity_fn(x_t, t) - exact_velocity(mixture, x_t, t)) ** 2), jnp.float32(jnp.nan)


def make_train_chunk(model: nn.Module, optimizer, mixture: Mixture, cfg: Config, mode: str):
    """Jitted ``(params, opt_state, key) -> (params, opt_state, metrics)`` running ``cfg.chunk`` steps by scan."""
    if mode == ORACLE:
        example_loss = functools.partial(oracle_example_loss, mixture=mixture, cfg=cfg)
    else:
        example_loss = functools.partial(rfm_example_loss, mixture=mixture, cfg=cfg, control_variate=MODES[mode])
    flow_kw = dict(num_steps=cfg.euler_steps, t_min=cfg.t_min)
    log_prob_fn = functools.partial(log_density, mixture)

    def batch_loss(params, key, x1):
        velocity_fn = lambda x, t: model.apply(params, x, t)  # noqa: E731
        per_example = lambda k, x: example_loss(k, x, velocity_fn)  # noqa: E731
        loss, ess = jax.vmap(per_example)(jax.random.split(key, len(x1)), x1)
        return jnp.mean(loss), jnp.mean(ess)

    def train_step(carry, key):
        params, opt_state = carry
        key_x1, key_loss = jax.random.split(key)
        x1 = sample_endpoints(model, params, key_x1, log_prob_fn, batch=cfg.batch, resample=cfg.resample, **flow_kw)
        (loss, ess), grads = jax.value_and_grad(batch_loss, has_aux=True)(params, key_loss, x1)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), (loss, ess)

    @jax.jit
    def train_chunk(params, opt_state, key):
        keys = jax.random.split(key, cfg.chunk)
        (params, opt_state), (loss, ess) = jax.lax.scan(train_step, (params, opt_state), keys)
        metrics = {"loss": jnp.mean(loss), "ess": jnp.mean(ess), "nonfinite": jnp.sum(~jnp.isfinite(loss))}
        return params, opt_state, metrics

    return train_chunk


def make_evaluate(model: nn.Module, mixture: Mixture, exact: Array, key_eval: Array, key_proj: Array, cfg: Config):
    """Jitted ``params -> (samples, metrics)`` on fixed keys, shared by all modes."""

    @jax.jit
    def evaluate(params):
        samples = sample_flow(model, params, key_eval, len(exact), num_steps=cfg.euler_steps, t_min=cfg.t_min)
        return samples, sample_metrics(mixture, key_proj, samples, exact, cfg.num_projections)

    return evaluate


def train_mode(mode: str, cfg: Config, model: nn.Module, mixture: Mixture, evaluate) -> dict:
    """Train one mode from the shared seed; returns its history, final metrics and last samples."""
    key_init, key_train = jax.random.split(jax.random.PRNGKey(cfg.seed))
    params = model.init(key_init, jnp.zeros(2), jnp.zeros(()))
    optimizer = make_optimizer(cfg)
    opt_state = optimizer.init(params)
    train_chunk = make_train_chunk(model, optimizer, mixture, cfg, mode)

    samples, metrics = evaluate(params)
    history = [{"step": 0, **to_float(metrics), "elapsed_s": 0.0}]
    start = time.perf_counter()
    for i, key_chunk in enumerate(jax.random.split(key_train, cfg.steps // cfg.chunk)):
        params, opt_state, train_metrics = train_chunk(params, opt_state, key_chunk)
        samples, metrics = evaluate(params)
        row = {"step": (i + 1) * cfg.chunk, **to_float(train_metrics), **to_float(metrics)}
        row["elapsed_s"] = time.perf_counter() - start
        history.append(row)
        print(
            f"  [{mode}] step {row['step']:6d}  loss {row['loss']:10.4g}  ess {row['ess']:6.2f}  "
            f"sw2 {row['sw2']:.4f}  E {row['mean_energy']:.3f}  mode_tv {row['mode_tv']:.3f}  {row['elapsed_s']:6.1f}s",
            flush=True,
        )
    return {
        "final": {k: history[-1][k] for k in ("sw2", "mean_energy", "mode_tv", "finite_frac")},
        "history": history,
        "nonfinite_losses": int(sum(row.get("nonfinite", 0) for row in history)),
        "wall_s": time.perf_counter() - start,
        "samples": np.asarray(samples),
    }


# ----------------------------------------------------------------------------- output


def json_safe(value):
    """NaN / inf -> None, recursively, so the record is strict JSON."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def plot(path: Path, results: dict, exact: np.ndarray, floor: dict, cfg: Config) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(f"{m}: SW2 {r['final']['sw2']:.3f}", r["samples"]) for m, r in results.items()]
    panels.append((f"exact samples: floor {floor['sw2']:.3f} ± {floor['sw2_std']:.3f}", exact))
    ncols = 3
    nrows = math.ceil((len(panels) + 1) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.3 * ncols, 4.2 * nrows), squeeze=False)
    lim = float(np.max(np.abs(exact))) + 0.5
    for ax, (title, pts) in zip(axes.flat, panels, strict=False):
        ax.hist2d(pts[:, 0], pts[:, 1], bins=90, range=[[-lim, lim], [-lim, lim]], cmap="viridis")
        ax.set_title(title, fontsize=10)
        ax.set_aspect("equal")
    ax = axes.flat[len(panels)]
    for mode, res in results.items():
        ax.plot([h["step"] for h in res["history"]], [h["sw2"] for h in res["history"]], label=mode)
    ax.axhline(floor["sw2"], color="k", ls="--", lw=1, label="noise floor")
    ax.set(yscale="log", xlabel="step", title="SW2 to exact samples")
    ax.legend(fontsize=8)
    for ax in axes.flat[len(panels) + 1 :]:
        ax.axis("off")
    fig.suptitle(
        f"RFM on {cfg.target}: N = {cfg.num_particles} particles, {cfg.steps} steps, t_min = {cfg.t_min}, "
        f"{cfg.euler_steps} Euler steps, seed {cfg.seed}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None) -> tuple[Config, Path, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="experiments/results/toy2d")
    parser.add_argument("--target", default="eight_gaussians", choices=sorted(TARGETS))
    parser.add_argument("--steps", type=int, default=None, help="training steps per mode (default 4000, quick 100)")
    parser.add_argument("--chunk", type=int, default=None, help="steps per jitted scan call (default 250, quick 50)")
    parser.add_argument("--num-particles", type=int, default=32)
    parser.add_argument("--batch", type=int, default=None, help="endpoints per step (default 256, quick 128)")
    parser.add_argument("--resample", type=int, default=1, help="Boltzmann resampling among K flow samples (1: off)")
    parser.add_argument("--euler-steps", type=int, default=16)
    parser.add_argument("--t-min", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ",".join(MODES))
    parser.add_argument("--quick", action="store_true", help="smoke test: few steps, small batch (< 1 minute)")
    args = parser.parse_args(argv)
    steps = args.steps or (100 if args.quick else 4000)
    chunk = min(args.chunk or (50 if args.quick else 250), steps)
    if steps % chunk:
        parser.error(f"--steps ({steps}) must be a multiple of --chunk ({chunk})")
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in MODES for m in modes):
        parser.error(f"--modes must be a comma-separated subset of {list(MODES)}")
    cfg = Config(
        target=args.target,
        steps=steps,
        chunk=chunk,
        batch=args.batch or (128 if args.quick else 256),
        num_particles=args.num_particles,
        resample=args.resample,
        euler_steps=args.euler_steps,
        t_min=args.t_min,
        lr=args.lr,
        lr_final_frac=0.1,
        grad_clip=10.0,
        width=128,
        depth=3,
        eval_samples=2000 if args.quick else 8000,
        num_projections=256,
        seed=args.seed,
    )
    return cfg, Path(args.out), modes


def main(argv=None) -> None:
    cfg, out, modes = parse_args(argv)
    out.mkdir(parents=True, exist_ok=True)
    mixture = TARGETS[cfg.target]()
    key_exact, key_floor, key_proj, key_eval = jax.random.split(jax.random.PRNGKey(10_000 + cfg.seed), 4)
    exact = sample_mixture(mixture, key_exact, cfg.eval_samples)
    floor = noise_floor(mixture, key_floor, key_proj, exact, cfg)
    print(f"settings: {cfg._asdict()}")
    print(
        f"target {cfg.target}: noise floor SW2 {floor['sw2']:.4f} ± {floor['sw2_std']:.4f} "
        f"(exact vs exact, {len(floor['sw2_all'])} sets), exact mean E {floor['mean_energy']:.3f}",
        flush=True,
    )
    model = VelocityMLP(width=cfg.width, depth=cfg.depth)
    evaluate = make_evaluate(model, mixture, exact, key_eval, key_proj, cfg)

    start = time.perf_counter()
    results = {}
    for mode in modes:
        print(f"mode {mode} (control_variate={MODES[mode]!r})", flush=True)
        results[mode] = train_mode(mode, cfg, model, mixture, evaluate)
    wall = time.perf_counter() - start

    print(f"\n{'mode':<20}{'SW2':>8}{'mean E':>9}{'mode TV':>9}{'wall s':>8}")
    for mode, res in results.items():
        f = res["final"]
        print(f"{mode:<20}{f['sw2']:8.4f}{f['mean_energy']:9.3f}{f['mode_tv']:9.3f}{res['wall_s']:8.1f}")
    print(f"{'exact (noise floor)':<20}{floor['sw2']:8.4f}{floor['mean_energy']:9.3f}{floor['mode_tv']:9.3f}")
    print(f"total wall time {wall:.1f}s")

    record = {
        "settings": {**cfg._asdict(), "modes": {m: MODES[m] for m in modes}, "schedule": "linear", "source": "N(0, I)"},
        "noise_floor": floor,
        "modes": {m: {k: v for k, v in r.items() if k != "samples"} for m, r in results.items()},
        "wall_s": wall,
        "versions": {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__},
        "platform": {"python": platform.python_version(), "backend": jax.default_backend()},
    }
    (out / "toy2d.json").write_text(json.dumps(json_safe(record), indent=2))
    plot(out / "toy2d.png", results, np.asarray(exact), floor, cfg)
    print(f"wrote {out / 'toy2d.json'} and {out / 'toy2d.png'}")


if __name__ == "__main__":
    main()
