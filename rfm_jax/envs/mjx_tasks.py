"""dm_control's tasks ported to JAX for the MJX backend (``rfm_jax.envs.mjx``): initial states,
observations and rewards, read from ``dm_control/suite/<domain>.py`` and rewritten here.

A ``Port`` holds, for one task, dm_control's own MuJoCo model (``suite.<domain>.get_model_and_assets``,
edited only where named below) and pure functions of one env:

    init(key) -> (qpos [nq], qvel [nv], extra [K])   the random state of ``initialize_episode``
    settle(mx, d) -> d                                 what ``initialize_episode`` simulates after it
    observe(d, extra) -> obs [O] float32               ``task.get_observation`` flattened in key order
    reward(d, extra) -> r                              ``task.get_reward``

where ``d`` is an ``mujoco.mjx.Data`` whose position and velocity quantities are up to date (the
backend runs ``stages`` after each step, as dm_control's ``mj_step1`` does) and ``extra`` holds an
episode's task parameters (fish-swim's target [3]; none for the other tasks).  Model edits, none of
which changes the physics: cartpole's energy flag off (MJX has no energy bookkeeping), fish's geoms
never collide (its constraints are disabled; MJX lacks the ellipsoid-box pair).  Cheetah's settling
keeps dm_control's quirk (its first step uses the reset pose's accelerations, computed once in C).

``tolerance`` is ``dm_control.utils.rewards.tolerance`` for the sigmoids the ported tasks use: 1
inside [lower, upper], else s(d / margin) with d the distance to the nearer bound and s(1) = v
(value_at_margin):

    gaussian  exp(-x^2 ln(1/v))       linear  max(1 - x (1 - v), 0)       quadratic  max(1 - x^2 (1 - v), 0)
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

EXTRA = "mjx: tasks need the mjx extra: pip install -e '.[mjx]' -c constraints.txt"
XX, XZ, ZZ = (0, 0), (0, 2), (2, 2)  # entries of a 3x3 frame (dm_control's 'xx', 'xz', 'zz')


class Port(NamedTuple):
    model: object  # mujoco.MjModel
    n_sub_steps: int  # physics steps per env step: dm_control's control timestep / model timestep
    episode_length: int  # dm_control's time limit in env steps
    obs_dim: int
    init: Callable
    observe: Callable
    reward: Callable
    stages: tuple[str, ...]  # mujoco.mjx functions that refresh what observe and reward read
    settle: Callable | None = None


def tolerance(x, lower=0.0, upper=0.0, margin=0.0, sigmoid="gaussian", value_at_margin=0.1):
    """``dm_control.utils.rewards.tolerance`` in JAX (gaussian, linear and quadratic sigmoids)."""
    in_bounds = (lower <= x) & (x <= upper)
    if margin == 0:
        return jnp.where(in_bounds, 1.0, 0.0)
    d = jnp.where(x < lower, lower - x, x - upper) / margin
    if sigmoid == "gaussian":
        value = jnp.exp(-0.5 * (d * math.sqrt(-2.0 * math.log(value_at_margin))) ** 2)
    elif sigmoid in ("linear", "quadratic"):
        scaled = d * ((1.0 - value_at_margin) if sigmoid == "linear" else math.sqrt(1.0 - value_at_margin))
        value = jnp.where(jnp.abs(scaled) < 1, 1.0 - (scaled if sigmoid == "linear" else scaled**2), 0.0)
    else:
        raise ValueError(f"tolerance: sigmoid {sigmoid!r} is not ported")
    return jnp.where(in_bounds, 1.0, value)


def load_mjx():
    """``mujoco.mjx`` (its import prints a line about the optional Warp backend: silenced); a
    one-line ValueError where the mjx extra is not installed."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from mujoco import mjx
    except ImportError:
        raise ValueError(EXTRA) from None
    return mjx


def _id(model, kind: str, name: str) -> int:
    import mujoco

    return mujoco.mj_name2id(model, getattr(mujoco.mjtObj, f"mjOBJ_{kind.upper()}"), name)


def _subtree_linvel(d):
    """The subtree linear velocities [nbody, 3] (MJX 3.17 keeps them in the Data's implementation part)."""
    return d._impl.subtree_linvel if hasattr(d, "_impl") else d.subtree_linvel  # noqa: SLF001


def _no_extra():
    return jnp.zeros((0,), jnp.float32)


