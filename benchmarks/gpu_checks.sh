#!/usr/bin/env bash
# The checks that need a CUDA GPU, unattended, in at most 7 minutes (so that two runs fit a 15-minute GPU
# slot), each step bounded by its own `timeout`, everything in one folder of at most 6 files:
#   1. triton_gate (torch + Triton only, 190 s): the Triton InfoNCE kernels against float64 on the GPU,
#      every case PASS / FAIL / ERROR, then CUDA-event timings of what passed beside blockwise, the
#      VERIFIED_TRITON line to record, and last torch.compile of blockwise (benchmarks/triton_gate.py);
#   2. triton_compile (Triton only, 40 s): registers, shared memory and spills of every kernel variant
#      compiled for this chip (benchmarks/triton_compile_report.py; sm_80 and sm_90);
#   3. train_step (needs the model zoo's libraries, 110 s): training-step images/s of the paper's networks
#      at 512x512, batch 8, CE only vs CE + contrastive under bf16 (benchmarks/train_step.py --paper);
#   4. evaluation_protocol (50 s): the paper's Cityscapes protocol with HRNetV2-W48, windows one at a time
#      vs batched (benchmarks/evaluation.py).
# The loss checks come first and need torch and Triton alone: a bare GPU machine without the data and
# model libraries still gets them (the later steps then fail in their own rows).
#
#   bash benchmarks/gpu_checks.sh [DIR]              # DIR: the output folder (default $OUT, else runs/gpu_checks)
#   bash benchmarks/gpu_checks.sh --cpu-smoke [DIR]  # the same script on a CPU at toy sizes (Triton's
#                                                    # interpreter; step 2 skipped): checks that it runs
set -u
SMOKE=0
if [ "${1:-}" = "--cpu-smoke" ]; then
    SMOKE=1
    shift
fi
LOGS=${1:-${OUT:-runs/gpu_checks}}
PYTHON=${PYTHON:-python3}
mkdir -p "$LOGS"
RESULTS="$LOGS/results.md"
export PYTHONUNBUFFERED=1
if [ $SMOKE = 1 ]; then
    DEVICE="CPU smoke run (toy sizes: not measurements)"
else
    DEVICE=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)
    ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '.')
fi
VERSIONS=$("$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)")
{
    echo "# GPU checks, $(date -u +%Y-%m-%d), $DEVICE, $VERSIONS"
    echo
    echo "| step | exit | seconds |"
    echo "|---|---:|---:|"
} > "$RESULTS"
TABLES=""

step() {  # step NAME SECONDS COMMAND...: its output in NAME.log, its tables gathered in results.md
    local name=$1 seconds=$2
    shift 2
    echo -e "\n===== $name (at most $seconds s)"
    local start=$SECONDS
    timeout --kill-after=5 "$seconds" "$@" > "$LOGS/$name.log" 2>&1
    local status=$?
    grep -v -E "Warning|warn\(|^\s*$" "$LOGS/$name.log" | tail -40
    echo "===== $name: exit $status after $((SECONDS - start)) s"
    echo "| $name | $status | $((SECONDS - start)) |" >> "$RESULTS"
    # the step's tables (a blank line before each) and verdict lines, from its log
    TABLES+=$'\n'"## $name"$'\n'"$(awk '/^\|/ {if (!t) print ""; print; t = 1; next} {t = 0}
        /^(not )?verified/ {print ""; print}' "$LOGS/$name.log")"$'\n'
}

if [ $SMOKE = 1 ]; then
    step triton_gate 300 "$PYTHON" benchmarks/triton_gate.py --cpu-smoke
    step train_step 300 "$PYTHON" benchmarks/train_step.py --architectures FPN --size 32 --batch 2 \
        --repeats 1 --max-pairs 1 --threads 1
    step evaluation 300 "$PYTHON" benchmarks/evaluation.py --architecture FPN --size 64 128 --crop 64 64 \
        --scales 0.5 1.0 --images 1 --window-batch-sizes 8 --repeats 1 --threads 1
else
    step triton_gate 190 "$PYTHON" benchmarks/triton_gate.py --repeats 20
    if [ "$ARCH" = 90 ] || [ "$ARCH" = 80 ]; then
        step triton_compile 40 "$PYTHON" benchmarks/triton_compile_report.py --archs "$ARCH"
    fi
    step train_step_paper 110 "$PYTHON" benchmarks/train_step.py --paper --size 512 --batch 8 --repeats 5 \
        --max-pairs 12
    step evaluation_protocol 50 "$PYTHON" benchmarks/evaluation.py --bf16 --images 1 --repeats 2
fi
echo "$TABLES" >> "$RESULTS"
echo -e "\nresults: $RESULTS"
