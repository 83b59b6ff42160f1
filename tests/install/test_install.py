#!/usr/bin/env python3
"""`cmake --install` into a temporary prefix gives the layout a cluster's module tree expects,
and what is installed works on its own: the installed binary runs, the installed Slurm
script trains with it (run as a plain script, as app_sbatch_local does with the repository's),
and the modulefile points at the prefix.

    test_install.py BUILD_DIR
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import FASHION, SOURCE, Checks  # noqa: E402

build = os.path.abspath(sys.argv[1])
c = Checks()
prefix = tempfile.mkdtemp(prefix="hpctrain_install_")
try:
    r = subprocess.run(["cmake", "--install", build, "--prefix", prefix], capture_output=True, text=True)
    c.check("cmake --install into a temporary prefix", r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:])
    home = os.path.join(prefix, "share", "hpctrain")
    binary = os.path.join(prefix, "bin", "hpctrain")
    expected = [binary, os.path.join(home, "slurm", "train-cpu.sbatch"), os.path.join(home, "slurm", "train-gpu.sbatch"),
                os.path.join(home, "slurm", "lib", "job.sh"), os.path.join(home, "configs", "fashion_mnist_cnn.json"),
                os.path.join(home, "analysis", "plot_run.py"), os.path.join(home, "jobs", "submit.py"),
                os.path.join(prefix, "share", "doc", "hpctrain", "config.md")]
    missing = [p for p in expected if not os.path.exists(p)]
    c.check("bin/, share/hpctrain/{slurm,configs,analysis,jobs} and share/doc/hpctrain are installed", not missing,
            f"missing: {missing}")
    c.check("the Slurm scripts stay executable", os.access(os.path.join(home, "slurm", "train-cpu.sbatch"), os.X_OK))
    modules = os.path.join(prefix, "share", "modulefiles", "hpctrain")
    lua = [f for f in os.listdir(modules)] if os.path.isdir(modules) else []
    text = open(os.path.join(modules, lua[0])).read() if lua else ""
    c.check("an Lmod modulefile sets PATH and HPCTRAIN_HOME to the prefix",
            len(lua) == 1 and f'prepend_path("PATH", "{prefix}/bin")' in text
            and f'setenv("HPCTRAIN_HOME", "{prefix}/share/hpctrain")' in text, text)

    # The installed binary, away from the build tree and the sources.
    env = {k: v for k, v in os.environ.items() if k not in ("HPCTRAIN", "HPCTRAIN_BIN", "HPCTRAIN_HOME")}
    v = subprocess.run([binary, "--version"], capture_output=True, text=True, cwd=prefix, env=env)
    c.check("the installed binary runs (--version)", v.returncode == 0 and "LibTorch" in v.stdout,
            v.stdout + v.stderr)
    docs = subprocess.run([binary, "config", "--docs"], capture_output=True, text=True, cwd=prefix, env=env)
    c.check("its config reference is the installed docs/config.md",
            docs.returncode == 0 and docs.stdout == open(os.path.join(prefix, "share", "doc", "hpctrain",
                                                                      "config.md")).read())

    # The installed sbatch script, with the module's environment, finds the installed binary.
    work = tempfile.mkdtemp(prefix="hpctrain_install_run_")
    run_dir = os.path.join(work, "run")
    env_module = dict(env, HPCTRAIN_HOME=home, PATH=os.path.join(prefix, "bin") + os.pathsep + env.get("PATH", ""),
                      OMPI_MCA_rmaps_base_oversubscribe="1")
    args = ["bash", os.path.join(home, "slurm", "train-cpu.sbatch"), os.path.join(home, "configs",
                                                                                  "fashion_mnist_cnn.json"),
            "data.path=" + FASHION, "data.limit_train=2000", "data.verify_hashes=false", "train.epochs=1",
            "model.channels=[8]", "model.fc_width=32", "train.batch_size=64", "run.dir=" + run_dir]
    t = subprocess.run(args, cwd=work, env=env_module, capture_output=True, text=True, timeout=300)
    report = json.load(open(os.path.join(run_dir, "report.json"))) if t.returncode == 0 else {}
    c.check("the installed train-cpu.sbatch trains with the installed binary on 2 ranks",
            t.returncode == 0 and report.get("world", {}).get("size") == 2 and len(report.get("epochs", [])) == 1,
            t.stdout[-1500:] + t.stderr[-1500:])
    shutil.rmtree(work, ignore_errors=True)
finally:
    shutil.rmtree(prefix, ignore_errors=True)
c.finish()
