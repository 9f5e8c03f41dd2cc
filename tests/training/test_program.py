"""The per-env-step training functions: one compilation for S seeds, vmapped seeds equal
single-seed runs, different seeds differ, warm-up fills the buffer."""

import jax
import numpy as np
import pytest

from rfm_jax.agents import RFMHyper, make_rfm
from rfm_jax.training.program import StepFns, compile_seeds, empty_transitions, make_step_fns
from rfm_jax.training.sweeps import expand, hyper_per_run, run_keys

OBS, ACT, ENVS = 3, 2, 2
TINY = dict(num_posterior_particles=4, num_train_particles=3, num_act_particles=2, num_eval_particles=3,
            num_ode_steps=2, actor_width=16, actor_blocks=1, actor_embed_dim=8, critic_hidden=(16, 16))


def _fns(counter=None):
    agent = make_rfm(obs_dim=OBS, action_dim=ACT, **TINY)
    fns = make_step_fns(agent, obs_dim=OBS, action_dim=ACT, num_envs=ENVS, replay_capacity=64, batch_size=8)
    if counter is None:
        return fns

    def counted(*args):
        counter.append(1)
        return fns.train_step(*args)

    return fns._replace(train_step=counted)


def _inputs(num_seeds, step):
    """Deterministic fake env data for one step: transitions [S, E], valid [S, E], obs [S, E, O]."""
    rng = np.random.default_rng(step)
    trans = jax.tree.map(lambda x: np.zeros((num_seeds, *x.shape), np.float32), empty_transitions(ENVS, OBS, ACT))
    trans = trans._replace(obs=rng.normal(size=trans.obs.shape).astype(np.float32),
                           action=rng.uniform(-1, 1, trans.action.shape).astype(np.float32),
                           reward=rng.normal(size=trans.reward.shape).astype(np.float32),
                           discount=np.ones(trans.discount.shape, np.float32),
                           next_obs=rng.normal(size=trans.next_obs.shape).astype(np.float32))
    valid = np.full((num_seeds, ENVS), step > 0)
    return trans, valid, rng.normal(size=(num_seeds, ENVS, OBS)).astype(np.float32)


def _run(fns: StepFns, seeds, rows=None, steps=6, warmup=3):
    """Run the seeds on rows ``rows`` of the two-seed fake data (default: the first len(seeds))."""
    rows = list(range(len(seeds))) if rows is None else rows
    runs = expand(seeds, None)
    state = fns.init(run_keys(runs), hyper_per_run(RFMHyper(), runs))
    actions = []
    for step in range(steps):
        trans, valid, obs = jax.tree.map(lambda x: x[np.asarray(rows)], _inputs(2, step))
        step_fn = fns.warmup_step if step < warmup else fns.train_step
        state, a, _ = step_fn(state, trans, valid, obs)
        actions.append(np.asarray(a))
    return state, np.stack(actions, 1)


@pytest.mark.slow
def test_train_step_compiles_once_for_two_seeds():
    traces = []
    fns = compile_seeds(_fns(traces))
    state, actions = _run(fns, [0, 1], steps=7, warmup=3)
    assert len(traces) == 1, f"train_step was traced {len(traces)} times"
    assert actions.shape == (2, 7, ENVS, ACT) and np.all(np.abs(actions) <= 1)
    np.testing.assert_array_equal(state.env_steps, [7, 7])
    np.testing.assert_array_equal(state.replay.size, [12, 12])  # 6 valid steps x 2 envs
    np.testing.assert_array_equal(state.agent.updates, [4, 4])


@pytest.mark.slow
def test_vmapped_seeds_equal_single_seed_runs_and_differ():
    fns = compile_seeds(_fns())
    both_state, both = _run(fns, [5, 6])
    for i, seed in enumerate([5, 6]):
        one_state, one = _run(fns, [seed], rows=[i])
        np.testing.assert_allclose(both[i], one[0], atol=2e-5)
        params = zip(jax.tree.leaves(both_state.agent.actor_params), jax.tree.leaves(one_state.agent.actor_params),
                     strict=True)
        for a, b in params:
            np.testing.assert_allclose(a[i], b[0], atol=2e-5)
    assert not np.allclose(both[0], both[1])
