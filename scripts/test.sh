#!/usr/bin/env bash
# README command 2: set up, build, and run the whole test suite through CTest.
# Extra arguments go to ctest, e.g. `bash scripts/test.sh -L unit`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec ctest --preset default "$@"
