#!/usr/bin/env bash
# Create the separate virtual environment that benchmarks/peers/sheeprl_v3.py runs in.
#
#     bash benchmarks/peers/sheeprl_venv.sh [VENV_DIR]     # default /work/sheeprl-venv
#
# sheeprl is never a dependency of wmblocks: it lives only in this venv. torch is pinned
# to exactly the release of the project's own venv (/work/main/.venv, or $WMBLOCKS_PYTHON)
# so that both sides of the comparison run the same kernels; it is installed first, on
# its own, and every later install runs under a constraints file that pins it, so pip
# can neither upgrade it nor pull a CUDA build.
set -euo pipefail

VENV="${1:-/work/sheeprl-venv}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PROJECT_PY="${WMBLOCKS_PYTHON:-$ROOT/.venv/bin/python}"
SHEEPRL_VERSION="0.8.4"

# e.g. 2.13.0+cpu -> 2.13.0
TORCH_VERSION="$("$PROJECT_PY" -c 'import torch; print(torch.__version__.split("+")[0])')"
echo "torch pinned to ${TORCH_VERSION} (from ${PROJECT_PY})"

python3.11 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)

CONSTRAINTS="$VENV/torch-constraints.txt"
cat > "$CONSTRAINTS" <<EOF
torch==${TORCH_VERSION}
EOF

"${PIP[@]}" install --upgrade pip
# torch first, by itself: the machine's pip config serves the local CPU wheel.
"${PIP[@]}" install "torch==${TORCH_VERSION}"
# Then sheeprl with its declared dependencies, torch held by the constraints file.
"${PIP[@]}" install -c "$CONSTRAINTS" "sheeprl==${SHEEPRL_VERSION}"

# Refuse a venv in which anything CUDA slipped in or torch moved.
"$VENV/bin/python" - "$TORCH_VERSION" <<'EOF'
import sys
from importlib import metadata

import torch

want = sys.argv[1]
got = torch.__version__.split("+")[0]
assert got == want, f"torch {torch.__version__} != {want}"
cuda = sorted(
    d.metadata["Name"] for d in metadata.distributions()
    if d.metadata["Name"].lower().startswith(("nvidia-", "triton"))
)
assert not cuda, f"CUDA packages installed: {cuda}"
import lightning, hydra, sheeprl  # noqa: E401

print("torch", torch.__version__, "| lightning", lightning.__version__,
      "| hydra", hydra.__version__, "| sheeprl", metadata.version("sheeprl"))
EOF
echo "venv ready: $VENV"
