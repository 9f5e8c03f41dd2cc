#!/usr/bin/env bash
# The training step on an accelerator: seeds scaling at both numerics, the chunking default
# ("auto" = one vmap off CPU) against the CPU's chunk sizes, float32 matmuls at the backend's
# default precision against "highest", a device trace of the step, and XLA's Triton GEMMs off.
# Each line is one experiments/bench_update.py run (docs/performance.md, the GPU section).
#
#   bash experiments/bench_gpu.sh [OUT_DIR] [MIN_TIME_S]      # PYTHON=python3 to pick the interpreter
#
# OUT_DIR (default experiments/results/bench_gpu) gets one folder per variant, each with
# bench_<numerics>.json.  Most important first, so a run cut short still leaves the seeds scaling.
set -euo pipefail
out=${1:-experiments/results/bench_gpu}
min_time=${2:-3}
export MUJOCO_GL=${MUJOCO_GL:-disable}
bench() { "${PYTHON:-python}" experiments/bench_update.py --no-breakdown --min_time "$min_time" "$@"; }

# Seeds scaling with the defaults (goal: 8 seeds cost at most 2x one at the reference numerics).
bench --numerics reference --seeds 1,8,32 --out "$out/default"
bench --numerics lite --seeds 1,8,32 --out "$out/default"
# The CPU's "auto" chunks forced on the accelerator (4096 // 32 states per sampler chunk, 20
# posterior particles per chunk): the default (one vmap) should be faster.
bench --numerics reference --seeds 8 --set sample_chunk=128 --set particle_batch=20 --out "$out/cpu_chunks"
# float32 products at full precision (the default lets the backend use TF32 on NVIDIA GPUs).
JAX_DEFAULT_MATMUL_PRECISION=highest bench --numerics reference --seeds 1,8 --out "$out/highest"
# Device time per call from a profiler trace: matrix products against other kernels, top kernels.
bench --numerics reference,lite --seeds 1,8 --profile --out "$out/profile"
# XLA's Triton GEMM fusions off (cuBLAS for every product).
XLA_FLAGS="--xla_gpu_enable_triton_gemm=false ${XLA_FLAGS:-}" bench --numerics reference,lite --seeds 1,8 \
  --out "$out/no_triton_gemm"
XLA_FLAGS="--xla_gpu_enable_triton_gemm=false ${XLA_FLAGS:-}" bench --numerics reference --seeds 8 --profile \
  --out "$out/no_triton_gemm_profile"
