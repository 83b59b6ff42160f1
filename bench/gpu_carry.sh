#!/usr/bin/env bash
# Packs what a GPU node without network or package manager needs to test and benchmark
# hpctrain (bench/gpu_node.sh there): Open MPI, parallel HDF5 and Boost as Debian debs
# (scripts/gather-deps.sh), the system libraries HDF5 links that such a node may lack
# (libcurl and its chain), Fashion-MNIST's idx files, and this machine's hpctrain, stripped.
# The binary runs against the node's PyTorch when it is the same LibTorch version and CUDA
# build as the one it was built with here (`hpctrain --version`); otherwise gpu_node.sh
# builds on the node.
#
#   bench/gpu_carry.sh [DIR]        (default .devcarry, about 60 MB; git-ignore it)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.devcarry}
mkdir -p "$dir/fashion" "$dir/fallback"
bash scripts/gather-deps.sh download "$dir/deps"
# Headers and static parts are only for building: dropped when a binary travels.
if [ -x build/hpctrain ]; then
  rm -f "$dir"/deps/debs/{libboost1.81-dev,libhdf5-openmpi-dev,googletest,libgtest-dev,zlib1g-dev,libopenmpi-dev}_*.deb
  strip -o "$dir/hpctrain" build/hpctrain
fi
cp /usr/share/datasets/fashion-mnist/*.gz "$dir/fashion/"
# Libraries of the binary that neither the debs nor LibTorch bring, except glibc's own.
skip='linux-vdso|ld-linux|libc\.so|libm\.so|libdl|libpthread|librt|libutil|libresolv|libstdc|libgcc_s|libmpi|libopen-|libhwloc|libevent|libhdf5|libsz|libaec|libboost|torch|nvidia|cuda|nccl|cudnn|libgomp'
if [ -x build/hpctrain ]; then
  ldd build/hpctrain | awk '/=> \// {print $3}' | grep -v -E "$skip" | while read -r lib; do cp -L "$lib" "$dir/fallback/"; done
fi
du -sh "$dir"
