#!/usr/bin/env bash
# Every GPU figure of benchmarks/README.md in one unattended run (< 8 min on one H100/H200).
#
#   bash benchmarks/gpu.sh              # GPU if torch sees one, else the small CPU variant
#   bash benchmarks/gpu.sh --cpu        # the small CPU variant (same steps, tiny sizes)
#   bash benchmarks/gpu.sh --out DIR    # output folder (default: $OUT if set, else runs/gpu)
#   STEPS=attack_bf16,attack_bf16_cudnn bash benchmarks/gpu.sh   # only these steps (default: all)
#
# Needs torch, torchvision, numpy and pillow (no network, nothing installed; the pack step
# also needs webdataset and cryptography and is skipped without them;
# medlocker is taken from this checkout). Each step has its own time limit;
# a step that runs out still leaves its partial JSON. Steps and exit codes are
# listed in DIR/steps.tsv; DIR/summary.json and the final table sum up all runs.
set -euo pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

mode=auto
out="${OUT:-runs/gpu}"
while (($#)); do
  case "$1" in
    --cpu) mode=cpu ;;
    --gpu) mode=gpu ;;
    --out) out="$2"; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "gpu.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
py="${PYTHON:-}"
if [[ -z $py ]]; then  # the first interpreter that has torch
  for cand in .venv/bin/python python3 python; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import torch' 2>/dev/null; then py=$cand; break; fi
  done
  [[ -n $py ]] || { echo "gpu.sh: no python with torch found (set PYTHON=...)" >&2; exit 2; }
fi
mkdir -p "$out"
if [[ $mode == auto ]]; then
  if "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then mode=gpu; else mode=cpu; fi
fi

status="$out/steps.tsv"
printf 'step\texit\tseconds\n' > "$status"
# step NAME LIMIT_S CMD...: run with a time limit (TERM, then KILL 20 s later), log to NAME.log, never abort the script.
step() {
  local name=$1 limit=$2 rc=0 t0=$SECONDS
  shift 2
  if [[ -n ${STEPS:-} && ",$STEPS,env," != *",$name,"* ]]; then return 0; fi
  echo "=== [$name] limit ${limit}s: $*"
  timeout -k 20 "$limit" "$@" 2>&1 | tee "$out/$name.log" || rc=${PIPESTATUS[0]}
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >> "$status"
  echo "=== [$name] exit $rc after $((SECONDS - t0)) s"
}

attack=(benchmarks/attack.py)
if [[ $mode == gpu ]]; then
  # ResNet-50 @ 224, the model of the throughput target. One surrogate is trained once
  # (synthetic fundus grades) and reused, so bf16, fp32 and the packing run attack the same model.
  # 512 images per protect() call, and gradient@2048: the same search over 2,048 images in one
  # call, as the packer batches them on a GPU (fixed costs and the tail shared by more images).
  model=(--arch resnet50 --size 224 --batch-size 256)
  train=(--train-seconds 60 --train-images 3000 --pool-factor 3)
  bf16=(--n 512 --large-n 2048 --budget 1000)
  fp32=(--n 128 --budget 1000)
  prof=(--n 32 --budget 200 --profile-n 16 --rate-seconds 0.5)
  pack=(--n 2048 --shard-size 256 --batch-size 2048)
  limits=(20 240 80 45 90 0 150)
else
  model=(--arch smallcnn --size 64 --batch-size 64 --threads 1)
  train=(--train-seconds 20 --train-images 300 --pool-factor 3 --lr 4e-3)
  bf16=(--n 8 --large-n 12 --budget 100 --rate-seconds 0.5)
  fp32=(--n 8 --budget 100 --rate-seconds 0.5)
  prof=(--n 4 --budget 60 --profile-n 4 --rate-seconds 0.3)
  pack=(--n 32 --batch-size 16)
  limits=(20 150 90 90 90 180 150)
