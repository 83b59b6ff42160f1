#!/usr/bin/env bash
# The sanitizer subset: the unit and MPI tests of the layers up to train/ built with AddressSanitizer and
# UndefinedBehaviorSanitizer in build-sanitize/ (preset sanitize; the tests carry the label
# sanitize, tests/CMakeLists.txt). Run after scripts/setup.sh; extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
TORCH_PREFIX=$("$VENV/bin/python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
cmake --preset sanitize -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" -DPython3_EXECUTABLE="$PWD/$VENV/bin/python" >/dev/null
cmake --build --preset sanitize -j "$(nproc)" --target test_util test_config test_launch test_io test_eval \
  test_checkpoint test_comm test_data test_models test_train >&2
exec ctest --preset sanitize "$@"
