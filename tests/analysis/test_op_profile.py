"""analysis/op_profile.py on a Kineto-style trace written here: two training steps (data,
forward, backward, optimizer) with nesting on one thread and one event on a second thread;
the phases, self and inclusive times, and the FLOPs and bytes of a convolution, its backward
(output_mask honoured), addmm, mm, clamp_min and add_ against numbers worked out by hand; the
byte rules of pooling, batch norm and fill_ and the LSTM layer's FLOPs on their own; the same
trace without flow events; the command line."""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import SOURCE, Checks  # noqa: E402

sys.path.insert(0, os.path.join(SOURCE, "analysis"))
import op_profile  # noqa: E402

SCRIPT = os.path.join(SOURCE, "analysis", "op_profile.py")
SEQ = {"Sequence number": 1}
CONV_FLOPS = 2 * 8 * 16 * (16 * 16) * (3 * 3 * 3)  # N Cout Hout*Wout Cin*kh*kw; 32x32, pad 1, stride 2 -> 16x16
MM_FLOPS = 2 * 8 * 64 * 10  # M K N of [8,64] x [64,10] (and of both backward mm)


def op(name, ts, dur, dims=None, types=None, concrete=None, extra=None, tid=1):
    args = dict(extra or {})
    if dims is not None:
        args["Input Dims"] = dims
        args["Input type"] = types or ["float"] * len(dims)
    if concrete is not None:
        args["Concrete Inputs"] = concrete
    return {"ph": "X", "cat": "cpu_op", "name": name, "pid": 1, "tid": tid, "ts": ts, "dur": dur, "args": args}


def step(t0):
    """One step from t0 (us): 2 data, 100 conv, 50 addmm, 20 relu, 60 + 200 backward, 10 optimizer."""
    return [
        op("aten::narrow", t0, 2, extra=SEQ),
        op("aten::conv2d", t0 + 10, 100, extra=SEQ),
        op("aten::convolution", t0 + 11, 98),
        op("aten::mkldnn_convolution", t0 + 12, 90, [[8, 3, 32, 32], [16, 3, 3, 3], [], [], [], [], []],
           ["float", "float", "", "ScalarList", "ScalarList", "ScalarList", "Scalar"],
           ["", "", "", "[1, 1]", "[2, 2]", "[1, 1]", "1"]),
        op("aten::empty", t0 + 13, 2),
        {"ph": "s", "cat": "fwdbwd", "name": "fwdbwd", "id": t0, "pid": 1, "tid": 1, "ts": t0 + 11},
        op("aten::addmm", t0 + 120, 50, [[10], [8, 64], [64, 10], [], []],
           ["float", "float", "float", "Scalar", "Scalar"], extra=SEQ),
        op("aten::copy_", t0 + 121, 4, [[8, 10], [10], []], ["float", "float", "Scalar"]),
        {"ph": "s", "cat": "fwdbwd", "name": "fwdbwd", "id": t0 + 1, "pid": 1, "tid": 1, "ts": t0 + 120},
        op("aten::relu", t0 + 175, 20, [[8, 10]], extra=SEQ),
        op("aten::clamp_min", t0 + 176, 18, [[8, 10], []], ["float", "Scalar"]),
        op("aten::mul", t0 + 150, 5, [[100], [100]], tid=2),  # another thread, during the forward
        op("autograd::engine::evaluate_function: AddmmBackward0", t0 + 200, 60),
        op("AddmmBackward0", t0 + 201, 58),
        op("aten::mm", t0 + 202, 30, [[8, 10], [10, 64]]),
        op("aten::mm", t0 + 235, 20, [[64, 8], [8, 10]]),
        op("autograd::engine::evaluate_function: ConvolutionBackward0", t0 + 270, 200),
        op("ConvolutionBackward0", t0 + 271, 198),
        op("aten::convolution_backward", t0 + 272, 195,
           [[8, 16, 16, 16], [8, 3, 32, 32], [16, 3, 3, 3], [], [], [], [], [], [], [], []],
           ["float"] * 3 + ["ScalarList"] * 4 + ["Scalar", "ScalarList", "Scalar", "ScalarList"],
           ["", "", "", "[0]", "[2, 2]", "[1, 1]", "[1, 1]", "False", "[0, 0]", "1", "[False, True, False]"]),
        op("aten::add_", t0 + 500, 10, [[16, 3, 3, 3], [16, 3, 3, 3], []], ["float", "float", "Scalar"]),
    ]


def rows(result):
    return {(r["phase"], r["name"]): r for r in result["ops"]}


def close(a, b):
    return a is not None and abs(a - b) <= 1e-9 * max(1.0, abs(b))


