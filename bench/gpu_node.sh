#!/usr/bin/env bash
# On a GPU node with CUDA, CMake, ninja and a PyTorch but no network (the folder from
# bench/gpu_carry.sh carried along): unpacks the dependencies, takes the carried hpctrain
# (or builds one against the node's LibTorch), imports Fashion-MNIST, then runs the `gpu`
# test and the GPU benchmarks into OUTDIR.
#
#   bench/gpu_node.sh [CARRY_DIR] [OUTDIR] [all | a comma list of test,bench,profile,pipeline,scaling]
#
# `pipeline` and `scaling` use the node's CPU cores, not its GPU: the pipeline bubble at p = 4
# and 8 stages (bench/pipeline_bubble.py, one rank per core), and strong scaling from 1 to 16
# ranks with the performance model's predictions (bench/strong_scaling.py), which a 2-core
# machine cannot run.
#
# HPCTRAIN_NODE_BUDGET (seconds, default 540) bounds the whole call: each step's timeout is
# cut to what is left, so a device call under a 10-minute limit still returns its results.
# Ends with a pass/fail table (also OUTDIR/results.txt) and exits 1 when any step failed,
# timed out, was skipped (a GPU node whose test sees no GPU) or did not run for lack of budget.
set -u -o pipefail  # a step piped into tee keeps its own exit code
cd "$(dirname "$0")/.." || exit 1
root=$PWD
carry=$(cd "${1:-.devcarry}" && pwd)
out=${2:-gpu-results}
what=${3:-all}
wants() { [ "$what" = all ] || [[ ",$what," == *",$1,"* ]]; }
mkdir -p "$out"
out=$(cd "$out" && pwd)
export PYTHONUNBUFFERED=1
t0=$SECONDS
step() { echo "=== [$((SECONDS - t0)) s] $*"; }
budget=${HPCTRAIN_NODE_BUDGET:-540}
# Runs the command after $1 with a timeout of $1 seconds or what the budget has left,
# whichever is less; skips it (status 200) when under 20 s are left.
within() {
  local want=$1 left=$((budget - (SECONDS - t0)))
  shift
  if ((left < 20)); then
    echo "skipped, ${left} s of HPCTRAIN_NODE_BUDGET left: $*"
    return 200
  fi
  timeout $((want < left ? want : left)) "$@"
}
results=()
failed=0
# record NAME STATUS: one row of the table printed at the end.
record() {
  local outcome
  case $2 in
    0) outcome=pass ;;
    77) outcome="FAIL (skipped, exit 77: no GPU seen on a GPU node)" ;;
    124) outcome="FAIL (timed out)" ;;
    200) outcome="FAIL (not run: budget spent)" ;;
    *) outcome="FAIL (exit $2)" ;;
  esac
  [ "$2" = 0 ] || failed=1
  results+=("$(printf '%-44s %s' "$1" "$outcome")")
}

step "node"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'

step "dependencies"
bash scripts/gather-deps.sh unpack "$carry/deps" >/dev/null || exit 1
# shellcheck disable=SC1091
source "$carry/deps/env.sh"
torch_dir=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')
nv=$(find "$(dirname "$torch_dir")/nvidia" -mindepth 2 -maxdepth 2 -name lib -type d 2>/dev/null | tr "\n" :)
export LD_LIBRARY_PATH="$torch_dir/lib:$nv$LD_LIBRARY_PATH:$carry/fallback"
# Containers: shared memory without CMA, no binding, root allowed.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader \
  OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_hwloc_base_binding_policy=none \
  OMPI_MCA_rmaps_base_oversubscribe=1 PMIX_MCA_pcompress_base_silence_warning=1

step "hpctrain"
mkdir -p build/test-data data
if [ -x "$carry/hpctrain" ] && cp "$carry/hpctrain" build/hpctrain && build/hpctrain --version; then
  :
else
  echo "no usable carried binary: building against the node's LibTorch"
  # shellcheck disable=SC2086
  cmake --preset default $HPCTRAIN_DEPS_CMAKE_ARGS \
    -DCMAKE_PREFIX_PATH="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')" >/dev/null &&
    cmake --build --preset default --target hpctrain || exit 1
  build/hpctrain --version || exit 1
fi
build/hpctrain import fashion-mnist --source "$carry/fashion" --output data/fashion-mnist.h5 || exit 1
ln -sf "$root/data/fashion-mnist.h5" build/test-data/fashion-mnist.h5

if wants test; then
  step "gpu test"
  within 420 env HPCTRAIN_SOURCE_DIR="$root" python3 tests/train/test_gpu.py 2>&1 | tee "$out/test_gpu.txt"
  record "test: tests/train/test_gpu.py" "$?"
