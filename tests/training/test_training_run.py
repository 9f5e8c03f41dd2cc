"""rfm_jax.training.run and its parts in-process (no subprocess; tests/scripts/test_run.py runs the CLI):
checkpoint discovery through orbax's public API, the resume policy and checks (missing or garbled
run files refused in one line naming them), provenance records, and ``load_policy`` restoring a
trained run without unpickling anything."""

import json
import os
import pathlib
import pickle

import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import config_dict

from rfm_jax.infra import provenance
from rfm_jax.infra.checkpoints import Checkpointer, complete_steps, read_meta
from rfm_jax.infra.guards import UserError
from rfm_jax.training import resume
from rfm_jax.training.run import run


def _config(**changes):
    c = config_dict.ConfigDict({"task": "cartpole-swingup", "total_steps": 300, "video": False,
                                "agent": {"actor_lr": 1e-3, "actor_width": 16}})
    c.update_from_flattened_dict(changes)
    return c


def _save(directory, steps):
    """Tiny checkpoints (2 runs) at ``steps``, written as the loop writes them."""
    ckpt = Checkpointer(str(directory), max_to_keep=None, log=lambda _: None)
    state = {"w": jnp.arange(6.0).reshape(2, 3)}
    for step in steps:
        ckpt.save(step, state, [b"run0", b"run1"], {"step": step, "wall_time": 1.0})
    ckpt.close()


@pytest.fixture
def workdir(tmp_path):
    """A run directory with complete checkpoints 100 and 200, a partial 300, and its run files."""
    _save(tmp_path / "checkpoints", [100, 200])
    partial = tmp_path / "checkpoints" / "300.orbax-checkpoint-tmp-1234"
    partial.mkdir()
    (partial / "state").write_text("half written")
    (tmp_path / resume.CONFIG_FILE).write_text(_config().to_json())
    (tmp_path / "setup.json").write_text(json.dumps({"task": "cartpole-swingup", "runs": ["seed0", "seed1"]}))
    return tmp_path


def test_checkpoint_discovery_lists_complete_checkpoints_only(workdir, tmp_path_factory):
    assert complete_steps(workdir / "checkpoints") == [100, 200]
    assert resume.latest_checkpoint(str(workdir)) == 200
    empty = tmp_path_factory.mktemp("empty")
    assert complete_steps(empty / "checkpoints") == [] and resume.latest_checkpoint(str(empty)) is None
    assert not os.path.exists(empty / "checkpoints")  # discovery creates nothing
    meta = read_meta(workdir / "checkpoints", 200)
    assert meta["step"] == 200 and meta["num_processes"] == 1 and len(meta["digests"]) == 1


def test_resume_policy(workdir, tmp_path_factory):
    said = []
    fresh = str(tmp_path_factory.mktemp("fresh"))
    assert resume.resume_step(fresh, _config(), resume=False, log=said.append) is None and said == []
    assert resume.resume_step(fresh, _config(), resume=True, log=said.append) is None
    assert said == [f"--resume: no complete checkpoint in {fresh}; starting from step 0."]
    with pytest.raises(UserError, match="already holds a run: pass --resume"):
        resume.resume_step(str(workdir), _config(), resume=False)
    assert resume.resume_step(str(workdir), _config(), resume=True, log=said.append) == 200


def test_resume_checks_name_the_field_or_the_step(workdir):
    said = []
    resume.check_resume(str(workdir), _config(**{"agent.actor_lr": 1e-4, "total_steps": 400}), 200, said.append)
    assert said == ["--resume: total_steps changes from 300 to 400 (allowed on resume).",
                    "--resume: agent.actor_lr changes from 0.001 to 0.0001 (allowed on resume)."]
    with pytest.raises(UserError, match=r"agent.actor_width \(16 -> 32\); only these may change"):
        resume.check_resume(str(workdir), _config(**{"agent.actor_width": 32}), 200)
    with pytest.raises(UserError, match=r"total_steps \(150\) is below the newest checkpoint's step \(200\)"):
        resume.check_resume(str(workdir), _config(total_steps=150), 200)


def test_a_run_written_before_a_setting_was_renamed_resumes(workdir):
    """0.1.0 wrote agent.num_data_particles; 0.2.0 calls it num_act_particles (and keeps the old
    name as an unset field for one release)."""
    (workdir / resume.CONFIG_FILE).write_text(_config(**{"agent.num_data_particles": 8}).to_json())
    now = _config()
    now.agent.num_act_particles, now.agent.num_data_particles = 8, None
    resume.check_resume(str(workdir), now, 200)
    now.agent.num_act_particles = 4
    with pytest.raises(UserError, match=r"agent.num_act_particles \(8 -> 4\)"):
        resume.check_resume(str(workdir), now, 200)