c = Checks()
events = step(0) + step(1000)
trace = {"traceEvents": events + [{"ph": "M", "name": "process_name", "pid": 1, "tid": 0, "args": {}}]}
res = op_profile.profile(trace, peak_gflops=100.0, peak_gbs=10.0)
r = rows(res)
c.check("two steps counted from the trace", res["steps"] == 2 and res["steps_detected"] == 2, str(res["steps"]))
c.check("phases: narrow is data (the second one too), conv2d/addmm/relu forward, mm backward, add_ optimizer",
        ("data", "aten::narrow") in r and r[("data", "aten::narrow")]["calls"] == 1
        and ("forward", "aten::mkldnn_convolution") in r and ("backward", "aten::mm") in r
        and ("optimizer", "aten::add_") in r and ("backward", "aten::convolution_backward") in r
        and ("forward", "aten::relu") in r, str(sorted(r)))
c.check("the other thread's operator takes the main thread's phase (forward)", ("forward", "aten::mul") in r,
        str(sorted(r)))
conv = r.get(("forward", "aten::mkldnn_convolution"), {})
c.check("self time: mkldnn_convolution 90 - 2 us, conv2d 100 - 98 us, per step",
        close(conv.get("self_ms"), 0.088) and close(r[("forward", "aten::conv2d")]["self_ms"], 0.002),
        json.dumps(conv))
c.check("inclusive time for the outermost ATen operator only (conv2d 0.1 ms, mkldnn_convolution none)",
        close(r[("forward", "aten::conv2d")]["inclusive_ms"], 0.1) and conv.get("inclusive_ms") is None,
        json.dumps(r[("forward", "aten::conv2d")]))
c.check(f"convolution FLOPs {CONV_FLOPS} at mkldnn_convolution (stride 2, padding 1), none at its wrappers",
        conv.get("flops") == CONV_FLOPS and r[("forward", "aten::conv2d")]["flops"] is None
        and r[("forward", "aten::convolution")]["flops"] is None, json.dumps(conv))
c.check("rate: FLOPs over the inclusive 90 us, percent of the 100 GFLOP/s peak",
        close(conv.get("gflops"), CONV_FLOPS / 90e3) and close(conv.get("pct_of_peak"), CONV_FLOPS / 90e3),
        json.dumps(conv))
bwd = r.get(("backward", "aten::convolution_backward"), {})
c.check("convolution_backward with output_mask [False, True, False]: the weight gradient only",
        bwd.get("flops") == CONV_FLOPS, json.dumps(bwd))
mm = r.get(("backward", "aten::mm"), {})
c.check("two backward mm per step, 2*M*N*K each", mm.get("calls") == 2 and mm.get("flops") == 2 * MM_FLOPS,
        json.dumps(mm))
addmm = r.get(("forward", "aten::addmm"), {})
c.check("addmm keeps its FLOPs beside its bias copy's bytes",
        addmm.get("flops") == MM_FLOPS and r[("forward", "aten::copy_")]["bytes"] == (80 + 10) * 4,
        json.dumps(addmm))
clamp = r.get(("forward", "aten::clamp_min"), {})
c.check("elementwise bytes: clamp_min reads and writes 8x10 floats, relu (its wrapper) has none",
        clamp.get("bytes") == 2 * 80 * 4 and r[("forward", "aten::relu")]["bytes"] is None
        and close(clamp.get("gbs"), 640 / 18e3) and close(clamp.get("pct_of_peak"), 100 * 640 / 18e3 / 10),
        json.dumps(clamp))
add = r.get(("optimizer", "aten::add_"), {})
c.check("add_ in place: two inputs read, one written", add.get("bytes") == 3 * 432 * 4, json.dumps(add))
c.check("phase times: forward covers 170 us per step in operators",
        close(res["phase_ms"].get("forward"), 0.17) and close(res["phase_ms"].get("backward"), 0.26),
        json.dumps(res["phase_ms"]))

