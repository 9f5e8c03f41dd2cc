"""Inject faults into smoke runs of ``experiments/run.py`` and check that no run trains on garbage,
loses its last good checkpoint, or exits with the wrong status.

    python experiments/faults.py                          # every case, 20 kills (about 10 min on 2 cores)
    python experiments/faults.py --cases=config,corrupt   # a subset (the test suite runs `config`)

Cases (each compared with one uninterrupted reference run of the same config):
  kill       SIGKILL at seeded random moments (compile, training, evaluation, checkpoint writes),
             each followed by ``--resume``, until the run ends; its metrics must equal the reference
  signal     SIGTERM / SIGINT mid-run (exit 0 with a checkpoint) and during compilation (exit within
             seconds, nothing to save), then ``--resume``: metrics equal the reference
  corrupt    the newest checkpoint overwritten with random bytes, truncated, its metadata garbled or
             its state deleted: ``--resume`` falls back to the older one and ends equal to the
             reference; with every checkpoint corrupt it refuses in one line
  nan        a learning rate that diverges: exit 1 in one line naming the metric, no non-finite
             checkpoint, and ``--resume`` with a lower rate finishes
  disk_full  the workdir on a 4 MB tmpfs (``unshare``; skipped where that is not allowed): one line,
             the earlier checkpoint intact, the partial one removed at the next start, resume equal
  config     bad fields, values, pairs and workdirs: exit 2 with one line naming the field
  env        a user's env (``experiments/fault_envs.py``) that raises in step, returns NaN
             observations for good, or observations of another shape mid-run: exit 3 in one line
             (then only the env's own frames), the last good checkpoint kept, and ``--resume`` once
             the env is fixed continues from it; the old Gym API refused in one line (exit 2); a
             metrics file with undecodable bytes repaired on resume

Prints a table (fault, injected, recovered, steps lost, wrong exits) and writes ``<out>/faults.json``.
A wrong exit is exit 0 where a failure was due (or the reverse), a traceback, or more than one line
of error.  Runs use a persistent XLA cache (warmed by the reference run) so that each restart costs
seconds; the compile-time signals run without it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from rfm_jax.infra.metrics import read_workdir

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = os.path.join(HERE, "run.py")
CONFIG = os.path.join(HERE, "configs", "rfm.py") + ":smoke"
CASES = ("kill", "signal", "corrupt", "nan", "disk_full", "config", "env")


class Runner:
    """Starts ``run.py`` on the smoke preset; ``cache`` is the persistent XLA cache directory;
    ``extra`` more environment variables."""

    def __init__(self, cache: str | None, **extra: str):
        self.env = {**os.environ, "MUJOCO_GL": "disable", **extra}
        if cache:
            self.env["JAX_COMPILATION_CACHE_DIR"] = cache
        else:
            self.env.pop("JAX_COMPILATION_CACHE_DIR", None)

    def command(self, workdir: str, *flags: str) -> list[str]:
        return [sys.executable, RUN, f"--config={CONFIG}", f"--workdir={workdir}", "--progress=false", *flags]

    def run(self, workdir: str, *flags: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(workdir, *flags), capture_output=True, text=True, timeout=900, env=self.env)

    def start(self, workdir: str, *flags: str) -> subprocess.Popen:
        return subprocess.Popen(self.command(workdir, *flags), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=self.env)


def metrics(workdir: str) -> dict:
    """{file: [rows without timing]} of a workdir's metrics; a torn last line is ignored (repeated
    steps are kept: they are faults)."""
    return read_workdir(workdir)


def last_logged_step(workdir: str) -> int:
    rows = metrics(workdir).get("train_seed0.jsonl", [])
    return max((r["step"] for r in rows), default=0)


def resumed_step(stdout: str) -> int | None:
    """The step a session resumed from (0: it started afresh); None if it died before deciding."""
    line = next((x for x in stdout.splitlines() if x.startswith("Resumed from")), None)
    if line is not None:
        return int(line.split("at env step ")[1].rstrip("."))
    return 0 if "Compiled in" in stdout else None


def checkpoints(workdir: str) -> list[int]:
    directory = os.path.join(workdir, "checkpoints")
    return sorted(int(d) for d in os.listdir(directory) if d.isdigit()) if os.path.isdir(directory) else []


def error_lines(stderr: str) -> list[str]:
    return [x for x in stderr.splitlines() if x.strip()]


def one_line_error(proc, status: int, expect: str) -> bool:
    """Whether ``proc`` exited with ``status`` and exactly one stderr line, naming ``expect``."""
    lines = error_lines(proc.stderr)
    return proc.returncode == status and len(lines) == 1 and expect in lines[0] and "Traceback" not in proc.stderr


def row(fault, injected, recovered, lost, wrong, note=""):
    return {"fault": fault, "injected": injected, "recovered": recovered, "steps_lost_max": lost,
            "wrong_exits": wrong, "note": note}


def case_kill(runner, tmp, reference, kills: int, rng, duration: float):
    """Chains of kill -9 / --resume until ``kills`` kills are injected; each chain then finishes."""
    injected = wrong = chains = recovered = 0
    lost, events = [], []
    while injected < kills:
        workdir = os.path.join(tmp, f"kill{chains}")
        chains += 1
        furthest = None
        while True:
            proc = runner.start(workdir, "--resume")
            moment = float(rng.uniform(0.3, duration))
            try:
                out, err = proc.communicate(timeout=moment)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            resumed = resumed_step(out)
            if furthest is not None and resumed is not None:  # else it died too early to tell: carry on
                lost.append(max(0, furthest - resumed))
                for event in events:
                    event.setdefault("resumed_from", resumed)
                furthest = None
            if proc.returncode == 0:
                break
            if proc.returncode != -signal.SIGKILL:
                wrong += 1
                print(f"  kill: unexpected exit {proc.returncode}: {err[-500:]}", flush=True)
                break
            injected += 1
            furthest = max(furthest or 0, last_logged_step(workdir))
            events.append({"chain": chains, "killed_after_s": round(moment, 2), "last_logged_step": furthest,
                           "checkpoints": checkpoints(workdir)})
        recovered += int(proc.returncode == 0 and metrics(workdir) == reference)
        print(f"  kill: chain {chains} done, {injected} kills so far", flush=True)
    out = row("kill -9 at random moments, then --resume", injected, f"{recovered}/{chains} runs",
              max(lost, default=0), wrong, f"{chains} chains; steps lost = last logged step - resumed step")
    return {**out, "kills": events}


def case_signal(runner, uncached, tmp, reference):
    results, wrong, latency = [], 0, []
    for name, sig, wait_for in (("term_mid_run", signal.SIGTERM, '"step": 150,'),
                                ("int_mid_run", signal.SIGINT, '"step": 200,'),
                                ("term_compiling", signal.SIGTERM, None)):
        workdir = os.path.join(tmp, name)
        active = uncached if wait_for is None else runner
        proc = active.start(workdir)
        path, deadline = os.path.join(workdir, "metrics", "train_seed0.jsonl"), time.time() + 600
        if wait_for is None:  # the line printed right before compiling
            while time.time() < deadline and not proc.stdout.readline().startswith("Compiling"):
                pass
        else:
            while time.time() < deadline and proc.poll() is None:
                if os.path.exists(path) and wait_for in open(path).read():
                    break
                time.sleep(0.05)
        sent = time.time()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=600)
        latency.append(time.time() - sent)
        wrong += int(proc.returncode != 0)
        done = runner.run(workdir, "--resume")
        wrong += int(done.returncode != 0)
        results.append(done.returncode == 0 and metrics(workdir) == reference)
    return row("SIGTERM / SIGINT mid-run and during compile, then --resume", len(results),
               f"{sum(results)}/{len(results)} runs", 0, wrong,
               f"exit {max(latency):.1f} s after the signal at most (compile: {latency[-1]:.1f} s)")


def _corrupt(workdir: str, how: str, step: int, rng) -> None:
    root = os.path.join(workdir, "checkpoints", str(step))
    files = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(root, "state")) for f in fs]
    largest = max(files, key=os.path.getsize)
    if how == "random_bytes":
        with open(largest, "r+b") as f:
            f.seek(os.path.getsize(largest) // 2)
            f.write(rng.bytes(256))
    elif how == "truncated":
        with open(largest, "r+b") as f:
            f.truncate(os.path.getsize(largest) // 2)
    elif how == "garbled_metadata":
        with open(os.path.join(root, "meta", "metadata"), "w") as f:
            f.write("{not json")
    elif how == "state_deleted":
        shutil.rmtree(os.path.join(root, "state"))


def case_corrupt(runner, tmp, reference_dir, reference, rng):
    ways = ("random_bytes", "truncated", "garbled_metadata", "state_deleted")
    recovered = wrong = 0
    for how in ways:
        workdir = os.path.join(tmp, f"corrupt_{how}")
        shutil.copytree(reference_dir, workdir)
        _corrupt(workdir, how, checkpoints(workdir)[-1], rng)
        proc = runner.run(workdir, "--resume")
        wrong += int(proc.returncode != 0)
        recovered += int(proc.returncode == 0 and "is unusable" in proc.stdout and metrics(workdir) == reference)
    workdir = os.path.join(tmp, "corrupt_all")
    shutil.copytree(reference_dir, workdir)
    for step in checkpoints(workdir):
        _corrupt(workdir, "random_bytes", step, rng)
    proc = runner.run(workdir, "--resume")
    refused = one_line_error(proc, 1, "no usable checkpoint")
    wrong += int(not refused)
    note = "falls back to the previous checkpoint (100 steps earlier)"
    if not refused:
        note += f"; all corrupt: exit {proc.returncode}, stderr {error_lines(proc.stderr)[-4:]}"
        with open(os.path.join(tmp, "..", "rfm_jax_faults_corrupt_all.stderr"), "w") as f:
            f.write(proc.stderr)
    return row("newest checkpoint corrupted (4 ways), then --resume; all corrupted", len(ways) + 1,
               f"{recovered}/{len(ways)} runs, all-corrupt refused: {refused}", 100, wrong, note)


def case_nan(runner, tmp):
    workdir = os.path.join(tmp, "nan")
    proc = runner.run(workdir, "--config.agent.critic_lr=1e8", "--config.checkpoint_every=50")
    named = one_line_error(proc, 1, "non-finite")
    bad_step = int(proc.stderr.split("at env step ")[1].split(";")[0]) if named else None
    saved = checkpoints(workdir)
    kept = bool(saved) and bad_step is not None and saved[-1] < bad_step
    done = runner.run(workdir, "--resume", "--config.agent.critic_lr=1e-3", "--config.checkpoint_every=50")
    summary = json.load(open(os.path.join(workdir, "summary.json"))) if done.returncode == 0 else {}
    finished = summary.get("step") == 300 and all(v is not None for v in summary.get("last_eval", [None]))
    return row("critic_lr=1e8 (NaN within a few updates), then --resume with 1e-3", 1,
               f"{int(named and kept and finished)}/1 runs", (bad_step or 0) - (saved or [0])[-1],
               int(not named) + int(done.returncode != 0),
               f"stopped at env step {bad_step}; last good checkpoint kept: {kept}")


DISK_SCRIPT = """set -e
mount -t tmpfs -o size=4m tmpfs "$MNT"
{first} > "$OUT/first.out" 2> "$OUT/first.err" || echo $? > "$OUT/first.rc"
ls "$MNT/w/checkpoints" > "$OUT/after_first.txt"
mount -o remount,size=64m "$MNT"
{second} > "$OUT/second.out" 2> "$OUT/second.err" || echo $? > "$OUT/second.rc"
cp -r "$MNT/w" "$OUT/w"
"""


def case_disk_full(runner, tmp, reference):
    if shutil.which("unshare") is None:
        return row("disk full during a checkpoint (4 MB tmpfs), then --resume", 0, "not run", 0, 0,
                   "needs util-linux unshare")
    mnt, out = os.path.join(tmp, "disk_mnt"), os.path.join(tmp, "disk_out")
    os.makedirs(mnt)
    os.makedirs(out)
    quote = lambda cmd: " ".join(f"'{c}'" for c in cmd)  # noqa: E731
    script = DISK_SCRIPT.format(first=quote(runner.command(f"{mnt}/w")),
                                second=quote(runner.command(f"{mnt}/w", "--resume")))
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "bash", "-c", script],
                          capture_output=True, text=True, env={**runner.env, "MNT": mnt, "OUT": out}, timeout=900)
    if proc.returncode != 0 or not os.path.exists(os.path.join(out, "w")):
        return row("disk full during a checkpoint (4 MB tmpfs), then --resume", 0, "not run", 0, 0,
                   f"unshare/tmpfs not allowed here: {proc.stderr.strip()[:120]}")
    read = lambda name: open(os.path.join(out, name)).read() if os.path.exists(os.path.join(out, name)) else ""  # noqa: E731
    first = subprocess.CompletedProcess([], int(read("first.rc") or 0), read("first.out"), read("first.err"))
    named = one_line_error(first, 1, "no space left on the device")
    cleaned = "Removed the partial checkpoint" in read("second.out")
    equal = not read("second.rc") and metrics(os.path.join(out, "w")) == reference
    recovered = f"{int(named and cleaned and equal)}/1 runs"
    wrong = int(not named) + int(bool(read("second.rc")))
    return row("disk full during a checkpoint (4 MB tmpfs), then --resume", 1, recovered, 100, wrong,
               f"kept: {read('after_first.txt').split()}; partial removed at restart: {cleaned}")


def config_cases(tmp: str, done_dir: str | None) -> list[tuple[list[str], str, str]]:
    """(flags, workdir, text the one error line must contain) of each bad invocation."""
    bad = os.path.join(tmp, "bad")
    file_path = os.path.join(tmp, "a_file")
    open(file_path, "w").close()
    cases = [
        (["--config.agent.bogus_field=1"], bad, "--config.agent.bogus_field"),
        (["--config.agent.num_posterior_particles=0"], bad, "config.agent.num_posterior_particles"),
        (["--config.agent.critc_lr=1"], bad, "did you mean critic_lr"),
        (["--config.total_steps=1.5"], bad, "--config.total_steps"),
        (["--config.agent.actor_lr=abc"], bad, "--config.agent.actor_lr"),
        (["--config.agent.actor_lr=inf"], bad, "config.agent.actor_lr"),
        (["--config.hyper.eta=nan"], bad, "config.hyper.eta"),
        (["--config.hyper.ridge=inf"], bad, "config.hyper.ridge"),
        (["--config.warmup_steps=400"], bad, "config.warmup_steps"),
        (["--config.batch_size=5000"], bad, "config.batch_size"),
        (["--config.task=cartpole-swingupp"], bad, "did you mean cartpole-swingup"),
        (["--config.task=gym:CartPole-v1"], bad, "action space Discrete(2) is not supported"),
        (["--config.task=gym:Hopper-v5", "--config.env_kwargs={'bogus': 1}"], bad, "bad config.env_kwargs"),
        (["--config.env_kwargs={'bogus': 1}"], bad, "applies to gym: tasks only"),
        (["--config.sweep.actor_width=8,16"], bad, "config.sweep.actor_width"),
        (["--config.sweep.temperature=0.1,x"], bad, "config.sweep.temperature"),
        (["--distributed"], bad, "jax.distributed.initialize failed"),
        (["--coordinator=localhost:1"], bad, "--coordinator needs --num_processes"),
        (["--num_devices=9"], bad, "--num_devices=9"),
        ([], file_path, "--workdir="),
        ([], "/proc/rfm_jax_run", "--workdir="),
    ]
    if done_dir is not None:
        cases += [
            ([], done_dir, "--resume"),
            (["--resume", "--config.agent.actor_width=32"], done_dir, "agent.actor_width (16 -> 32)"),
            (["--resume", "--config.total_steps=200"], done_dir, "total_steps (200) is below"),
        ]
    return cases


def case_config(runner, tmp, done_dir):
    wrong, failures = 0, []
    cases = config_cases(tmp, done_dir)
    for flags, workdir, expect in cases:
        proc = runner.run(workdir, *flags)
        if not one_line_error(proc, 2, expect) or (workdir.endswith("bad") and os.path.exists(workdir)):
            wrong += 1
            failures.append(f"{' '.join(flags) or workdir}: exit {proc.returncode}, {error_lines(proc.stderr)[-3:]}")
    return row("bad config fields, values, pairs and workdirs", len(cases), f"{len(cases) - wrong}/{len(cases)} "
               "refused in one line", 0, wrong, "; ".join(failures)), failures


ENV_TASK = ["--config.task=gym:fault_envs:Misbehaving"]


def _env_flags(fault: str, after: int) -> list[str]:
    return [*ENV_TASK, f"--config.env_kwargs={{'fault': '{fault}', 'after': {after}, 'max_episode_steps': 50}}"]


def env_stopped(proc, expect: str, traceback: bool) -> bool:
    """Exit 3, a first stderr line naming ``expect`` and the checkpoint, then (``traceback``) only
    the env's own frames (fault_envs.py), else nothing more."""
    lines = error_lines(proc.stderr)
    if proc.returncode != 3 or not lines or expect not in lines[0] or "checkpoint step 200" not in lines[0]:
        return False
    frames = [x for x in lines if x.startswith("  File ")]
    if traceback:
        return lines[1] == "Traceback (most recent call last):" and bool(frames) and all(
            "fault_envs.py" in x for x in frames)
    return len(lines) == 1


