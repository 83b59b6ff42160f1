#!/usr/bin/env bash
# For GPU nodes and air-gapped clusters that have CUDA, CMake, ninja and a PyTorch (whose
# LibTorch hpctrain builds against) but no package manager and no network: the Debian 12
# packages of Open MPI, parallel HDF5, Boost.JSON and GoogleTest (about 25 MB) gathered on a
# machine with apt, carried over, and unpacked into a folder the build is pointed at.
#
#   scripts/gather-deps.sh download [DIR]   on a Debian 12 machine: the .debs into DIR/debs
#   scripts/gather-deps.sh unpack [DIR]     on the node: unpack into DIR/root, write DIR/env.sh
#   source DIR/env.sh                       PATH, LD_LIBRARY_PATH, OPAL_PREFIX, CMake hints
#   cmake --preset default $HPCTRAIN_DEPS_CMAKE_ARGS \
#         -DCMAKE_PREFIX_PATH="$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')"
#
# DIR defaults to deps/ (git-ignored). The libraries are Debian 12's (glibc 2.36): they run
# on Debian 12 and newer, Ubuntu 22.04 and newer, RHEL 9 and newer.
set -euo pipefail

PACKAGES=(
  # Open MPI and what its libraries load
  openmpi-bin openmpi-common libopenmpi3 libopenmpi-dev libpmix2 libevent-core-2.1-7 libevent-pthreads-2.1-7
  libhwloc15 libfabric1 libucx0 libibverbs1 librdmacm1 libnl-3-200 libnl-route-3-200 libpsm2-2
  libpsm-infinipath1 libmunge2 libnuma1 libltdl7 libpciaccess0 libgfortran5
  # parallel HDF5
  libhdf5-openmpi-103-1 libhdf5-openmpi-dev libhdf5-openmpi-hl-100 libhdf5-openmpi-cpp-103-1
  libhdf5-openmpi-hl-cpp-100 libhdf5-openmpi-fortran-102 libhdf5-openmpi-hl-fortran-100 libsz2 libaec0
  zlib1g-dev
  # Boost.JSON (headers and library)
  libboost1.81-dev libboost-json1.81-dev libboost-json1.81.0 libboost-container1.81-dev
  libboost-container1.81.0 libboost-system1.81-dev
  # the command line (header-only)
  libcli11-dev
  # the test suite
  googletest libgtest-dev
)

mode=${1:-}
dir=${2:-deps}

case "$mode" in
  download)
    command -v apt-get >/dev/null || {
      echo "gather-deps: download needs apt-get (a Debian 12 machine)" >&2
      exit 2
    }
    mkdir -p "$dir/debs"
    (cd "$dir/debs" && apt-get download "${PACKAGES[@]}")
    du -sh "$dir/debs" >&2
    echo "gather-deps: carry $dir/debs to the node, then: scripts/gather-deps.sh unpack $dir" >&2
    ;;
  unpack)
    [ -d "$dir/debs" ] || {
      echo "gather-deps: $dir/debs missing: run 'scripts/gather-deps.sh download $dir' where apt works" >&2
      exit 2
    }
    root=$(mkdir -p "$dir/root" && cd "$dir/root" && pwd)
    for deb in "$dir"/debs/*.deb; do dpkg-deb -x "$deb" "$root" 2>/dev/null || {
      # No dpkg on the node: a .deb is an ar archive holding data.tar.*.
      tmp=$(mktemp -d)
      (cd "$tmp" && ar x "$OLDPWD/$deb" && tar -xf data.tar.* -C "$root")
      rm -rf "$tmp"
    }; done
    lib=$root/usr/lib/x86_64-linux-gnu
    # Debian names mpirun, mpicc, h5pcc ... through update-alternatives at install time.
    for tool in "$root"/usr/bin/*.openmpi; do
      [ -e "$tool" ] && ln -sfn "$(basename "$tool")" "${tool%.openmpi}"
    done
    # Debian's unversioned .so links are absolute (/usr/lib/...): point them into the tree.
    find "$root" -type l | while read -r link; do
      target=$(readlink "$link")
      case "$target" in /*) ln -sfn "$root$target" "$link" ;; esac
    done
    cat >"$dir/env.sh" <<EOF
# Written by scripts/gather-deps.sh: the unpacked Open MPI, parallel HDF5 and Boost.
export PATH="$root/usr/bin:\$PATH"
export LD_LIBRARY_PATH="$lib:$lib/openmpi/lib:$lib/hdf5/openmpi\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
# Open MPI finds its components, help texts and wrapper data under OPAL_PREFIX.
export OPAL_PREFIX="$root/usr"
export OPAL_LIBDIR="$lib/openmpi/lib"
export OPAL_DATADIR="$root/usr/share/openmpi"
export OPAL_PKGDATADIR="$root/usr/share/openmpi"
# PMIx looks for its plugins under its build-time prefix: a PMIx of another version
# installed there (some images carry one) would be loaded instead and fail.
export PMIX_INSTALL_PREFIX="$root/usr"
export PMIX_MCA_mca_base_component_path="$lib/pmix2/lib/pmix"
export HPCTRAIN_DEPS_CMAKE_ARGS="-DMPI_C_COMPILER=$root/usr/bin/mpicc -DHDF5_ROOT=$lib/hdf5/openmpi \
-DHDF5_C_COMPILER_EXECUTABLE=HDF5_C_COMPILER_EXECUTABLE-NOTFOUND -DHDF5_INCLUDE_DIRS=$root/usr/include/hdf5/openmpi -DBoost_ROOT=$root/usr -DBoost_INCLUDE_DIR=$root/usr/include \
-DGTest_ROOT=$root/usr -DCLI11_DIR=$root/usr/share/cmake/CLI11 -DCMAKE_LIBRARY_PATH=$lib -DCMAKE_INCLUDE_PATH=$root/usr/include"
EOF
    echo "gather-deps: unpacked into $root; now: source $dir/env.sh" >&2
    ;;
  *)
    echo "usage: scripts/gather-deps.sh download|unpack [DIR]" >&2
    exit 2
    ;;
esac
