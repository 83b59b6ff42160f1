# Sourced by the scripts: Open MPI flags this machine needs (root, fewer cores than ranks).
# shellcheck shell=bash
mpi_flags() {
  local np=$1 flags=()
  if [ "$(id -u)" -eq 0 ]; then flags+=(--allow-run-as-root); fi
  if [ "$(nproc)" -lt "$np" ]; then flags+=(--oversubscribe); fi
  echo "${flags[@]}"
}
