#!/usr/bin/env bash
# Device run 6: ResNet-50 surrogate (35 s), then pack 3,072 synthetic images (shards of 256, search batch 2048)
# with reader processes (the default on a GPU), with 2 threads only (before), and with 30 colour steps.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:${PYTHONPATH:-}"
o=${1:-/tmp/g6}; mkdir -p "$o"; ck=/tmp/r50.pt; n=${N:-3072}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$o/gpu.txt"
timeout 90 python3 benchmarks/attack.py --arch resnet50 --size 224 --batch-size 256 --n 64 --optimizers none \
  --train-seconds 35 --train-images 3000 --pool-factor 2 --rate-seconds 0.3 --save-checkpoint $ck --out "$o/train.json" 2>&1 | grep -v "^20" | tail -3
keep=/tmp/packsrc
timeout 150 python3 benchmarks/pack_speed.py --checkpoint $ck --n $n --shard-size 256 --batch-size 2048 --workers 14 --keep $keep --out "$o/pack_procs.json" 2>&1 | tail -3
timeout 120 python3 benchmarks/pack_speed.py --checkpoint $ck --n $n --shard-size 256 --batch-size 2048 --workers 14 --read-processes 0 --keep $keep --out "$o/pack_threads.json" 2>&1 | tail -3
timeout 200 python3 benchmarks/pack_speed.py --checkpoint $ck --n $n --shard-size 256 --batch-size 2048 --workers 14 --colour-steps 30 --keep $keep --out "$o/pack_colours30.json" 2>&1 | tail -3
