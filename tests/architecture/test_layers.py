#!/usr/bin/env python3
"""The layers of src/ as the build enforces them (docs/architecture.md).

    test_layers.py BUILD_DIR

- The declared graph (BUILD/layers.dot) has no cycle, and every folder of src/ is a layer.
- Every cross-folder include in src/ goes to a layer the including one may use (what the
  compiler enforces, checked here too for includes the compiler might resolve otherwise),
  and no include climbs out of its folder with "../".
- An include from comm/ into train/ fails to compile; one into launch/ compiles (control).
- docs/architecture.md shows the graph generated from the build.
- No source file over 500 lines and no function over 120 lines, beyond the listed
  exceptions (which may not grow).
"""
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
SRC = os.path.join(ROOT, "src")
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import layer_graph  # noqa: E402

build = os.path.abspath(sys.argv[1])
failures = []
passed = 0


def check(ok, what):
    global passed
    if ok:
        passed += 1
        print(f"PASS {what}")
    else:
        failures.append(what)
        print(f"FAIL {what}")


order, deps = layer_graph.read_layers(build)
folders = sorted(d for d in os.listdir(SRC) if os.path.isdir(os.path.join(SRC, d)))
check(sorted(order) == folders, f"every folder of src/ is a declared layer ({len(folders)} layers, no cycle)")

include_re = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
bad = []
sources = []
for layer in folders:
    allowed = layer_graph.closure(deps, layer) | {layer}
    for name in sorted(os.listdir(os.path.join(SRC, layer))):
        path = os.path.join(SRC, layer, name)
        sources.append(path)
        with open(path) as f:
            for n, line in enumerate(f, 1):
                m = include_re.match(line)
                if not m:
                    continue
                target = m.group(1)
                if ".." in target.split("/"):
                    bad.append(f"src/{layer}/{name}:{n}: relative include {target}")
                elif "/" in target and target.split("/")[0] in folders and target.split("/")[0] not in allowed:
                    bad.append(f"src/{layer}/{name}:{n}: {layer}/ may not include {target}")
for b in bad:
    print("  " + b)
check(not bad, "every cross-folder include goes to a layer below the including one")


def build_target(target):
    return subprocess.run(["cmake", "--build", build, "--target", target], capture_output=True, text=True)


down = build_target("layer_probe_downward")
check(down.returncode == 0, "comm/ including launch/Mpi.hpp compiles (control)")
if down.returncode != 0:
    print(down.stdout[-2000:] + down.stderr[-2000:])
up = build_target("layer_probe_upward")
out = up.stdout + up.stderr
check(up.returncode != 0 and "train/Trainer.hpp" in out and "No such file" in out,
      "comm/ including train/Trainer.hpp fails to compile: the header is not on comm's include path")

doc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "layer_graph.py"), build, "--check"],
                     capture_output=True, text=True)
check(doc.returncode == 0, "docs/architecture.md shows the layer graph generated from the build " + doc.stderr.strip())

# Size limits. Files and functions already over them when the limit came in; each entry is
# the size it may not exceed, and goes when the file is split.
FILE_LIMIT, FUNCTION_LIMIT = 500, 120
FILE_EXCEPTIONS = {
}
FUNCTION_EXCEPTIONS = {
}
long_files, long_functions = [], []
for path in sources:
    rel = os.path.relpath(path, SRC)
    with open(path) as f:
        lines = f.read().split("\n")
    if len(lines) > FILE_EXCEPTIONS.get(rel, FILE_LIMIT):
        long_files.append(f"src/{rel}: {len(lines)} lines")
    # clang-format puts a function's signature at column 0 (namespaces are not indented),
    # its body's opening brace at the end of the signature's last line and its closing brace
    # alone at column 0.
    state, start = "idle", 0
    for n, line in enumerate(lines):
        if state == "idle":
            if line[:1].strip() and not re.match(r"(//|#|}|namespace\b|extern\b|using\b)", line) \
                    and not line.rstrip().endswith(";"):
                start, state = n, ("body" if line.rstrip().endswith("{") else "signature")
        elif state == "signature":
            if line.rstrip().endswith("{"):
                state = "body"
            elif line.rstrip().endswith(";") or not line.strip():
                state = "idle"
        elif line.startswith("}"):
            length = n - start + 1
            head = lines[start]
            name = head.split("(")[0].split()[-1] if "(" in head else head.strip()
            key = f"{rel}:{name}"
            if length > FUNCTION_EXCEPTIONS.get(key, FUNCTION_LIMIT):
                long_functions.append(f"src/{key}: {length} lines (line {start + 1})")
            state = "idle"
for x in long_files + long_functions:
    print("  " + x)
check(not long_files, f"no source file over {FILE_LIMIT} lines beyond the listed exceptions")
check(not long_functions, f"no function over {FUNCTION_LIMIT} lines beyond the listed exceptions")

print(f"{passed} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
