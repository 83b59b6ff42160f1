# shellcheck shell=bash
# Sourced by the slurm/*.sbatch scripts (bash): the repository, the binary, threads per rank,
# and a launcher that lets Slurm's preemption signal reach the ranks and requeues a
# preempted job. Nothing site-specific: sites set partitions, accounts and modules on the
# sbatch command line or in the environment (docs/cluster.md).
#
# Environment a caller may set:
#   HPCTRAIN_HOME      the repository (default: the folder sbatch was called from); the job
#                      works in the folder sbatch was called from either way
#   HPCTRAIN           the executable (default: $HPCTRAIN_HOME/build/hpctrain, or an
#                      installed tree's PREFIX/bin/hpctrain, or hpctrain on PATH)
#   HPCTRAIN_LAUNCHER  mpirun (default) or srun (srun --mpi=pmix)
#   HPCTRAIN_PYTHON    Python for the analysis steps (default: $HPCTRAIN_HOME/.venv/bin/python,
#                      else python3)

# Sets LAUNCH to the mpirun or srun command line that starts NTASKS ranks of HPCTRAIN_CPUS
# cores each.
hpctrain_launcher() {
  local ntasks=$1
  if [ "${HPCTRAIN_LAUNCHER:-mpirun}" = srun ]; then
    # srun starts the ranks through PMIx and binds each to its task's CPUs.
    LAUNCH=(srun --mpi=pmix --ntasks="$ntasks" --cpus-per-task="$HPCTRAIN_CPUS" --cpu-bind=cores)
  elif [ "${HPCTRAIN_OVERSUBSCRIBE:-0}" = 1 ]; then
    # More ranks than the allocation has slots (a scaling study on one small node): no binding.
    LAUNCH=(mpirun -np "$ntasks" --oversubscribe --bind-to none)
  else
    # mpirun reads the allocation from Slurm; each rank is bound to its task's cores so that
    # LibTorch's threads stay on them (hpctrain sizes its thread pool from that mask).
    LAUNCH=(mpirun -np "$ntasks" --map-by "slot:PE=$HPCTRAIN_CPUS" --bind-to core)
  fi
  if [ "${LAUNCH[0]}" = mpirun ] && [ "$(id -u)" -eq 0 ]; then LAUNCH+=(--allow-run-as-root); fi
}

# Runs "$@" in the background and waits, passing SIGUSR1 and SIGTERM on to it: Slurm signals
# the batch shell (--signal=B:USR1@SECONDS), mpirun and srun forward the signal to the ranks,
# which write a checkpoint and exit with 75. A preempted job then requeues itself (same job
# id, same run directory) and resumes from that checkpoint (docs/checkpoints.md).
# Returns the command's exit status.
hpctrain_run() {
  "$@" &
  local child=$!
  trap 'kill -USR1 "$child" 2>/dev/null || true' USR1
  trap 'kill -TERM "$child" 2>/dev/null || true' TERM
  # wait returns early (status > 128) when a trapped signal arrives: wait again while the
  # child lives; a final wait then returns its exit status (bash keeps it once reaped).
  while kill -0 "$child" 2>/dev/null; do
    wait "$child" 2>/dev/null || true
  done
  local status=0
  wait "$child" || status=$?
  trap - USR1 TERM
  if [ "$status" -eq 75 ] && [ -n "${SLURM_JOB_ID:-}" ] && [ "${HPCTRAIN_REQUEUE:-1}" = 1 ]; then
    echo "hpctrain: preempted; requeueing job $SLURM_JOB_ID to resume from its checkpoint" >&2
    scontrol requeue "$SLURM_JOB_ID"
  fi
  return "$status"
}

# Imports the data set a config names when it is missing and is one hpctrain imports by name
# (fashion-mnist, mnist); any other missing file is left to hpctrain's own error message.
hpctrain_ensure_data() {
  local data
  data=$("$HPCTRAIN" config "$@" | "$HPCTRAIN_PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["data"]["path"])')
  [ -f "$data" ] && return 0
  local kind=""
  case "$(basename "$data")" in
    fashion-mnist*.h5 | fashion_mnist*.h5) kind=fashion-mnist ;;
    mnist*.h5) kind=mnist ;;
  esac
  [ -n "$kind" ] || return 0
  mkdir -p "$(dirname "$data")"
  echo "hpctrain: importing $kind into $data" >&2
  "$HPCTRAIN" import "$kind" --output "$data"
}

# True when the overrides "$@" already set KEY (e.g. run.dir).
hpctrain_has_override() {
  local key=$1
  shift
  local o
  for o in "$@"; do
    case "$o" in "$key="*) return 0 ;; esac
  done
  return 1
}

# Where things are. sbatch runs a copy of the script from Slurm's spool folder, so the
# repository is HPCTRAIN_HOME (default: the submission folder) and the job works in the
# submission folder: relative paths in configs (data, run directories) are relative to it.
HPCTRAIN_HOME=$(cd "${HPCTRAIN_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}" && pwd)
export HPCTRAIN_HOME
if [ ! -f "$HPCTRAIN_HOME/slurm/lib/job.sh" ]; then
  echo "hpctrain: $HPCTRAIN_HOME is not the hpctrain repository or an installed share/hpctrain: set HPCTRAIN_HOME" >&2
  exit 2
fi
cd "${SLURM_SUBMIT_DIR:-$PWD}" || exit 2
# The executable: HPCTRAIN, else the repository's build, else an installed tree's
# (HPCTRAIN_HOME is PREFIX/share/hpctrain there), else the one on PATH.
if [ -z "${HPCTRAIN:-}" ]; then
  for candidate in "$HPCTRAIN_HOME/build/hpctrain" "$HPCTRAIN_HOME/../../bin/hpctrain" "$(command -v hpctrain || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
      HPCTRAIN=$candidate
      break
    fi
  done
  HPCTRAIN=${HPCTRAIN:-$HPCTRAIN_HOME/build/hpctrain}
fi
if [ ! -x "$HPCTRAIN" ]; then
  echo "hpctrain: $HPCTRAIN is not built: run scripts/setup.sh in $HPCTRAIN_HOME (or set HPCTRAIN)" >&2
  exit 2
fi
if [ -z "${HPCTRAIN_PYTHON:-}" ]; then
  if [ -x "$HPCTRAIN_HOME/.venv/bin/python" ]; then
    HPCTRAIN_PYTHON=$HPCTRAIN_HOME/.venv/bin/python
  else
    HPCTRAIN_PYTHON=python3
  fi
fi
# Threads per rank follow the CPUs Slurm gave each task (hpctrain reads SLURM_CPUS_PER_TASK
# too; OpenMP regions outside LibTorch's pool read this).
HPCTRAIN_CPUS=${SLURM_CPUS_PER_TASK:-1}
export OMP_NUM_THREADS=$HPCTRAIN_CPUS
