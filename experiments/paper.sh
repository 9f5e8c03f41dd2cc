#!/usr/bin/env bash
# The reference RFM config (method.md section 7) on the paper's eight DMC tasks, 5 seeds each,
# one task after another. Re-running the script resumes every unfinished task from its checkpoint.
#   bash experiments/paper.sh [WORKROOT] [extra run.py flags...]
# e.g. bash experiments/paper.sh runs/paper --config.agent.policy=diffusion
set -euo pipefail
cd "$(dirname "$0")/.."
root="${1:-runs/paper}"
shift || true
for task in cheetah-run cartpole-swingup fish-swim fish-upright walker-walk walker-run finger-spin finger-turn_hard; do
  workdir="$root/$task"
  resume=()
  # resume only where a checkpoint was written (a run killed before its first one starts afresh)
  if ls "$workdir/checkpoints" 2>/dev/null | grep -qE '^[0-9]+$'; then resume=(--resume); fi
  python experiments/run.py --config="experiments/configs/rfm.py:$task" --config.num_seeds=5 \
    --workdir="$workdir" "${resume[@]}" "$@"
done
