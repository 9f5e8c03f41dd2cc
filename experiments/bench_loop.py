"""End-to-end speed of training through ``experiments/run.py``'s host loop, and of the host env step
alone, for one config.

    python experiments/bench_loop.py --config=experiments/configs/rfm.py:cpu,gym:Hopper-v5
    python experiments/bench_loop.py --config=experiments/configs/sac.py:cpu --steps 2000 --seeds 3

The run trains ``--warmup`` steps, then ``--steps`` more (evaluation at step 0 only, one checkpoint
at the end) in a temporary workdir; ``ms_per_env_step`` is the median over the training rows
(every ``--log`` steps, after the warm-up) of 1000 / ``env_steps_per_s``: one env step of every
run, the jitted update and acting included.  ``host_env_ms_per_step`` times ``envs.make(task, S,
E).step`` alone with random actions (the median of 5 blocks of ``--env_steps``).  Prints both and,
as its last line, one JSON object (``experiments/alternate.py --key`` reads either), with the CPU
model.  With ``PYTHONPATH`` set to another checkout it times that checkout's rfm_jax.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # configs/

from rfm_jax.infra.runtime import configure_xla_cpu  # noqa: E402

configure_xla_cpu()

import numpy as np  # noqa: E402


def load_config(spec: str):
    """``path.py:ARG`` -> the config its ``get_config(ARG)`` returns."""
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def cpu_model() -> str:
    """lscpu's model name, family and model, and whether it has AVX-512."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "unknown"
    out = {k.strip(): v.strip() for k, v in (x.split(":", 1) for x in text.splitlines() if ":" in x)}
    flags = out.get("Flags", "")
    avx = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{out.get('Model name', '?')} (family {out.get('CPU family', '?')}, model {out.get('Model', '?')}, {avx})"


def loop_ms(config, workdir: str) -> list[float]:
    """ms per env step of each training row of one run of ``config``."""
    from rfm_jax.infra.metrics import read_jsonl
    from rfm_jax.training.run import run

    run(config, workdir, progress=False)
    rows = read_jsonl(os.path.join(workdir, "metrics", "train_seed0.jsonl"))
    return [1000.0 / r["env_steps_per_s"] for r in rows if r["step"] > config.warmup_steps]


def host_env_ms(task: str, seeds: int, num_envs: int, env_kwargs: dict, steps: int) -> list[float]:
    """ms per batched host env step (S x E envs, random actions), one value per block of ``steps``."""
    from rfm_jax import envs

    env = envs.make(task, list(range(seeds)), num_envs, env_kwargs=env_kwargs)
    env.reset()
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (steps, seeds, num_envs, env.action_dim))
    blocks = []
    for _ in range(5):
        t0 = time.perf_counter()
        for a in actions:
            env.step(a)
        blocks.append((time.perf_counter() - t0) * 1000.0 / steps)
    return blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="path.py:ARG, as run.py's --config")
    parser.add_argument("--steps", type=int, default=3000, help="training steps after the warm-up")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--log", type=int, default=500, help="steps per row (a timing each)")
    parser.add_argument("--seeds", type=int, default=None, help="num_seeds (default: the config's)")
    parser.add_argument("--env_steps", type=int, default=500, help="steps per block of the host env timing")
    args = parser.parse_args()
    config = load_config(args.config)
    with config.unlocked():
        config.num_seeds = args.seeds or config.num_seeds
        config.warmup_steps, config.total_steps = args.warmup, args.warmup + args.steps
        config.log_every, config.eval_every = args.log, config.total_steps
        config.checkpoint_every, config.wandb = config.total_steps, False
    with tempfile.TemporaryDirectory(prefix="rfm_jax_bench_loop_") as workdir:
        rows = loop_ms(config, workdir)
    env = host_env_ms(config.task, config.num_seeds, config.num_envs, dict(config.get("env_kwargs") or {}),
                      args.env_steps)
    import rfm_jax

    result = {"config": args.config, "task": config.task, "num_seeds": config.num_seeds,
              "num_envs": config.num_envs, "rfm_jax": os.path.dirname(os.path.abspath(rfm_jax.__file__)),
              "ms_per_env_step": statistics.median(rows), "ms_per_env_step_rows": rows,
              "host_env_ms_per_step": statistics.median(env), "host_env_ms_blocks": env, "cpu": cpu_model()}
    print(f"host loop: {result['ms_per_env_step']:.2f} ms per env step ({config.num_seeds} run(s) x "
          f"{config.num_envs} env(s), {config.task}); host envs alone: {result['host_env_ms_per_step']:.4f} ms")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
