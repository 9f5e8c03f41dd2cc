"""Speed of the fused training step: ms per env step and env steps/s for 1, 2, 4, 8 vmapped seeds.

    python experiments/bench_update.py                          # reference config and cpu preset
    python experiments/bench_update.py --presets cpu --seeds 1,2 --out runs/bench

For each preset and seed count S it compiles ``jit(vmap(train_step))`` once (compile time is
reported separately), then times steady-state calls exactly as the training loop makes them (one
call per env step, blocking on the returned actions).  The host time of stepping S x E dm_control
envs is timed on its own.  Env steps/s counts all seeds: S * E / (device time + host env time).

Where the time goes (S = 1, ablations of the same update):
  sampling   = full update - update with 1 policy particle and 1 ODE step
  posterior  = full update - update with 2 posterior particles
  rest       = critic TD update, actor regression, optimisers, replay sampling
Writes <out>/bench.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from rfm_jax import envs
from rfm_jax.agents.rfm import RFMHyper, make_rfm
from rfm_jax.train import compile_seeds, empty_transitions, make_step_fns

HERE = os.path.dirname(os.path.abspath(__file__))


def load_config(preset: str):
    spec = importlib.util.spec_from_file_location("rfm_configs", os.path.join(HERE, "configs", "rfm.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(preset)


def agent_kwargs(config, **overrides) -> dict:
    kwargs = dict(config.agent)
    kwargs["critic_hidden"] = tuple(kwargs["critic_hidden"])
    kwargs["particle_batch"] = kwargs["particle_batch"] or None
    kwargs["sample_chunk"] = kwargs["sample_chunk"] or None
    kwargs.update(overrides)
    return kwargs


def time_train_step(config, num_seeds: int, min_time: float, **overrides) -> dict:
    """Compile time and steady-state ms per call of the seed-vmapped train_step."""
    spec = envs.spec(config.task)
    agent = make_rfm(obs_dim=spec.obs_dim, action_dim=spec.action_dim, **agent_kwargs(config, **overrides))
    fns = compile_seeds(make_step_fns(agent, obs_dim=spec.obs_dim, action_dim=spec.action_dim,
                                      num_envs=config.num_envs, replay_capacity=config.replay_capacity,
                                      batch_size=config.batch_size, updates_per_step=config.updates_per_step))
    state = fns.init(jnp.stack([jax.random.PRNGKey(s) for s in range(num_seeds)]), RFMHyper(**dict(config.hyper)))
    rng = np.random.default_rng(0)
    shape = (num_seeds, config.num_envs)
    trans = jax.tree.map(lambda x: np.asarray(rng.normal(size=(num_seeds, *x.shape)), np.float32),
                         empty_transitions(config.num_envs, spec.obs_dim, spec.action_dim))
    trans = trans._replace(action=np.clip(trans.action, -1, 1), discount=np.ones(shape, np.float32))
    valid = np.ones(shape, bool)
    obs = np.asarray(rng.normal(size=(*shape, spec.obs_dim)), np.float32)
    for _ in range(3):  # a few transitions in the buffer
        state, _, _ = fns.warmup_step(state, trans, valid, obs)
    t0 = time.perf_counter()
    compiled = fns.train_step.lower(state, trans, valid, obs).compile()
    compile_s = time.perf_counter() - t0
    state, actions, _ = compiled(state, trans, valid, obs)
    np.asarray(actions)
    times = []
    while sum(times) < min_time or len(times) < 3:
        t0 = time.perf_counter()
        state, actions, _ = compiled(state, trans, valid, obs)
        np.asarray(actions)  # the loop blocks on the actions every step
        times.append(time.perf_counter() - t0)
    return {"compile_s": compile_s, "ms_per_step": 1e3 * float(np.median(times)), "timed_calls": len(times)}


def time_host_env(task: str, num_seeds: int, num_envs: int, steps: int = 300) -> float:
    """Milliseconds to step S x E dm_control envs once (random actions)."""
    env = envs.BatchedEnv(task, list(range(num_seeds)), num_envs)
    env.reset()
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (steps, num_seeds, num_envs, env.action_dim))
    t0 = time.perf_counter()
    for a in actions:
        env.step(a)
    return 1e3 * (time.perf_counter() - t0) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="reference,cpu", help="comma-separated: reference (cheetah-run), cpu")
    parser.add_argument("--seeds", default="1,2,4,8", help="comma-separated seed counts")
    parser.add_argument("--min_time", type=float, default=3.0, help="seconds of timed calls per setting")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "bench_update"))
    args = parser.parse_args()
    results = {"device": jax.devices()[0].device_kind, "cpu_count": os.cpu_count(), "jax": jax.__version__, "runs": []}
    for preset in args.presets.split(","):
        config = load_config(preset)
        print(f"== {preset}: {config.task}, batch {config.batch_size}, "
              f"{config.agent.num_posterior_particles} posterior / {config.agent.num_policy_particles} policy "
              f"particles, {config.agent.num_ode_steps} ODE steps", flush=True)
        for num_seeds in [int(s) for s in args.seeds.split(",")]:
            r = time_train_step(config, num_seeds, args.min_time)
            env_ms = time_host_env(config.task, num_seeds, config.num_envs)
            total = r["ms_per_step"] + env_ms
            row = {"preset": preset, "task": config.task, "seeds": num_seeds, **r, "host_env_ms": env_ms,
                   "ms_per_seed_step": total / num_seeds,
                   "env_steps_per_s": 1e3 * num_seeds * config.num_envs / total}
            results["runs"].append(row)
            print(f"  S={num_seeds}: compile {r['compile_s']:.1f} s, step {r['ms_per_step']:.1f} ms "
                  f"+ host env {env_ms:.2f} ms -> {row['ms_per_seed_step']:.1f} ms per seed-step, "
                  f"{row['env_steps_per_s']:.1f} env steps/s", flush=True)
        full = next(r for r in results["runs"] if r["preset"] == preset and r["seeds"] == 1)["ms_per_step"] \
            if "1" in args.seeds.split(",") else time_train_step(config, 1, args.min_time)["ms_per_step"]
        no_sampling = time_train_step(config, 1, args.min_time, num_policy_particles=1, num_ode_steps=1)["ms_per_step"]
        min_posterior = time_train_step(config, 1, args.min_time, num_posterior_particles=2)["ms_per_step"]
        env_ms = time_host_env(config.task, 1, config.num_envs)
        split = {"preset": preset, "full_ms": full, "sampling_ms": full - no_sampling,
                 "posterior_ms": full - min_posterior, "rest_ms": no_sampling + min_posterior - full,
                 "host_env_ms": env_ms}
        results.setdefault("breakdown", []).append(split)
        print("  where the time goes (S=1): " + ", ".join(f"{k} {v:.1f}" for k, v in split.items() if k != "preset"),
              flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {os.path.join(args.out, 'bench.json')}")


if __name__ == "__main__":
    main()
