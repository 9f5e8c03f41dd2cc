"""The transition every agent's update and the replay buffer share (the lowest layer, so that the
agents take it without depending on the training layer)."""

from __future__ import annotations

from typing import NamedTuple

import jax

Array = jax.Array


class Transition(NamedTuple):
    """One transition (or a batch with a leading axis).  ``discount`` is the env's (1 at a time
    limit, 0 at a true terminal); ``next_obs`` is the true next observation."""

    obs: Array  # [O]
    action: Array  # [A] in [-1, 1]
    reward: Array  # []
    discount: Array  # []
    next_obs: Array  # [O]
