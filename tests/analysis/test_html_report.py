"""analysis/html_report.py on a real run, cross-validation and search made here with the
built binary on the test data, each page opened in headless Chromium: its sections are in
the rendered DOM, it logs nothing to the console, references nothing outside itself, and
its screenshot is not blank. Skips (77) without Chromium."""
import base64
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import FASHION, SOURCE, Checks, mpirun  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM:
    print("chromium not installed (Debian package chromium, scripts/setup.sh): skipped")
    sys.exit(77)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

c = Checks()
tmp = tempfile.mkdtemp(prefix="hpctrain_html_")
QUICK = ["data.path=" + FASHION, "data.verify_hashes=false", "data.limit_train=512", "train.epochs=2",
         "run.progress=none"]


def chromium(*args):
    # Its own profile folder: a second Chromium would otherwise hand the page to the first.
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           "--user-data-dir=" + os.path.join(tmp, "profile"), "--enable-logging=stderr", "--v=0"]
                          + list(args), capture_output=True, text=True, timeout=120)


def console_messages(stderr):
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def render(run_dir, name):
    out = os.path.join(tmp, name + ".html")
    p = subprocess.run([sys.executable, os.path.join(SOURCE, "analysis", "html_report.py"), run_dir, "-o", out],
                       capture_output=True, text=True, timeout=300)
    c.check(f"{name}: html_report exits 0", p.returncode == 0, p.stdout + p.stderr)
    return out


def check_page(path, name, sections):
    if not os.path.isfile(path):
        c.check(f"{name}: page written", False, path)
        return
    page = open(path).read()
    external = re.findall(r'(?:src|href)\s*=\s*"(?!data:|#)[^"]*"', page)
    c.check(f"{name}: the page references no other file or address", not external, str(external[:5]))
    dom = chromium("--dump-dom", "file://" + path)
    shown = set(re.findall(r'<section id="([a-z-]+)"', dom.stdout))
    c.check(f"{name}: Chromium renders the sections {sections}", set(sections) <= shown,
            f"rendered: {sorted(shown)}\n{dom.stderr[-2000:]}")
    c.check(f"{name}: no console messages", not console_messages(dom.stderr), "\n".join(console_messages(dom.stderr)))
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    decoded = [base64.b64decode(x) for x in images]
    c.check(f"{name}: {len(images)} plots, each an embedded PNG", images and all(
        d.startswith(b"\x89PNG\r\n\x1a\n") and len(d) > 1000 for d in decoded))
    shot = os.path.join(tmp, name + ".png")
    chromium("--screenshot=" + shot, "--window-size=1200,1600", "file://" + path)
    if not os.path.isfile(shot):
        c.check(f"{name}: screenshot written", False, shot)
        return
    pixels = plt.imread(shot)[..., :3]
    dark = float((pixels.mean(axis=2) < 0.9).mean())
    c.check(f"{name}: the screenshot is not blank (std {pixels.std():.3f}, {100 * dark:.1f}% non-white pixels)",
            pixels.std() > 0.05 and dark > 0.01)


# The console check must see a page's console: a page that logs an error is caught.
bad = os.path.join(tmp, "bad.html")
with open(bad, "w") as f:
    f.write('<html><body><script>console.error("hpctrain-test-error")</script></body></html>')
c.check("the console check sees a page's console.error",
        any("hpctrain-test-error" in m for m in console_messages(chromium("--dump-dom", "file://" + bad).stderr)))

# A plain run: 2 ranks, 2 epochs.
run_dir = os.path.join(tmp, "run")
r = mpirun(2, ["train", os.path.join(SOURCE, "configs", "fashion_mnist_cnn.json"), "run.dir=" + run_dir,
               "run.log_every=2"] + QUICK, timeout=300)
c.check("the run finishes", r.rc == 0, r.text[-3000:])
check_page(render(run_dir, "run"), "run", ["summary", "recommendations", "learning-curves", "step-time", "memory",
                                           "confusion", "per-class", "system"])

# A 2-fold cross-validation.
cv_dir = os.path.join(tmp, "cv")
r = mpirun(2, ["train", os.path.join(SOURCE, "configs", "fashion_mnist_cnn_cv.json"), "run.dir=" + cv_dir,
               "cv.folds=2", "cv.final_retrain=false"] + QUICK, timeout=300)
c.check("the cross-validation finishes", r.rc == 0, r.text[-3000:])
check_page(render(cv_dir, "cv"), "cv", ["folds", "fold-plots", "confusion", "per-class"])
if os.path.isfile(os.path.join(tmp, "cv.html")):
    page = open(os.path.join(tmp, "cv.html")).read()
    c.check("cv: the fold table has the 95% CI columns", "95% CI low" in page and "95% CI high" in page)

# A grid search of 4 trials, 2 folds each, with its final retrain.
search_dir = os.path.join(tmp, "search")
r = mpirun(2, ["train", os.path.join(SOURCE, "configs", "fashion_mnist_search.json"), "run.dir=" + search_dir,
               "cv.folds=2", "train.epochs=1"] + QUICK[:3] + QUICK[4:], timeout=600)
c.check("the search finishes", r.rc == 0, r.text[-3000:])
check_page(render(search_dir, "search"), "search", ["leaderboard", "best-trial", "final-summary",
                                                    "final-recommendations", "final-learning-curves"])

# Something that is no run directory is named.
p = subprocess.run([sys.executable, os.path.join(SOURCE, "analysis", "html_report.py"), tmp], capture_output=True,
                   text=True)
c.check("a folder with no report is refused, naming what it lacks",
        p.returncode != 0 and "no report.json, cv_report.json or search_report.json" in p.stderr,
        p.stderr)

if c.failed == []:
    shutil.rmtree(tmp, ignore_errors=True)
c.finish()