def _cartpole(model, task: str):
    """Cartpole swing-up: slider ~ 0.01 N(0, 1), hinge ~ pi + 0.01 N(0, 1), qvel ~ 0.01 N(0, I).
    obs = [cart x, pole cos (zz), pole sin (xz), qvel] (5); reward = upright * small_control *
    small_velocity * centered with upright = (cos + 1) / 2, centered = (1 + tol(x, margin 2)) / 2,
    small_control = (4 + tol_quadratic(ctrl, margin 1, v 0)) / 5, small_velocity = (1 + tol(w, margin 5)) / 2."""
    import mujoco

    pole = _id(model, "body", "pole_1")
    model.opt.enableflags &= ~int(mujoco.mjtEnableBit.mjENBL_ENERGY)  # energy bookkeeping only (MJX has none)

    def init(key):
        noise = 0.01 * jax.random.normal(key, (4,))
        return jnp.array([0.0, jnp.pi]) + noise[:2], noise[2:], _no_extra()

    def observe(d, extra):
        return jnp.concatenate([d.qpos[:1], d.xmat[pole][ZZ][None], d.xmat[pole][XZ][None], d.qvel])

    def reward(d, extra):
        upright = (d.xmat[pole][ZZ] + 1) / 2
        centered = (1 + tolerance(d.qpos[0], margin=2)) / 2
        small_control = (4 + tolerance(d.ctrl[0], margin=1, value_at_margin=0, sigmoid="quadratic")) / 5
        small_velocity = (1 + tolerance(d.qvel[1], margin=5)) / 2
        return upright * small_control * small_velocity * centered

    return 5, init, observe, reward, ("kinematics",), None


def _limited_uniform(model):
    """(qpos addresses, low, high) of the limited hinge and slide joints: ``uniform(range)``."""
    limited = np.flatnonzero(model.jnt_limited.astype(bool) & (model.jnt_type >= 2))
    return model.jnt_qposadr[limited], model.jnt_range[limited, 0], model.jnt_range[limited, 1]


def _cheetah(model, task: str):
    """Cheetah run: the limited joints ~ U(range), then 200 physics steps with zero control (the
    first with dm_control's accelerations of the reset pose, its legacy ``mj_step2``), time 0.
    obs = [qpos[1:], qvel] (17); reward = tol_linear(torso subtree vx, [10, inf), margin 10, v 0)."""
    import mujoco

    adr, low, high = _limited_uniform(model)
    qpos0 = jnp.asarray(model.qpos0, jnp.float32)
    first_qvel, first_warm = _first_settle_step(model)
    torso = _id(model, "body", "torso")

    def init(key):
        qpos = qpos0.at[adr].set(jax.random.uniform(key, (adr.size,), minval=low, maxval=high))
        return qpos, jnp.zeros(model.nv, jnp.float32), _no_extra()

    def settle(mx, d):
        mjx = load_mjx()
        d = d.replace(qvel=first_qvel, qacc_warmstart=first_warm, qpos=d.qpos + model.opt.timestep * first_qvel)
        d = jax.lax.fori_loop(0, 199, lambda _, d: mjx.step(mx, d), d)
        return d.replace(time=jnp.zeros_like(d.time))

    def observe(d, extra):
        return jnp.concatenate([d.qpos[1:], d.qvel])

    def reward(d, extra):
        return tolerance(_subtree_linvel(d)[torso, 0], 10.0, math.inf, 10.0, "linear", 0.0)

    assert model.nq == model.nv == model.njnt and model.opt.integrator == mujoco.mjtIntegrator.mjINT_EULER
    return 17, init, observe, reward, ("kinematics", "com_pos", "com_vel", "subtree_vel"), settle


def _first_settle_step(model):
    """The velocity and warm start after dm_control's first settling step: ``physics.step`` runs
    ``mj_step2`` on the quantities ``reset_context`` computed at the reset pose (qpos0, zero
    velocity), so they do not depend on the random joint angles.  Computed once with MuJoCo (C)."""
    import mujoco

    data = mujoco.MjData(model)
    model.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_ACTUATION)
    mujoco.mj_forward(model, data)
    model.opt.disableflags &= ~int(mujoco.mjtDisableBit.mjDSBL_ACTUATION)
    mujoco.mj_step2(model, data)
    return jnp.asarray(data.qvel, jnp.float32), jnp.asarray(data.qacc_warmstart, jnp.float32)


