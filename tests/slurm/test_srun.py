"""Ranks started by srun on a real Slurm: `srun --mpi=pmix -n 2 hpctrain train` joins them into
one MPI job through PMIx; plain `srun -n 2` (no MPI plugin) is refused with a message before
MPI starts, on every task, instead of two ranks training alone. slurm/train-gpu.sbatch (srun
inside the job) is submitted with its GPU options overridden, as a CPU node runs it."""
import os

from slurmtest import BIN, FAST_CONFIG, SMALL, Checks, load_json, read, run, sbatch, wait, workdir

c = Checks()
source = os.environ.get("HPCTRAIN_SOURCE_DIR", ".")
work = workdir("srun")
p = run(["srun", "--mpi=pmix", "-n", "2", "--cpus-per-task=1", BIN, "train", FAST_CONFIG] + SMALL, work, 300)
runs = os.listdir(os.path.join(work, "runs")) if os.path.isdir(os.path.join(work, "runs")) else []
c.check("srun --mpi=pmix -n 2 hpctrain train exits 0", p.returncode == 0, p.stdout[-1500:] + p.stderr[-2500:])
report = load_json(os.path.join(work, "runs", runs[0], "report.json")) if len(runs) == 1 else None
world = (report or {}).get("world", {})
c.check("one run directory named after the job step's job", len(runs) == 1 and runs[0].startswith("slurm-"), str(runs))
c.check("one MPI world of 2 ranks launched by srun; PMIx ranks agree with MPI's",
        world.get("size") == 2 and world.get("launcher") == "slurm+srun" and world.get("launcher_rank_of_rank") == [0, 1]
        and world.get("local_rank_of_rank") == [0, 1], str(world))
c.check("threads from --cpus-per-task", world.get("threads_per_rank") == [1, 1]
        and world.get("threads_source") == "SLURM_CPUS_PER_TASK", str(world))

p = run(["srun", "--mpi=none", "-n", "2", BIN, "train", FAST_CONFIG] + SMALL, work, 120)
c.check("srun without an MPI plugin: exit 2 and a message naming --mpi=pmix, no MPI error stack",
        p.returncode != 0 and p.stderr.count("srun --mpi=pmix") == 1 and "MPI_Init" not in p.stderr
        and "exit code 2" in p.stderr, p.stderr[-2500:])

# train-gpu.sbatch: its #SBATCH sizes are for GPU nodes; a site (here: a CPU test node)
# overrides them on the command line.
job = sbatch(["--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=0", "--cpus-per-task=1", "--output=gpu-%j.out",
              os.path.join(source, "slurm", "train-gpu.sbatch"), FAST_CONFIG] + SMALL, work)
states = wait(job, 300)
log = read(os.path.join(work, f"gpu-{job}.out"))
report = load_json(os.path.join(work, "runs", f"slurm-{job}", "report.json")) or {}
world = report.get("world", {})
c.check("train-gpu.sbatch: srun --mpi=pmix inside the job, 2 ranks, completes",
        states.get(job) == ("COMPLETED", "0:0") and world.get("size") == 2 and world.get("launcher") == "slurm+srun",
        f"{states}\n{world}\n{log[-2500:]}")
c.finish()
