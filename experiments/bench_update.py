"""Speed of the fused training step at fixed numerics: ms per env step, env steps/s, GMAC per
update and achieved GMAC/s, compile time, and where the time goes.

    python experiments/bench_update.py                                  # lite and reference, 1 seed
    python experiments/bench_update.py --numerics reference --seeds 1   # one row (for alternation)
    python experiments/bench_update.py --numerics reference --seeds 1,8,32 --no_breakdown
    python experiments/bench_update.py --numerics reference --seeds 1,8,32,128 --no_breakdown --shard  # all devices

Numerics (cheetah-run shapes: O = 17, A = 6; batch 256; 256-wide actor and critics):
  lite       16 posterior particles, 4 / 4 / 8 policy particles (train / data / eval), 5 Euler steps
  reference  100 posterior particles, 32 / 32 / 32 policy particles, 10 Euler steps (docs/method.md s. 7)
  cpu        the ``cpu`` preset of experiments/configs/rfm.py on cartpole-swingup

One env step is one call of ``jit(vmap(train_step))`` over S seeds exactly as the training loop
makes it: add the last transitions, sample a batch, one update, and the next training action of
every seed (blocking on the actions).  ms per env step is the wall time of the timed calls over
their number (a throughput, slow outliers included, as the authors' benchmark measures it);
``ms_per_env_step_median`` is the median call.  Compile time is separate.  ``--shard`` splits the S runs
over every device (``rfm_jax.distributed``, as ``run.py`` does; S must be a multiple of the
device count) and reports env steps/s per run and in total.  ``--breakdown`` (default on)
times ablations of the same step at S = 1:
  sampling   = full - the step with 1 train particle and 1 ODE step
  posterior  = full - the step with 2 posterior particles
  rest       = what remains (critic TD step, actor regression, optimisers, replay, acting)
The host time of stepping dm_control is timed on its own (not part of ms_per_env_step).
Writes <out>/bench_<numerics>.json; the last line printed is one JSON object (the first row).
"""

from __future__ import annotations

import argparse
import json
import os
import time

from rfm_jax.runtime import configure_xla_cpu

configure_xla_cpu()  # before jax starts its backend; RFM_JAX_XLA_DEFAULTS=0 times XLA's defaults

import jax  # noqa: E402
import numpy as np  # noqa: E402
from configs import rfm as rfm_configs  # noqa: E402

from rfm_jax import envs  # noqa: E402
from rfm_jax.agents import make_agent  # noqa: E402
from rfm_jax.cost import update_macs  # noqa: E402
from rfm_jax.distributed import Layout  # noqa: E402
from rfm_jax.sweeps import expand, hyper_per_run, run_keys  # noqa: E402
from rfm_jax.train import compile_seeds, empty_transitions, make_step_fns  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
NUMERICS = {
    "lite": dict(num_posterior_particles=16, num_train_particles=4, num_data_particles=4, num_eval_particles=8,
                 num_ode_steps=5),
    "reference": dict(num_posterior_particles=100, num_train_particles=32, num_data_particles=32,
                      num_eval_particles=32, num_ode_steps=10),
}


def setting(numerics: str):
    """(config, agent keyword arguments) of a numerics name."""
    config = rfm_configs.get_config("cpu" if numerics == "cpu" else "cheetah-run")
    return config, {**rfm_configs.agent_kwargs(config), **NUMERICS.get(numerics, {})}


def time_train_step(config, kwargs: dict, num_seeds: int, min_time: float, shard: bool = False) -> dict:
    """Compile time and steady-state ms per call of the seed-vmapped train_step."""
    spec = envs.spec(config.task)
    agent = make_agent(config.algo, obs_dim=spec.obs_dim, action_dim=spec.action_dim, **kwargs)
    fns = compile_seeds(make_step_fns(agent, obs_dim=spec.obs_dim, action_dim=spec.action_dim,
                                      num_envs=config.num_envs, replay_capacity=config.replay_capacity,
                                      batch_size=config.batch_size, updates_per_step=config.updates_per_step),
                        Layout.make(num_seeds).sharding if shard else None)
    runs = expand(range(num_seeds), None)
    state = fns.init(run_keys(runs), hyper_per_run(agent.hyper.replace(**dict(config.hyper)), runs))
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
    for _ in range(2):
        state, actions, _ = compiled(state, trans, valid, obs)
        np.asarray(actions)
    times = []
    start = time.perf_counter()
    while sum(times) < min_time or len(times) < 3:
        t0 = time.perf_counter()
        state, actions, _ = compiled(state, trans, valid, obs)
        np.asarray(actions)  # the loop blocks on the actions every step
        times.append(time.perf_counter() - t0)
    wall = time.perf_counter() - start
    # Throughput: wall time over calls (as the authors' benchmark reports it), outliers included.
    return {"compile_s": compile_s, "ms_per_call": 1e3 * wall / len(times),
            "ms_per_call_median": 1e3 * float(np.median(times)), "timed_calls": len(times)}


