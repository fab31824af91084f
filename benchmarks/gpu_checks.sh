#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one go (each step bounded by `timeout`, its output also in $LOGS):
#   1. the contrastive loss under fp16 / bf16 autocast against float32 (benchmarks/cuda_amp.py);
#   2. `msccl fit` of the demo config with 16-mixed precision (GradScaler) under DDP with SyncBatchNorm;
#   3. training-step overhead of the contrastive loss and images/s under bf16 / fp16 of the paper's
#      networks at 512x512, batch 8 (benchmarks/train_step.py --paper).
# About 5 minutes on one H100.
#
#   bash benchmarks/gpu_checks.sh [LOGS]       # LOGS: where the logs go (default runs/gpu_checks)
set -u
LOGS=${1:-runs/gpu_checks}
PYTHON=${PYTHON:-python3}
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

step() {  # step NAME SECONDS COMMAND...
    local name=$1 seconds=$2
    shift 2
    echo -e "\n===== $name"
    local start=$SECONDS
    timeout "$seconds" "$@" 2>&1 | tee "$LOGS/$name.log" | grep -v -E "Warning|warn\(|^\s*$"
    echo "===== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
}

FIT=(-m msccl fit --config conf/synthetic.yaml --trainer.accelerator=gpu --trainer.devices=1
     --trainer.max_epochs=3 --trainer.enable_progress_bar=false --trainer.enable_model_summary=false
     --data.init_args.num_workers=6 --seed_everything=0)

step cuda_amp 150 "$PYTHON" benchmarks/cuda_amp.py --repeats 5
step fit_16mixed_ddp_syncbn 120 "$PYTHON" "${FIT[@]}" --trainer.precision=16-mixed --trainer.strategy=ddp \
    --trainer.sync_batchnorm=true --run_dir="$LOGS/fit_16mixed"
step train_step_paper 240 "$PYTHON" benchmarks/train_step.py --paper --size 512 --batch 8 --repeats 5
