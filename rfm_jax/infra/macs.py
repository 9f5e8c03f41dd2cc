"""Multiply-accumulates (MACs) of one RFM update and of one action, counted from the static
settings: dense layers only (the nonlinearities, softmaxes and optimisers are a few percent).

Per network row (docs/method.md section 7.2), with W the actor width and H the critic widths:

    actor row      A W + blocks W^2 (x2 for prenorm blocks) + W A   (state, lambda and time columns
                   shared: O W + E W per state, E W per ODE step)
    critic action  K (A H_0 + sum_i H_i H_{i+1} + H_last)          (state columns: K O H_0 per state)

A backward pass costs two forward passes (input and weight gradients); an input gradient alone
costs one, and rfm_jax takes the posterior's input gradient of min_k Q_k through the argmin critic
only (``rfm_jax.networks.min_critic``: 1/K of the K critics' backward passes; the padding of its sorted
blocks, at most K - 1 blocks of 512 rows per chunk, is not counted).  ``shared_first_layer=False``
counts the plain concatenation and every critic's backward pass instead, as the authors' code
computes it.
"""

from __future__ import annotations


def _critic_macs(obs_dim, action_dim, hidden, num_critics):
    rest = sum(a * b for a, b in zip(hidden[:-1], hidden[1:], strict=True)) + hidden[-1]
    return num_critics * obs_dim * hidden[0], num_critics * (action_dim * hidden[0] + rest)


def update_macs(*, obs_dim: int, action_dim: int, batch_size: int, num_posterior_particles: int,
                num_train_particles: int, num_act_particles: int, num_ode_steps: int, actor_width: int,
                actor_blocks: int, actor_embed_dim: int = 128, actor_block: str = "reference",
                critic_hidden=(256, 256), num_critics: int = 2, proposal: str = "on_policy",
                control_variate: str = "optimal", shared_first_layer: bool = True, **_unused) -> dict:
    """MACs of one update by part (``sampling``, ``selection_q``, ``posterior``, ``regression``,
    ``critic``), their ``total``, and ``act`` (one training action at one state).  The posterior's
    particles need the critics' input gradient unless ``control_variate="none"`` (eta = 0, QNE)."""
    w, e, a, o = actor_width, actor_embed_dim, action_dim, obs_dim
    trunk = actor_blocks * w * w * (2 if actor_block == "prenorm" else 1) + w * a
    full_row = (o + a + 2 * e) * w + trunk
    row = a * w + trunk if shared_first_layer else full_row
    per_state = (o + e) * w if shared_first_layer else 0
    q_state, q_action = _critic_macs(o, a, tuple(critic_hidden), num_critics)
    q_full = q_state + q_action
    if not shared_first_layer:
        q_state, q_action = 0, q_full
    states = batch_size * (2 if proposal == "on_policy" else 1)
    input_grad = 0 if control_variate == "none" else (q_action // num_critics if shared_first_layer else q_action)

    def sampling(n_states, particles):
        return n_states * (particles * num_ode_steps * row + per_state)

    parts = {
        "sampling": sampling(states, num_train_particles),
        "selection_q": states * (num_train_particles * q_action + q_state),
        "posterior": batch_size * (num_posterior_particles * (q_action + input_grad) + q_state),
        "regression": 3 * batch_size * full_row,
        "critic": 4 * batch_size * q_full,  # target Q forward + online forward and backward
    }
    parts["total"] = sum(parts.values())
    parts["act"] = sampling(1, num_act_particles) + num_act_particles * q_action + q_state
    return parts


def qne_update_macs(**kwargs) -> dict:
    """``update_macs`` of QNE: RFM's update with the eta = 0 estimator (no input gradients)."""
    return update_macs(**{**kwargs, "control_variate": "none"})


def qvpo_update_macs(*, batch_size: int, num_train_particles: int, **kwargs) -> dict:
    """``update_macs`` of QVPO: no posterior; the regression runs on all P samples of each state and on
    as many uniform actions (the entropy term)."""
    parts = update_macs(batch_size=batch_size, num_train_particles=num_train_particles, num_posterior_particles=0,
                        control_variate="none", **kwargs)
    parts["regression"] *= 2 * num_train_particles
    parts["posterior"] = 0
    parts["total"] = sum(v for k, v in parts.items() if k not in ("total", "act"))
    return parts


def qsm_update_macs(*, obs_dim: int, action_dim: int, batch_size: int, **kwargs) -> dict:
    """MACs of one QSM update: one sample at s' (a'), the critic step, and the regression plus one
    critic input gradient (grad_a Q, counted under ``posterior``) per state; ``act`` is one sample."""
    parts = update_macs(obs_dim=obs_dim, action_dim=action_dim, batch_size=batch_size, num_train_particles=1,
                        num_act_particles=1, num_posterior_particles=1, proposal="replay", **kwargs)
    parts["selection_q"] = 0
    parts["total"] = sum(v for k, v in parts.items() if k not in ("total", "act"))
    return parts


# agent name -> MAC counter (experiments/run.py --dry_run); DQS is RFM's count (eta = 1 takes input gradients)
COSTS = {"rfm": update_macs, "qne": qne_update_macs, "dqs": update_macs, "qvpo": qvpo_update_macs,
         "qsm": qsm_update_macs}