# Rules of analysis/op_work.py on their own, worked out by hand (a [2,4,8,8] float tensor is 2048 bytes).
W = op_profile.work
POOL = ["", "[2, 2]", "[2, 2]", "[0, 0]", "[1, 1]", "False"]
expected = {
    "max_pool2d_with_indices: input, output and int64 indices": (
        W("aten::max_pool2d_with_indices", {"Input Dims": [[2, 4, 8, 8], [], [], [], [], []],
                                            "Input type": ["float"] + ["ScalarList"] * 4 + ["Scalar"],
                                            "Concrete Inputs": POOL}), ("byte", 2048 + 128 * (4 + 8))),
    "max_pool2d_with_indices_backward: grad_output, indices, grad_input zeroed and written": (
        W("aten::max_pool2d_with_indices_backward",
          {"Input Dims": [[2, 4, 4, 4], [2, 4, 8, 8], [], [], [], [], [], [2, 4, 4, 4]],
           "Input type": ["float", "float"] + ["ScalarList"] * 4 + ["Scalar", "long int"]}),
        ("byte", 512 + 2 * 2048 + 1024)),
    "native_batch_norm training: the input read twice and written once": (
        W("aten::native_batch_norm", {"Input Dims": [[2, 4, 8, 8], [4], [4], [4], [4], [], [], []],
                                      "Input type": ["float"] * 5 + ["Scalar"] * 3,
                                      "Concrete Inputs": ["", "", "", "", "", "True", "0.1", "1e-05"]}),
        ("byte", 3 * 2048)),
    "native_batch_norm_backward with grad_input: 5x the input": (
        W("aten::native_batch_norm_backward", {"Input Dims": [[2, 4, 8, 8], [2, 4, 8, 8]] + [[4]] * 5 + [[]] * 3,
                                               "Input type": ["float"] * 7 + ["Scalar"] * 2 + ["ScalarList"],
                                               "Concrete Inputs": [""] * 7 + ["True", "1e-05", "[True, True, True]"]}),
        ("byte", 5 * 2048)),
    "fill_: the tensor written": (W("aten::fill_", {"Input Dims": [[10, 10], []], "Input type": ["float", "Scalar"]}),
                                  ("byte", 400)),
    "mkldnn_rnn_layer: 2*T*N*(4H*I + 4H*H)": (
        W("aten::mkldnn_rnn_layer", {"Input Dims": [[24, 128, 5], [256, 5], [256, 64], [256], [256]],
                                     "Input type": ["float"] * 5}), ("flop", 2 * 24 * 128 * (256 * 5 + 256 * 64))),
    "hpctrain's fused batch norm, ReLU and pool: the input read 3x, quarter-size outputs written": (
        W("hpctrain::batch_norm_relu_pool", {"Input Dims": [[2, 4, 8, 8]], "Input type": ["float"]}),
        ("byte", 3 * 2048 + 512 + 512 + 128)),
    "its backward: 13.25x the quarter-size gradient": (
        W("hpctrain::batch_norm_relu_pool_backward", {"Input Dims": [[2, 4, 4, 4]], "Input type": ["float"]}),
        ("byte", 13 * 512 + 128)),
    "hpctrain's fused batch norm + ReLU: the input read 3x, the output written": (
        W("hpctrain::batch_norm_act", {"Input Dims": [[2, 4, 8, 8]], "Input type": ["float"]}), ("byte", 4 * 2048)),
    "with a residual: the residual read once more": (
        W("hpctrain::batch_norm_act", {"Input Dims": [[2, 4, 8, 8], [2, 4, 8, 8]], "Input type": ["float", "float"]}),
        ("byte", 5 * 2048)),
    "its backward: 7x the gradient, 8x with the residual's gradient written": (
        W("hpctrain::batch_norm_act_backward", {"Input Dims": [[2, 4, 8, 8], [2, 4, 8, 8]],
                                                "Input type": ["c10::BFloat16", "c10::BFloat16"]}), ("byte", 8 * 1024)),
    "_fused_adamw_: parameters and both moments read and written, gradients read": (
        W("aten::_fused_adamw_", {"Input Dims": [[[10, 4], [3]], [[10, 4], [3]], [[10, 4], [3]], [[10, 4], [3]], [],
                                                 [[], []]] + [[]] * 6,
                                  "Input type": ["TensorList"] * 6 + ["Scalar"] * 6}), ("byte", 7 * 43 * 4)),
    "a view has no work": (W("aten::view", {"Input Dims": [[2, 4]], "Input type": ["float"]}), None),
}
for name, (got, want) in expected.items():
    c.check(name, got == want, f"{got} != {want}")

pb = op_profile.phase_bounds([{"phase": "forward", "flops": 2e9, "bytes": None},
                              {"phase": "forward", "flops": None, "bytes": 1e9},
                              {"phase": "backward", "flops": None, "bytes": None}],
                             {"forward": 40.0, "backward": 5.0}, 100.0, 50.0)
c.check("phase bounds: 2 GFLOP at 100 GFLOP/s + 1 GB at 50 GB/s = 40 ms, all of a 40 ms phase; no work: 0",
        close(pb["forward"]["bound_ms"], 40.0) and close(pb["forward"]["efficiency"], 1.0)
        and pb["backward"]["efficiency"] == 0, json.dumps(pb))

flowless = op_profile.profile({"traceEvents": [e for e in events if e["ph"] == "X"]})
names = {(x["phase"], x["name"]) for x in flowless["ops"]}
c.check("without flow events: backward and other only",
        flowless["phase_method"] == "backward nesting only" and ("backward", "aten::mm") in names
        and ("other", "aten::mkldnn_convolution") in names and {p for p, _ in names} == {"backward", "other"},
        str(sorted(names)))

work = tempfile.mkdtemp(prefix="op_profile_test_")
path = os.path.join(work, "profile_rank0.json")
json.dump(trace, open(path, "w"))
out = os.path.join(work, "ops.json")
p = subprocess.run([sys.executable, SCRIPT, path, "--peak-gflops", "100", "--json", out], capture_output=True,
                   text=True)
c.check("command line: a table naming mkldnn_convolution and the JSON",
        p.returncode == 0 and "aten::mkldnn_convolution" in p.stdout and "GFLOP/s" in p.stdout
        and json.load(open(out))["steps"] == 2, p.stdout + p.stderr)
bad = os.path.join(work, "empty.json")
json.dump({"traceEvents": []}, open(bad, "w"))
p = subprocess.run([sys.executable, SCRIPT, bad], capture_output=True, text=True)
c.check("a trace without operators: an error naming the file", p.returncode != 0 and bad in p.stderr, p.stderr)
c.finish()
