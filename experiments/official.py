"""Train the authors' RFM code (azizanlab/ReverseFlowMatching) at rfm_jax's ``rfm.py:cpu`` numerics
with the authors' estimator and fixed lambda (``configs/rfm.py``'s ``PAPER``) and evaluate it on
rfm_jax's evaluation states, writing rfm_jax's metrics format, so that
``experiments/plot.py`` puts both codes on one figure.

Nothing of their code is copied: this script imports it from the user's checkout.  Run it from
that checkout, in its own virtual environment (jax 0.6.2, flax 0.10.7, optax 0.2.6,
gymnasium 1.2.2, dm_control 1.0.50, mujoco 3.17.0, pyyaml, termcolor):

    git clone https://github.com/azizanlab/ReverseFlowMatching && cd ReverseFlowMatching
    python -m venv venv && venv/bin/pip install jax==0.6.2 flax==0.10.7 optax==0.2.6 gymnasium==1.2.2 \\
        dm_control==1.0.50 mujoco==3.17.0 pyyaml termcolor
    venv/bin/python /path/to/rfm_jax/experiments/official.py --task cartpole-swingup --seeds 0,1,2,3,4 \\
        --out /path/to/rfm_jax/experiments/results/official_cartpole/authors/cartpole-swingup

What runs is their ``Trainer.train`` with their ``RFM`` agent, env wrapper, replay buffer and
warm-up, clip 10 on both gradients (their ``configs/rfm.yaml``, which their ``run.sh`` passes).
Two things are ours: the logger (rows written as rfm_jax's ``metrics/{train,eval}_seed<S>.jsonl``
and a ``setup.json``), and ``Trainer.evaluate``, replaced so that run seed S's episode e starts
where rfm_jax's fixed evaluation starts it: dm_control's task random state seeded with
``env_seed(S, e, 1)`` (rfm_jax.envs.dmc) and the first reset from it.  The greedy action is theirs
(argmax-Q over their evaluation particles, their state-hashed noise).  Their evaluation at loop
index i follows i + 1 env steps; it is logged at step i, as theirs is.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import numpy as np

# rfm_jax's experiments/configs/rfm.py:cpu with PAPER (tests/scripts/test_experiments.py checks that they agree).
PRESET = dict(total_steps=40_000, warmup_steps=5_000, batch_size=128, replay_capacity=50_000, eval_every=5_000,
              num_posterior_particles=16, num_train_particles=8, num_act_particles=8, num_eval_particles=8,
              num_ode_steps=5, actor_width=128, actor_blocks=2, actor_embed_dim=128, critic_hidden=(64, 64),
              actor_lr=3e-4, critic_lr=1e-3, grad_clip=10.0, temperature=0.02, gamma=0.99, tau=0.005, ridge=1e-4,
              clip=2.0, t_min=0.01)


def env_seed(seed: int, index: int, stream: int = 0) -> int:
    """rfm_jax.envs.dmc.env_seed, restated (this script runs without rfm_jax installed)."""
    return int(np.random.SeedSequence([seed, index, stream]).generate_state(1)[0])


class JsonlLogger:
    """The logger their Trainer calls: rows appended to <out>/metrics/{train,eval}_seed<S>.jsonl."""

    def __init__(self, out: str, seed: int):
        self.seed = seed
        self.paths = {kind: os.path.join(out, "metrics", f"{kind}_seed{seed}.jsonl") for kind in ("train", "eval")}
        for path in self.paths.values():
            open(path, "w").close()
        self.start = time.time()

    def log(self, metrics: dict, kind: str) -> None:
        row = {k: float(np.asarray(v)) for k, v in metrics.items()}
        row["step"], row["wall_time"] = int(row["step"]), round(time.time() - self.start, 2)
        with open(self.paths[kind], "a") as f:
            f.write(json.dumps(row) + "\n")
        if kind == "eval":
            print(f"seed {self.seed} step {row['step']}: return {row.get('eval_return_mean'):.1f} "
                  f"({row['wall_time']:.0f} s)", flush=True)

    def save_agent(self, **_):
        pass

    def finish(self, **_):
        pass


def evaluate_on_rfm_jax_states(trainer, env_fn, seed: int, episodes: int) -> dict:
    """Greedy episodes of their agent from rfm_jax's fixed evaluation states of run ``seed``, all
    stepped together (their greedy action depends on each state alone: a hash of it is its key)."""
    envs, obs = [], []
    for e in range(episodes):
        s = env_seed(seed, e, 1)
        env = env_fn(seed=s)
        obs.append(env.reset(seed=s)[0])  # their DMCEnv.reset(seed) reseeds the task's RandomState, then resets
        envs.append(env)
    obs = np.stack(obs)
    returns, alive = np.zeros(episodes), np.ones(episodes, bool)
    for _ in range(trainer.episode_length):
        actions = trainer._sample_actions(obs, deterministic=True)
        for e in np.flatnonzero(alive):
            obs[e], reward, terminated, truncated, _ = envs[e].step(actions[e])
            returns[e] += float(reward)
            alive[e] = not (terminated or truncated)
        if not alive.any():
            break
    return {"eval_return_mean": float(np.mean(returns)), "eval_return_std": float(np.std(returns)),
            "eval_episodes": float(episodes)}


def train_seed(task: str, seed: int, out: str, episodes: int, steps: int, warmup: int) -> None:
    from src.agent.rfm import RFM
    from src.envs import make_dmc_env
    from src.trainer import Trainer

    np.random.seed(seed)  # their buffer samples with numpy's global generator, seeded as their main.py does
    random.seed(seed)
    p = PRESET
    env_fn = make_dmc_env(task)
    probe = env_fn(seed=seed)
    obs_dim, action_dim = probe.observation_space.shape[0], probe.action_space.shape[0]
    critic = dict(state_dim=obs_dim, action_dim=action_dim, hidden_size=p["critic_hidden"][0],
                  hidden_layers=len(p["critic_hidden"]), num_q=2, discount=p["gamma"], tau=p["tau"],
                  target_update_period=1, lr=p["critic_lr"], max_grad_norm=p["grad_clip"], seed=seed)
    agent = RFM(sample_dim=action_dim, state_dim=obs_dim, critic_config=critic, actor_hidden_size=p["actor_width"],
                actor_hidden_layers=p["actor_blocks"], actor_emb_size=p["actor_embed_dim"], actor_lr=p["actor_lr"],
                actor_max_grad_norm=p["grad_clip"], num_estimator_mc_samples=p["num_posterior_particles"],
                num_integration_steps=p["num_ode_steps"], batch_size=p["batch_size"], cv_weight=0.0,
                cv_weight_autotune=True, cv_ridge=p["ridge"], cv_clip=p["clip"], rfm_on_policy=True,
                init_temperature=p["temperature"], final_temperature=p["temperature"], temperature_steps=250_000,
                num_particles_training=p["num_train_particles"], num_particles_data=p["num_act_particles"],
                num_particles_eval=p["num_eval_particles"], sampler_method="euler", t_min=p["t_min"], seed=seed)
    trainer = Trainer(env_fn, agent=agent, logger=JsonlLogger(out, seed), max_steps=steps,
                      replay_buffer_size=p["replay_capacity"], start_training=warmup,
                      eval_interval=p["eval_every"], log_interval=1_000, batch_size=p["batch_size"], seed=seed,
                      num_eval_envs=episodes,
                      episode_length=int(getattr(probe.unwrapped, "max_episode_steps", None) or 1000))
    trainer.evaluate = lambda: evaluate_on_rfm_jax_states(trainer, env_fn, seed, episodes)
    trainer.train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="cartpole-swingup", help="DMC task, domain-task")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated run seeds")
    parser.add_argument("--episodes", type=int, default=10, help="evaluation episodes per evaluation")
    parser.add_argument("--steps", type=int, default=PRESET["total_steps"], help="env steps per run")
    parser.add_argument("--warmup", type=int, default=PRESET["warmup_steps"], help="random-action steps first")
    parser.add_argument("--out", required=True, help="output folder (a plot.py workdir)")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join("src", "agent", "rfm.py")):
        raise SystemExit("official.py: run it from the root of a ReverseFlowMatching checkout (no src/agent/rfm.py)")
    sys.path.insert(0, os.getcwd())
    seeds = [int(s) for s in args.seeds.split(",")]
    os.makedirs(os.path.join(args.out, "metrics"), exist_ok=True)
    import subprocess

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    with open(os.path.join(args.out, "setup.json"), "w") as f:
        json.dump({"task": args.task, "algo": "authors-rfm", "runs": [f"seed{s}" for s in seeds],
                   "code": "azizanlab/ReverseFlowMatching", "commit": commit, "preset": PRESET,
                   "eval_episodes": args.episodes, "total_steps": args.steps,
                   "warmup_steps": args.warmup}, f, indent=1)
    for seed in seeds:
        train_seed(args.task, seed, args.out, args.episodes, args.steps, args.warmup)


if __name__ == "__main__":
    main()
