#!/usr/bin/env bash
# Device run 7: the CPU preset's protection report on the GPU with 224 px classifier input (no 64 px downsample),
# colour steps under the JPEG75/resize0.5/median3 views. Results tarred into $1.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:${PYTHONPATH:-}"
o=${1:-/tmp/g7}; mkdir -p "$o"; r=/tmp/r224
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$o/gpu.txt"
timeout ${LIMIT:-400} python3 benchmarks/report.py --cpu --epochs 10 --model-size 224 --device cuda --no-progress \
  --colour-eot jpeg75,resize0.5,median3 --colour-cell 4 --logo-shrink 0.7 --out $r 2>&1 | grep -v "^20.*INFO" | tail -45
echo "report exit ${PIPESTATUS[0]}"
(cd $r && tar czf "$o/report224.tgz" --exclude=models --exclude='*.npz' .)
ls -la "$o"
