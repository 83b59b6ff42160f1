#!/usr/bin/env bash
# README command 1: set up, import Fashion-MNIST into HDF5 if needed, and train the
# default CNN (configs/fashion_mnist_cnn.json) on 2 MPI ranks. Extra arguments are
# config overrides, e.g. `bash scripts/demo.sh train.epochs=5`. Ends with the path of the
# run's HTML report (analysis/html_report.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck source=scripts/mpi-flags.sh
source scripts/mpi-flags.sh

DATA=data/fashion-mnist.h5
if [ ! -f "$DATA" ]; then
  mkdir -p data
  build/hpctrain import fashion-mnist --output "$DATA"
fi
NP=2
RUN_DIR=runs/fashion_mnist_cnn  # the config's default, unless overridden
for arg in "$@"; do
  case "$arg" in run.dir=*) RUN_DIR="${arg#run.dir=}" ;; esac
done
# shellcheck disable=SC2046
mpirun -np "$NP" $(mpi_flags "$NP") build/hpctrain train configs/fashion_mnist_cnn.json "$@"
# The run's report as one HTML page (plots embedded; opens without network).
echo "HTML report: $(.venv/bin/python analysis/html_report.py "$RUN_DIR")"