fi
if wants bench; then
  step "hpctrain's CUDA kernels against ATen: residual add + LayerNorm, softmax cross-entropy, the MLP's cuBLASLt epilogues (errors, times)"
  within 90 build/hpctrain bench kernels --device cuda --rows 16384 --dim 1024 --classes 32768 --json "$out/kernels.json"
  record "bench: kernels" "$?"
  step "hpctrain (eager and device.cuda_graphs) against PyTorch: CNN"
  within 300 python3 bench/gpu_peer.py --epochs 2 --repeats 3 --graphs --out "$out/gpu_peer.json"
  record "bench: gpu_peer (CNN)" "$?"
  step "hpctrain against PyTorch: Transformer, model FLOPs utilization"
  for batch in 64 128; do
    within 120 python3 bench/transformer_mfu.py --compile none --batch "$batch" --out "$out/mfu_b$batch.json"
    record "bench: transformer_mfu batch $batch" "$?"
    within 120 python3 bench/transformer_mfu.py --compile none --batch "$batch" \
      --out "$out/mfu_b${batch}_graphs.json" device.cuda_graphs=true
    record "bench: transformer_mfu batch $batch graphs" "$?"
  done
  within 120 python3 bench/transformer_mfu.py --compile none --batch 64 --out "$out/mfu_b64_no_fused_kernels.json" \
    model.fused_kernels=false
  record "bench: transformer_mfu batch 64, ATen's add + LayerNorm and cross-entropy (the kernels' baseline)" "$?"
  step "GPT-style decoder (model.causal): 2048 wide, 8 blocks (about 405M parameters), 1024 tokens;" \
    "PyTorch eager and torch.compile (default, max-autotune-no-cudagraphs)"
  within 360 python3 bench/transformer_mfu.py --embed 2048 --heads 16 --layers 8 --tokens 1024 --batch 8 \
    --causal --gelu tanh --steps 40 --out "$out/mfu_2048.json" device.cuda_graphs=true
  record "bench: transformer_mfu 2048 wide" "$?"
  step "precision.params=low (bf16 weights, fp32 masters) against autocast's fp32 weights: the same two models"
  within 180 python3 bench/transformer_mfu.py --embed 2048 --heads 16 --layers 8 --tokens 1024 --batch 8 \
    --causal --gelu tanh --compile none --steps 40 --out "$out/mfu_2048_low.json" device.cuda_graphs=true \
    precision.params=low
  record "bench: transformer_mfu 2048 wide, precision.params=low" "$?"
  within 120 python3 bench/transformer_mfu.py --compile none --batch 64 --out "$out/mfu_b64_graphs_low.json" \
    device.cuda_graphs=true precision.params=low
  record "bench: transformer_mfu batch 64 graphs, precision.params=low" "$?"
fi
if wants profile; then
  step "profiles of both sides (GPU time by kind: matrix products, attention, elementwise, idle ...)"
  within 120 python3 bench/transformer_mfu.py --compile none --gelu tanh --profile /tmp/hpctrain-profile \
    --out "$out/mfu_profiled.json" &&
    python3 analysis/profile_summary.py /tmp/hpctrain-profile/hpctrain.json /tmp/hpctrain-profile/pytorch.json \
      --steps 5 --top 30 --json "$out/profile_kinds.json" | tee "$out/profile_summary.txt"
  record "profile: both sides" "$?"
  step "profile before (ATen's operators: model.fused_kernels=false) and after (hpctrain's kernels and epilogues)"
  within 120 python3 bench/transformer_mfu.py --compile none --gelu tanh --profile /tmp/hpctrain-profile-aten \
    --out "$out/mfu_profiled_aten.json" model.fused_kernels=false &&
    python3 analysis/profile_summary.py /tmp/hpctrain-profile-aten/hpctrain.json /tmp/hpctrain-profile/hpctrain.json \
      --steps 5 --top 30 --json "$out/profile_kinds_before_after.json" | tee "$out/profile_before_after.txt"
  record "profile: before and after the kernels" "$?"
fi
if wants pipeline; then
  step "pipeline bubble on the CPU cores: p = 4 and 8 stages"
  within 200 python3 bench/pipeline_bubble.py --stages 4 --microbatches 4,8,16 --repeats 1 --bind none \
    --max-load 99 --max-wait 0 --json "$out/pipeline_bubble_p4.json"
  record "bench: pipeline_bubble p=4" "$?"
  within 200 python3 bench/pipeline_bubble.py --stages 8 --microbatches 8,16 --repeats 1 --bind none \
    --max-load 99 --max-wait 0 --json "$out/pipeline_bubble_p8.json"
  record "bench: pipeline_bubble p=8" "$?"
fi
if wants scaling; then
  step "strong scaling on the CPU cores: 1 to 16 ranks, and the model"
  within 240 python3 bench/strong_scaling.py --ranks 1,2,4,8,16 --repeats 1 --json "$out/strong_scaling.json"
  record "bench: strong_scaling 1-16 ranks" "$?"
fi
step "done: $out"
printf '%s\n' "--- results ---" "${results[@]}" | tee "$out/results.txt"
exit "$failed"
