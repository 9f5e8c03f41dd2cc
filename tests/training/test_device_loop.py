"""The on-device loop (``rfm_jax.training.device_loop``, ``device_program``): its invalid-step bound
equals the host's ``InvalidWindow``; a chunk's transitions are the env's stepped by hand (the time
limit, the true final observation, a non-finite state made invalid); what the host reads off a
chunk (rows, the first non-finite step, the bound); and the two loops agree on the same MJX env
with the same keys, transitions and metrics step by step."""

import numpy as np
import presets
import pytest

from rfm_jax import envs
from rfm_jax.envs.base import InvalidWindow
from rfm_jax.training import device_program as dp
from rfm_jax.training import session as session_lib
from rfm_jax.training.run_config import RunConfig

TASK = "mjx:cartpole-swingup"


def test_the_invalid_step_ring_passes_the_bound_where_the_host_window_does():
    """Random invalid flags, dense enough to pass the bound: the device ring (the times of each env's
    last K invalid steps) flags the same first step and env as ``envs.base.InvalidWindow``."""
    import jax
    import jax.numpy as jnp

    note = jax.jit(jax.vmap(dp._note_invalid, (0, 0, 0, None)))
    for seed, rate in ((0, 0.09), (1, 0.12), (2, 0.2), (3, 0.05)):
        flags = np.random.default_rng(seed).random((3000, 4)) < rate
        window = InvalidWindow(1, 4)
        times = jnp.full((4, envs.INVALID_LIMIT + 1), dp.NEVER, jnp.int32)
        ptr = jnp.zeros((4,), jnp.int32)
        host_first = device_first = None
        for t, row in enumerate(flags):
            times, ptr, over = note(times, ptr, jnp.asarray(row), jnp.int32(t + 1))
            if device_first is None and bool(over.any()):
                device_first = (t, int(np.argmax(np.asarray(over))))
            if host_first is None:
                try:
                    window.add(row[None], TASK)
                except envs.EnvFailure as failure:
                    host_first = (t, failure.env)
            if host_first and device_first:
                break
        assert device_first == host_first, (seed, rate)
        assert (host_first is None) == (rate < 0.08)


def _absorber(warmup_steps: int = 0):
    """A ``DeviceSession`` with only what ``absorb`` reads (no program)."""
    from rfm_jax.training.device_loop import Counts, DeviceSession
    from rfm_jax.training.sweeps import Run

    session = object.__new__(DeviceSession)
    session.rc = RunConfig(task=TASK, warmup_steps=max(warmup_steps, 1), total_steps=1000)
    session.task, session.counts, session.env = TASK, {}, Counts(2)
    session.mine = [Run(0, {}, "seed0"), Run(1, {}, "seed1")]
    session.host = session_lib.Host(None, None, None, [None, None], np.full(2, np.nan), {})
    return session


def _ys(length: int = 4):
    return {"metrics": {"critic_loss": np.ones((2, length), np.float32), "q_mean": np.zeros((2, length), np.float32)},
            "return_sum": np.zeros((2, length), np.float32), "episodes": np.zeros((2, length), np.int32),
            "finished_mean": np.full((2, length), np.nan, np.float32), "invalid": np.zeros((2, length), np.int32),
            "over_bound": np.full((2, length), -1, np.int32)}


def test_a_chunk_is_read_as_the_host_loop_reads_its_steps():
    session, ys = _absorber(warmup_steps=102), _ys()
    ys["metrics"]["critic_loss"][:, 2:] = [[2.0, 4.0], [6.0, 8.0]]
    ys["return_sum"][1, 1], ys["episodes"][1, 1], ys["finished_mean"][1, 1] = 300.0, 2, 150.0
    ys["finished_mean"][1, 3], ys["invalid"][0, 0] = 90.0, 3
    assert session.absorb(ys, 100) == (None, None, None)
    np.testing.assert_allclose(session.host.sums["critic_loss"], [6.0, 14.0])  # steps 102, 103 only
    assert session.counts == {"critic_loss": 2, "q_mean": 2}
    np.testing.assert_allclose(session.host.sums["episode_return_sum"], [0.0, 300.0])
    np.testing.assert_allclose(session.host.sums["episodes"], [0, 2])
    assert np.isnan(session.host.train_returns[0]) and session.host.train_returns[1] == 90.0  # the latest
    assert session.env.physics_errors.tolist() == [3, 0]


def test_the_first_non_finite_step_or_the_bound_stops_the_run_naming_its_env_step():
    session, ys = _absorber(), _ys()
    ys["metrics"]["q_mean"][1, 2] = np.inf
    ys["over_bound"][0, 3] = 1
    kind, what, step = session.absorb(ys, 200)
    assert kind == "non-finite" and step == 203 and what == "non-finite q_mean = inf in run seed1 at env step 203"
    ys["over_bound"][0, 1] = 1
    kind, failure, step = session.absorb(ys, 200)
    assert kind == "env" and step == 202 and (failure.run, failure.env) == (0, 1)
    assert "101 of the env's last 1000 steps were invalid" in str(failure)
    assert session.host.sums == {}  # nothing of a failed chunk is counted


pytest.importorskip("mujoco.mjx")


def _build(algo: str, **fields):
    from rfm_jax.training import loop

    rc = RunConfig.for_task(TASK, **{**dict(num_seeds=2, num_envs=2, total_steps=150, warmup_steps=100,
                                            batch_size=16, replay_capacity=1000, log_every=50, eval_every=150,
                                            eval_episodes=2, checkpoint_every=150), **fields})
    return rc, loop.build(rc, algo, presets.settings(algo))


