#!/usr/bin/env bash
# The GPU checks and figures for one short session on a machine with a CUDA device (a few minutes):
# the CUDA tests, then train_step.py and epoch.py on the GPU. Run from the repository root; needs only
# python3 with a CUDA torch, numpy and pyyaml (the core imports nothing else), installs nothing.
# Logs go to $OUT (or ./device-out); record the figures beside the CPU ones in the README.
set -uo pipefail
out="${OUT:-device-out}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 DLF_HOME="$(mktemp -d)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$out/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$out/cuda-tests.txt"
python3 benchmarks/train_step.py --device cuda --lanes 1 --repeats 5 2>&1 | tee "$out/train-step.txt"
python3 benchmarks/epoch.py --device cuda --lanes 1 --epochs 3 2>&1 | tee "$out/epoch.txt"