fi
# The surrogate checkpoint stays out of the output folder (it is large, and results should
# come back small); a rerun on the same machine reuses it and skips training.
cache="${BENCH_CACHE:-runs/bench-cache}"  # outside the output folder: checkpoints are not results
mkdir -p "$cache"
ckpt="$cache/surrogate_${mode}_${model[1]}_${model[3]}.pt"
if [[ -f $ckpt ]]; then source_args=(--checkpoint "$ckpt"); else source_args=("${train[@]}" --save-checkpoint "$ckpt"); fi

step env "${limits[0]}" "$py" -c '
import platform, torch, torchvision
print("python", platform.python_version(), "| torch", torch.__version__, "| torchvision", torchvision.__version__)
print("cuda", torch.cuda.is_available(), torch.version.cuda, [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
'
# 1. The headline run: white-box gradient + black-box scan + BHE at one budget, bf16 search.
step attack_bf16 "${limits[1]}" "$py" "${attack[@]}" "${model[@]}" "${bf16[@]}" --amp bf16 \
  --optimizers gradient,blackbox,bhe --gradient-k 8 "${source_args[@]}" --out "$out/attack_bf16.json"
# 1b. Optional before/after on the same surrogate: BASELINE_SRC=DIR holds an older medlocker package.
if [[ -n ${BASELINE_SRC:-} && -f $ckpt ]]; then
  step attack_bf16_baseline "${limits[1]}" env PYTHONPATH="$BASELINE_SRC:$PYTHONPATH" "$py" "${attack[@]}" "${model[@]}" \
    "${bf16[@]}" --amp bf16 --optimizers gradient --checkpoint "$ckpt" --out "$out/attack_bf16_baseline.json"
fi
# 1c. The same with cuDNN autotuning (the ladder's batch shapes are tuned while priming).
if [[ -f $ckpt ]]; then
  step attack_bf16_cudnn "${limits[6]}" "$py" "${attack[@]}" "${model[@]}" "${bf16[@]}" --amp bf16 \
    --optimizers gradient --cudnn-benchmark --checkpoint "$ckpt" --out "$out/attack_bf16_cudnn.json"
fi
# 2. The same model and optimizers in fp32 (fewer images: about twice the model cost).
if [[ -f $ckpt ]]; then source_args=(--checkpoint "$ckpt"); fi
step attack_fp32 "${limits[2]}" "$py" "${attack[@]}" "${model[@]}" "${fp32[@]}" --amp none \
  --optimizers gradient,blackbox,bhe "${source_args[@]}" --out "$out/attack_fp32.json"
# 3. Where the time goes: host-device syncs by source line, cProfile, torch.profiler (CUDA kernels).
step profile_bf16 "${limits[3]}" "$py" "${attack[@]}" "${model[@]}" "${prof[@]}" --amp bf16 \
  --optimizers gradient "${source_args[@]}" --profile "$out/profile" --out "$out/profile_bf16.json"
# 4. The whole owner job: synthetic PNGs -> search -> render/encode/seal -> shards + signed manifest.
if "$py" -c 'import webdataset, cryptography' 2>/dev/null; then
  step pack "${limits[4]}" "$py" benchmarks/pack_speed.py --checkpoint "$ckpt" "${pack[@]}" --out "$out/pack.json"
else
  echo "=== [pack] skipped: webdataset or cryptography not importable (carry them as wheels)"
  printf 'pack\tskipped\t0\n' >> "$status"
fi
# 5. The engine's protection benchmark, quick mode (CPU-sized: it trains its own small model).
if [[ ${limits[5]} -gt 0 && -f benchmarks/protect.py ]]; then
  step protect_quick "${limits[5]}" "$py" benchmarks/protect.py --quick --out "$out/protect_quick.json"
fi

echo
"$py" "${attack[@]}" --summary "$out" || true
echo
column -t -s $'\t' "$status" 2>/dev/null || cat "$status"
echo "results in $out ($mode mode)"
