"""run.profile_steps: a Kineto trace of the chosen steps lands in RUN_DIR/profile_rank<R>.json
on every rank, in the Chrome trace format, and analysis/profile_summary.py reads it; without
the key no trace is written."""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import FASHION, SOURCE, Checks, mpirun  # noqa: E402

c = Checks()
work = tempfile.mkdtemp(prefix="hpctrain_profile_")
base = ["train", os.path.join(SOURCE, "configs", "fashion_mnist_fast.json"), "data.path=" + FASHION,
        "data.verify_hashes=false", "data.limit_train=2048", "train.epochs=1", "train.max_steps=6",
        "train.test_at_end=false", "run.progress=none"]
run_dir = os.path.join(work, "traced")
r = mpirun(2, base + ["run.dir=" + run_dir, "run.profile_steps=2", "run.profile_start=3"], timeout=300)
c.check("a traced run exits 0", r.rc == 0, r.text[-3000:])
for rank in (0, 1):
    path = os.path.join(run_dir, f"profile_rank{rank}.json")
    events = []
    if os.path.exists(path):
        with open(path) as f:
            trace = json.load(f)
        events = trace.get("traceEvents", []) if isinstance(trace, dict) else trace
    ops = [e for e in events if e.get("cat") == "cpu_op"]
    names = {e.get("name") for e in ops}
    c.check(f"rank {rank}: trace with the training step's operators ({len(ops)} operators)",
            len(ops) > 100 and "aten::convolution" in names and any("Backward" in (n or "") for n in names),
            path)
# Two steps traced: the operators of two forwards, not the whole run's six.
with open(os.path.join(SOURCE, "configs", "fashion_mnist_fast.json")) as f:
    layers = len(json.load(f)["model"]["channels"])
convs = sum(1 for e in events if e.get("cat") == "cpu_op" and e.get("name") == "aten::convolution")
c.check(f"only the traced steps are in it ({convs} convolution calls: 2 steps of a {layers}-convolution CNN)",
        convs == 2 * layers, "")
s = subprocess.run([sys.executable, os.path.join(SOURCE, "analysis", "profile_summary.py"),
                    os.path.join(run_dir, "profile_rank0.json"), "--steps", "2", "--top", "5"],
                   capture_output=True, text=True)
c.check("profile_summary.py reads it", s.returncode == 0 and "CPU operator" in s.stdout, s.stdout + s.stderr)
# The kinds of GPU work on a trace with known kernels (this machine may have no GPU): each kernel
# to its kind by name, the gap between kernels as idle, figures per step and as JSON.
gpu_trace, gpu_json, events, t = os.path.join(work, "gpu.json"), os.path.join(work, "kinds.json"), [], 0
for name, dur in (("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_cublas", 100), ("gpu_memcpy", 4),
                  ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<cutlass::bfloat16_t>>", 40),
                  ("void at::native::vectorized_elementwise_kernel<4, at::native::GeluCUDAKernelImpl>", 20),
                  (None, 30), ("void at::native::multi_tensor_apply_kernel<FusedAdamMathFunctor>", 10),
                  ("ncclDevKernel_AllReduce_Sum_f32_RING_LL", 6), ("hpctrain::cuda_kernels::add_norm_rows", 10)):
    if name:
        events.append({"ph": "X", "cat": "gpu_memcpy" if name == "gpu_memcpy" else "kernel", "name": name, "ts": t,
                       "dur": dur})
    t += dur
with open(gpu_trace, "w") as f:
    json.dump({"traceEvents": events}, f)
s = subprocess.run([sys.executable, os.path.join(SOURCE, "analysis", "profile_summary.py"), gpu_trace, "--steps", "2",
                    "--json", gpu_json], capture_output=True, text=True)
kinds = json.load(open(gpu_json))["traces"][0]["kinds_ms"] if s.returncode == 0 else {}
want = {"matrix products": 0.05, "attention": 0.02, "elementwise and normalization": 0.015, "optimizer": 0.005,
        "communication": 0.003, "copies": 0.002, "idle": 0.015}
c.check("profile_summary.py: GPU time by kind (matrix products, attention, elementwise, optimizer, communication, "
        "copies, idle) per step, as JSON", kinds.keys() == want.keys()
        and all(abs(kinds[k] - v) < 1e-9 for k, v in want.items()) and "idle" in s.stdout,
        s.stdout + s.stderr + json.dumps(kinds))
plain = os.path.join(work, "plain")
r = mpirun(1, base + ["run.dir=" + plain], timeout=300)
c.check("no trace without run.profile_steps",
        r.rc == 0 and not any(n.startswith("profile_") for n in os.listdir(plain)), r.text[-2000:])
c.finish()
