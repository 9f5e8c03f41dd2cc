"""Evaluation protocol: ``fixed`` starts every evaluation from the same initial states and policy
noise (so an unchanged policy scores the same), ``fresh`` draws new ones."""

import numpy as np
import pytest

from rfm_jax import envs
from rfm_jax.agents import RFMHyper, make_rfm
from rfm_jax.training.loop import evaluate
from rfm_jax.training.program import compile_seeds, make_step_fns
from rfm_jax.training.sweeps import expand, hyper_per_run, run_keys

TASK = "cartpole-swingup"


@pytest.fixture(scope="module")
def setup():
    spec = envs.spec(TASK)
    agent = make_rfm(obs_dim=spec.obs_dim, action_dim=spec.action_dim, num_posterior_particles=2,
                     num_train_particles=2, num_act_particles=2, num_eval_particles=3, num_ode_steps=2,
                     actor_width=8, actor_blocks=1, actor_embed_dim=4, critic_hidden=(8, 8))
    fns = compile_seeds(make_step_fns(agent, obs_dim=spec.obs_dim, action_dim=spec.action_dim, num_envs=1,
                                      replay_capacity=8, batch_size=2))
    runs = expand([0], None)
    state = fns.init(run_keys(runs), hyper_per_run(RFMHyper(), runs))
    return fns, state.agent


def test_fixed_evaluations_repeat_and_fresh_ones_differ(setup):
    fns, agent_state = setup
    run = lambda index, mode: evaluate(fns, agent_state, task=TASK, seeds=[0], episodes=2,  # noqa: E731
                                       eval_index=index, mode=mode)
    first, later = run(0, "fixed"), run(3, "fixed")
    assert first.shape == (1, 2) and np.all(np.isfinite(first))
    np.testing.assert_array_equal(first, later)
    assert not np.array_equal(run(1, "fresh"), run(2, "fresh"))
    with pytest.raises(ValueError, match="mode"):
        run(0, "random")
