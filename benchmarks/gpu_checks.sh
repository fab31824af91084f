#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one go, each bounded by `timeout` (470 s at most in all, under 8
# minutes on one H200), its output in $LOGS/NAME.log and its tables gathered in $LOGS/results.md:
#   1. the contrastive loss under fp16 / bf16 autocast against float32 (benchmarks/cuda_amp.py);
#   2. `msccl fit` of the demo config with 16-mixed precision (GradScaler) under DDP with SyncBatchNorm;
#   3. the loss's kernels: loop baseline, blockwise, Triton at float32 / TF32 / bf16: time, peak memory,
#      error against float64 (benchmarks/contrastive_loss.py --device cuda);
#   4. training-step overhead of the contrastive loss and images/s under bf16 / fp16 of the paper's
#      networks at 512x512, batch 8, CE and CE + contrastive interleaved (benchmarks/train_step.py --paper);
#   5. the paper's Cityscapes protocol with HRNetV2-W48, windows one at a time vs batched
#      (benchmarks/evaluation.py).
#
#   bash benchmarks/gpu_checks.sh [LOGS]                # LOGS: where the logs go (default runs/gpu_checks)
#   bash benchmarks/gpu_checks.sh --cpu-smoke [LOGS]    # the same script end to end on a CPU at toy sizes
#                                                       # (GPU-only steps 1-2 skipped): checks it runs
set -u
SMOKE=0
if [ "${1:-}" = "--cpu-smoke" ]; then
    SMOKE=1
    shift
fi
LOGS=${1:-runs/gpu_checks}
PYTHON=${PYTHON:-python3}
mkdir -p "$LOGS"
RESULTS="$LOGS/results.md"
export PYTHONUNBUFFERED=1
if [ $SMOKE = 1 ]; then
    DEVICE="CPU smoke run (toy sizes: not measurements)"
else
    DEVICE=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)
fi
TORCH=$("$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)")
{
    echo "# GPU checks, $(date -u +%Y-%m-%d), $DEVICE, $TORCH"
    echo
    echo "| step | exit | seconds |"
    echo "|---|---:|---:|"
} > "$RESULTS"
TABLES="$LOGS/tables.md"
: > "$TABLES"

step() {  # step NAME SECONDS COMMAND...
    local name=$1 seconds=$2
    shift 2
    echo -e "\n===== $name"
    local start=$SECONDS
    timeout "$seconds" "$@" > "$LOGS/$name.log" 2>&1
    local status=$?
    grep -v -E "Warning|warn\(|^\s*$" "$LOGS/$name.log" | tail -40
    echo "===== $name: exit $status after $((SECONDS - start)) s"
    echo "| $name | $status | $((SECONDS - start)) |" >> "$RESULTS"
    # the step's own tables: its caption lines and rows ("|"), from its log
    { echo; echo "## $name"; echo; grep -E "^\|" "$LOGS/$name.log"; } >> "$TABLES"
}

if [ $SMOKE = 1 ]; then
    step contrastive_loss 300 "$PYTHON" benchmarks/contrastive_loss.py --regimes typical --batch 1 --repeats 1 \
        --impls msccl-bf16 --threads 1
    step train_step 300 "$PYTHON" benchmarks/train_step.py --architectures FPN --size 32 --batch 2 \
        --repeats 1 --max-pairs 1 --threads 1
    step evaluation 300 "$PYTHON" benchmarks/evaluation.py --architecture FPN --size 64 128 --crop 64 64 \
        --scales 0.5 1.0 --images 1 --window-batch-sizes 8 --repeats 1 --threads 1
else
    FIT=(-m msccl fit --config conf/synthetic.yaml --trainer.accelerator=gpu --trainer.devices=1
         --trainer.max_epochs=3 --trainer.enable_progress_bar=false --trainer.enable_model_summary=false
         --data.init_args.num_workers=6 --seed_everything=0)
    step cuda_amp 70 "$PYTHON" benchmarks/cuda_amp.py --repeats 5
    step fit_16mixed_ddp_syncbn 80 "$PYTHON" "${FIT[@]}" --trainer.precision=16-mixed --trainer.strategy=ddp \
        --trainer.sync_batchnorm=true --run_dir="$LOGS/fit_16mixed"
    step contrastive_loss 130 "$PYTHON" benchmarks/contrastive_loss.py --device cuda --repeats 10
    step train_step_paper 140 "$PYTHON" benchmarks/train_step.py --paper --size 512 --batch 8 --repeats 5 \
        --max-pairs 12
    step evaluation_protocol 50 "$PYTHON" benchmarks/evaluation.py --bf16 --images 1 --repeats 2
fi
cat "$TABLES" >> "$RESULTS"
rm -f "$TABLES"
echo -e "\nresults: $RESULTS"
