"""End-to-end speed of the two training loops on an ``mjx:`` task: the host loop (one jitted call per
env step, the MJX envs stepped by a second call from Python) and the on-device loop (chunks of env
steps in one XLA program), evaluation at the reference protocol's ratio included.

    python experiments/bench_device.py --numerics cpu --runs 1,4 --envs 1,16          # a CPU
    python experiments/bench_device.py --numerics lite,reference --runs 1,8,32,128 --envs 1,16,128 \\
        --budget_s 420                                                                 # a GPU

For each loop, numerics, R runs and E envs per run: the compile time, ms per env step of training
(every run's E envs and one update each; the median of ``--repeats`` timed blocks of ``--chunk``
steps after one untimed block), seconds per evaluation (``--eval_episodes`` greedy episodes of
1000 steps per run) and env steps per second: ``train_sps`` = R E / (ms per step), and
``end_to_end_sps`` = R E ``eval_every`` / (``eval_every`` x step time + one evaluation), the
reference protocol's ratio (an evaluation of 25 episodes every 10,000 env steps).  The host loop's
step is ``train_step`` then ``BatchedEnv.step``, as its session runs them (rows, checkpoints and
signals add little and are left out); its evaluation is ``training.evaluation.evaluate``.

Writes ``<out>/bench_device_<device>.json`` after every row (a run cut short keeps what it has),
with the CPU model, the device and the versions; ``--budget_s`` skips the rows that would start
after that many seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from rfm_jax.infra.runtime import configure_xla_cpu  # noqa: E402

configure_xla_cpu()  # before jax starts its backend

import jax  # noqa: E402
import numpy as np  # noqa: E402
from bench_update import cpu_model, setting  # noqa: E402

from rfm_jax import envs  # noqa: E402
from rfm_jax.infra.distributed import Layout  # noqa: E402
from rfm_jax.training import device_loop, loop  # noqa: E402
from rfm_jax.training.evaluation import evaluate  # noqa: E402
from rfm_jax.training.program import compile_seeds, empty_transitions, make_step_fns  # noqa: E402
from rfm_jax.training.replay import Transition  # noqa: E402
from rfm_jax.training.run_config import RunConfig  # noqa: E402

EVAL_EVERY, EVAL_EPISODES = RunConfig.eval_every, RunConfig.eval_episodes  # the reference protocol's ratio


def _run_config(args, numerics: str, runs: int, num_envs: int, loop_name: str) -> tuple[RunConfig, dict]:
    config, kwargs = setting(numerics)
    rc = RunConfig.for_task(args.task, num_seeds=runs, num_envs=num_envs, warmup_steps=1, total_steps=10 ** 6,
                            batch_size=config.batch_size, replay_capacity=args.capacity, log_every=args.chunk,
                            eval_every=args.chunk, checkpoint_every=args.chunk, eval_episodes=args.eval_episodes,
                            loop=loop_name)
    return rc, kwargs


def _blocks(run_block, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``run_block`` after one untimed call."""
    run_block()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_block()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_device(args, rc: RunConfig, setup) -> dict:
    from rfm_jax.envs import mjx

    layout = Layout.make(len(setup.runs))
    spec = setup.spec
    fns = make_step_fns(setup.agent, obs_dim=spec.obs_dim, action_dim=spec.action_dim, num_envs=rc.num_envs,
                        replay_capacity=rc.replay_capacity, batch_size=rc.batch_size)
    core = mjx.program(envs.backend(rc.task)[1])[0]
    programs = device_loop._programs(fns, core, rc, layout, args.chunk, spec)
    t0 = time.perf_counter()
    carry, compiled = device_loop._init_and_compile(programs, layout, setup, setup.runs, rc)
    compile_s = time.perf_counter() - t0
    box = {"carry": carry}

    def block():
        box["carry"], ys = compiled["chunk"](box["carry"])
        jax.block_until_ready(ys)

    step_s = _blocks(block, args.repeats) / args.chunk
    keys = (jax.random.split(jax.random.PRNGKey(1), (rc.num_seeds, rc.eval_episodes)),
            jax.random.split(jax.random.PRNGKey(2), (rc.num_seeds, spec.episode_length)))
    eval_s = _blocks(lambda: jax.block_until_ready(compiled["eval"](box["carry"].train.agent, *keys)), 1)
    return {"compile_s": compile_s, "step_s": step_s, "eval_s": eval_s}


