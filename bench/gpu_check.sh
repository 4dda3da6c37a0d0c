#!/usr/bin/env bash
# The GPU check: everything augloop claims about GPUs, measured in one go, in under 8 minutes.
#
#   1. augmentation on CUDA, bf16 then fp16 (AUGLOOP_AUGMENT_DTYPE): augloop's masked-LM and back-translation
#      augmenters vs nlpaug on the same GPU, texts and real-size random models (bench/gpu_probe.py augment);
#   2. training throughput of the product's trainer with AMP off, bf16 and fp16 (gpu_probe.py train);
#   3. DDP on every GPU present (torchrun, NCCL, bf16): samples/s, scaling against one GPU, and a check that the
#      replicas' weights stay identical (gpu_probe.py ddp);
#   4. the product's distributed training path on every GPU present, as a worker runs a run with nproc > 1
#      (services.distributed_training → torchrun → trainer.distributed: NCCL collectives, checkpoint, saved
#      run) (gpu_probe.py trainer_ddp).
# Writes bench/results/gpu_check.json (a JSON list of {"metric","value","target","unit"}), then prints it.
#
#   bench/gpu_check.sh                # on a machine with a CUDA GPU (exits 2 at once, saying why, without one)
#   bench/gpu_check.sh --cpu-dry-run  # every step on the CPU with tiny models and 2 gloo processes, to check
#                                     # the script itself; writes to a temporary file, not the results
#
# Environment: PYTHON (default .venv/bin/python, else python3), GPU_CHECK_BUDGET (seconds, default 470),
# GPU_CHECK_MODELS (where the models are built once, default $TMPDIR/augloop-gpu-models).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
BUDGET=${GPU_CHECK_BUDGET:-470}
DRY=0
[ "${1:-}" = "--cpu-dry-run" ] && DRY=1
START=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/augloop-gpu-check.XXXXXX")
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_WAIT_POLICY=PASSIVE
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

fail() { echo "gpu_check: $*" >&2; exit 2; }

if [ "$DRY" = 1 ]; then
    DEVICE=cpu; GPUS=2; TINY=--tiny; DTYPES="float32"; AMPS="off,bf16"
    SIZES_AUG="--mlm-texts 4 --bt-texts 2 --bt-tokens 8"; SIZES_TRAIN="--texts 48 --batch 8 --max-length 32"
    SIZES_DDP="--steps 3 --warmup 1 --batch 4 --max-length 32"; OUT="$WORK/gpu_check.json"
    SIZES_TRAINER_DDP="--texts 64 --batch 4 --max-length 32"
    MODELS=${GPU_CHECK_MODELS:-${TMPDIR:-/tmp}/augloop-gpu-models-tiny}
else
    command -v nvidia-smi >/dev/null 2>&1 || fail "no nvidia-smi on this machine: no NVIDIA GPU or driver. \
Run this on a GPU machine (bench/gpu_check.sh --cpu-dry-run checks the script itself on a CPU)."
    nvidia-smi -L >/dev/null 2>&1 || fail "nvidia-smi finds no GPU: $(nvidia-smi -L 2>&1 | head -1)"
    GPUS=$("$PYTHON" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)") \
        || fail "$PYTHON cannot import torch (install the project first: make install)"
    [ "$GPUS" -ge 1 ] || fail "torch sees no CUDA device (torch.cuda.is_available() is False: a CPU-only torch \
build, or CUDA_VISIBLE_DEVICES hides them); nvidia-smi lists: $(nvidia-smi -L | tr '\n' ' ')"
    DEVICE=cuda; TINY=; DTYPES="bfloat16 float16"; AMPS="off,bf16,fp16"
    SIZES_AUG="--mlm-texts 128 --bt-texts 64"; SIZES_TRAIN="--texts 1024 --batch 32 --max-length 128"
    SIZES_DDP="--steps 30 --warmup 3 --batch 32 --max-length 128"; OUT=bench/results/gpu_check.json
    SIZES_TRAINER_DDP="--texts 1024 --batch 16 --max-length 128"
    MODELS=${GPU_CHECK_MODELS:-${TMPDIR:-/tmp}/augloop-gpu-models}
fi
"$PYTHON" -c "import nlpaug, transformers" 2>/dev/null || fail "$PYTHON lacks nlpaug or transformers (make install)"
echo "gpu_check: device $DEVICE × $GPUS, python $PYTHON, budget ${BUDGET}s, work in $WORK"
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

