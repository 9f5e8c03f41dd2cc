"""Error of the posterior-mean estimator's control-variate modes against particle count and time.

What is measured
----------------
``rfm_jax.method.estimators.posterior_mean`` estimates the noise posterior mean mu0(x_t) = E[X0 | X_t = x_t]
by self-normalised importance sampling (SNIS) with N particles x0 ~ N(0, I), optionally corrected by
a Langevin-Stein control variate (docs/method.md sections 3-4). The modes compared:

    none                plain SNIS, Lam = 0 (= eta 0, the QNE / MaxEntDP estimator)
    eta1                Lam = I (eta = 1, the DQS / iDEM gradient-expectation estimator)
    optimal_isotropic   a plug-in optimal scalar eta* (ridge ``--ridge``, default 1e-4)
    optimal             a plug-in optimal diagonal Lam* (library defaults: noise space, no clip)
    optimal_data_clip2  the same fitted in data space with |C| <= 2, the reference agent's setting
    safe_isotropic      the isotropic plug-in coefficient in data space, |C| <= 2, then 0 <= Lam <= 1 in
                        noise space, the correction at most 2 delta-method SEs of plain SNIS
                        (``rfm_jax.method.safe_cv``)
    crossfit_isotropic  the same guards, the coefficient of each half of the particles applied to the other

For every target, mode and setting the error is

    MSE = mean over repeats r, points p and coordinates j of (mu0_hat[r, p, j] - mu0[p, j])^2

(a per-coordinate squared error), with R independent particle sets per point and P points
x_t = alpha_t x1 + beta_t x0 from the true marginal p_t (x0 ~ N(0, I), x1 ~ p1; the same P draws of
(x1, x0) are reused at every t). All modes see the same particles (common random numbers), so their
differences are measured more precisely than their absolute values. Also saved: the standard error
of the MSE over points, its bias^2 / variance split, the median squared error (the plug-in optimal
coefficients occasionally produce huge errors at low ESS, which dominate their mean), and the mean
effective sample size 1 / sum_i w_i^2 (the same for every mode: the weights do not depend on the
control variate).
Also saved per mode: ``diff_vs_none`` = its MSE minus plain SNIS's and ``diff_vs_none_se``, the standard
error over points of that paired difference (the criterion "at or below plain SNIS" is read as
diff_vs_none <= 2 diff_vs_none_se).
Two sweeps: N over ``particles`` at t = ``t_fixed``, and t over ``times`` at N = ``n_fixed``.

Targets and ground truth (p1 is given by an unnormalised log-density of one point)
-----------------------------------------------------------------------------------
1. ``gaussian``: N(m, S) in A = 4 dimensions, S with eigenvalues (0.05, 0.2, 0.8, 2) in a random
   rotation (non-diagonal). x1 is sampled exactly; mu0 is the closed form of docs/method.md section 6,
   mu0(x) = beta (alpha^2 S + beta^2 I)^{-1} (x - alpha m).
2. ``mixture``: a 2-D mixture of 6 anisotropic Gaussians on a ring of radius 2.5. x1 is sampled
   exactly; mu0 by quadrature of q(x0 | x_t) ∝ N(x0; 0, I) p1((x_t - beta x0) / alpha), a float64
   Riemann sum on a uniform 801 x 801 grid over [-7, 7]^2. It is checked against a 1201 x 1201 grid
   and against the mixture's closed-form posterior mean; both maximum deviations are saved.
3. ``mlp``: the tanh-squashed Boltzmann target of a random critic, log p1(u) = Q(tanh u) / lambda +
   sum_j log(1 - tanh(u_j)^2) (``rfm_jax.method.estimators.tanh_boltzmann_log_prob``), Q a fixed random
   6 -> 64 -> 64 -> 1 tanh MLP on A = 6 actions, lambda = ``--temperature`` (default 0.05, about
   std(Q)/5 under uniform actions: the Boltzmann policy keeps a few percent of the ESS of uniform
   actions, neither flat nor a delta; the numbers are saved). x1 is drawn by SNIS resampling of a
   pool of u = arctanh(a), a ~ U(-1, 1)^6, with weights exp(Q / lambda) (the pool's ESS is saved).
   mu0 is a large-particle reference (2^15 particles per point and t), not the estimator under test:
   two-stage adaptive importance sampling in x0 space. Defensive proposals: the prior N(0, I) (the
   estimator's own proposal, good at large t) and x0 = (x_t - alpha u) / beta with u = arctanh(U(-1,
   1)^6) (good at small t, where the prior degenerates in 6-D). A pilot with both fits a Gaussian
   to q(x0 | x_t); then 16 chunks draw from 1/2 that Gaussian (covariance x2) + 1/4 each defensive
   proposal, weighted by the balance heuristic and corrected by an optimal diagonal Stein control
   variate fitted per chunk. Its standard error is the spread of the chunks / sqrt(16), saved per t
   next to the errors it must resolve. The same reference is validated on the
   Gaussian target against the closed form (z-scores), and on the MLP target against the library's
   plain SNIS with as many particles at t = ``t_fixed``.

4. Trained critics (``--critic NAME=WORKDIR``, repeatable; default ``DEFAULT_CRITICS``): the same
   tanh-Boltzmann target with Q = min_k Q_k of the critic ensemble of a real training run (run 0 of
   its newest checkpoint, restored as a raw orbax pytree, the module rebuilt from ``setup.json``),
   lambda = that run's temperature (``agent.hyper.temperature`` in the checkpoint, 0.02 for RFM) and
   one real state per point: observations drawn from run 0's replay buffer. x1 and mu0 as for ``mlp``
   (one pool of 2^16 per state). These use ``critic_repeats`` x ``critic_points`` (64 x 32). The
   default runs: cartpole-swingup (A=1, RFM cpu preset, 40k steps), cheetah-run (A=6, ``python
   experiments/run.py --config=experiments/configs/rfm.py:cpu,cheetah-run --config.num_seeds=1
   --config.total_steps=20000``), gym Hopper-v5 (A=3) and HalfCheetah-v5 (A=6).

Random numbers use the "rbg" PRNG (XLA's RngBitGenerator): statistically equivalent to the default
threefry here and several times faster to compile on CPU, which dominates this script's run time.

Outputs in ``--out``: ``estimator_variance.json`` (all numbers, settings, versions) and
``estimator_variance.png`` (rows = targets; columns = MSE vs N, log-log, and MSE vs t, log y).
Usage: ``python experiments/estimator_variance.py [--quick] [--out DIR] [--seed S] [--schedule cosine]
[--critic NAME=WORKDIR ...] [--targets NAME ...]``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from rfm_jax.method import estimators, schedules

Array = jax.Array

# Mode key -> keyword arguments of ``posterior_mean`` (the ridge comes from the settings).
MODES: dict[str, dict] = {
    "none": {"control_variate": "none"},
    "eta1": {"control_variate": 1.0},
    "optimal_isotropic": {"control_variate": "optimal_isotropic"},
    "optimal": {"control_variate": "optimal"},
    "optimal_data_clip2": {"control_variate": "optimal", "coef_space": "data", "clip": 2.0},
    "safe_isotropic": {"control_variate": "safe_isotropic", "coef_space": "data", "clip": 2.0},
    "crossfit_isotropic": {"control_variate": "crossfit_isotropic", "coef_space": "data", "clip": 2.0},
}
MODE_LABELS = {
    "none": "none (SNIS, eta=0, QNE)",
    "eta1": "eta=1 (DQS)",
    "optimal_isotropic": "optimal isotropic",
    "optimal": "optimal diagonal",
    "optimal_data_clip2": "optimal diag., data space, |C|<=2",
    "safe_isotropic": "safe isotropic (|C|<=2, 0<=Lam<=1, |d|<=2 SE)",
    "crossfit_isotropic": "cross-fitted safe isotropic",
}
# Trained-critic targets: name -> the workdir of a real training run (``experiments/run.py``), used
# when no ``--critic`` is given.  The runs are not in git; these commands made them (docs/results.md; at
# 0.3.0, whose cpu preset is today's with --config.agent.temperature_mode=fixed and control_variate=optimal):
#   compare.py --out runs/parity_cartpole --seeds 5 --tasks cartpole-swingup \
#       --algo "rfm_jax-clip10=rfm:cpu --config.eval_episodes=10 --config.agent.temperature_mode=fixed \
#       --config.agent.control_variate=optimal"                       (40k steps, A=1; 0.3.0's cpu preset)
#   run.py --config=experiments/configs/rfm.py:cpu,cheetah-run --config.num_seeds=1 \
#       --config.total_steps=20000 --workdir=runs/critics/cheetah-run               (A=6)
#   compare.py --out runs/gym_hopper --tasks gym:Hopper-v5 --seeds 3 --algo "rfm=rfm:cpu"   (100k, A=3)
#   compare.py --out runs/gym_halfcheetah --tasks gym:HalfCheetah-v5 --seeds 3 --total_steps 50000 \
#       --algo "rfm=rfm:cpu"                                                         (A=6)
DEFAULT_CRITICS = {
    "cartpole_swingup": "runs/parity_cartpole/rfm_jax-clip10/cartpole-swingup",
    "cheetah_run": "runs/critics/cheetah-run",
    "gym_hopper": "runs/gym_hopper/rfm/gym_Hopper-v5",
    "gym_halfcheetah": "runs/gym_halfcheetah/rfm/gym_HalfCheetah-v5",
}
SYNTHETIC_TARGETS = ("gaussian", "mixture", "mlp")
TARGET_SEED = 0  # fixes the targets' parameters; ``--seed`` drives all Monte Carlo randomness.
QUADRATURE_HALF_WIDTH = 7.0
MLP_DIM = 6


@dataclass(frozen=True)
class Settings:
    particles: tuple[int, ...]
    times: tuple[float, ...]
    t_fixed: float
    n_fixed: int  # should be in ``particles`` so the t sweep reuses that compilation
    repeats: int
    points: int
    critic_repeats: int  # repeats and points of the trained-critic targets
    critic_points: int
    ridge: float
    grid: int
    grid_check: int
    grid_check_points: int  # the finer grid is evaluated on this many of the points (it is slow)
    reference_particles: int
    reference_chunks: int
    pool_size: int
    temperature: float
    schedule: str
    max_batch_particles: int  # particles evaluated at once in the sweep (bounds memory)
    check_reference: bool  # validate the MLP reference on the Gaussian and against the library's SNIS


def default_settings(quick: bool, schedule: str, temperature: float, ridge: float) -> Settings:
    common = {"ridge": ridge, "temperature": temperature, "schedule": schedule, "max_batch_particles": 2**16}
    if quick:
        return Settings(
            particles=(32,),
            times=(0.1, 0.3, 0.9),
            t_fixed=0.5,
            n_fixed=32,
            repeats=32,
            points=8,
            critic_repeats=16,
            critic_points=8,
            grid=401,
            grid_check=601,
            grid_check_points=4,
            reference_particles=2**12,
            reference_chunks=8,
            pool_size=2**13,
            check_reference=False,
            **common,
        )
    return Settings(
        particles=(4, 8, 16, 32, 64, 100, 256),
        times=(0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.95),
        t_fixed=0.5,
        n_fixed=32,
        repeats=256,
        points=32,
        critic_repeats=64,
        critic_points=32,
        grid=801,
        grid_check=1201,
        grid_check_points=8,
        reference_particles=2**15,
        reference_chunks=16,
        pool_size=2**16,
        check_reference=True,
        **common,
    )


def make_key(seed: int) -> Array:
    return jax.random.key(seed, impl="rbg")


def make_schedule(name: str) -> schedules.Schedule:
    return {"linear": schedules.linear, "cosine": schedules.cosine}[name]()


def alpha_beta(schedule: schedules.Schedule, t: float) -> tuple[float, float]:
    """alpha_t, beta_t exactly as the estimator computes them (float32 t), as Python floats."""
    t32 = jnp.float32(t)
    return float(schedule.alpha(t32)), float(schedule.beta(t32))


# ----------------------------------------------------------------------------- targets


@dataclass
class Target:
    """A target p1 per point: ``log_prob_fn(x [A], context [C]) -> []``, where point p has its own
    ``context[p]`` (a critic target's state; C = 0 for the synthetic targets); ``x1`` [P, A] are
    draws from p1 (x1[p] from the p1 of context[p])."""

    name: str
    description: str
    log_prob_fn: Callable[[Array, Array], Array]
    x1: Array
    params: tuple = ()
    info: dict = field(default_factory=dict)
    context: Array | None = None  # [P, C]; None: zeros [P, 0]
    kind: str = ""  # "gaussian", "mixture", "mlp" or "critic": how its ground truth is computed

    def __post_init__(self):
        self.kind = self.kind or self.name
        if self.context is None:
            self.context = jnp.zeros((self.x1.shape[0], 0), jnp.float32)

    @property
    def dim(self) -> int:
        return int(self.x1.shape[1])


def unconditional(log_prob_fn: Callable[[Array], Array]) -> Callable[[Array, Array], Array]:
    """The same p1 at every point: ``(x, context) -> log_prob_fn(x)``."""
    return lambda x, context: log_prob_fn(x)


def as_float32(x) -> np.ndarray:
    """Round to float32 and back, so the float64 ground truth uses exactly the target's parameters."""
    return np.asarray(x, np.float32).astype(np.float64)


def random_rotation(key: Array, dim: int) -> np.ndarray:
    q, r = np.linalg.qr(np.asarray(jax.random.normal(key, (dim, dim)), np.float64))
    return q * np.sign(np.diag(r))


def gaussian_params() -> tuple[np.ndarray, np.ndarray]:
    """m [4] and a non-diagonal S [4, 4]."""
    rotation = random_rotation(make_key(TARGET_SEED), 4)
    cov = rotation @ np.diag([0.05, 0.2, 0.8, 2.0]) @ rotation.T
    return as_float32([0.5, -1.0, 0.3, 1.2]), as_float32(0.5 * (cov + cov.T))


def gaussian_log_prob(mean: np.ndarray, cov: np.ndarray) -> Callable[[Array], Array]:
    precision = jnp.asarray(np.linalg.inv(cov), jnp.float32)
    mean32 = jnp.asarray(mean, jnp.float32)
    return lambda x: -0.5 * (x - mean32) @ precision @ (x - mean32)


def make_gaussian_target(key: Array, num_points: int) -> Target:
    mean, cov = gaussian_params()
    z = np.asarray(jax.random.normal(key, (num_points, 4)), np.float64)
    return Target(
        name="gaussian",
        description="N(m, S), A=4, non-diagonal S (eigenvalues 0.05, 0.2, 0.8, 2)",
        log_prob_fn=unconditional(gaussian_log_prob(mean, cov)),
        x1=jnp.asarray(mean + z @ np.linalg.cholesky(cov).T, jnp.float32),
        params=(mean, cov),
        info={"mean": mean, "cov": cov, "truth": "closed form (docs/method.md section 6)"},
    )


def gaussian_noise_mean(x_t: np.ndarray, alpha: float, beta: float, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Closed-form mu0 = beta (alpha^2 S + beta^2 I)^{-1} (x_t - alpha m) for x_t [P, A] (float64)."""
    marginal_cov = alpha**2 * cov + beta**2 * np.eye(cov.shape[0])
    return beta * np.linalg.solve(marginal_cov, (np.asarray(x_t, np.float64) - alpha * mean).T).T


def mixture_params() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights [K], means [K, 2], covariances [K, 2, 2] of a 6-component ring."""
    num_components, radius, std_long, std_short = 6, 2.5, 0.6, 0.35
    angles = 2.0 * np.pi * np.arange(num_components) / num_components + 0.3
    means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    covs = []
    for angle in angles:  # long axis tangential to the ring: neighbouring components overlap a little
        rotation = np.array([[-np.sin(angle), -np.cos(angle)], [np.cos(angle), -np.sin(angle)]])
        covs.append(rotation @ np.diag([std_long**2, std_short**2]) @ rotation.T)
    weights = np.array([0.25, 0.2, 0.15, 0.15, 0.15, 0.1])
    return as_float32(weights / weights.sum()), as_float32(means), as_float32(np.stack(covs))


def mixture_log_prob(weights: np.ndarray, means: np.ndarray, covs: np.ndarray) -> Callable[[Array], Array]:
    """log sum_k w_k N(x; m_k, S_k) for one 2-D point, in the dtype of ``x`` (float64 under enable_x64)."""
    precisions = np.linalg.inv(covs)
    log_norms = np.log(weights) - 0.5 * np.linalg.slogdet(2.0 * np.pi * covs)[1]

    def log_prob(x):
        const = lambda v: jnp.asarray(v, x.dtype)  # noqa: E731
        d0, d1 = x[0] - const(means[:, 0]), x[1] - const(means[:, 1])  # [K] each
        # The 2-D quadratic form written out: vmapped over the quadrature grid this runs several
        # times faster than any matrix form (einsum / broadcast-and-sum) of tiny matrices.
        quad = const(precisions[:, 0, 0]) * d0**2 + 2.0 * const(precisions[:, 0, 1]) * d0 * d1
        quad += const(precisions[:, 1, 1]) * d1**2
        return jax.nn.logsumexp(const(log_norms) - 0.5 * quad)

    return log_prob


def make_mixture_target(key: Array, num_points: int) -> Target:
    weights, means, covs = mixture_params()
    key_comp, key_z = jax.random.split(key)
    components = np.asarray(jax.random.choice(key_comp, len(weights), (num_points,), p=jnp.asarray(weights)))
    z = np.asarray(jax.random.normal(key_z, (num_points, 2)), np.float64)
    x1 = means[components] + np.einsum("pij,pj->pi", np.linalg.cholesky(covs)[components], z)
    return Target(
        name="mixture",
        description="2-D mixture of 6 anisotropic Gaussians on a ring of radius 2.5",
        log_prob_fn=unconditional(mixture_log_prob(weights, means, covs)),
        x1=jnp.asarray(x1, jnp.float32),
        params=(weights, means, covs),
        info={"weights": weights, "means": means, "covs": covs},
    )


def mixture_noise_mean_closed_form(x_t: np.ndarray, alpha: float, beta: float, params) -> np.ndarray:
    """Exact mu0 of a Gaussian mixture: responsibilities times each component's Gaussian mu0 (float64)."""
    weights, means, covs = params
    marginal_covs = alpha**2 * covs + beta**2 * np.eye(covs.shape[1])
    diffs = np.asarray(x_t, np.float64)[:, None, :] - alpha * means[None]  # [P, K, A]
    solved = np.einsum("kij,pkj->pki", np.linalg.inv(marginal_covs), diffs)
    log_resp = np.log(weights) - 0.5 * np.linalg.slogdet(marginal_covs)[1] - 0.5 * np.sum(diffs * solved, -1)
    resp = np.exp(log_resp - log_resp.max(axis=1, keepdims=True))
    resp /= resp.sum(axis=1, keepdims=True)
    return beta * np.einsum("pk,pki->pi", resp, solved)


def make_quadrature_fn(log_prob_fn: Callable, grid_size: int, half_width: float) -> Callable:
    """(x_t [P, 2], alpha, beta) -> mu0 [P, 2]: a float64 Riemann sum of q(x0 | x_t) on a uniform grid."""

    def one_point(x, alpha, beta, grid):
        log_q = -0.5 * jnp.sum(grid**2, axis=1) + jax.vmap(log_prob_fn)((x - beta * grid) / alpha)
        return jax.nn.softmax(log_q) @ grid

    def all_points(x_t, alpha, beta):
        axis = jnp.linspace(-half_width, half_width, grid_size, dtype=jnp.float64)
        grid = jnp.stack(jnp.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
        return jax.lax.map(lambda x: one_point(x, alpha, beta, grid), x_t)

    compiled = jax.jit(all_points)

    def quadrature(x_t: np.ndarray, alpha: float, beta: float) -> np.ndarray:
        with jax.enable_x64(True):
            as64 = lambda v: jnp.asarray(np.asarray(v, np.float64))  # noqa: E731
            return np.asarray(compiled(as64(x_t), as64(alpha), as64(beta)))

    return quadrature


def mlp_critic(key: Array, dim: int = MLP_DIM, hidden: int = 64) -> Callable[[Array], Array]:
    """A fixed random tanh MLP Q: [-1, 1]^dim -> R (2 hidden layers; first-layer gain 2)."""
    key_w1, key_b1, key_w2, key_b2, key_w3 = jax.random.split(key, 5)
    w1 = 2.0 * jax.random.normal(key_w1, (dim, hidden)) / math.sqrt(dim)
    b1 = 0.5 * jax.random.normal(key_b1, (hidden,))
    w2 = jax.random.normal(key_w2, (hidden, hidden)) / math.sqrt(hidden)
    b2 = 0.5 * jax.random.normal(key_b2, (hidden,))
    w3 = jax.random.normal(key_w3, (hidden,)) / math.sqrt(hidden)
    return lambda a: jnp.tanh(jnp.tanh(a @ w1 + b1) @ w2 + b2) @ w3


def logistic_latent(key: Array, shape: tuple[int, ...]) -> Array:
    """u = arctanh(a), a ~ U(-1, 1): a logistic variable of scale 1/2 with density prod_j sech^2(u_j) / 2."""
    return 0.5 * jax.random.logistic(key, shape)


def boltzmann_resample(key: Array, q_fn: Callable, temperature: float, pool_size: int, num: int):
    """x1 [num, A] from the latent Boltzmann target by SNIS resampling of a pool u = arctanh(U(-1, 1)^A),
    whose sech^2 density cancels the tanh Jacobian of p1, so the weights are exp(Q(tanh u) / lambda).
    Also returns the pool's Q values [pool_size] and ESS []."""
    key_pool, key_pick = jax.random.split(key)
    pool = logistic_latent(key_pool, (pool_size, MLP_DIM))
    q_values = jax.vmap(q_fn)(jnp.tanh(pool))
    log_w = q_values / temperature
    picks = jax.random.categorical(key_pick, log_w, shape=(num,))
    return pool[picks], q_values, 1.0 / jnp.sum(jax.nn.softmax(log_w) ** 2)


def make_mlp_target(key: Array, num_points: int, temperature: float, pool_size: int) -> Target:
    q_fn = mlp_critic(make_key(TARGET_SEED))
    resample = jax.jit(boltzmann_resample, static_argnums=(1, 2, 3, 4))
    key_x1, key_show = jax.random.split(key)
    x1, q_values, pool_ess = resample(key_x1, q_fn, temperature, pool_size, num_points)
    pool_ess = float(pool_ess)
    actions = jnp.tanh(resample(key_show, q_fn, temperature, pool_size, 4096)[0])
    return Target(
        name="mlp",
        description=f"tanh-Boltzmann of a random MLP critic, A={MLP_DIM}, lambda={temperature:g}",
        log_prob_fn=unconditional(estimators.tanh_boltzmann_log_prob(q_fn, temperature)),
        x1=x1,
        info={
            "critic": f"{MLP_DIM} -> 64 -> 64 -> 1 tanh MLP, random weights (first-layer gain 2), seed {TARGET_SEED}",
            "temperature": temperature,
            "q_std_uniform_actions": float(jnp.std(q_values)),
            "q_range_uniform_actions": [float(jnp.min(q_values)), float(jnp.max(q_values))],
            "x1_sampling": "SNIS resampling of a pool of arctanh(U(-1,1)^6) with weights exp(Q/lambda)",
            "pool_size": pool_size,
            "pool_ess": pool_ess,
            "pool_ess_fraction": pool_ess / pool_size,
            "boltzmann_action_mean": np.asarray(jnp.mean(actions, 0)),
            "boltzmann_action_std": np.asarray(jnp.std(actions, 0)),
        },
    )


def newest_checkpoint(workdir: Path) -> int:
    """The newest complete step under ``<workdir>/checkpoints`` (orbax writes commit_success.txt last)."""
    steps = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
    steps = [step for step in steps if (workdir / "checkpoints" / str(step) / "commit_success.txt").exists()]
    if not steps:
        raise FileNotFoundError(f"no complete checkpoint under {workdir / 'checkpoints'}")
    return max(steps)


def restore_critic(workdir: Path) -> dict:
    """Run 0 of a training run's newest checkpoint, restored as a raw pytree (no target structure, so
    it does not depend on the agents' state dataclass): ``critic_params`` (leading run axis removed),
    the temperature lambda (``agent.hyper.temperature``), the replay buffer's observations
    ``obs[:size]``, and the step; the critic module is rebuilt from ``setup.json``."""
    import orbax.checkpoint as ocp

    from rfm_jax.networks import CriticEnsemble

    step = newest_checkpoint(workdir)
    path = (workdir / "checkpoints" / str(step) / "state").absolute()
    checkpointer = ocp.PyTreeCheckpointer()
    metadata = checkpointer.metadata(path)
    tree = getattr(getattr(metadata, "item_metadata", None), "tree", metadata)
    wanted = {
        "agent": {"critic_params": None, "hyper": {"temperature": None}},
        "replay": {"data": {"obs": None}, "size": None},
    }

    def select(node, want):  # the metadata of the wanted leaves only (a partial restore)
        return {k: node[k] if v is None else select(node[k], v) for k, v in want.items()}

    item = select(tree, wanted)
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
    args = ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True)
    state = checkpointer.restore(path, args=args)
    setup = json.loads((workdir / "setup.json").read_text())
    agent = setup["agent_kwargs"]
    return {
        "module": CriticEnsemble(int(agent["num_critics"]), tuple(int(h) for h in agent["critic_hidden"])),
        "params": jax.tree.map(lambda x: jnp.asarray(x[0]), state["agent"]["critic_params"]),
        "temperature": float(state["agent"]["hyper"]["temperature"][0]),
        "observations": np.asarray(state["replay"]["data"]["obs"][0, : int(state["replay"]["size"][0])]),
        "step": step,
        "task": setup["task"],
        "algo": setup["algo"],
        "setup_temperature": setup["hyper"]["temperature"],
    }


def boltzmann_resample_states(key: Array, q_fn: Callable, temperature: float, pool_size: int, states: Array, dim: int):
    """One x1 [A] per state [P, O] from the latent Boltzmann target of ``q_fn(state, a)`` at that state
    (SNIS resampling of a pool as in ``boltzmann_resample``).  Returns x1 [P, A], pool ESS [P], Q std [P]."""

    def one_state(args):
        key_state, state = args
        key_pool, key_pick = jax.random.split(key_state)
        pool = logistic_latent(key_pool, (pool_size, dim))
        q_values = jax.vmap(lambda a: q_fn(state, a))(jnp.tanh(pool))
        log_w = q_values / temperature
        pick = jax.random.categorical(key_pick, log_w)
        return pool[pick], 1.0 / jnp.sum(jax.nn.softmax(log_w) ** 2), jnp.std(q_values)

    keys = jax.random.split(key, states.shape[0])
    return jax.jit(lambda ks, ss: jax.lax.map(one_state, (ks, ss)))(keys, states)


def make_critic_target(name: str, workdir: Path, key: Array, num_points: int, pool_size: int) -> Target:
    """tanh-Boltzmann target of a trained critic ensemble, Q = min_k Q_k (as the RFM agent), one real
    state per point (drawn without replacement from run 0's replay buffer), lambda = the run's."""
    critic = restore_critic(workdir)
    module, params, temperature = critic["module"], critic["params"], critic["temperature"]
    observations = critic["observations"]
    rows = np.random.default_rng(TARGET_SEED).choice(len(observations), num_points, replace=False)
    states = jnp.asarray(observations[rows], jnp.float32)
    dim = int(params["params"]["kernel_0"].shape[1]) - states.shape[1]
    q_fn = lambda state, a: jnp.min(module.apply(params, state, a), axis=-1)  # noqa: E731
    x1, pool_ess, q_std = boltzmann_resample_states(key, q_fn, temperature, pool_size, states, dim)
    return Target(
        name=name,
        description=f"tanh-Boltzmann of the trained critic of {critic['task']} ({critic['algo']}, step "
        f"{critic['step']}), A={dim}, lambda={temperature:g}, one replay state per point",
        log_prob_fn=lambda u, state: estimators.tanh_boltzmann_log_prob(lambda a: q_fn(state, a), temperature)(u),
        x1=x1,
        context=states,
        kind="critic",
        info={
            "workdir": str(workdir),
            "checkpoint_step": critic["step"],
            "task": critic["task"],
            "critic": f"min of {module.num_critics} critics, hidden {list(module.hidden)}, run 0 of the checkpoint",
            "temperature": temperature,
            "temperature_setup_json": critic["setup_temperature"],
            "states": f"{num_points} observations of run 0's replay buffer (size {len(observations)}), "
            f"rows drawn without replacement with seed {TARGET_SEED}",
            "replay_rows": rows,
            "x1_sampling": f"per state, SNIS resampling of a pool of arctanh(U(-1,1)^{dim}) with weights exp(Q/lambda)",
            "pool_size": pool_size,
            "pool_ess_mean": float(jnp.mean(pool_ess)),
            "pool_ess_min": float(jnp.min(pool_ess)),
            "q_std_uniform_actions_mean": float(jnp.mean(q_std)),
        },
    )


def build_target(name: str, key: Array, settings: Settings, critics: dict[str, Path]) -> Target:
    if name == "gaussian":
        return make_gaussian_target(key, settings.points)
    if name == "mixture":
        return make_mixture_target(key, settings.points)
    if name in critics:
        return make_critic_target(name, critics[name], key, settings.points, settings.pool_size)
    return make_mlp_target(key, settings.points, settings.temperature, settings.pool_size)


# ----------------------------------------------------------------------------- large-particle reference


def defensive_log_densities(x0: Array, x_t: Array, alpha, beta) -> tuple[Array, Array]:
    """log q_prior(x0) and log q_uniform(x0) for particles x0 [n, A], both without the (2 pi)^(-A/2)
    factor: q_prior = N(0, I); q_uniform is the law of x0 = (x_t - alpha u) / beta, u = arctanh(U(-1, 1)^A),
    i.e. prod_j sech^2(x1_j) / 2 at x1 = (x_t - beta x0) / alpha, times the Jacobian (beta / alpha)^A."""
    dim = x_t.shape[0]
    x1 = (x_t - beta * x0) / alpha
    log_prior = -0.5 * jnp.sum(x0**2, axis=1)
    log_uniform = jnp.sum(estimators.log_one_minus_tanh_sq(x1), axis=1)
    log_uniform += dim * (jnp.log(beta / alpha) - jnp.log(2.0)) + 0.5 * dim * jnp.log(2.0 * jnp.pi)
    return log_prior, log_uniform


def defensive_samples(key: Array, x_t: Array, alpha, beta, num_prior: int, num_uniform: int) -> Array:
    """x0 [num_prior + num_uniform, A]: prior draws, then x0 = (x_t - alpha u) / beta with u = arctanh(U)."""
    key_prior, key_uniform = jax.random.split(key)
    u = logistic_latent(key_uniform, (num_uniform, x_t.shape[0]))
    return jnp.concatenate([jax.random.normal(key_prior, (num_prior, x_t.shape[0])), (x_t - alpha * u) / beta])


def pilot_fit(key: Array, log_prob_fn: Callable, x_t: Array, t, schedule: schedules.Schedule, num: int):
    """Stage 1 for one point: weighted mean [A] and covariance [A, A] of q(x0 | x_t) from a defensive
    prior + uniform-action mixture (balance-heuristic weights)."""
    alpha, beta = schedule.alpha(t), schedule.beta(t)
    x0 = defensive_samples(key, x_t, alpha, beta, num // 2, num - num // 2)
    log_prior, log_uniform = defensive_log_densities(x0, x_t, alpha, beta)
    log_p1 = jax.vmap(log_prob_fn)((x_t - beta * x0) / alpha)
    w = jax.nn.softmax(log_prior + log_p1 - jnp.logaddexp(log_prior, log_uniform))
    mean = w @ x0
    centred = x0 - mean
    return mean, (w[:, None] * centred).T @ centred


def reference_chunk(key: Array, log_prob_fn: Callable, x_t: Array, t, schedule: schedules.Schedule, num: int, fit):
    """Stage 2, one chunk for one point x_t [A]: adaptive defensive importance sampling + Stein CV.

    Half the particles come from N(mean, 2 cov + 1e-8 I) of the pilot ``fit``, a quarter from the prior
    N(0, I), a quarter from the uniform-action proposal; the weight is N(x0; 0, I) p1(x1) / q_mix(x0)
    with q_mix = q_gauss / 2 + q_prior / 4 + q_uniform / 4 (balance heuristic), and the estimate is
    corrected by the optimal diagonal Stein control variate of this chunk (no ridge).
    Returns (mu0 estimate [A], log sum w [], log sum w^2 []).
    """
    dim = x_t.shape[0]
    alpha, beta = schedule.alpha(t), schedule.beta(t)
    mean, cov = fit
    chol = jnp.linalg.cholesky(2.0 * cov + 1e-8 * jnp.eye(dim))
    key_gauss, key_defensive = jax.random.split(key)
    num_gauss, num_prior = num // 2, num // 4
    z = jax.random.normal(key_gauss, (num_gauss, dim))
    x0 = jnp.concatenate(
        [mean + z @ chol.T, defensive_samples(key_defensive, x_t, alpha, beta, num_prior, num - num_gauss - num_prior)]
    )
    log_prior, log_uniform = defensive_log_densities(x0, x_t, alpha, beta)
    whitened = jax.scipy.linalg.solve_triangular(chol, (x0 - mean).T, lower=True)
    log_gauss = -0.5 * jnp.sum(whitened**2, axis=0) - jnp.sum(jnp.log(jnp.diag(chol)))
    log_mix = jax.nn.logsumexp(
        jnp.stack([log_gauss + jnp.log(0.5), log_prior + jnp.log(0.25), log_uniform + jnp.log(0.25)]), axis=0
    )
    score_fn = lambda x0_i: estimators.noise_score(log_prob_fn, x0_i, x_t, t, schedule=schedule)  # noqa: E731
    log_p1, score = jax.vmap(score_fn)(x0)
    log_w = log_prior + log_p1 - log_mix
    w, w2 = jax.nn.softmax(log_w), jax.nn.softmax(2.0 * log_w)
    x_bar, s_bar = w @ x0, w @ score
    dx, ds = x0 - x_bar, score - s_bar
    var = w2 @ (ds * ds)
    lam = -(w2 @ (dx * ds)) / jnp.where(var > 0, var, 1.0)
    return x_bar + lam * s_bar, jax.nn.logsumexp(log_w), jax.nn.logsumexp(2.0 * log_w)


def make_reference_fn(log_prob_fn: Callable, schedule: schedules.Schedule, settings: Settings) -> Callable:
    """jit((key, x_t [P, A], context [P, C], t) -> chunk estimates [C, P, A], log sum w [C, P],
    log sum w^2 [C, P]) for ``log_prob_fn(x, context)``.

    The pilot uses ``reference_particles / 4`` particles per point, the chunks ``reference_particles``.
    """
    chunk = settings.reference_particles // settings.reference_chunks

    def reference(key, x_t, context, t):
        key_pilot, key_chunks = jax.random.split(key)
        keys_pilot = jax.random.split(key_pilot, x_t.shape[0])

        def pilot(k, x, c):
            return pilot_fit(k, lambda u: log_prob_fn(u, c), x, t, schedule, settings.reference_particles // 4)

        fits = jax.lax.map(lambda args: pilot(*args), (keys_pilot, x_t, context))

        def one_chunk(key_chunk):
            keys = jax.random.split(key_chunk, x_t.shape[0])

            def chunk_fn(k, x, c, fit):
                return reference_chunk(k, lambda u: log_prob_fn(u, c), x, t, schedule, chunk, fit)

            return jax.vmap(chunk_fn)(keys, x_t, context, fits)

        return jax.lax.map(one_chunk, jax.random.split(key_chunks, settings.reference_chunks))

    return jax.jit(reference)


def combine_chunks(
    means: np.ndarray, log_sums: np.ndarray | None = None, log_sums_sq: np.ndarray | None = None
) -> dict:
    """Average of C independent chunk estimates [C, P, A] with standard error spread / sqrt(C)."""
    means = np.asarray(means, np.float64)
    out = {"mean": means.mean(0), "std_error": means.std(0, ddof=1) / math.sqrt(means.shape[0])}
    if log_sums is not None:  # ESS of all particles pooled: (sum w)^2 / sum w^2
        log_total = np.logaddexp.reduce(np.asarray(log_sums, np.float64), axis=0)
        out["ess"] = np.exp(2.0 * log_total - np.logaddexp.reduce(np.asarray(log_sums_sq, np.float64), axis=0))
    return out


def library_snis(key: Array, target: Target, x_t: Array, t: float, settings: Settings) -> np.ndarray:
    """The library's plain SNIS ("none") with all ``reference_particles`` in one call per point.  [P, A]."""
    schedule = make_schedule(settings.schedule)

    def one_point(args):
        key_point, x, c = args
        return estimators.posterior_mean(
            key_point,
            lambda u: target.log_prob_fn(u, c),
            x,
            jnp.float32(t),
            schedule=schedule,
            num_particles=settings.reference_particles,
            control_variate="none",
        ).noise_mean

    keys = jax.random.split(key, x_t.shape[0])
    run = jax.jit(lambda ks, xs, cs: jax.lax.map(one_point, (ks, xs, cs)))
    return np.asarray(run(keys, jnp.asarray(x_t), target.context))


def library_check(key: Array, target: Target, x_t: np.ndarray, t: float, reference: np.ndarray, settings) -> dict:
    """Two independent runs a, b of the library's plain SNIS with ``reference_particles`` each: if the
    reference is right, mean (a - reference)^2 ~ var(SNIS) ~ mean (a - b)^2 / 2, so their ratio ~ 1."""
    key_a, key_b = jax.random.split(key)
    run_a, run_b = (library_snis(k, target, x_t, t, settings) for k in (key_a, key_b))
    vs_reference = 0.5 * float(np.mean((run_a - reference) ** 2) + np.mean((run_b - reference) ** 2))
    half_between_runs = 0.5 * float(np.mean((run_a - run_b) ** 2))
    return {
        "t": t,
        "num_particles": settings.reference_particles,
        "mean_sq_diff_vs_reference": vs_reference,
        "half_mean_sq_diff_between_runs": half_between_runs,
        "ratio": vs_reference / half_between_runs,
    }


def z_scores(estimate: np.ndarray, truth: np.ndarray, std_error: np.ndarray) -> dict:
    z = (estimate - truth) / np.maximum(std_error, 1e-30)
    return {"mean_z_sq": float(np.mean(z**2)), "max_abs_z": float(np.max(np.abs(z)))}


def make_truth_fn(target: Target, settings: Settings) -> Callable:
    """(key, x_t [P, A], t) -> (mu0 [P, A] float64, diagnostics dict) for the target."""
    schedule = make_schedule(settings.schedule)
    reference_fn = make_reference_fn(target.log_prob_fn, schedule, settings)

    def reference(key, x_t, t):
        return combine_chunks(*reference_fn(key, jnp.asarray(x_t, jnp.float32), target.context, jnp.float32(t)))

    if target.kind == "gaussian":

        def truth(key, x_t, t):
            mu0 = gaussian_noise_mean(x_t, *alpha_beta(schedule, t), *target.params)
            if not settings.check_reference:
                return mu0, {}
            check = reference(key, x_t, t)
            return mu0, {
                "reference_check": z_scores(check["mean"], mu0, check["std_error"]),
                "reference_check_se_sq_mean": float(np.mean(check["std_error"] ** 2)),
                "reference_check_ess_min": float(check["ess"].min()),
            }

        return truth

    if target.kind == "mixture":
        log_prob_fn = lambda x: target.log_prob_fn(x, None)  # noqa: E731 - the same p1 at every point
        quadrature = make_quadrature_fn(log_prob_fn, settings.grid, QUADRATURE_HALF_WIDTH)
        quadrature_check = make_quadrature_fn(log_prob_fn, settings.grid_check, QUADRATURE_HALF_WIDTH)

        def truth(key, x_t, t):
            alpha, beta = alpha_beta(schedule, t)
            mu0 = quadrature(x_t, alpha, beta)
            check_points = settings.grid_check_points
            finer = quadrature_check(x_t[:check_points], alpha, beta)
            return mu0, {
                "max_abs_diff_vs_finer_grid": float(np.max(np.abs(mu0[:check_points] - finer))),
                "max_abs_diff_vs_closed_form": float(
                    np.max(np.abs(mu0 - mixture_noise_mean_closed_form(x_t, alpha, beta, target.params)))
                ),
            }

        return truth

    def truth(key, x_t, t):
        result = reference(key, x_t, t)
        return result["mean"], {
            "reference_se_sq_mean": float(np.mean(result["std_error"] ** 2)),
            "reference_se_max": float(np.max(result["std_error"])),
            "reference_ess_min": float(result["ess"].min()),
            "reference_ess_mean": float(result["ess"].mean()),
        }

    return truth


# ----------------------------------------------------------------------------- the sweep


def make_sweep_fn(log_prob_fn: Callable, schedule: schedules.Schedule, num_particles: int, settings: Settings):
    """jit((key, x_t [P, A], context [P, C], t) -> (noise means [R, P, M, A], ESS [R, P])) for the M
    modes, shared particles; ``log_prob_fn(x, context)``."""

    def one_point(key, x_t, context, t):
        estimates = [
            estimators.posterior_mean(
                key,
                lambda x: log_prob_fn(x, context),
                x_t,
                t,
                schedule=schedule,
                num_particles=num_particles,
                ridge=settings.ridge,
                **kwargs,
            )
            for kwargs in MODES.values()
        ]
        return jnp.stack([estimate.noise_mean for estimate in estimates]), estimates[0].ess

    all_points = jax.vmap(one_point, in_axes=(0, 0, 0, None))
    batch = max(1, min(settings.repeats, settings.max_batch_particles // (settings.points * num_particles)))

    def sweep(key, x_t, context, t):
        keys = jax.random.split(key, (settings.repeats, settings.points))
        return jax.lax.map(lambda keys_r: all_points(keys_r, x_t, context, t), keys, batch_size=batch)

    return jax.jit(sweep)


def summarize(noise_means: np.ndarray, ess: np.ndarray, truth: np.ndarray) -> dict:
    """Per mode: MSE, its standard error over points, bias^2, variance and the median squared error
    (over repeats and points, robust to the rare huge errors of unclipped coefficients); the mean ESS."""
    err = np.asarray(noise_means, np.float64) - truth[None, :, None, :]  # [R, P, M, A]
    median = np.median(np.mean(err**2, axis=3), axis=(0, 1))  # [M]
    mse_per_point = np.mean(err**2, axis=(0, 3))  # [P, M]
    mse = mse_per_point.mean(0)
    bias_sq = np.mean(np.mean(err, axis=0) ** 2, axis=(0, 2))
    se = mse_per_point.std(0, ddof=1) / math.sqrt(mse_per_point.shape[0])
    diff = mse_per_point - mse_per_point[:, list(MODES).index("none")][:, None]  # paired (common random numbers)
    diff_se = diff.std(0, ddof=1) / math.sqrt(mse_per_point.shape[0])
    out = {
        mode: {
            "mse": mse[m],
            "mse_se": se[m],
            "bias_sq": bias_sq[m],
            "variance": mse[m] - bias_sq[m],
            "median_sq_err": median[m],
            "diff_vs_none": diff.mean(0)[m],
            "diff_vs_none_se": diff_se[m],
        }
        for m, mode in enumerate(MODES)
    }
    out["ess_mean"] = float(np.mean(ess))
    return out


def table_header() -> str:
    return f"  {'':<14} " + "  ".join(f"{mode[:10]:>10}" for mode in MODES) + "   mean ESS"


def format_row(label: str, summary: dict, seconds: float) -> str:
    errors = "  ".join(f"{summary[mode]['mse']:10.3e}" for mode in MODES)
    return f"  {label:<14} {errors}  {summary['ess_mean']:9.2f}  ({seconds:.1f}s)"


def run_target(name: str, key: Array, settings: Settings, critics: dict[str, Path]) -> dict:
    if name in critics:  # trained critics: fewer repeats and points (their reference is the slowest part)
        settings = replace(settings, repeats=settings.critic_repeats, points=settings.critic_points)
    schedule = make_schedule(settings.schedule)
    key_x1, key_x0, key_truth, key_sweep, key_check = jax.random.split(key, 5)
    target = build_target(name, key_x1, settings, critics)
    x0 = jax.random.normal(key_x0, target.x1.shape)
    print(f"\n== {name}: {target.description}", flush=True)
    if target.kind == "critic":
        info = target.info
        print(
            f"   mean std Q(uniform a) {info['q_std_uniform_actions_mean']:.3f}, lambda {info['temperature']:g}: "
            f"ESS of uniform actions mean {info['pool_ess_mean']:.1f}, min {info['pool_ess_min']:.1f} "
            f"/ {info['pool_size']}"
        )
    if name == "mlp":
        info = target.info
        print(
            f"   std Q(uniform a) {info['q_std_uniform_actions']:.3f}, lambda {info['temperature']:g}: "
            f"ESS of uniform actions {info['pool_ess']:.0f} / {info['pool_size']} "
            f"({100 * info['pool_ess_fraction']:.2f}%), action std {np.round(info['boltzmann_action_std'], 2)}"
        )

    def points_at(t: float) -> np.ndarray:
        alpha, beta = alpha_beta(schedule, t)
        return np.asarray(alpha * target.x1 + beta * x0)

    begin = time.perf_counter()
    truth_fn = make_truth_fn(target, settings)
    truths, truth_info = {}, {}
    for i, t in enumerate(sorted({*settings.times, settings.t_fixed})):
        truths[t], truth_info[f"{t:g}"] = truth_fn(jax.random.fold_in(key_truth, i), points_at(t), t)
        details = ", ".join(f"{k} {v:.3g}" if np.isscalar(v) else f"{k} {v}" for k, v in truth_info[f"{t:g}"].items())
        print(f"   truth t={t:<5g} {details}", flush=True)
    if target.kind in ("mlp", "critic") and settings.check_reference:  # the reference vs the library's SNIS
        t = settings.t_fixed
        truth_info["library_snis_check"] = library_check(key_check, target, points_at(t), t, truths[t], settings)
        print(f"   library plain SNIS with {settings.reference_particles} particles vs reference at t={t:g}:")
        print("     " + ", ".join(f"{k} {v:.3g}" for k, v in truth_info["library_snis_check"].items()), flush=True)
    print(f"   ground truth in {time.perf_counter() - begin:.1f}s", flush=True)

    sweep_fns: dict[int, Callable] = {}

    def run_config(index: int, num_particles: int, t: float) -> dict:
        if num_particles not in sweep_fns:
            sweep_fns[num_particles] = make_sweep_fn(target.log_prob_fn, schedule, num_particles, settings)
        start = time.perf_counter()
        key_config = jax.random.fold_in(key_sweep, index)
        x_t = jnp.asarray(points_at(t))
        noise_means, ess = sweep_fns[num_particles](key_config, x_t, target.context, jnp.float32(t))
        summary = summarize(np.asarray(noise_means), np.asarray(ess), truths[t])
        print(format_row(f"N={num_particles:<4d} t={t:.2f}", summary, time.perf_counter() - start), flush=True)
        return summary

    print(table_header())
    vs_n = [run_config(i, n, settings.t_fixed) for i, n in enumerate(settings.particles)]
    vs_t = [run_config(len(settings.particles) + i, settings.n_fixed, t) for i, t in enumerate(settings.times)]

    def collect(rows: list[dict]) -> dict:
        out = {mode: {k: [row[mode][k] for row in rows] for k in rows[0][mode]} for mode in MODES}
        return {**out, "ess_mean": [row["ess_mean"] for row in rows]}

    return {
        "description": target.description,
        "kind": target.kind,
        "repeats": settings.repeats,
        "points": settings.points,
        "dim": target.dim,
        "info": target.info,
        "ground_truth": truth_info,
        "vs_particles": {"t": settings.t_fixed, "particles": list(settings.particles), **collect(vs_n)},
        "vs_time": {"num_particles": settings.n_fixed, "times": list(settings.times), **collect(vs_t)},
    }


# ----------------------------------------------------------------------------- output


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["targets"])
    fig, axes = plt.subplots(len(names), 2, figsize=(12, 3.6 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        data = results["targets"][name]
        by_n, by_t = data["vs_particles"], data["vs_time"]
        ax_n, ax_t = axes[row]
        for mode in MODES:
            style = {"marker": "o", "ms": 3, "capsize": 2, "label": MODE_LABELS[mode]}
            if mode == "optimal_data_clip2":
                style.update(ls="--", marker="x")
            ax_n.errorbar(by_n["particles"], by_n[mode]["mse"], yerr=by_n[mode]["mse_se"], **style)
            ax_t.errorbar(by_t["times"], by_t[mode]["mse"], yerr=by_t[mode]["mse_se"], **style)
        n = np.asarray(by_n["particles"], np.float64)
        ax_n.plot(n, by_n["none"]["mse"][-1] * n[-1] / n, "k:", lw=1, label="1/N slope")
        if data["kind"] in ("mlp", "critic"):  # the reference's own error, far below the errors measured
            floor_t = [data["ground_truth"][f"{t:g}"]["reference_se_sq_mean"] for t in by_t["times"]]
            ax_t.plot(by_t["times"], floor_t, "k--", lw=1, label="reference SE$^2$")
            floor_n = data["ground_truth"][f"{by_n['t']:g}"]["reference_se_sq_mean"]
            ax_n.axhline(floor_n, color="k", ls="--", lw=1, label="reference SE$^2$")
        ax_n.set(xscale="log", yscale="log", xlabel="particles N", ylabel="MSE of noise mean")
        ax_n.set_xscale("log", base=2)
        ax_n.set_title(f"{name}: vs N at t = {by_n['t']:g}", fontsize=10)
        ax_t.set(yscale="log", xlabel="t", ylabel="MSE of noise mean")
        ax_t.set_title(f"{name}: vs t at N = {by_t['num_particles']}", fontsize=10)
        for ax in (ax_n, ax_t):
            ax.grid(True, which="both", alpha=0.3)
        ax_n.legend(fontsize=7)
        if data["kind"] in ("mlp", "critic"):
            ax_t.legend(fontsize=7)
    fig.suptitle(
        f"posterior_mean control variates: per-coordinate MSE of mu0 ({results['settings']['schedule']} schedule, "
        f"{results['settings']['repeats']} repeats x {results['settings']['points']} points, ± SE over points)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def to_jsonable(x):
    """Nested conversion to JSON types, with non-finite floats as None (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [to_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def print_summary(results: dict) -> None:
    print("\nSummary: per-coordinate MSE of the noise-mean estimate")
    for name, data in results["targets"].items():
        by_n, by_t = data["vs_particles"], data["vs_time"]
        print(f"\n{name} ({data['description']})")
        print(f"  vs N at t={by_n['t']:g}:  " + "  ".join(f"{n:>9d}" for n in by_n["particles"]))
        for mode in MODES:
            print(f"    {mode:<19}" + "  ".join(f"{v:9.2e}" for v in by_n[mode]["mse"]))
        print(f"    {'mean ESS':<19}" + "  ".join(f"{v:9.2f}" for v in by_n["ess_mean"]))
        print(f"  vs t at N={by_t['num_particles']}:  " + "  ".join(f"{t:>9g}" for t in by_t["times"]))
        for mode in MODES:
            print(f"    {mode:<19}" + "  ".join(f"{v:9.2e}" for v in by_t[mode]["mse"]))
        print(f"    {'mean ESS':<19}" + "  ".join(f"{v:9.2f}" for v in by_t["ess_mean"]))
    key_n, key_t = results["settings"]["n_fixed"], results["settings"]["t_fixed"]
    print(f"\nKey numbers at N={key_n}, t={key_t:g}: MSE ± SE over points (median squared error)")
    print(f"  {'':<20}" + "".join(f"{name:>30}" for name in results["targets"]))
    for mode in MODES:
        cells = []
        for data in results["targets"].values():
            row = data["vs_particles"]
            i = row["particles"].index(key_n) if key_n in row["particles"] else None
            stats = row[mode]
            cells.append(
                "n/a"
                if i is None
                else f"{stats['mse'][i]:.3g} ± {stats['mse_se'][i]:.2g} ({stats['median_sq_err'][i]:.2g})"
            )
        print(f"  {mode:<20}" + "".join(f"{cell:>30}" for cell in cells))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Error of posterior_mean's control-variate modes vs N and t.")
    parser.add_argument("--out", type=Path, default=Path("experiments/results/estimator_variance"))
    parser.add_argument("--quick", action="store_true", help="small smoke-test settings (under a minute)")
    parser.add_argument("--seed", type=int, default=0, help="Monte Carlo seed (the targets are fixed)")
    parser.add_argument("--schedule", choices=("linear", "cosine"), default="linear")
    parser.add_argument("--temperature", type=float, default=0.05, help="lambda of the MLP Boltzmann target")
    parser.add_argument("--ridge", type=float, default=1e-4, help="ridge of the optimal control variates")
    parser.add_argument(
        "--critic",
        action="append",
        default=None,
        metavar="NAME=WORKDIR",
        help="a trained-critic target from a run's workdir (repeatable; default: DEFAULT_CRITICS)",
    )
    parser.add_argument("--targets", nargs="+", default=None, help="subset of the targets (default: all)")
    args = parser.parse_args()
    args.default_critics = not args.critic  # the defaults may be missing (skipped); a given run may not
    pairs = [c.split("=", 1) for c in args.critic] if args.critic else list(DEFAULT_CRITICS.items())
    if any(len(pair) != 2 or pair[0] in SYNTHETIC_TARGETS for pair in pairs):
        parser.error(f"--critic must be NAME=WORKDIR with a NAME not in {SYNTHETIC_TARGETS}, got {args.critic}")
    args.critic = {name: Path(workdir) for name, workdir in pairs}
    for name, workdir in list(args.critic.items()):
        if not (workdir / "setup.json").exists():
            if not args.default_critics:
                parser.error(f"--critic {name}={workdir}: no run there (setup.json missing)")
            print(f"estimator_variance.py: skipping the trained critic {name}: no run at {workdir} "
                  "(DEFAULT_CRITICS says how to make it)", flush=True)
            del args.critic[name]
    args.targets = args.targets or [*SYNTHETIC_TARGETS, *args.critic]
    unknown = set(args.targets) - {*SYNTHETIC_TARGETS, *args.critic}
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}: not in {SYNTHETIC_TARGETS} nor a --critic NAME")
    return args


def main() -> None:
    args = parse_args()
    settings = default_settings(args.quick, args.schedule, args.temperature, args.ridge)
    print(f"jax {jax.__version__} ({jax.default_backend()}), seed {args.seed}, {settings}", flush=True)
    start = time.perf_counter()
    results = {
        "settings": {
            **asdict(settings),
            "seed": args.seed,
            "quick": args.quick,
            "modes": MODES,
            "prng": "rbg",
            "critics": {name: str(workdir) for name, workdir in args.critic.items()},
        },
        "versions": {"jax": jax.__version__, "numpy": np.__version__, "python": platform.python_version()},
        "metric": "mse: mean over repeats, points and coordinates of (noise_mean - mu0)^2; mse_se: its SE over "
        "points; median_sq_err: median over repeats and points of the coordinate-mean squared error; "
        "ESS = 1 / sum_i w_i^2",
        "targets": {},
    }
    key = make_key(args.seed)
    for name in args.targets:
        key, key_target = jax.random.split(key)
        results["targets"][name] = run_target(name, key_target, settings, args.critic)
    results["runtime_s"] = time.perf_counter() - start

    args.out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = args.out / "estimator_variance.json", args.out / "estimator_variance.png"
    json_path.write_text(json.dumps(to_jsonable(results), indent=1))
    plot(results, png_path)
    print_summary(results)
    print(f"\nwrote {json_path} and {png_path}; total {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
