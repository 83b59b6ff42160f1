#!/usr/bin/env python3
"""Per-operator CPU profile of a training step from one Kineto Chrome trace (hpctrain's
run.profile_steps writes RUN/profile_rank0.json): self time per operator and phase, per step,
the work the operator did (FLOPs or bytes, analysis/op_work.py states the rules) and the rate it
achieved against a peak of the machine.

    python analysis/op_profile.py RUN/profile_rank0.json [--steps N] [--top 25]
        [--peak-gflops G] [--peak-gbs B] [--json OUT.json]

Phases. Events are nested per thread by time (a child lies inside its parent on the same tid).
  backward:  any operator inside an "autograd::engine::evaluate_function: ..." event, and
             operators between two of them on the top level (autograd hooks);
  forward:   from the first top-level operator that records an autograd node (it carries a
             "fwdbwd" flow start in the trace) to the step's first backward event: the model,
             the loss and the loss's non-finite check;
  data:      the top-level operators carrying a "Sequence number" just before the forward (the
             batch's slicing and copies; all operators before the first forward of the trace);
  optimizer: the rest, between the last backward event and the next step's data: the
             optimizer's per-parameter operators, gradient unscaling and clipping, metrics.
A trace without fwdbwd flow events gets "backward" and "other" only. Operators on other
threads take the phase of the main thread (the one with most events) at their start. hpctrain
adds no step or phase markers (no ProfilerStep#, no "Optimizer"); these rules stand in for them.
Steps are counted as forward-then-backward sequences on the main thread (--steps overrides).

Times. Self time: an event's duration less its direct children's on the same thread.
Inclusive time is given for the outermost ATen operators (no ATen ancestor): the model's
operators as called, e.g. aten::conv2d with the mkldnn_convolution it runs.
Work is counted once per call tree and kind (FLOPs, bytes), at the innermost operator with a
rule that does at least half of the work its ancestors' rules of that kind estimate
(aten::copy_ inside clone, addmm inside linear; but mul over a scalar's copy); the rate is that
work over that operator's inclusive time. FLOPs and bytes do not displace each other: the
layout copies inside convolution_backward keep their bytes and their own row. Small tensors
stay in cache, so memory-bound rates above the stream-copy peak are possible.
Compute operators are compared with the sgemm peak (--peak-gflops), memory-bound ones with
the stream-copy peak (--peak-gbs, bytes read plus written)."""
import argparse
import bisect
import collections
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from op_work import work  # noqa: E402

BACKWARD_PREFIX = "autograd::engine::evaluate_function"
EPS_US = 0.01  # Kineto rounds timestamps; a child may end this much after its parent


class Node:
    __slots__ = ("name", "ts", "end", "dur", "args", "tid", "children", "parent", "phase", "work", "counted")

    def __init__(self, e):
        self.name, self.args, self.tid = e.get("name", "?"), e.get("args") or {}, e.get("tid")
        self.ts, self.dur = float(e["ts"]), float(e.get("dur", 0))
        self.end = self.ts + self.dur
        self.children, self.parent, self.phase, self.work, self.counted = [], None, None, None, False

    @property
    def self_us(self):
        return max(0.0, self.dur - sum(c.dur for c in self.children))


def load(path):
    """(top-level nodes by tid, flow-start times by tid) of a trace file or its parsed JSON."""
    if isinstance(path, (dict, list)):
        trace = path
    else:
        with open(path) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    by_tid = collections.defaultdict(list)
    flows = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and e.get("cat") in ("cpu_op", "user_annotation"):
            by_tid[e.get("tid")].append(Node(e))
        elif e.get("ph") == "s" and e.get("cat") == "fwdbwd":
            flows[e.get("tid")].append(float(e["ts"]))
    return {tid: nest(nodes) for tid, nodes in by_tid.items()}, {t: sorted(v) for t, v in flows.items()}


def nest(nodes):
    """Top-level nodes of one thread, children attached (nesting by time)."""
    nodes.sort(key=lambda n: (n.ts, -n.dur))
    top, stack = [], []
    for n in nodes:
        while stack and not _inside(n, stack[-1]):
            stack.pop()
        if stack:
            n.parent = stack[-1]
            stack[-1].children.append(n)
        else:
            top.append(n)
        stack.append(n)
    return top


def _inside(n, p):
    return p.ts - EPS_US <= n.ts < p.end and n.end <= p.end + EPS_US


def walk(node):
    yield node
    for c in node.children:
        yield from walk(c)


def _starts_forward(node, flows, k):
    """Whether a flow start lies in node; k indexes the first flow not before node.ts."""
    return k < len(flows) and flows[k] < node.end + EPS_US