def case_env(runner, tmp):
    """Each misbehaving env, then --resume with it fixed; the old API; undecodable metrics bytes."""
    fixed = Runner(runner.env.get("JAX_COMPILATION_CACHE_DIR"), RFM_FAULTS_FIXED="1")
    reference_dir = os.path.join(tmp, "env_reference")
    if fixed.run(reference_dir, *_env_flags("raise", 250)).returncode != 0:
        return row("a user's env that misbehaves", 0, "not run", 0, 1, "the fixed env's reference run failed")
    reference = metrics(reference_dir)
    wrong, recovered, notes = 0, 0, []
    for fault, after, expect, traceback, equal in (
            ("raise", 250, "env.step raised RuntimeError: lost the simulator after 250 steps (training, env step 250",
             True, True),
            ("nan", 120, "101 of the env's last 1000 steps were invalid", False, False),
            ("shape", 250, "env.step returned an observation of shape (6,) where its observation_space declares (3,)",
             False, True)):
        workdir = os.path.join(tmp, f"env_{fault}")
        proc = runner.run(workdir, *_env_flags(fault, after))
        named = env_stopped(proc, expect, traceback) and checkpoints(workdir)[-1:] == [200]
        done = fixed.run(workdir, *_env_flags(fault, after), "--resume")
        resumed = done.returncode == 0 and "at env step 200" in done.stdout
        if not resumed:
            same = False
        elif equal:  # the fault starts after the checkpoint: the resumed run is the fixed env's
            same = metrics(workdir) == reference
        else:  # NaN steps before the checkpoint: it finishes, counting them
            same = json.load(open(os.path.join(workdir, "summary.json")))["step"] == 300
        wrong += int(not named) + int(done.returncode != 0)
        recovered += int(named and resumed and same)
        if not (named and resumed and same):
            notes.append(f"{fault}: exit {proc.returncode} {error_lines(proc.stderr)[:1]}, resumed {resumed}")
    old = runner.run(os.path.join(tmp, "env_old_api"), "--config.task=gym:fault_envs:OldGymApi",
                     "--config.env_kwargs={'max_episode_steps': 50}")
    refused = one_line_error(old, 2, "follows the old Gym API") and "Compiling" not in old.stdout
    wrong += int(not refused)
    workdir = os.path.join(tmp, "env_metrics_bytes")
    fixed.run(workdir, *_env_flags("raise", 250), "--stop_after=200")
    path = os.path.join(workdir, "metrics", "eval_seed0.jsonl")
    with open(path, "ab") as f:
        f.write(b"\xff\xfe{\"step\": 1\x81}\n")
    done = fixed.run(workdir, *_env_flags("raise", 250), "--resume")
    repaired = done.returncode == 0 and "Dropped 1 unreadable line(s)" in done.stdout and metrics(workdir) == reference
    wrong += int(done.returncode != 0)
    return row("a user's env: raises, NaN for good, another shape (then --resume fixed); old Gym API; "
               "undecodable metrics bytes (then --resume)", 5,
               f"{recovered}/3 runs resumed from step 200, old API refused: {refused}, metrics repaired: {repaired}",
               50, wrong, "; ".join(notes) or "stopped at env step 250 (raise, shape) and 220 (nan: the bound of "
               "100 invalid steps in 1000); steps lost = failure step - 200")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {CASES}")
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs injected in the kill case")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments and corrupt bytes")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "faults"), help="where faults.json goes")
    args = parser.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"--cases: unknown {', '.join(unknown)}; known: {', '.join(CASES)}")
    rng = np.random.default_rng(args.seed)
    tmp = tempfile.mkdtemp(prefix="rfm_jax_faults_")
    runner, uncached = Runner(os.path.join(tmp, "xla_cache")), Runner(None)
    rows, reference, reference_dir = [], None, None
    if set(cases) - {"config", "env"}:
        reference_dir = os.path.join(tmp, "reference")
        t0 = time.time()
        proc = runner.run(reference_dir)
        if proc.returncode != 0:
            sys.exit(f"faults.py: the reference run failed:\n{proc.stderr[-2000:]}")
        reference = metrics(reference_dir)
        print(f"reference run: {time.time() - t0:.0f} s (with compilation)", flush=True)
    for case in cases:
        t0 = time.time()
        print(f"case {case} ...", flush=True)
        if case == "kill":
            warm = runner.run(os.path.join(tmp, "warm"))  # a session from the warm XLA cache
            window = time.time() - t0  # kill moments are uniform over one such session
            rows.append(case_kill(runner, tmp, reference, args.kills, rng, window) if warm.returncode == 0
                        else row("kill", 0, "not run", 0, 1, "the warm-up run failed"))
        elif case == "signal":
            rows.append(case_signal(runner, uncached, tmp, reference))
        elif case == "corrupt":
            rows.append(case_corrupt(runner, tmp, reference_dir, reference, rng))
        elif case == "nan":
            rows.append(case_nan(runner, tmp))
        elif case == "disk_full":
            rows.append(case_disk_full(runner, tmp, reference))
        elif case == "config":
            rows.append(case_config(runner, tmp, reference_dir)[0])
        elif case == "env":
            rows.append(case_env(runner, tmp))
        rows[-1]["seconds"] = round(time.time() - t0, 1)
        print(f"  {rows[-1]}", flush=True)
    print_table(rows)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "faults.json"), "w") as f:
        json.dump({"cases": cases, "kills": args.kills, "seed": args.seed, "rows": rows}, f, indent=2)
    shutil.rmtree(tmp, ignore_errors=True)
    if any(r["wrong_exits"] for r in rows):
        sys.exit(1)


def print_table(rows: list[dict]) -> None:
    print("\n| fault | injected | recovered | steps lost (max) | wrong exits |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['fault']} | {r['injected']} | {r['recovered']} | {r['steps_lost_max']} | {r['wrong_exits']} |")


if __name__ == "__main__":
    main()