def time_host_env(task: str, num_seeds: int, steps: int = 300) -> float:
    """Milliseconds to step S dm_control envs once (random actions)."""
    env = envs.BatchedEnv(task, list(range(num_seeds)), 1)
    env.reset()
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, num_seeds, 1, env.action_dim))
    t0 = time.perf_counter()
    for a in actions:
        env.step(a)
    return 1e3 * (time.perf_counter() - t0) / steps


def bench(numerics: str, seeds: list[int], min_time: float, breakdown: bool, shard: bool = False) -> list[dict]:
    config, kwargs = setting(numerics)
    spec = envs.spec(config.task)
    macs = update_macs(obs_dim=spec.obs_dim, action_dim=spec.action_dim, batch_size=config.batch_size, **kwargs)
    gmac = (macs["total"] + macs["act"]) / 1e9
    print(f"== {numerics}: {config.task}, batch {config.batch_size}, {kwargs['num_posterior_particles']} posterior / "
          f"{kwargs['num_train_particles']}/{kwargs['num_data_particles']}/{kwargs['num_eval_particles']} policy "
          f"particles, {kwargs['num_ode_steps']} ODE steps, {gmac:.2f} GMAC per update + action, "
          f"backend {jax.default_backend()}", flush=True)
    rows = []
    devices = jax.device_count() if shard else 1
    for num_seeds in seeds:
        if num_seeds % devices:
            print(f"  S={num_seeds}: skipped, not a multiple of the {devices} devices", flush=True)
            continue
        r = time_train_step(config, kwargs, num_seeds, min_time, shard)
        ms = r["ms_per_call"]
        row = {"numerics": numerics, "task": config.task, "seeds": num_seeds, "devices": devices,
               "ms_per_env_step": ms, "ms_per_env_step_median": r["ms_per_call_median"],
               "ms_per_seed_step": ms / num_seeds, "env_steps_per_s": 1e3 * num_seeds / ms,
               "env_steps_per_s_per_run": 1e3 / ms,
               "gmac_per_update": gmac, "gmac_per_s": gmac * num_seeds / (ms / 1e3),
               "compile_s": r["compile_s"], "timed_calls": r["timed_calls"],
               "host_env_ms": time_host_env(config.task, num_seeds)}
        rows.append(row)
        print(f"  S={num_seeds}: {ms:.1f} ms per env step ({row['env_steps_per_s']:.2f} env steps/s), "
              f"{row['gmac_per_s']:.1f} GMAC/s, compile {r['compile_s']:.1f} s, host env "
              f"{row['host_env_ms']:.2f} ms", flush=True)
    if breakdown:
        full = time_train_step(config, kwargs, 1, min_time)["ms_per_call"]
        ablate = lambda **o: time_train_step(config, {**kwargs, **o}, 1, min_time)["ms_per_call"]  # noqa: E731
        no_sampling = ablate(num_train_particles=1, num_ode_steps=1)
        min_posterior = ablate(num_posterior_particles=2)
        split = {"full_ms": full, "sampling_ms": full - no_sampling, "posterior_ms": full - min_posterior,
                 "rest_ms": no_sampling + min_posterior - full,
                 "gmac": {k: v / 1e9 for k, v in macs.items()}}
        rows[0]["breakdown"] = split
        print("  where the time goes (S=1): " + ", ".join(f"{k} {v:.1f}" for k, v in split.items() if k != "gmac")
              + "; GMAC " + ", ".join(f"{k} {v:.2f}" for k, v in split["gmac"].items()), flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--numerics", default="lite,reference", help="comma-separated: lite, reference, cpu")
    parser.add_argument("--seeds", default="1", help="comma-separated seed counts, e.g. 1,8,32")
    parser.add_argument("--min_time", type=float, default=10.0, help="seconds of timed calls per setting")
    parser.add_argument("--breakdown", action=argparse.BooleanOptionalAction, default=True,
                        help="time the ablations that split the step (three more compilations)")
    parser.add_argument("--shard", action="store_true",
                        help="split the runs over every device (a multiple of the device count)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "bench_update"))
    args = parser.parse_args()
    header = {"device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
              "xla_flags": os.environ.get("XLA_FLAGS", ""),
              "cpu_count": os.cpu_count(), "jax": jax.__version__, "device_count": jax.device_count()}
    first = None
    for numerics in args.numerics.split(","):
        if numerics not in (*NUMERICS, "cpu"):
            parser.error(f"--numerics: unknown {numerics!r}; choose from lite, reference, cpu")
        rows = bench(numerics, [int(s) for s in args.seeds.split(",")], args.min_time, args.breakdown, args.shard)
        if not rows:
            parser.error(f"--seeds: no count is a multiple of the {jax.device_count()} devices")
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, f"bench_{numerics}{'_sharded' if args.shard else ''}.json")
        with open(path, "w") as f:
            json.dump({**header, "rows": rows}, f, indent=2)
        print(f"wrote {path}", flush=True)
        first = first or {**header, **{k: v for k, v in rows[0].items() if k != "breakdown"}}
    print(json.dumps(first), flush=True)


if __name__ == "__main__":
    main()