def label_main(top, flows):
    """Sets .phase on the main thread's top-level nodes; returns the number of steps."""
    if not flows:
        for n in top:
            n.phase = "backward" if n.name.startswith(BACKWARD_PREFIX) else "other"
        return sum(1 for a, b in zip([None] + top, top)
                   if b.phase == "backward" and (a is None or a.phase != "backward"))
    state, steps, k, pending = "data", 0, 0, []
    for n in top:
        while k < len(flows) and flows[k] < n.ts - EPS_US:
            k += 1
        is_bwd = n.name.startswith(BACKWARD_PREFIX)
        if is_bwd:
            if state == "forward":
                steps += 1
            if state == "optimizer":  # top-level ops between backward events: hooks, still backward
                for p in pending:
                    p.phase = "backward"
            state, pending = "backward", []
        elif state != "forward" and _starts_forward(n, flows, k):
            _split_data(pending)
            state, pending = "forward", []
        elif state == "backward":
            state = "optimizer"
        n.phase = state
        if state in ("data", "optimizer"):
            pending.append(n)
    return steps


def _split_data(pending):
    """The trailing operators with a Sequence number before a forward are the next batch's data."""
    for n in reversed(pending):
        if n.phase == "data" or "Sequence number" in n.args:
            n.phase = "data"
        else:
            break


def label_other(top, spans):
    """Phase of another thread's top-level nodes: backward inside evaluate_function, else the main
    thread's phase at the node's start."""
    starts = [s for s, _, _ in spans]
    for n in top:
        if n.name.startswith(BACKWARD_PREFIX):
            n.phase = "backward"
            continue
        i = bisect.bisect_right(starts, n.ts) - 1
        n.phase = spans[i][2] if i >= 0 else "other"


def propagate(top):
    for t in top:
        for n in walk(t):
            if n is not t:
                n.phase = t.phase


def count_work(node):
    """Counts each call tree's work once per kind (FLOPs, bytes); returns the counted nodes of
    node's subtree. A node with a rule takes the work unless a counted descendant of the same
    kind does at least half of it (the wrapper case: conv2d over mkldnn_convolution, relu over
    clamp_min); when it takes it, its descendants' smaller work of that kind (a scalar's copy
    under mul) is dropped. Work of the other kind below stays (the layout copies inside
    convolution_backward keep their bytes beside its FLOPs)."""
    below = []
    for c in node.children:
        below += count_work(c)
    node.work = work(node.name, node.args)
    if node.work is None:
        return below
    kind, amount = node.work
    same = [b for b in below if b.work[0] == kind]
    if any(2 * b.work[1] >= amount for b in same):
        return below
    for b in same:
        b.counted = False
    node.counted = True
    return [node] + [b for b in below if b.work[0] != kind]


def _outermost_aten(n):
    if not n.name.startswith("aten::"):
        return False
    p = n.parent
    while p is not None:
        if p.name.startswith("aten::"):
            return False
        p = p.parent
    return True


def aggregate(trees):
    """Rows keyed by (phase, name): calls, self, inclusive (outermost ATen), work and its time."""
    rows = {}
    for top in trees.values():
        for t in top:
            for n in walk(t):
                r = rows.setdefault((n.phase, n.name), {"calls": 0, "self_us": 0.0, "inclusive_us": None,
                                                       "kind": None, "work": 0, "work_us": 0.0})
                r["calls"] += 1
                r["self_us"] += n.self_us
                if _outermost_aten(n):
                    r["inclusive_us"] = (r["inclusive_us"] or 0.0) + n.dur
                if n.counted:
                    r["kind"] = n.work[0]
                    r["work"] += n.work[1]
                    r["work_us"] += n.dur
    return rows


def profile(trace, steps=None, peak_gflops=None, peak_gbs=None):
    """The per-operator profile of one trace (path or parsed JSON) as a dict (see table())."""
    trees, flows = load(trace)
    if not trees:
        raise ValueError("no cpu_op events in the trace")
    main = max(trees, key=lambda t: sum(1 for x in trees[t] for _ in walk(x)))
    counted = label_main(trees[main], flows.get(main, []))
    spans = [(n.ts, n.end, n.phase) for n in trees[main]]
    for tid, top in trees.items():
        if tid != main:
            label_other(top, spans)
    for top in trees.values():
        propagate(top)
        for t in top:
            count_work(t)
    steps = steps or counted or 1
    phase_ms, wall_ms = _phase_times(trees[main], steps)
    rows = [_row(name, phase, r, steps, peak_gflops, peak_gbs) for (phase, name), r in aggregate(trees).items()]
    rows.sort(key=lambda r: -r["self_ms"])
    return {"steps": steps, "steps_detected": counted, "main_tid": main, "threads_with_events": len(trees),
            "phase_method": "fwdbwd flows" if flows.get(main) else "backward nesting only",
            "phase_ms": phase_ms, "phase_wall_ms": wall_ms, "peaks": {"gflops": peak_gflops, "gbs": peak_gbs},
            "ops": rows}


