"""slurm/scaling.sbatch on a real Slurm: one allocation of 2 tasks trains on 1 and 2 ranks
(HPCTRAIN_RANKS), then runs analysis/scaling.py on the study; the table and plots land in
runs/scaling-JOBID/analysis."""
import os

from slurmtest import ENV, FAST_CONFIG, SMALL, Checks, read, sbatch, wait, workdir

c = Checks()
source = os.environ.get("HPCTRAIN_SOURCE_DIR", ".")
work = workdir("sbatch_scaling")
env = dict(ENV, HPCTRAIN_RANKS="1 2", HPCTRAIN_REPEATS="1")
job = sbatch(["--ntasks=2", "--cpus-per-task=1", "--output=scaling-%j.out",
              os.path.join(source, "slurm", "scaling.sbatch"), FAST_CONFIG] + SMALL, work, env)
states = wait(job, 400)
log = read(os.path.join(work, f"scaling-{job}.out"))
c.check("the scaling job completes", states.get(job) == ("COMPLETED", "0:0"), f"{states}\n{log[-3000:]}")
study = os.path.join(work, "runs", f"scaling-{job}")
c.check("one run per rank count", all(os.path.isfile(os.path.join(study, f"{n}r-0", "report.json")) for n in (1, 2)),
        str(os.listdir(study) if os.path.isdir(study) else work))
csv = read(os.path.join(study, "analysis", "scaling.csv")).strip().splitlines()
c.check("scaling.csv: rows for 1 and 2 ranks", len(csv) == 3 and csv[1].startswith("1,") and csv[2].startswith("2,"),
        "\n".join(csv))


def png(name):
    path = os.path.join(study, "analysis", name)
    return os.path.isfile(path) and open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


c.check("speed-up, efficiency, phase and learning-curve plots",
        all(png(p) for p in ("speedup.png", "efficiency.png", "phases.png", "learning_curves.png")),
        str(os.listdir(study)))
c.finish()
