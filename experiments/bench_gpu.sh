#!/usr/bin/env bash
# One command on a fresh machine with an accelerator: install, then measure both training loops
# (experiments/bench_device.py: the host loop and the on-device loop on mjx:cartpole-swingup,
# evaluation at the reference protocol's ratio included), then the training step alone
# (experiments/bench_update.py: seeds scaling at both numerics).  Most important first, each row
# written as soon as it is measured, within about 8 minutes (BUDGET_S, the seconds after which no
# new row starts).
#
#   bash experiments/bench_gpu.sh [OUT_DIR]        # PYTHON=python3 to pick the interpreter
#
# Install: the machine's JAX (with its CUDA plugin) is kept; rfm_jax and what it needs beside JAX
# (mujoco, mujoco-mjx, dm_control, ml_collections, ...) are installed from PyPI, or, on a machine
# that cannot reach it, from wheels in WHEELS_DIR (default .whl: pip download them elsewhere for the
# machine's Python) into /tmp/site.
#
# OUT_DIR (default experiments/results/bench_gpu) gets bench_device/bench_device_gpu.json and
# default/bench_{lite,reference}.json.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-experiments/results/bench_gpu}
py=${PYTHON:-python3}
budget=${BUDGET_S:-420}
export MUJOCO_GL=${MUJOCO_GL:-disable} PYTHONUNBUFFERED=1
start=$(date +%s)

# --- install -----------------------------------------------------------------------------------
wheels=${WHEELS_DIR:-.whl}
if ! "$py" -c "import mujoco.mjx, dm_control, ml_collections" 2>/dev/null; then
  if [ -d "$wheels" ]; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  else
    "$py" -m pip install -q "mujoco==3.17.0" "mujoco-mjx==3.17.0" "dm_control==1.0.50" "ml_collections>=0.1" \
      "gymnasium>=1.0" "tensorboardX" "trimesh==5.2.0"
  fi
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # rfm_jax from this checkout, the machine's JAX kept
"$py" -c "import jax; print('JAX', jax.__version__, jax.devices())"

# --- measure -----------------------------------------------------------------------------------
left() { echo $(( budget - ($(date +%s) - start) )); }
# 1. Both loops: 32 lite seeds (the goal: >= 5,000 env steps/s end to end), many envs per run, 128 runs.
"$py" experiments/bench_device.py --numerics lite --runs 32,1,8,128 --envs 1,16,128 --chunk 200 --repeats 3 \
  --budget_s "$(( $(left) * 6 / 10 ))" --out "$out/bench_device"
# 2. Reference numerics, 1 and 8 seeds (the goal: 8 cost <= 2x one) on both loops.
"$py" experiments/bench_device.py --numerics reference --runs 1,8 --envs 1,16 --chunk 200 --repeats 3 \
  --budget_s "$(( $(left) * 7 / 10 ))" --out "$out/bench_device_reference"
# 3. The step alone, seeds scaling (as in 0.1.0's figures).
if [ "$(left)" -gt 60 ]; then
  "$py" experiments/bench_update.py --no-breakdown --min_time 2 --numerics lite,reference --seeds 1,8,32 \
    --out "$out/default"
fi
echo "bench_gpu.sh: done in $(( $(date +%s) - start )) s; files under $out"