def phase_bounds(ops, phase_wall_ms, peak_gflops, peak_gbs):
    """Per phase, how close the step is to this machine's limit (a roofline over the phase):
    the time its operators' work needs at the peaks (FLOPs at the sgemm peak plus bytes at the
    copy peak; operators without a work rule, such as RNG, count as needing none) against its
    wall time. {phase: {"flops", "bytes", "bound_ms", "wall_ms", "efficiency"}}, per step."""
    out = {}
    for phase, wall in phase_wall_ms.items():
        flops = sum(o.get("flops") or 0 for o in ops if o["phase"] == phase)
        nbytes = sum(o.get("bytes") or 0 for o in ops if o["phase"] == phase)
        bound = flops / (peak_gflops * 1e6) + nbytes / (peak_gbs * 1e6)
        out[phase] = {"flops": flops, "bytes": nbytes, "bound_ms": bound, "wall_ms": wall,
                      "efficiency": bound / wall if wall > 0 else None}
    return out


def _phase_times(top, steps):
    """Per phase and step: the time top-level operators cover, and the wall time from each
    top-level operator to the next (work outside any operator, such as a custom autograd
    function's kernels or the framework between operators, shows as the difference)."""
    covered, wall = collections.Counter(), collections.Counter()
    for n, after in zip(top, top[1:] + [None]):
        covered[n.phase] += n.dur / 1e3 / steps
        wall[n.phase] += ((after.ts if after is not None else n.end) - n.ts) / 1e3 / steps
    return dict(covered), dict(wall)


def _row(name, phase, r, steps, peak_gflops, peak_gbs):
    row = {"name": name, "phase": phase, "calls": r["calls"] / steps, "self_ms": r["self_us"] / 1e3 / steps,
           "inclusive_ms": None if r["inclusive_us"] is None else r["inclusive_us"] / 1e3 / steps,
           "flops": None, "bytes": None, "work_ms": None, "gflops": None, "gbs": None, "pct_of_peak": None}
    if r["kind"] is None:
        return row
    row["work_ms"] = r["work_us"] / 1e3 / steps
    rate = r["work"] / max(r["work_us"], 1e-9) / 1e3  # per us -> G per s
    if r["kind"] == "flop":
        row["flops"], row["gflops"] = r["work"] / steps, rate
        peak = peak_gflops
    else:
        row["bytes"], row["gbs"] = r["work"] / steps, rate
        peak = peak_gbs
    row["pct_of_peak"] = 100 * rate / peak if peak else None
    return row


def table(result, top=25, width=48):
    """Text table of the top operators by self time."""
    wall = result.get("phase_wall_ms") or {}
    lines = [f"{result['steps']} steps; ms/step by phase, in operators (wall): "
             + ", ".join(f"{k} {v:.2f} ({wall.get(k, 0):.2f})"
                         for k, v in sorted(result["phase_ms"].items(), key=lambda kv: -kv[1])),
             f"{'phase':9} {'calls':>6} {'self ms':>8} {'incl ms':>8} {'rate':>14} {'%peak':>6}  operator"]
    for r in result["ops"][:top]:
        rate = (f"{r['gflops']:.1f} GFLOP/s" if r["gflops"] is not None
                else f"{r['gbs']:.2f} GB/s" if r["gbs"] is not None else "")
        incl = f"{r['inclusive_ms']:.3f}" if r["inclusive_ms"] is not None else ""
        pct = f"{r['pct_of_peak']:.0f}" if r["pct_of_peak"] is not None else ""
        name = r["name"] if len(r["name"]) <= width else r["name"][:width - 3] + "..."
        lines.append(f"{r['phase']:9} {r['calls']:6.1f} {r['self_ms']:8.3f} {incl:>8} {rate:>14} {pct:>6}  {name}")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("trace")
    p.add_argument("--steps", type=int, help="traced steps (default: counted from the trace)")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--peak-gflops", type=float, help="sgemm peak of this machine at the run's threads")
    p.add_argument("--peak-gbs", type=float, help="stream-copy peak (read + write) at the run's threads")
    p.add_argument("--json", help="write the whole profile here")
    a = p.parse_args()
    try:
        result = profile(a.trace, a.steps, a.peak_gflops, a.peak_gbs)
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"op_profile: {a.trace}: {e}")
    print(table(result, a.top))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
