#!/usr/bin/env bash
# The GPU check as one prepared script, for a machine with CUDA and PyTorch but no network (such as a lent H100).
#
#   bash benchmarks/gpu_check.sh --wheels    here, once: the packages such a machine lacks, as wheels in .whl/
#   bash benchmarks/gpu_check.sh [ARGS]      there: installs .whl/ and ultra-prune offline, then runs
#                                            benchmarks/gpu_check.py ARGS (its table; exit 1 on any FAIL)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=(ultralytics==8.4.190 ultralytics-thop ultralytics-platform polars polars-runtime-32)

if [ "${1:-}" = --wheels ]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >>.git/info/exclude
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${WHEELS[@]}"
    ls -l .whl
    exit 0
fi

SITE=/tmp/ultra-prune-site
if [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" YOLO_OFFLINE=1 PYTHONUNBUFFERED=1
# ultra-prune itself from the checkout, with its entry points (no network, no build isolation)
"$PY" -m pip install -q --no-index --no-deps --no-build-isolation --target "$SITE" .
cd benchmarks && exec "$PY" gpu_check.py "$@"
