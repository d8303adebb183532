#!/usr/bin/env bash
# Issue 15's checks on a GPU in one run, prepared for the device machine (a lent H100 /
# H200; see docs/benchmarks.md, "On a GPU"). From the repository root:
#
#   device run, carry [".whl"]:  bash benchmarks/gpu_check.sh
#   here, the same steps on the CPU at a small size (checks the script itself):
#     DEVICE=cpu SIZE=debug BIG=debug REPS=2 PY=.venv/bin/python OUT=/tmp/gc bash benchmarks/gpu_check.sh
#
# 1. installs the wheels in .whl/ when tensordict, torchrl or gymnasium is missing (the
#    device's Python has torch but not these; `make gpu-wheels` fetches them);
# 2. the CUDA tests: the compiled V3 update equals eager and never synchronises, and
#    the policy acts on CUDA (the CPU tests are CI's);
# 3. the update timings of bench_update.py: size SIZE (1m) vector, eager and compiled,
#    fp32 and bf16, then size BIG (12m) from 64x64 pixels, compiled bf16.
# Logs go to $OUT (the device tool brings them back).
set -uo pipefail
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-1m}
BIG=${BIG:-12m}
REPS=${REPS:-20}
PY=${PY:-python3}
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

if ! $PY -c "import tensordict, torchrl, gymnasium" 2>/dev/null; then
    if ! ls .whl/*.whl >/dev/null 2>&1; then
        echo "tensordict, torchrl or gymnasium is missing and .whl/ holds no wheels: run" \
            "'make gpu-wheels' here and carry .whl" >&2
        exit 2
    fi
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 2
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

$PY - <<'EOF' 2>&1 | tee "$OUT/versions.txt"
import torch, tensordict, torchrl, gymnasium
print("torch", torch.__version__, "| cuda", torch.version.cuda, torch.cuda.is_available(),
      "| tensordict", tensordict.__version__, "| torchrl", torchrl.__version__,
      "| gymnasium", gymnasium.__version__)
if torch.cuda.is_available():
    print(torch.cuda.get_device_name(), torch.cuda.get_device_properties(0).total_memory >> 30, "GiB")
EOF

$PY -m pytest -q -p no:warnings -p no:cacheprovider -rs \
    tests/train/test_speed.py tests/train/test_policy.py -k cuda \
    2>&1 | tee "$OUT/tests.log" | tail -n 15

bench() {
    echo "+ bench_update.py $*" | tee -a "$OUT/bench.log"
    $PY benchmarks/bench_update.py --device "$DEVICE" --reps "$REPS" "$@" 2>&1 \
        | tee -a "$OUT/bench.log" | tail -n 1
}
for compile in off on; do
    for precision in fp32 bf16; do
        bench --size "$SIZE" --discrete --compile "$compile" --precision "$precision"
    done
done
bench --size "$BIG" --obs 0 --image 3 --discrete --compile on --precision bf16
