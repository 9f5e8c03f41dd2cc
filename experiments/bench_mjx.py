"""Speed of the env step on this machine, three ways, for the MJX backend's choice of dependency:

    mjx         route A: mujoco-mjx with dm_control's models and rfm_jax's ports (``rfm_jax.envs.mjx``):
                the backend's own jitted programs (``BatchedEnv``'s reset and its vmapped step)
    playground  route B: MuJoCo Playground 0.2.0's DM Control ports (impl="jax"; its env.step only,
                jit(vmap(step)), none of its Brax wrappers)
    dmc         the host backend: ``rfm_jax.envs.make(task, seeds, E).step`` with random actions

For each task and number of envs N (= S x E; the host backend as S = 1, E = N) it times the first
reset (``reset_s``: tracing and compiling the reset program and one reset; the host backend: making
and resetting the envs), the first step (``compile_s``: tracing and compiling the jitted, vmapped
step and one step; the host backend: one step) and then ``--steps`` steps (block_until_ready), and
reports env steps per second (N x steps / seconds).  Each N compiles afresh (a new shape).  Actions
are uniform in [-1, 1], drawn ahead.

    python experiments/bench_mjx.py --route mjx                       # one route, rows to stdout and the JSON
    python experiments/bench_mjx.py --route all --playground_python PATH_TO/venv_pg/bin/python
                                     # every (task, route) in its own fresh process, routes alternating

Route B needs ``playground==0.2.0`` (the JAX suite; PyPI's playground 1.0 is another project),
resolved together with this project in a separate venv (``pip install -e . -c constraints.txt
playground==0.2.0``); it is imported only by ``--route playground``.  Rows are merged into
``--out`` (default ``experiments/results/bench_mjx/routes_cpu.json``), replacing those of the same
(route, task, N), with the CPU's model name, family and model from ``lscpu``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join("experiments", "results", "bench_mjx", "routes_cpu.json")
NOTES = {
    "mjx": "dm_control's own MJCF (RK4 cartpole, Euler cheetah; dm_control's timesteps, 100 Newton iterations, "
           "tolerance 1e-8), float32; the step program as BatchedEnv runs it (no refill within the timed steps)",
    "playground": "playground 0.2.0 ports, impl='jax', their default configs otherwise (njmax=100, naconmax=100000): "
                  "their own MJCF (cartpole Euler, iterations 1, ls_iterations 4; cheetah iterations 4, "
                  "ls_iterations 8); env.step only (no auto-reset)",
    "dmc": "rfm_jax.envs.make(task, [0], N): dm_control stepped in a Python loop, MuJoCo C in float64",
}
PLAYGROUND = {"cartpole-swingup": "CartpoleSwingup", "cheetah-run": "CheetahRun", "walker-walk": "WalkerWalk",
              "walker-run": "WalkerRun"}


def cpu() -> dict:
    """lscpu's model name, CPU family and model."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return {}
    fields = {k.strip(): v.strip() for k, v in (x.split(":", 1) for x in text.splitlines() if ":" in x)}
    return {"model_name": fields.get("Model name"), "family": fields.get("CPU family"), "model": fields.get("Model"),
            "cpus": fields.get("CPU(s)")}


def timed(reset, step, steps: int) -> tuple[float, float, float]:
    """(seconds of ``reset()``, of the first ``step(0)``, of the next ``steps`` calls ``step(i)``)."""
    marks = [time.perf_counter()]
    reset()
    marks.append(time.perf_counter())
    step(0)
    marks.append(time.perf_counter())
    for i in range(1, steps + 1):
        step(i)
    marks.append(time.perf_counter())
    return marks[1] - marks[0], marks[2] - marks[1], marks[3] - marks[2]


def bench_mjx(task: str, n: int, steps: int) -> tuple[float, float, float]:
    """Route A: ``BatchedEnv``'s programs on one run of ``n`` envs: its reset (blank, refill, promote,
    refill) and its per-step program (vmapped ``Core.step``; no episode ends within the steps timed,
    so no refill)."""
    import jax

    from rfm_jax.envs.mjx import program
    from rfm_jax.envs.mjx_core import env_keys

    core, run = program(task)
    actions = jax.random.uniform(jax.random.PRNGKey(0), (16, 1, n, int(core.port.model.nu)), minval=-1, maxval=1)
    box = {}

    def reset():
        box["s"] = jax.block_until_ready(run["refill"](run["promote"](run["refill"](run["blank"](
            env_keys([0], n, 0))))))

    def step(i):
        box["s"], out = run["step"](box["s"], actions[i % 16])
        jax.block_until_ready(out)

    return timed(reset, step, steps)


