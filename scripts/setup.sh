#!/usr/bin/env bash
# Installs everything hpctrain needs, then configures and builds build/. Idempotent: what
# is present is skipped, so a second run only rebuilds what changed.
#   Debian packages: compilers, CMake, Open MPI, parallel HDF5, Boost.JSON, GoogleTest,
#                    ccache, the Fashion-MNIST data set, and Slurm with munge and
#                    ShellCheck for the `slurm` tests (no daemon is started or configured:
#                    the tests run their own throwaway cluster), iproute2 for the `nodes`
#                    tests' two-node cluster of network namespaces, Chromium to open the
#                    HTML report headless in its test.
#   .venv:           the pinned torch wheel (LibTorch), h5py, numpy, matplotlib, tensorboard.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

APT_PACKAGES=(build-essential cmake ninja-build pkg-config git ccache python3 python3-venv
  libopenmpi-dev openmpi-bin libhdf5-openmpi-dev hdf5-tools libboost-json1.81-dev zlib1g-dev libcli11-dev
  googletest libgtest-dev libgmock-dev dataset-fashion-mnist
  slurm-wlm munge shellcheck iproute2 chromium)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  log "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# Python environment with the pinned torch wheel; a stamp of the requirements skips pip
# when nothing changed.
VENV=.venv
stamp="$VENV/.requirements.sha256"
want=$(sha256sum scripts/requirements.txt | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing Python packages (torch wheel: about 3 GB with its CUDA libraries on the first run)"
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q -r scripts/requirements.txt >&2
  echo "$want" > "$stamp"
fi
TORCH_PREFIX=$("$VENV/bin/python" -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)

# Configure (cheap when the cache is current) and build.
if [ ! -f build/CMakeCache.txt ] || ! grep -q "^CMAKE_PREFIX_PATH:.*=$TORCH_PREFIX\$" build/CMakeCache.txt; then
  log "configuring build/ (LibTorch from $TORCH_PREFIX)"
  cmake --preset default -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" \
    -DPython3_EXECUTABLE="$PWD/$VENV/bin/python" >/tmp/hpctrain-configure.$$.log 2>&1 || {
    cat /tmp/hpctrain-configure.$$.log >&2
    exit 1
  }
fi
log "building (ccache keeps rebuilds fast)"
cmake --build --preset default -j "$(nproc)" >&2
log "ready: build/hpctrain"
