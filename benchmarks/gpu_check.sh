#!/usr/bin/env bash
# The GPU session's one prepared check (issue 12), about 8 minutes on an H200. Prints everything; each part
# runs even if an earlier one failed, and the exit status says whether any failed.
#
#   1. the CUDA tests: every kernel test compiled on the GPU (tests/kernels: the Triton kernels against the
#      reference, the fused row update inside training steps; tests/kernels/test_cuda.py: kernels at scale,
#      train / resume / evaluate on CUDA with --fused-update on and off, CPU against GPU) and the ranking's
#      CUDA test;
#   2. benchmarks/bench_combine.py at full sizes (R 1e4..1e6, T 2 and 4, d 64 and 128; float32, then
#      bfloat16 at d 64): fused, fused+adam, reference, copy; the targets line; then a grid of the kernel's
#      block shapes at R = 1e6, T = 4, d = 64;
#   3. one Ciao epoch (--aux social,category, PMTRec) on --device cuda with the fused update, on cuda
#      without it, and on cpu: seconds per epoch from the log lines;
#      then the training step on cuda (benchmarks/bench_train_step.py --device cuda: PMTRec, EW and the
#      dense per-task-backward reference; target: PMTRec >= 15x faster than the reference);
#   4. recmtl evaluate of the CUDA run on the GPU.
#
# Usage: bash benchmarks/gpu_check.sh   (PYTHON=... to pick the interpreter; CIAO_DATA=prepared dir, or
# CIAO_RAW=raw files: default data/ciao, else prepared from ../shared/data/ciao, else the synthetic default)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-/tmp/recmtl-gpu-check}
mkdir -p "$OUT"
status=0
part() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }
run() { "$@" || { echo "!!! failed ($?): $*"; status=1; }; }

part "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
run "$PY" -c "import torch, triton, recmtl; print('torch', torch.__version__, '· triton', triton.__version__, \
'· cuda', torch.version.cuda, '·', torch.cuda.get_device_name(0)); from recmtl.kernels import resolve_backend; \
print('auto backend on cuda:', resolve_backend('auto', 'cuda'))"
git log --oneline -1 2>/dev/null || true

part "1. CUDA tests (kernel tests compiled on the GPU, CUDA-only tests)"
run timeout 300 "$PY" -m pytest -q -p no:cacheprovider tests/kernels \
    tests/eval/test_ranking.py::test_cuda_matches_cpu --durations=5

part "2. bench_combine.py, full sizes"
run timeout 200 "$PY" benchmarks/bench_combine.py --rounds 20
run timeout 60 "$PY" benchmarks/bench_combine.py --dtype bfloat16 --dims 64 --rounds 10
echo "--- block shapes at R=1e6, T=4, d=64 (b: rows per program, n: warps; the default is b2 n1)"
run timeout 90 "$PY" benchmarks/bench_combine.py --rows 1e6 --tasks 4 --dims 64 --block-r 1,2,4 \
    --num-warps 1,2,4 --rounds 10

part "3. one Ciao epoch: cuda fused, cuda unfused, cpu"
DATA=${CIAO_DATA:-data/ciao}
if [ ! -f "$DATA/manifest.json" ]; then
    RAW=${CIAO_RAW:-../shared/data/ciao}
    if [ -d "$RAW" ]; then
        DATA=$OUT/ciao
        run "$PY" -m cli.main prepare --recipe datasets/ciao.toml --raw "$RAW" --out "$DATA" --overwrite --quiet
    else
        echo "(no Ciao here: the synthetic default instead)"
        DATA=$OUT/synthetic
        run "$PY" -m cli.main prepare --out "$DATA" --overwrite --quiet
    fi
fi
rm -rf "$OUT/runs"
for spec in "cuda on" "cuda off" "cpu auto"; do
    set -- $spec
    echo "--- --device $1 --fused-update $2"
    run timeout 150 "$PY" -m cli.main train "$DATA" --aux social,category --epochs 1 --device "$1" \
        --fused-update "$2" --runs-dir "$OUT/runs" --name "$1-$2" --quiet
    "$PY" -c "import json,sys; c=json.load(open(sys.argv[1])); print('kernel_backend:', c['kernel_backend'])" \
        "$OUT/runs/$1-$2/config.json" 2>/dev/null || true
done

part "3b. the Ciao training step on the GPU: PMTRec (fused) and EW against the dense per-task reference"
run timeout 150 "$PY" benchmarks/bench_train_step.py --data "$DATA" --device cuda --steps 20 --rounds 5

part "4. evaluate the CUDA run on the GPU"
run timeout 60 "$PY" -m cli.main evaluate "$OUT/runs/cuda-on" --device cuda

part "done: status $status"
exit $status
