"""slurm/train-cpu.sbatch on a real (single-node) Slurm: 2 tasks with mpirun inside the
batch job; the run directory is named after the job, report.json holds the launcher's view.
Then preemption: SIGUSR1 to the batch shell (what --signal=B:USR1@120 sends) makes the ranks
checkpoint and exit 75, the script requeues the job, and the requeued job resumes."""
import glob
import os
import time

from slurmtest import FAST_CONFIG, SMALL, Checks, load_json, read, run, sbatch, wait, workdir

c = Checks()
script = os.path.join(os.environ.get("HPCTRAIN_SOURCE_DIR", "."), "slurm", "train-cpu.sbatch")

# --- a plain training job --------------------------------------------------------------
work = workdir("sbatch_train")
job = sbatch(["--ntasks=2", "--cpus-per-task=1", "--output=job-%j.out", script, FAST_CONFIG] + SMALL, work)
states = wait(job, 300)
log = read(os.path.join(work, f"job-{job}.out"))
c.check("the job completes with exit code 0", states.get(job) == ("COMPLETED", "0:0"), f"{states}\n{log[-3000:]}")
run_dir = os.path.join(work, "runs", f"slurm-{job}")
report = load_json(os.path.join(run_dir, "report.json")) or {}
world = report.get("world", {})
env = world.get("launch_environment", {})
c.check("the run directory is named after the job: runs/slurm-JOBID", bool(report), f"{os.listdir(work)}\n{log[-2000:]}")
c.check("2 ranks on 1 node, launched by mpirun inside the job",
        world.get("size") == 2 and world.get("nodes") == 1 and world.get("launcher") == "slurm+mpirun", str(world))
c.check("local ranks from MPI's shared-memory split; mpirun's ranks agree",
        world.get("local_rank_of_rank") == [0, 1] and world.get("launcher_rank_of_rank") == [0, 1]
        and world.get("launcher_local_rank_of_rank") == [0, 1], str(world))
c.check("threads per rank follow --cpus-per-task",
        world.get("threads_per_rank") == [1, 1] and world.get("threads_source") == "SLURM_CPUS_PER_TASK", str(world))
c.check("report.json records the job: id, node list, CPUs per task, tasks",
        env.get("SLURM_JOB_ID") == job and env.get("SLURM_JOB_NODELIST") and env.get("SLURM_CPUS_PER_TASK") == "1"
        and env.get("SLURM_NTASKS") == "2" and world.get("slurm_job") == f"slurm-{job}", str(env))

# --- preemption: USR1, checkpoint, exit 75, requeue, resume ------------------------------
work = workdir("sbatch_preempt")
job = sbatch(["--ntasks=2", "--cpus-per-task=1", "--output=job-%j.out", script, FAST_CONFIG] + SMALL +
             ["data.limit_train=12000", "train.epochs=2", "checkpoint.every_steps=10"], work)
checkpoints = os.path.join(work, "runs", f"slurm-{job}", "checkpoints")
deadline = time.monotonic() + 180
while time.monotonic() < deadline and not glob.glob(os.path.join(checkpoints, "step_*.h5")):
    time.sleep(0.2)
signalled = run(["scancel", "--signal=USR1", "--batch", job], work, 30)
c.check("scancel --signal=USR1 --batch reaches the running job", signalled.returncode == 0, signalled.stderr)
# A requeued job waits about two minutes before it is eligible again (Slurm's requeue
# delay); the test moves its begin time to now once it is pending.
deadline = time.monotonic() + 180
requeued = False
while time.monotonic() < deadline:
    p = run(["scontrol", "show", "job", "-o", job], work, 30)
    if "Restarts=1" in p.stdout and "JobState=PENDING" in p.stdout:
        # Only once the node has finished cleaning up the first run (no job completing on
        # it): relaunching the same job id earlier races slurmd's cleanup.
        node = run(["sinfo", "-h", "-N", "-o", "%t"], work, 30).stdout.split()
        if node != ["idle"]:
            time.sleep(0.5)
            continue
        time.sleep(2)
        run(["scontrol", "update", f"JobId={job}", "StartTime=now"], work, 30)
        requeued = True
        break
    if "JobState=COMPLETED" in p.stdout or "JobState=FAILED" in p.stdout:
        break
    time.sleep(0.5)
log = read(os.path.join(work, f"job-{job}.out"))
c.check("the ranks checkpoint, exit 75, and the script requeues the job",
        requeued and "preempted by SIGUSR1" in log and "requeueing job" in log, log[-3000:])
states = wait(job, 300)
log = read(os.path.join(work, f"job-{job}.out"))
report = load_json(os.path.join(work, "runs", f"slurm-{job}", "report.json")) or {}
c.check("the requeued job resumes from the checkpoint and completes",
        states.get(job) == ("COMPLETED", "0:0") and "resuming from" in log
        and report.get("training", {}).get("resumed_from") is not None and len(report.get("epochs", [])) == 2,
        f"{states}\n{log[-3000:]}")
c.check("report.json counts the restart (SLURM_RESTART_COUNT)",
        report.get("world", {}).get("launch_environment", {}).get("SLURM_RESTART_COUNT") == "1",
        str(report.get("world", {}).get("launch_environment")))
c.finish()
