"""Time two benchmark commands alternately in one session and report their ratio.

    python experiments/alternate.py --rounds 3 --out runs/vs_official_reference.json \\
        --a "python experiments/bench_update.py --numerics reference --seeds 1 --no-breakdown" \\
        --b "cd ../ReverseFlowMatching && venv/bin/python official_rfm_bench.py 17 6 100 32 32 32 10 256 256"

Each command must print, as its last line, one JSON object with ``ms_per_env_step`` or
``ms_per_step`` (or the field ``--key`` names).  The commands run one after the other (a, b, a,
b, ...), never together: this machine's timings drift 20-40 % between runs, so only runs
interleaved in one session compare.
Prints every round and the ratio of medians b / a (above 1: a is faster); saves all to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time


def run_once(command: str, key: str | None = None) -> tuple[float, dict]:
    """(the timed value, the whole JSON line) of one run of ``command``."""
    proc = subprocess.run(command, shell=True, capture_output=True, text=True)
    lines = [line for line in proc.stdout.strip().splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"alternate: `{command}` failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    row = json.loads(lines[-1])
    for name in (key,) if key else ("ms_per_env_step", "ms_per_step"):
        if name in row:
            return float(row[name]), row
    raise SystemExit(f"alternate: the last JSON line of `{command}` has no {key or 'ms_per_env_step or ms_per_step'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, help="first command (ours)")
    parser.add_argument("--b", required=True, help="second command (the baseline)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None, help="JSON file for the rounds and the ratio")
    parser.add_argument("--key", default=None, help="the JSON field to compare (default ms_per_env_step or "
                        "ms_per_step); the others of the same lines are saved too")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    a_ms, b_ms, rows = [], [], {"a": [], "b": []}
    for r in range(args.rounds):
        for name, command, store in (("a", args.a, a_ms), ("b", args.b, b_ms)):
            t0 = time.time()
            value, row = run_once(command, args.key)
            store.append(value)
            rows[name].append(row)
            print(f"round {r + 1}/{args.rounds} {name}: {value:.4g} {args.key or 'ms per env step'} "
                  f"({time.time() - t0:.0f} s)", flush=True)
    result = {"a": args.a, "b": args.b, "key": args.key, "a_ms": a_ms, "b_ms": b_ms,
              "a_median_ms": statistics.median(a_ms), "b_median_ms": statistics.median(b_ms),
              "a_rows": rows["a"], "b_rows": rows["b"]}
    result["ratio_b_over_a"] = result["b_median_ms"] / result["a_median_ms"]
    result["per_round_ratio"] = [b / a for a, b in zip(a_ms, b_ms, strict=True)]
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
