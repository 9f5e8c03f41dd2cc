"""``RFM_JAX_PLAIN=1`` turns every speed device of ``rfm_jax._speed`` into the plain JAX operation:
the same numbers to float32 tolerance.  ``outputs()`` computes the networks, their gradients, the
argmin-critic input gradient, the draws and one update of every registered agent (smoke-preset
sizes; fixed keys and inputs) in this process, and again in a subprocess on plain JAX
(``python tests/speed/test_plain.py OUT.npz``); the test compares the two.  That the switch took effect
is checked too: the plain policy network's program has more dot products (no ``thin_matmul``)."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import presets

from rfm_jax._speed import normal_rows, plain
from rfm_jax.agents import SPECS, make_agent
from rfm_jax.networks import CriticEnsemble, PolicyNet, min_critic, sinusoidal_embedding
from rfm_jax.training.replay import Transition

OBS, ACT, BATCH = 5, 6, 16
# float32 through a few hundred operations in another order (as tests/agents/test_golden.py); the absolute
# floor scales with the array's largest entry (a sum's rounding error scales with its terms).
RTOL, ATOL = 2e-5, 2e-6


def _inputs():
    keys = jax.random.split(jax.random.PRNGKey(7), 6)
    obs = jax.random.normal(keys[0], (BATCH, OBS))
    action = jnp.tanh(jax.random.normal(keys[1], (BATCH, ACT)))
    reward = -jnp.sum(action**2, axis=-1)
    batch = Transition(obs, action, reward, jnp.full((BATCH,), 0.9), jax.random.normal(keys[2], (BATCH, OBS)))
    return keys, batch


def outputs() -> dict:
    keys, batch = _inputs()
    out = {"plain": np.asarray(plain())}
    policy = PolicyNet(OBS, ACT, width=32, num_blocks=2, embed_dim=8)
    p_params = policy.init(keys[3], batch.obs[0], batch.action[0], 0.5, 0.02)
    t = jnp.linspace(0.01, 0.99, BATCH)
    out["policy"] = jax.jit(policy.apply)(p_params, batch.obs, batch.action, t, 0.02)
    cond = policy.apply(p_params, batch.obs, jnp.full((BATCH,), 0.02), method=policy.condition)
    from_cond = lambda p, x: policy.apply(p, cond, x, t, method=policy.from_condition)  # noqa: E731
    out["policy_from_condition"] = jax.jit(from_cond)(p_params, batch.action)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(from_cond(p, batch.action) ** 2)))(p_params)
    out.update({f"policy_grad/{i}": g for i, g in enumerate(jax.tree.leaves(grads))})
    jaxpr = str(jax.make_jaxpr(from_cond)(p_params, batch.action))
    out["policy_dots"] = np.asarray(jaxpr.count("dot_general"))
    out["embedding"] = jax.jit(lambda x: sinusoidal_embedding(x, 16))(t * 100)

    critic = CriticEnsemble(2, (32, 32))
    c_params = critic.init(keys[4], batch.obs[0], batch.action[0])
    out["critic"] = jax.jit(critic.apply)(c_params, batch.obs, batch.action)
    loss = lambda p: jnp.sum(critic.apply(p, batch.obs, batch.action) ** 2)  # noqa: E731
    out.update({f"critic_grad/{i}": g for i, g in enumerate(jax.tree.leaves(jax.jit(jax.grad(loss))(c_params)))})
    q_min = jax.vmap(jax.value_and_grad(lambda o, a: min_critic.q_min(c_params, o, a), argnums=1))
    out["q_min"], out["q_min_grad"] = jax.jit(q_min)(batch.obs, batch.action)
    out["normal_rows"] = jax.jit(lambda k: normal_rows.normal(k, (37, 6)))(keys[5])

    for name in sorted(SPECS):
        agent = make_agent(name, obs_dim=OBS, action_dim=ACT, **presets.settings(name, "smoke"))
        state = agent.init(jax.random.PRNGKey(0), agent.hyper)
        _, metrics = jax.jit(agent.update)(state, jax.random.PRNGKey(1), batch)
        out.update({f"{name}/{k}": v for k, v in metrics.items()})
    return {k: np.asarray(v) for k, v in out.items()}


def test_the_plain_switch_gives_the_same_numbers(tmp_path):
    ours = outputs()
    path = tmp_path / "plain.npz"
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), str(path)], env=_child_env(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = dict(np.load(path))
    assert not ours.pop("plain") and theirs.pop("plain")
    assert theirs.pop("policy_dots") > ours.pop("policy_dots")  # thin_matmul is elementwise; plain is a dot
    assert set(ours) == set(theirs)
    np.testing.assert_array_equal(ours.pop("normal_rows"), theirs.pop("normal_rows"))  # the same bits
    for key in sorted(ours):
        atol = ATOL * max(1.0, float(np.max(np.abs(theirs[key]))))
        np.testing.assert_allclose(ours[key], theirs[key], rtol=RTOL, atol=atol, err_msg=key)



def _child_env() -> dict:
    """The plain-JAX environment (``environment_plain``) with tests/ on the path (``presets``)."""
    from rfm_jax.infra.runtime import environment_plain

    env = environment_plain()
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [tests, env.get("PYTHONPATH")]))}


if __name__ == "__main__":
    np.savez(sys.argv[1], **outputs())
