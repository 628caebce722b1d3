#!/usr/bin/env bash
# The serving benchmarks on a CUDA GPU, in half precision, one after another; prints each
# one's table and MET/MISSED lines.
#
#   bash bench/gpu.sh                 # full runs
#   QUICK=1 bash bench/gpu.sh         # every script's --quick mode (a smoke run)
#   DEVICE=cuda:1 DTYPE=float16 bash bench/gpu.sh
#
# Needs the project's venv (.venv, or PYTHON=...) with a CUDA build of torch. It installs
# nothing but the project's own "bench" extra (CTranslate2, for bench/peers.py), and only
# when CTranslate2 is missing. DTYPE defaults to bfloat16 where the GPU supports it, else
# float16. Runs, on DEVICE: generation.py, many_accounts.py (when present), peers.py,
# open_loop.py, discord_burst.py and serving_while_training.py (the training runs on the GPU
# beside the engine). Exit status 0 only if every script ran and met its targets.
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-}

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "bench/gpu.sh: torch in $PYTHON sees no CUDA GPU (install a CUDA build of torch)" >&2
    exit 2
fi
DTYPE=${DTYPE:-$("$PYTHON" -c "import torch; print('bfloat16' if torch.cuda.is_bf16_supported() else 'float16')")}
if ! "$PYTHON" -c "import ctranslate2" 2>/dev/null; then
    echo "installing the project's bench extra (ctranslate2) for bench/peers.py"
    "$PYTHON" -m pip install --quiet -e ".[bench]" || exit 2
fi
"$PYTHON" -c "import torch; print(f'GPU: {torch.cuda.get_device_name(\"$DEVICE\")}, torch {torch.__version__}, dtype $DTYPE')"

status=0
run() {
    local script=$1
    shift
    [ -f "bench/$script" ] || { echo "(bench/$script not here: skipped)"; return; }
    local options=(--device "$DEVICE")
    "$PYTHON" "bench/$script" --help | grep -q -- "--dtype" && options+=(--dtype "$DTYPE")
    [ -n "$QUICK" ] && options+=(--quick)
    echo
    echo "=== bench/$script ${options[*]} $*"
    "$PYTHON" "bench/$script" "${options[@]}" "$@" || status=1
}

run generation.py
run many_accounts.py
run peers.py
run open_loop.py
run discord_burst.py
run serving_while_training.py
exit $status