@pytest.mark.slow
def test_a_chunk_stores_the_env_stepped_by_hand():
    """A warm-up chunk of 5 steps, 2 envs, 3 steps before the time limit, env 1 diverged: the
    buffer and the pending transitions are the env stepped by hand with the warm-up's actions."""
    import jax
    import jax.numpy as jnp

    from rfm_jax.envs import mjx
    from rfm_jax.envs.mjx_core import env_keys
    from rfm_jax.training.program import make_step_fns
    from rfm_jax.training.sweeps import run_keys

    rc, setup = _build("sac", num_seeds=1, replay_capacity=64, batch_size=4)
    spec = setup.spec
    fns = make_step_fns(setup.agent, obs_dim=spec.obs_dim, action_dim=spec.action_dim, num_envs=2,
                        replay_capacity=64, batch_size=4)
    core = mjx.program("cartpole-swingup")[0]
    start = jax.jit(lambda k, h, e: dp.start(jax.vmap(fns.init)(k, h), core, e, spec.obs_dim, spec.action_dim))
    carry = start(jnp.asarray(run_keys(setup.runs)), setup.hyper, jnp.asarray(env_keys([0], 2, 0)))
    now = carry.envs.now._replace(qvel=carry.envs.now.qvel.at[0, 1].set(jnp.nan))
    carry = carry.replace(envs=carry.envs._replace(t=carry.envs.t + 997, now=now))
    after, ys = jax.jit(dp.make_chunk(fns, core, warmup_steps=100, length=5))(carry)

    step_batch, states, obs, key = jax.jit(core.step_batch), carry.envs, np.asarray(carry.obs), carry.train.key[0]
    stored, done_at = [], []
    for k in range(5):
        key, key_action = jax.random.split(key)
        actions = jax.random.uniform(key_action, (1, 2, 1), minval=-1.0, maxval=1.0)
        states, out = step_batch(states, actions)
        rows = [(obs[0, e], actions[0, e], out.reward[0, e], out.discount[0, e], out.next_obs[0, e])
                for e in range(2) if out.valid[0, e]]
        if k < 4:
            stored += rows
        done_at.append(np.asarray(out.done[0]))
        obs = np.asarray(out.obs)
    data = jax.tree.map(lambda x: np.asarray(x[0]), after.train.replay.data)
    assert int(after.train.replay.size[0]) == len(stored) == 7  # 4 steps x 2 envs, the diverged one skipped
    for i, (o, a, r, d, n) in enumerate(stored):
        for got, want in zip((data.obs[i], data.action[i], data.reward[i], data.discount[i], data.next_obs[i]),
                             (o, a, r, d, n), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(after.pending.next_obs[0]), np.asarray(out.next_obs[0]), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(after.valid[0]), np.asarray(out.valid[0]))
    np.testing.assert_allclose(np.asarray(after.obs[0]), obs[0], atol=1e-6)
    # The time limit at the third step: discount 1, the true final observation, then a fresh episode.
    # Rows: step 0 env 0 (env 1 diverged), then steps 1-3 envs 0 and 1; env 0's episode ends in row 3.
    assert done_at[2].tolist() == [True, False] and data.discount[3] == 1.0 and data.discount[:7].min() == 1.0
    assert not np.allclose(data.next_obs[3], data.obs[5])  # env 0's next row starts the new episode
    np.testing.assert_allclose(data.next_obs[1], data.obs[3], atol=1e-6)  # within an episode they chain
    np.testing.assert_array_equal(np.asarray(ys["invalid"][0]), [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(np.asarray(ys["episodes"][0]), [0, 0, 1, 0, 0])
    assert np.isfinite(np.asarray(ys["finished_mean"][0, 2])) and (np.asarray(ys["over_bound"]) == -1).all()


@pytest.mark.slow
def test_the_two_loops_agree_on_the_same_env_and_keys(tmp_path):
    """The host loop stepping the MJX envs from Python and the on-device loop, same run config
    and keys: every stored transition, the metric rows and the evaluations agree (float32
    round-off of two compiled programs apart); load_policy reads the device loop's workdir."""
    import dataclasses

    import jax

    from rfm_jax.infra.metrics import read_workdir
    from rfm_jax.training import loop
    from rfm_jax.training.policy import load_policy

    rc, setup = _build("rfm")
    host = loop.train(rc, setup, workdir=str(tmp_path / "host"))
    device_rc = dataclasses.replace(rc, loop="device")
    device = loop.train(device_rc, setup, workdir=str(tmp_path / "device"))
    a, b = host.state.replay, device.state.replay
    np.testing.assert_array_equal(np.asarray(a.size), [298, 298])  # the last step's are pending
    np.testing.assert_array_equal(np.asarray(a.size), np.asarray(b.size))
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-4),
                 a.data, b.data)
    rows_a, rows_b = read_workdir(str(tmp_path / "host")), read_workdir(str(tmp_path / "device"))
    assert rows_a.keys() == rows_b.keys() and len(rows_a["train_seed0.jsonl"]) == 3
    for name in rows_a:
        for x, y in zip(rows_a[name], rows_b[name], strict=True):
            assert x.keys() == y.keys() and x["step"] == y["step"]
            for k in x:
                if x[k] is None or y[k] is None:  # NaN (no episode ended yet)
                    assert x[k] is None and y[k] is None, (name, x["step"], k)
                elif k not in ("wall_time", "env_steps_per_s", "step"):
                    np.testing.assert_allclose(y[k], x[k], rtol=1e-3, atol=1e-4, err_msg=f"{name} {x['step']} {k}")
    assert device.summary["step"] == 150 and device.summary["physics_errors"] == [0, 0]
    policy = load_policy(str(tmp_path / "device"), run=1)
    assert policy(np.zeros(setup.spec.obs_dim, np.float32)).shape == (setup.spec.action_dim,)
