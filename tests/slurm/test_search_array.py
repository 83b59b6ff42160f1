"""slurm/search-array.sbatch as a job array of 2 tasks on a real Slurm: each task runs one of
the 2 trials of a grid search (search.shard of search.shards), the first task submits the
merge job (--dependency=afterany on the array), and the merged leaderboard ranks both trials."""
import json
import os
import time

from slurmtest import FAST_CONFIG, SMALL, Checks, load_json, read, sbatch, wait, workdir

c = Checks()
source = os.environ.get("HPCTRAIN_SOURCE_DIR", ".")
work = workdir("search_array")
space = json.dumps({"optimizer.lr": [0.05, 0.2]}, separators=(",", ":"))
array = sbatch(["--array=0-1", "--ntasks=1", "--cpus-per-task=1", "--output=search-%A_%a.out",
                os.path.join(source, "slurm", "search-array.sbatch"), FAST_CONFIG] + SMALL +
               ["search.method=grid", "search.space=" + space, "search.scoring=holdout", "data.val_fraction=0.2"], work)
states = wait(array, 400)
logs = "\n".join(read(os.path.join(work, f"search-{array}_{t}.out"))[-1500:] for t in (0, 1))
c.check("both array tasks complete", [states.get(f"{array}_{t}") for t in (0, 1)] == [("COMPLETED", "0:0")] * 2,
        f"{states}\n{logs}")
search_dir = os.path.join(work, "runs", f"search-{array}")
merge_id_file = os.path.join(search_dir, ".merge-submitted", "job_id")
merge = read(merge_id_file).strip()
c.check("one merge job was submitted by the array", merge.isdigit(), merge)
if merge.isdigit():
    merged = wait(merge, 120)
    merge_log = read(os.path.join(search_dir, f"merge-{merge}.out"))
    c.check("the merge job ran after the array and completed", merged.get(merge) == ("COMPLETED", "0:0"),
            f"{merged}\n{merge_log[-2000:]}")
shards = [load_json(os.path.join(search_dir, f"shard-{t}", "search_report.json")) or {} for t in (0, 1)]
c.check("each task ran its shard: one trial each",
        [(s.get("shards"), s.get("shard"), len(s.get("leaderboard", []))) for s in shards] == [(2, 0, 1), (2, 1, 1)],
        str([(s.get("shards"), s.get("shard")) for s in shards]))
report = load_json(os.path.join(search_dir, "search_report.json")) or {}
board = report.get("leaderboard", [])
c.check("the merged leaderboard ranks both trials, both ok",
        sorted(b.get("trial") for b in board) == [0, 1] and all(b.get("status") == "ok" for b in board)
        and report.get("shards") == 2 and report.get("shards_reported") == 2, json.dumps(board)[:2000])
scores = [b.get("mean") for b in board]
c.check("ranked by validation accuracy, best first", all(s is not None for s in scores) and scores == sorted(scores, reverse=True),
        str(scores))
best = load_json(os.path.join(search_dir, "best_config.json")) or {}
c.check("best_config.json is the best trial's config",
        board and best.get("optimizer", {}).get("lr") == board[0].get("parameters", {}).get("optimizer.lr"),
        str(best.get("optimizer")))
c.finish()