def bench_playground(task: str, n: int, steps: int) -> tuple[float, float, float]:
    """Route B: Playground's env, ``jit(vmap(reset))`` and ``jit(vmap(step))`` (no wrappers: no auto-reset)."""
    import jax
    from mujoco_playground import registry

    env = registry.load(PLAYGROUND[task], config_overrides={"impl": "jax"})
    actions = jax.random.uniform(jax.random.PRNGKey(0), (16, n, env.action_size), minval=-1, maxval=1)
    jit_reset, jit_step, box = jax.jit(jax.vmap(env.reset)), jax.jit(jax.vmap(env.step)), {}

    def reset():
        box["s"] = jax.block_until_ready(jit_reset(jax.random.split(jax.random.PRNGKey(0), n)))

    def step(i):
        box["s"] = jax.block_until_ready(jit_step(box["s"], actions[i % 16]))

    return timed(reset, step, steps)


def bench_dmc(task: str, n: int, steps: int) -> tuple[float, float, float]:
    """The host backend: making and resetting ``n`` dm_control envs, then their steps."""
    import numpy as np

    from rfm_jax import envs

    actions = np.random.default_rng(0).uniform(-1, 1, (16, 1, n, envs.spec(task).action_dim))
    box = {}

    def reset():
        box["env"] = envs.make(task, [0], n)
        box["env"].reset()

    return timed(reset, lambda i: box["env"].step(actions[i % 16]), steps)


def run_one(route: str, task: str, sizes: list[int], steps: int) -> list[dict]:
    from rfm_jax.infra.runtime import configure_xla_cpu

    configure_xla_cpu()  # the XLA flags of experiments/run.py, for every route
    import jax

    fn = {"mjx": bench_mjx, "playground": bench_playground, "dmc": bench_dmc}[route]
    rows = []
    for n in sizes:
        reset_s, compile_s, seconds = fn(task, n, steps)
        rows.append({"route": route, "task": task, "num_envs": n, "reset_s": round(reset_s, 2),
                     "compile_s": round(compile_s, 2), "steps": steps,
                     "env_steps_per_s": round(n * steps / seconds, 1), "jax": jax.__version__,
                     "device": str(jax.devices()[0])})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def merge(rows: list[dict], path: str) -> None:
    """Write ``rows`` into the JSON at ``path``, replacing rows of the same (route, task, num_envs)."""
    old = json.load(open(path)) if os.path.exists(path) else {"rows": []}
    keys = {(r["route"], r["task"], r["num_envs"]) for r in rows}
    kept = [r for r in old["rows"] if (r["route"], r["task"], r["num_envs"]) not in keys]
    order = {"dmc": 0, "mjx": 1, "playground": 2}
    merged = sorted(kept + rows, key=lambda r: (r["task"], order.get(r["route"], 9), r["num_envs"]))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump({"cpu": cpu(), "notes": NOTES, "rows": merged}, f, indent=1)
        f.write("\n")


def alternate(args) -> list[dict]:
    """Every (task, route) in a fresh process (no compilation cache), the routes alternating per task."""
    rows = []
    for task in args.tasks:
        for route in ("dmc", "mjx", "playground"):
            python = args.playground_python if route == "playground" else sys.executable
            if python is None:
                continue
            cmd = [python, os.path.abspath(__file__), "--route", route, "--tasks", task, "--steps", str(args.steps),
                   "--sizes", *map(str, args.sizes), "--no_save"]
            env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**env, "MUJOCO_GL": "disable"})
            if proc.returncode:
                print(f"{route} {task} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            new = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
            for row in new:
                print(json.dumps(row), flush=True)
            rows += new
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--route", choices=("mjx", "playground", "dmc", "all"), default="all")
    parser.add_argument("--tasks", nargs="+", default=["cartpole-swingup", "cheetah-run"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[1, 8, 64])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--playground_python", default=None, help="python of a venv with playground==0.2.0")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(HERE), OUT))
    parser.add_argument("--no_save", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "disable")
    if args.route == "all":
        rows = alternate(args)
    else:
        rows = [row for task in args.tasks for row in run_one(args.route, task, args.sizes, args.steps)]
    if not args.no_save:
        merge(rows, args.out)


if __name__ == "__main__":
    main()