def bench_host(args, rc: RunConfig, setup) -> dict:
    from rfm_jax.training.sweeps import run_keys

    spec = setup.spec
    fns = compile_seeds(make_step_fns(setup.agent, obs_dim=spec.obs_dim, action_dim=spec.action_dim,
                                      num_envs=rc.num_envs, replay_capacity=rc.replay_capacity,
                                      batch_size=rc.batch_size))
    env = envs.make(rc.task, rc.seeds, rc.num_envs)
    obs = env.reset()
    pending = jax.tree.map(lambda x: np.zeros((rc.num_seeds, *x.shape), x.dtype),
                           empty_transitions(rc.num_envs, spec.obs_dim, spec.action_dim))
    box = {"obs": obs, "pending": (pending, np.zeros((rc.num_seeds, rc.num_envs), bool))}

    def step(fn):
        box["state"], actions, metrics = fn(box["state"], *box["pending"], box["obs"])
        actions, _ = jax.device_get((actions, metrics))
        result = env.step(np.asarray(actions))
        box["pending"] = (Transition(box["obs"], actions, result.reward, result.discount, result.next_obs),
                          result.valid)
        box["obs"] = result.obs

    t0 = time.perf_counter()
    box["state"] = fns.init(run_keys(setup.runs), setup.hyper)
    step(fns.warmup_step)
    step(fns.train_step)
    compile_s = time.perf_counter() - t0

    def block():
        for _ in range(args.chunk):
            step(fns.train_step)

    step_s = _blocks(block, args.repeats) / args.chunk
    eval_s = _blocks(lambda: evaluate(fns, box["state"].agent, task=rc.task, seeds=rc.seeds,
                                      episodes=rc.eval_episodes, eval_index=0), 1)
    return {"compile_s": compile_s, "step_s": step_s, "eval_s": eval_s}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="mjx:cartpole-swingup")
    parser.add_argument("--numerics", default="cpu", help="comma-separated: cpu, lite, reference")
    parser.add_argument("--loops", default="host,device")
    parser.add_argument("--runs", default="1,4")
    parser.add_argument("--envs", default="1,16")
    parser.add_argument("--chunk", type=int, default=100, help="env steps per timed block (the device loop's chunk)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--capacity", type=int, default=100_000)
    parser.add_argument("--eval_episodes", type=int, default=EVAL_EPISODES)
    parser.add_argument("--budget_s", type=float, default=None, help="start no row after this many seconds")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "bench_device"))
    args = parser.parse_args()
    device = jax.devices()[0]
    name = "gpu" if device.platform == "gpu" else device.platform
    path = os.path.join(args.out, f"bench_device_{name}.json")
    os.makedirs(args.out, exist_ok=True)
    out = {"cpu": cpu_model(), "device": device.device_kind, "platform": device.platform,
           "jax": jax.__version__, "task": args.task, "eval_every": EVAL_EVERY, "chunk": args.chunk,
           "command": "python experiments/bench_device.py " + " ".join(sys.argv[1:]), "rows": []}
    print(f"{out['cpu']}; {out['device']}", flush=True)
    t_start = time.time()
    grid = [(n, r, e, lp) for n in args.numerics.split(",") for r in map(int, args.runs.split(","))
            for e in map(int, args.envs.split(",")) for lp in args.loops.split(",")]
    for numerics, runs, num_envs, loop_name in grid:
        if args.budget_s is not None and time.time() - t_start > args.budget_s:
            print(f"budget spent: skipped {numerics} R={runs} E={num_envs} {loop_name}", flush=True)
            continue
        rc, kwargs = _run_config(args, numerics, runs, num_envs, loop_name)
        setup = loop.build(rc, "rfm", kwargs)
        timing = (bench_device if loop_name == "device" else bench_host)(args, rc, setup)
        step_s, eval_s = timing["step_s"], timing["eval_s"]
        row = {"loop": loop_name, "numerics": numerics, "runs": runs, "envs": num_envs, **timing,
               "ms_per_step": 1000 * step_s, "train_sps": runs * num_envs / step_s,
               "end_to_end_sps": runs * num_envs * EVAL_EVERY / (EVAL_EVERY * step_s + eval_s)}
        out["rows"].append(row)
        print(f"{loop_name:6s} {numerics:9s} R={runs:<4d} E={num_envs:<4d} compile {timing['compile_s']:6.1f} s  "
              f"{row['ms_per_step']:8.2f} ms/step  eval {eval_s:6.2f} s  {row['train_sps']:9.0f} train sps  "
              f"{row['end_to_end_sps']:9.0f} end-to-end sps", flush=True)
        with open(path, "w") as f:
            json.dump(out, f, indent=1)
    print(json.dumps({"rows": len(out["rows"]), "path": path}))


if __name__ == "__main__":
    main()
