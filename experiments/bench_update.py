"""Speed of the fused training step at fixed numerics: ms per env step, env steps/s, GMAC per
update and achieved GMAC/s, compile time, and where the time goes.

    python experiments/bench_update.py                                  # lite and reference, 1 seed
    python experiments/bench_update.py --numerics reference --seeds 1   # one row (for alternation)
    python experiments/bench_update.py --numerics reference --seeds 1,8,32 --no-breakdown
    python experiments/bench_update.py --numerics reference --seeds 1,8,32,128 --no-breakdown --shard  # all devices
    python experiments/bench_update.py --numerics reference --seeds 8 --set sample_chunk=128  # an agent argument
    python experiments/bench_update.py --numerics reference --seeds 1,8 --profile  # device time per kernel (GPU)

Numerics (cheetah-run shapes: O = 17, A = 6; batch 256; 256-wide actor and critics):
  lite       16 posterior particles, 4 / 4 / 8 policy particles (train / data / eval), 5 Euler steps
  reference  100 posterior particles, 32 / 32 / 32 policy particles, 10 Euler steps (docs/method.md s. 7)
  cpu        the ``cpu`` preset of experiments/configs/rfm.py on cartpole-swingup

One env step is one call of ``jit(vmap(train_step))`` over S seeds exactly as the training loop
makes it: add the last transitions, sample a batch, one update, and the next training action of
every seed (blocking on the actions).  ms per env step is the wall time of the timed calls over
their number (a throughput, slow outliers included, as the authors' benchmark measures it);
``ms_per_env_step_median`` is the median call.  Compile time is separate.  ``--shard`` splits the S runs
over every device (``rfm_jax.infra.distributed``, as ``run.py`` does; S must be a multiple of the
device count) and reports env steps/s per run and in total.  ``--breakdown`` (default on)
times ablations of the same step at S = 1:
  sampling   = full - the step with 1 train particle and 1 ODE step
  posterior  = full - the step with 2 posterior particles
  rest       = what remains (critic TD step, actor regression, optimisers, replay, acting)
The host time of stepping the envs is timed on its own (not part of ms_per_env_step): the task's,
and with ``--host_tasks`` those of other tasks and backends (``host_env_ms_by_task``), e.g.

    python experiments/bench_update.py --numerics cpu --seeds 1,8,32 --no-breakdown \
        --host_tasks cheetah-run,gym:Hopper-v5,gym:HalfCheetah-v5 --out experiments/results/bench_update/host_env
Writes <out>/bench_<numerics>.json; the last line printed is one JSON object (the first row).
"""

from __future__ import annotations

import argparse
import json
import os
import time

from rfm_jax.infra.runtime import configure_xla_cpu

configure_xla_cpu()  # before jax starts its backend; RFM_JAX_XLA_DEFAULTS=0 times XLA's defaults

import jax  # noqa: E402
import numpy as np  # noqa: E402
from configs import rfm as rfm_configs  # noqa: E402

from rfm_jax import envs  # noqa: E402
from rfm_jax.agents import config_kwargs, make_agent  # noqa: E402
from rfm_jax.infra.distributed import Layout  # noqa: E402
from rfm_jax.infra.macs import update_macs  # noqa: E402
from rfm_jax.training.program import compile_seeds, empty_transitions, make_step_fns  # noqa: E402
from rfm_jax.training.sweeps import expand, hyper_per_run, run_keys  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
NUMERICS = {
    "lite": dict(num_posterior_particles=16, num_train_particles=4, num_act_particles=4, num_eval_particles=8,
                 num_ode_steps=5),
    "reference": dict(num_posterior_particles=100, num_train_particles=32, num_act_particles=32,
                      num_eval_particles=32, num_ode_steps=10),
}


def setting(numerics: str, overrides: dict | None = None):
    """(config, agent keyword arguments) of a numerics name, with ``overrides`` on top."""
    config = rfm_configs.get_config("cpu" if numerics == "cpu" else "cheetah-run")
    return config, {**config_kwargs(config.agent), **NUMERICS.get(numerics, {}), **(overrides or {})}


