#!/usr/bin/env python3
"""A CPU-only LibTorch still builds hpctrain: every source file with a CUDA or NCCL branch
(`#if HPCTRAIN_WITH_CUDA`, `HPCTRAIN_WITH_NCCL`, `HPCTRAIN_WITH_CUDA_KERNELS`) is compiled again, syntax only, with all
switched off, using the build's own compile commands. It fails on a compile error or on any
warning in project code (-Wall -Wextra), which the CUDA build here never sees: the #else
branches are what a machine with a CPU-only LibTorch compiles.

    test_cpu_only_build.py BUILD_DIR
"""
import concurrent.futures
import json
import os
import re
import shlex
import subprocess
import sys

build = os.path.abspath(sys.argv[1])
source = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
src = os.path.join(source, "src")
# Project headers are reached through the layers' include roots (build/layers/<layer>/<layer>).
project = (src, os.path.join(build, "layers"))
with open(os.path.join(build, "compile_commands.json")) as f:
    commands = json.load(f)

switch = re.compile(r"\bHPCTRAIN_WITH_(CUDA_KERNELS|CUDA|NCCL)\b")
branched = set()
for root, _, files in os.walk(src):
    for name in files:
        if name.endswith(".cpp"):
            path = os.path.join(root, name)
            with open(path) as f:
                if switch.search(f.read()):
                    branched.add(path)


def cpu_only(entry):
    args = shlex.split(entry["command"]) if "command" in entry else list(entry["arguments"])
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a == "-o":
            skip = True
            continue
        if os.path.basename(a) == "ccache":
            continue
        a = re.sub(r"^-DHPCTRAIN_WITH_(CUDA_KERNELS|CUDA|NCCL)=\S*$", r"-DHPCTRAIN_WITH_\1=0", a)
        out.append(a)
    # The precompiled header was made with the switches on: gcc parses the header instead.
    return out + ["-fsyntax-only", "-Wno-invalid-pch"]


def compile_one(entry):
    r = subprocess.run(cpu_only(entry), cwd=entry["directory"], capture_output=True, text=True)
    warnings = [line for line in r.stderr.splitlines() if line.startswith(project) and ": warning:" in line]
    return entry["file"], r.returncode, warnings, r.stderr


# One compile per source file (a file built into two targets is checked once).
todo = {}
for e in commands:
    path = os.path.abspath(os.path.join(e["directory"], e["file"]))
    if path in branched and path not in todo:
        todo[path] = e
failures = []
clean = 0
if not todo:
    failures.append(f"no compile command in {build}/compile_commands.json for {sorted(branched)}")
with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as pool:
    for path, rc, warnings, stderr in pool.map(compile_one, todo.values()):
        rel = os.path.relpath(path, source)
        if rc != 0:
            failures.append(f"{rel}: does not compile without CUDA/NCCL:\n{stderr[-3000:]}")
        elif warnings:
            failures.append(f"{rel}: warnings without CUDA/NCCL:\n" + "\n".join(warnings))
        else:
            clean += 1
            print(f"PASS {rel} compiles without CUDA and NCCL, no warnings")
missing = sorted(os.path.relpath(p, source) for p in branched - set(todo))
if missing:
    failures.append("not in the build's compile commands: " + ", ".join(missing))
for f in failures:
    print("FAIL " + f)
print(f"{clean} of {len(branched)} files with CUDA/NCCL branches compile clean without them")
sys.exit(1 if failures else 0)