# step NAME SECONDS COMMAND...: run it under a timeout cut to what is left of the budget; a step that fails or
# runs out of time is recorded as such and the check goes on (its figures are then missing from the results).
FAILED=()
step() {
    local name=$1 limit=$2; shift 2
    local left=$(( BUDGET - ($(date +%s) - START) ))
    if [ "$left" -lt 20 ]; then echo "--- $name: skipped, the budget is spent"; FAILED+=("$name:skipped"); return; fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "--- $name (at most ${limit}s)"
    local rc=0
    timeout --signal=TERM --kill-after=10 "$limit" "$@" || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "--- $name: $( [ "$rc" -eq 124 ] && echo "timed out" || echo "FAILED (exit $rc)" )"; FAILED+=("$name")
    fi
}

step models 150 "$PYTHON" bench/gpu_probe.py models --models "$MODELS" $TINY
for dtype in $DTYPES; do
    step "augment-$dtype" 100 env AUGLOOP_AUGMENT_DTYPE="$dtype" "$PYTHON" bench/gpu_probe.py augment \
        --device "$DEVICE" --models "$MODELS" $TINY $SIZES_AUG --out "$WORK/augment_$dtype.json"
done
step train 90 "$PYTHON" bench/gpu_probe.py train --device "$DEVICE" --models "$MODELS" $TINY --amp "$AMPS" \
    $SIZES_TRAIN --out "$WORK/train.json"
TORCHRUN=("$PYTHON" -m torch.distributed.run --standalone)
if [ "$GPUS" -gt 1 ]; then
    step ddp-1 60 "${TORCHRUN[@]}" --nproc_per_node 1 bench/gpu_probe.py ddp --device "$DEVICE" \
        --models "$MODELS" $TINY $SIZES_DDP --out "$WORK/ddp_1.json"
fi
step "ddp-$GPUS" 75 "${TORCHRUN[@]}" --nproc_per_node "$GPUS" bench/gpu_probe.py ddp --device "$DEVICE" \
    --models "$MODELS" $TINY $SIZES_DDP --out "$WORK/ddp_$GPUS.json"
step "trainer-ddp-$GPUS" 90 "$PYTHON" bench/gpu_probe.py trainer_ddp --device "$DEVICE" --nproc "$GPUS" \
    --models "$MODELS" $TINY $SIZES_TRAINER_DDP --out "$WORK/trainer_ddp.json"

ELAPSED=$(( $(date +%s) - START ))
"$PYTHON" - "$WORK" "$OUT" "$DEVICE" "$GPUS" "$ELAPSED" "${FAILED[*]:-}" <<'EOF'
import json, os, platform, sys
from pathlib import Path

work, out, device, gpus, elapsed, failed = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), \
    int(sys.argv[5]), sys.argv[6].split()
records = []
for part in sorted(work.glob("*.json")):
    records += json.loads(part.read_text())
by_name = {r["metric"]: r["value"] for r in records}
one, many = by_name.get(f"ddp_1proc_samples_per_s_{device}"), by_name.get(f"ddp_{gpus}proc_samples_per_s_{device}")
if one and many and gpus > 1:
    records.append({"metric": f"ddp_scaling_efficiency_{gpus}proc", "value": round(many / (gpus * one), 3),
                    "target": 0.8, "unit": "fraction of linear"})
try:
    import torch
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"
except Exception:  # the report still gets written
    name = "unknown"
records += [
    {"metric": "gpu_check_seconds", "value": elapsed, "target": 480, "unit": "s", "lower_is_better": True},
    {"metric": "gpu_check_failed_steps", "value": len(failed), "target": 0, "unit": "steps",
     "lower_is_better": True, "note": " ".join(failed)},
    {"metric": "gpu_check_device", "value": f"{name} × {gpus}", "target": None, "unit": device},
]
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
print(f"gpu_check: {len(records)} figures in {elapsed}s → {out}")
for r in records:
    print(f"  {r['metric']}: {r['value']} {r['unit']}" + (f" (target {r['target']})" if r.get("target") is not None else ""))
EOF
[ "${#FAILED[@]}" -eq 0 ] || { echo "gpu_check: failed steps: ${FAILED[*]}" >&2; exit 1; }