def _walker(model, task: str):
    """Walker walk / run: ``randomize_limited_and_rotational_joints`` (limited hinges ~ U(range),
    the free root hinge ~ U(-pi, pi), root slides kept).  obs = [xmat xx, xz of bodies 1.. (14),
    torso z, qvel (9)] (24); reward = (3 standing + upright) / 4 * (5 move + 1) / 6 with standing =
    tol(z, [1.2, inf), margin 0.6), upright = (torso zz + 1) / 2, move = tol_linear(torso subtree vx,
    [speed, inf), margin speed / 2, v 0.5), speed 1 (walk) or 8 (run)."""
    adr, low, high = _limited_uniform(model)
    hinges = model.jnt_qposadr[np.flatnonzero(~model.jnt_limited.astype(bool) & (model.jnt_type == 3))]
    qpos0 = jnp.asarray(model.qpos0, jnp.float32)
    torso = _id(model, "body", "torso")
    speed = {"walk": 1.0, "run": 8.0}[task]

    def init(key):
        k_limited, k_hinge = jax.random.split(key)
        qpos = qpos0.at[adr].set(jax.random.uniform(k_limited, (adr.size,), minval=low, maxval=high))
        qpos = qpos.at[hinges].set(jax.random.uniform(k_hinge, (hinges.size,), minval=-jnp.pi, maxval=jnp.pi))
        return qpos, jnp.zeros(model.nv, jnp.float32), _no_extra()

    def observe(d, extra):
        frames = d.xmat[1:]
        orientations = jnp.stack([frames[:, 0, 0], frames[:, 0, 2]], axis=-1).ravel()
        return jnp.concatenate([orientations, d.xpos[torso, 2:], d.qvel])

    def reward(d, extra):
        standing = tolerance(d.xpos[torso, 2], 1.2, math.inf, 0.6)
        upright = (1 + d.xmat[torso][ZZ]) / 2
        move = tolerance(_subtree_linvel(d)[torso, 0], speed, math.inf, speed / 2, "linear", 0.5)
        return (3 * standing + upright) / 4 * (5 * move + 1) / 6

    return 24, init, observe, reward, ("kinematics", "com_pos", "com_vel", "subtree_vel"), None


FISH_JOINTS = ("tail1", "tail_twist", "tail2", "finright_roll", "finright_pitch", "finleft_roll", "finleft_pitch")


def _fish(model, task: str):
    """Fish upright / swim: root quaternion ~ N(0, I_4) normalised, the 7 fin and tail joints ~
    U(-0.2, 0.2); swim also draws the target (extra [3]) ~ U([-.4, -.4, .1], [.4, .4, .3]).
    obs = [joint angles (7), torso zz, (swim: R_mouth^T (target - mouth) (3)), qvel (13)];
    upright: tol(zz, [1, 1], margin 1); swim: (7 tol(|mouth to target|, [0, r], margin 2 r) + (zz + 1) / 2) / 8,
    r = mouth radius + target radius.  Constraints are disabled in fish.xml, so MuJoCo never
    collides its geoms: their contype / conaffinity are cleared for MJX (which has no ellipsoid-box
    collision), the physics is unchanged."""
    model.geom_contype[:] = 0
    model.geom_conaffinity[:] = 0
    adr = np.array([model.jnt_qposadr[_id(model, "joint", j)] for j in FISH_JOINTS])
    qpos0 = jnp.asarray(model.qpos0, jnp.float32)
    torso, mouth, target = _id(model, "body", "torso"), _id(model, "geom", "mouth"), _id(model, "geom", "target")
    radii = float(model.geom_size[mouth, 0] + model.geom_size[target, 0])
    swim = task == "swim"

    def init(key):
        k_quat, k_joints, k_target = jax.random.split(key, 3)
        quat = jax.random.normal(k_quat, (4,))
        qpos = qpos0.at[3:7].set(quat / jnp.linalg.norm(quat))
        qpos = qpos.at[adr].set(jax.random.uniform(k_joints, (adr.size,), minval=-0.2, maxval=0.2))
        extra = jax.random.uniform(k_target, (3,), minval=jnp.array([-0.4, -0.4, 0.1]), maxval=jnp.array([.4, .4, .3]))
        return qpos, jnp.zeros(model.nv, jnp.float32), extra if swim else _no_extra()

    def to_target(d, extra):
        return (extra - d.geom_xpos[mouth]) @ d.geom_xmat[mouth]

    def observe(d, extra):
        parts = [d.qpos[adr], d.xmat[torso][ZZ][None]] + ([to_target(d, extra)] if swim else []) + [d.qvel]
        return jnp.concatenate(parts)

    def reward(d, extra):
        upright = d.xmat[torso][ZZ]
        if not swim:
            return tolerance(upright, 1.0, 1.0, 1.0)
        in_target = tolerance(jnp.linalg.norm(to_target(d, extra)), 0.0, radii, 2 * radii)
        return (7 * in_target + 0.5 * (upright + 1)) / 8

    return 24 if swim else 21, init, observe, reward, ("kinematics",), None


DOMAINS = {"cartpole": _cartpole, "cheetah": _cheetah, "walker": _walker, "fish": _fish}
PORTED = ("cartpole-swingup", "cheetah-run", "fish-swim", "fish-upright", "walker-run", "walker-walk")


def port(name: str) -> Port:
    """The ``Port`` of a ported task (``domain-task``): dm_control's model, step counts and the JAX functions."""
    import mujoco
    from dm_control import suite

    domain, task = name.split("-", 1)
    model = mujoco.MjModel.from_xml_string(*getattr(suite, domain).get_model_and_assets())
    obs_dim, init, observe, reward, stages, settle = DOMAINS[domain](model, task)
    env = suite.load(domain, task, task_kwargs={"random": 0})  # its control timestep and time limit
    return Port(model, int(env._n_sub_steps), math.ceil(env._step_limit), obs_dim,  # noqa: SLF001
                init, observe, reward, stages, settle)