def parse_override(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` of ``--set``: VALUE an int, a float, None, true/false or a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    for cast in (int, float):
        try:
            return key, cast(value)
        except ValueError:
            pass
    return key, {"None": None, "none": None, "true": True, "false": False}.get(value, value)


def time_train_step(config, kwargs: dict, num_seeds: int, min_time: float, shard: bool = False,
                    profile: bool = False) -> dict:
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
    out = {"compile_s": compile_s, "ms_per_call": 1e3 * wall / len(times),
           "ms_per_call_median": 1e3 * float(np.median(times)), "timed_calls": len(times)}
    if profile:
        try:
            out["device_profile"] = device_profile(compiled, state, (trans, valid, obs))
        except Exception as e:  # noqa: BLE001  (a profiler that cannot start must not lose the timing)
            out["device_profile"] = {"error": f"{type(e).__name__}: {e}"}
    return out


MATMUL_WORDS = ("gemm", "cublas", "cutlass", "xmma", "sm90", "dot", "matmul")


def device_profile(compiled, state, args, calls: int = 10) -> dict | None:
    """Device time per call from a ``jax.profiler`` trace of ``calls`` calls: per timeline of the
    first device plane, busy ms per call, and on the busiest kernel timeline the split into
    matrix products (kernel names with a gemm/cublas/cutlass/... word) and other kernels, with the
    top 20 kernels.  None where the trace has no device plane (the CPU backend)."""
    import glob
    import tempfile
    from collections import Counter

    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp)
        for _ in range(calls):
            state, actions, _ = compiled(state, *args)
            np.asarray(actions)
        jax.profiler.stop_trace()
        files = glob.glob(os.path.join(tmp, "**", "*.xplane.pb"), recursive=True)
        data = jax.profiler.ProfileData.from_file(files[0]) if files else None
    planes = [p for p in (data.planes if data else []) if p.name.startswith("/device:")]
    if not planes:
        return None
    lines = {}
    for line in planes[0].lines:
        totals, counts = Counter(), Counter()
        for event in line.events:
            totals[event.name] += event.duration_ns / 1e6 / calls
            counts[event.name] += 1
        lines[line.name] = (totals, counts)
    kernel_lines = [n for n in lines if n.startswith("Stream")] or list(lines)
    busiest = max(kernel_lines, key=lambda n: sum(lines[n][0].values()))
    totals, counts = lines[busiest]
    is_mm = lambda name: any(w in name.lower() for w in MATMUL_WORDS)  # noqa: E731
    return {"plane": planes[0].name, "ms_per_call_by_line": {n: sum(t.values()) for n, (t, _) in lines.items()},
            "kernel_line": busiest, "kernels_per_call": sum(counts.values()) / calls,
            "matmul_ms": sum(v for k, v in totals.items() if is_mm(k)),
            "other_ms": sum(v for k, v in totals.items() if not is_mm(k)),
            "top": [[k, v, counts[k] / calls] for k, v in totals.most_common(20)]}


def time_host_env(task: str, num_seeds: int, steps: int = 300) -> float:
    """Milliseconds to step S envs of ``task`` (any backend) once with random actions, resets of
    finished episodes included: the host's part of one env step of the training loop."""
    env = envs.make(task, list(range(num_seeds)), 1)
    env.reset()
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, num_seeds, 1, env.action_dim))
    t0 = time.perf_counter()
    for a in actions:
        env.step(a)
    return 1e3 * (time.perf_counter() - t0) / steps


def cpu_model() -> str:
    """lscpu's model name with the family and model numbers (the CPU behind a timing)."""
    try:
        info = dict(line.split(":", 1) for line in open("/proc/cpuinfo").read().split("\n\n")[0].splitlines()
                    if ":" in line)
    except OSError:
        return "unknown"
    info = {k.strip(): v.strip() for k, v in info.items()}
    avx = "AVX-512" if "avx512f" in info.get("flags", "") else "AVX2" if "avx2" in info.get("flags", "") else "no AVX2"
    family, model = info.get("cpu family", "?"), info.get("model", "?")
    return f"{info.get('model name', '?')} (family {family}, model {model}, {avx})"


def bench(numerics: str, seeds: list[int], min_time: float, breakdown: bool, shard: bool = False,
          overrides: dict | None = None, profile: bool = False, host_tasks: list[str] | None = None) -> list[dict]:
    config, kwargs = setting(numerics, overrides)
    spec = envs.spec(config.task)
    macs = update_macs(obs_dim=spec.obs_dim, action_dim=spec.action_dim, batch_size=config.batch_size, **kwargs)
    gmac = (macs["total"] + macs["act"]) / 1e9
    print(f"== {numerics}: {config.task}, batch {config.batch_size}, {kwargs['num_posterior_particles']} posterior / "
          f"{kwargs['num_train_particles']}/{kwargs['num_act_particles']}/{kwargs['num_eval_particles']} policy "
          f"particles, {kwargs['num_ode_steps']} ODE steps, {gmac:.2f} GMAC per update + action, "
          f"backend {jax.default_backend()}" + (f", set {overrides}" if overrides else ""), flush=True)
    rows = []
    devices = jax.device_count() if shard else 1
    for num_seeds in seeds:
        if num_seeds % devices:
            print(f"  S={num_seeds}: skipped, not a multiple of the {devices} devices", flush=True)
            continue
        r = time_train_step(config, kwargs, num_seeds, min_time, shard, profile)
        ms = r["ms_per_call"]
        row = {"numerics": numerics, "task": config.task, "overrides": overrides or {}, "seeds": num_seeds,
               "devices": devices,
               "ms_per_env_step": ms, "ms_per_env_step_median": r["ms_per_call_median"],
               "ms_per_seed_step": ms / num_seeds, "env_steps_per_s": 1e3 * num_seeds / ms,
               "env_steps_per_s_per_run": 1e3 / ms,
               "gmac_per_update": gmac, "gmac_per_s": gmac * num_seeds / (ms / 1e3),
               "compile_s": r["compile_s"], "timed_calls": r["timed_calls"],
               "host_env_ms": time_host_env(config.task, num_seeds)}
        if host_tasks:
            row["host_env_ms_by_task"] = {task: time_host_env(task, num_seeds) for task in host_tasks}
        rows.append(row)
        print(f"  S={num_seeds}: {ms:.1f} ms per env step ({row['env_steps_per_s']:.2f} env steps/s), "
              f"{row['gmac_per_s']:.1f} GMAC/s, compile {r['compile_s']:.1f} s, host env "
              f"{row['host_env_ms']:.2f} ms" + "".join(f", {t} {v:.2f} ms" for t, v in
                                                        row.get("host_env_ms_by_task", {}).items()), flush=True)
        if profile:
            row["device_profile"] = p = r["device_profile"]
            print("    device profile: none (no device plane in the trace)" if p is None else
                  f"    device profile failed: {p['error']}" if "error" in p else
                  f"    device busy {p['matmul_ms'] + p['other_ms']:.2f} ms per call on {p['kernel_line']} "
                  f"({p['kernels_per_call']:.0f} kernels): matrix products {p['matmul_ms']:.2f} ms, "
                  f"other {p['other_ms']:.2f} ms; top: " + "; ".join(f"{k[:60]} {v:.3f}" for k, v, _ in p["top"][:8]),
                  flush=True)
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
    parser.add_argument("--profile", action="store_true",
                        help="trace 10 calls per row and report device time (matrix products / other kernels)")
    parser.add_argument("--set", dest="overrides", type=parse_override, action="append", default=[],
                        metavar="KEY=VALUE", help="an agent keyword argument, e.g. sample_chunk=0 (repeatable)")
    parser.add_argument("--host_tasks", default="",
                        help="comma-separated tasks whose host env step is also timed, e.g. cheetah-run,gym:Hopper-v5")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "bench_update"))
    args = parser.parse_args()
    header = {"device": jax.devices()[0].device_kind, "cpu_model": cpu_model(), "backend": jax.default_backend(),
              "xla_flags": os.environ.get("XLA_FLAGS", ""),
              "matmul_precision": str(jax.config.jax_default_matmul_precision),
              "cpu_count": os.cpu_count(), "jax": jax.__version__, "device_count": jax.device_count()}
    first = None
    for numerics in args.numerics.split(","):
        if numerics not in (*NUMERICS, "cpu"):
            parser.error(f"--numerics: unknown {numerics!r}; choose from lite, reference, cpu")
        rows = bench(numerics, [int(s) for s in args.seeds.split(",")], args.min_time, args.breakdown, args.shard,
                     dict(args.overrides), args.profile, [t for t in args.host_tasks.split(",") if t])
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
