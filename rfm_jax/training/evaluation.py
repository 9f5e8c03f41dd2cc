"""Evaluation: greedy episodes of every run of this process, one run-vmapped call per env step.

``mode="fixed"`` starts every evaluation from the same initial states and policy noise (the
reference protocol); ``"fresh"`` draws new ones per evaluation.  With runs sharded over devices
or processes (``rfm_jax.infra.distributed.Layout``) each process steps its own runs' episodes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rfm_jax import envs
from rfm_jax.infra.distributed import Layout
from rfm_jax.training.run_config import EVAL_MODES


def evaluate(fns, agent_state, *, task: str, seeds, episodes: int, eval_index: int, mode: str = "fixed",
             recorders: list | None = None, layout: Layout | None = None,
             env_kwargs: dict | None = None) -> np.ndarray:
    """Returns [R_local, episodes] returns of greedy episodes (NaN where the physics diverged) of
    the runs with ``seeds`` (this process's runs: ``layout.local``; all runs without a layout).
    ``fns.eval_act(agent_state, keys [R, 2], obs [R, episodes, O])`` acts for all runs at once;
    ``recorders`` (one ``envs.Recorder`` per run) film each run's first episode.  Each slot counts
    the episode it starts with, once; the loop ends when every slot's first episode has ended.  A
    failed env (``envs.EnvFailure``, in any process) stops every process's evaluation with it."""
    if mode not in EVAL_MODES:
        raise ValueError(f"evaluate: `mode` must be one of {EVAL_MODES}, got {mode!r}.")
    eval_index = 0 if mode == "fixed" else eval_index
    agree = layout.any_of if layout is not None else list  # every process stops together
    env = failure = None
    try:
        env = envs.make(task, seeds, episodes, stream=1 + eval_index, env_kwargs=env_kwargs, render=bool(recorders))
        obs = env.reset()
    except envs.EnvFailure as error:
        failure = error
    _raise_if_failed(agree([failure is not None])[0], failure, task)
    length = env.spec.episode_length
    keys = policy_keys(seeds, eval_index, length)
    to_global = layout.to_global if layout is not None else (lambda x: x)
    to_local = layout.to_local if layout is not None else jax.device_get
    returns = np.full((len(seeds), episodes), np.nan)
    running = np.ones((len(seeds), episodes), bool)  # the slot's first episode has not ended
    for i in range(length):
        for run, recorder in enumerate(recorders or ()):
            if running[run, 0]:
                recorder.add(env.frame_source(run))
        actions = to_local(fns.eval_act(agent_state, to_global(keys[:, i]), to_global(obs.astype(np.float32))))
        try:
            result = env.step(np.asarray(actions))
            first = result.done & running
            returns[first], running[first] = result.episode_return[first], False
            obs = result.obs
        except envs.EnvFailure as error:
            failure = error
        # every episode has ended (a terminal, the time limit or a divergence), or an env failed?
        still, failed = agree([bool(running.any()) and failure is None, failure is not None])
        _raise_if_failed(failed, failure, task)
        if not still:
            break
    for recorder in recorders or ():
        recorder.close()
    return returns


def policy_keys(seeds, eval_index: int, length: int) -> np.ndarray:
    """Keys [R, length, 2] of the greedy actions of evaluation ``eval_index``: step t of run r acts
    with ``split(fold_in(PRNGKey(seeds[r]), 1 + eval_index), length)[t]``."""
    return np.asarray(jax.vmap(lambda s: jax.random.split(jax.random.fold_in(jax.random.PRNGKey(s), 1 + eval_index),
                                                          length))(jnp.asarray(seeds, jnp.uint32)))


def _raise_if_failed(failed_anywhere: bool, failure, task: str) -> None:
    """Raise this process's ``failure``, or one naming another process's, when any env failed."""
    if failed_anywhere:
        raise failure or envs.EnvFailure(task, "an env of another process failed (see its log)")