@pytest.mark.parametrize("name", ["config.json", "setup.json"])
@pytest.mark.parametrize("content, reason", [(None, "is missing"), ('{"task": "cartp', "is not valid JSON"),
                                             (b"\xff\xfe", "cannot read"), ("[1, 2]", "does not hold a JSON object")])
def test_a_missing_or_garbled_run_file_is_refused_in_one_line_naming_it(workdir, name, content, reason):
    path = workdir / name
    if content is None:
        path.unlink()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(UserError) as error:
        resume.resume_step(str(workdir), _config(), resume=True)
    message = str(error.value)
    assert message.startswith(f"--resume: {path} {reason}") or message.startswith(f"--resume: {reason} {path}")
    assert "\n" not in message and "another --workdir" in message


def test_process_count_check(workdir):
    resume.check_process_count(str(workdir), 200, process_count=1)
    with pytest.raises(UserError, match=r"checkpoints/200 was written by 1 process\(es\); this run has 2: resume "
                                        r"with --num_processes=1"):
        resume.check_process_count(str(workdir), 200, process_count=2)
    resume.check_process_count(str(workdir), 150, process_count=2)  # unreadable: left to Checkpointer.restore
    resume.check_process_count(str(workdir), None, process_count=2)


def test_provenance_appends_one_entry_per_session(tmp_path):
    assert provenance.read_sessions(str(tmp_path)) == []
    provenance.record_session(str(tmp_path), resume=False, argv=["run.py", "--workdir=x"])
    entry = provenance.record_session(str(tmp_path), resume=True, argv=["run.py", "--resume"])
    sessions = json.loads((tmp_path / provenance.PROVENANCE).read_text())
    assert sessions == provenance.read_sessions(str(tmp_path)) and sessions[1] == entry
    assert [s["resume"] for s in sessions] == [False, True] and sessions[1]["command"][1:] == ["run.py", "--resume"]
    assert {"started", "rfm_jax", "jax", "devices", "backend", "git_commit"} <= set(sessions[0])


def test_a_damaged_provenance_file_is_kept_aside_and_a_new_one_started(tmp_path):
    (tmp_path / provenance.PROVENANCE).write_text('[{"started": ')
    said = []
    provenance.record_session(str(tmp_path), resume=True, argv=["run.py", "--resume"], log=said.append)
    assert len(said) == 1 and "kept as provenance.json.damaged" in said[0]
    assert (tmp_path / "provenance.json.damaged").read_text() == '[{"started": '
    assert [s["resume"] for s in provenance.read_sessions(str(tmp_path))] == [True]


def test_run_refuses_bad_input_before_writing_and_dry_runs(run_script, tmp_path, capsys):
    """``run_script`` puts experiments/ on sys.path for ``configs``."""
    from configs import rfm

    config = rfm.get_config("smoke")
    config.algo = "ppo"
    with pytest.raises(UserError, match="^invalid config: config.algo must be one of"):
        run(config, str(tmp_path / "out"))
    with pytest.raises(UserError, match=r"^--workdir is required \(except with --dry_run\)$"):
        run(rfm.get_config("smoke"), None)
    with pytest.raises(UserError, match="already holds a run"):
        (tmp_path / "out" / "checkpoints").mkdir(parents=True)
        _save(tmp_path / "out" / "checkpoints", [100])
        run(rfm.get_config("smoke"), str(tmp_path / "out"))
    assert sorted(os.listdir(tmp_path / "out")) == ["checkpoints"]  # nothing written
    report = run(rfm.get_config("smoke"), None, dry_run=True)
    assert report["algo"] == "rfm" and report["runs"] == ["seed0", "seed1"] and report["params"]["actor"] > 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report


def test_load_policy_never_unpickles(full_run, monkeypatch):
    """The checkpoints' host records (env states) are pickles: ``load_policy`` restores the agent's
    arrays alone, so a workdir from elsewhere cannot run code through it; and it only reads, so it
    can load a policy from a run that is saving a checkpoint."""
    from rfm_jax.training.policy import load_policy

    def refuse(*args, **kwargs):
        raise AssertionError("load_policy unpickled something")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(Checkpointer, "restore", refuse)  # the path that reads the host records
    monkeypatch.setattr(Checkpointer, "__init__", refuse)  # opening one removes partial saves
    partial = pathlib.Path(full_run) / "checkpoints" / "400.orbax-checkpoint-tmp-1"  # a save being written
    partial.mkdir()
    try:
        policy = load_policy(full_run, run="seed0")
        assert partial.is_dir()  # read-only: a run's save in progress is left alone
    finally:
        partial.rmdir()
    assert policy.step == 300
    action = np.asarray(policy(np.zeros(5, np.float32)))
    assert action.shape == (1,) and np.all(np.abs(action) <= 1)
