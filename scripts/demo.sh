#!/usr/bin/env bash
# README command 1: set up, import Fashion-MNIST into HDF5 if needed, and train the
# default CNN (configs/fashion_mnist_cnn.json) on 2 MPI ranks. Extra arguments are
# config overrides, e.g. `bash scripts/demo.sh train.epochs=5`.
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
# shellcheck disable=SC2046
exec mpirun -np "$NP" $(mpi_flags "$NP") build/hpctrain train configs/fashion_mnist_cnn.json "$@"
