"""A probe task with a known answer, without dm_control: a one-step bandit, reward -(a - a*(s))^2
with a*(s) = 0.5 tanh(s_0) and discount 0, so Q = r.  Every registered agent, trained online (its
own training actions fill the buffer) on 5 seeds at once (one vmapped program), must move its
greedy action to a*(s) at held-out states on every seed.

It runs twice: with rfm_jax's XLA CPU defaults and speed devices (this process) and on plain JAX
(``RFM_JAX_PLAIN=1``: no XLA flag defaults, no ``rfm_jax._speed`` device; a subprocess, since XLA
reads its flags once per process): a learning outcome must not hang on float32 rounding.  Each
agent's settings here are its preset file's ``PROBE`` (``experiments/configs/<name>.py``).
``python tests/agents/test_probe.py NAME`` prints one agent's per-seed errors as JSON (what the subprocess
runs).
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import presets
import pytest

from rfm_jax.agents import REGISTRY, make_agent
from rfm_jax.training import replay

pytestmark = pytest.mark.slow  # subprocesses or training runs: not in the fast lane (docs/guide.md)

OBS, ACT, BATCH, STEPS, SEEDS = 2, 1, 64, 900, 5
def best_action(obs):
    return 0.5 * jnp.tanh(obs[..., :1])


def probe_errors(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean |greedy action - a*| over 256 held-out states after training, and before, per seed [SEEDS]."""
    static, hyper, _ = presets.probe(name)
    agent = make_agent(name, obs_dim=OBS, action_dim=ACT, **static)
    example = replay.Transition(jnp.zeros(OBS), jnp.zeros(ACT), jnp.zeros(()), jnp.zeros(()), jnp.zeros(OBS))
    hyper = agent.hyper.replace(**hyper)

    def step(carry, key):
        state, buffer = carry
        key_obs, key_act, key_batch, key_update = jax.random.split(key, 4)
        obs = jax.random.normal(key_obs, (BATCH, OBS))
        action = jax.vmap(agent.act, (None, 0, 0))(state, jax.random.split(key_act, BATCH), obs)
        reward = -jnp.sum((action - best_action(obs)) ** 2, axis=-1)
        buffer = replay.add(buffer, replay.Transition(obs, action, reward, jnp.zeros(BATCH), obs))
        state, metrics = agent.update(state, key_update, replay.sample(buffer, key_batch, BATCH))
        return (state, buffer), metrics["critic_loss"]

    obs = jax.random.normal(jax.random.PRNGKey(2 ** 20), (256, OBS))
    eval_keys = jax.random.split(jax.random.PRNGKey(2 ** 20 + 1), 256)

    def error(state):
        actions = jax.vmap(lambda k, o: agent.act(state, k, o, True))(eval_keys, obs)
        return jnp.mean(jnp.abs(actions - best_action(obs)))

    def train(seed):
        state = agent.init(jax.random.PRNGKey(seed), hyper)
        carry = (state, replay.init(BATCH * STEPS, example))
        (trained, _), critic_loss = jax.lax.scan(step, carry, jax.random.split(jax.random.PRNGKey(seed + 1000), STEPS))
        finite = jnp.all(jnp.isfinite(critic_loss))
        return jnp.where(finite, error(trained), jnp.inf), error(state)

    after, before = jax.jit(jax.vmap(train))(jnp.arange(SEEDS))
    return np.asarray(after), np.asarray(before)


def check(name: str, after: np.ndarray, before: np.ndarray, how: str) -> None:
    tolerance = presets.probe(name)[2]
    ok = (after < tolerance) & (after < 0.5 * before)
    assert ok.all(), f"{name} ({how}): per-seed error {np.round(after, 3)}, before training {np.round(before, 3)}"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_greedy_action_converges_on_a_one_step_bandit(name):
    check(name, *probe_errors(name), "XLA defaults")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_greedy_action_converges_on_plain_jax(name):
    env = _child_env()
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), name], capture_output=True, text=True,
                          env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["xla_flags"] == env["XLA_FLAGS"]
    check(name, np.array(result["after"]), np.array(result["before"]), "RFM_JAX_PLAIN=1")



def _child_env() -> dict:
    """The plain-JAX environment (``environment_plain``) with tests/ on the path (``presets``)."""
    from rfm_jax.infra.runtime import environment_plain

    env = environment_plain()
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [tests, env.get("PYTHONPATH")]))}


if __name__ == "__main__":
    from rfm_jax.infra.runtime import configure_xla_cpu

    configure_xla_cpu()  # a no-op under RFM_JAX_PLAIN=1 (no flags, no threefry lowering, no speed device)
    after, before = probe_errors(sys.argv[1])
    flags = os.environ.get("XLA_FLAGS", "")
    print(json.dumps({"after": after.tolist(), "before": before.tolist(), "xla_flags": flags}))
