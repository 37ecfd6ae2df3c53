"""Two builds of nkstream side by side: the stages of `nkstream bench` timed on one
capture, alternating between the builds so that the machine's load drifts hit both
alike.  For changes whose effect is smaller than the run-to-run spread of this
shared machine (docs/benchmarks.md).

    git worktree add /tmp/nk-old <commit> && (cd /tmp/nk-old && python3 setup.py build_ext --inplace)
    python3 bench/ab_stages.py CAPTURE /tmp/nk-old . --rounds 3 --stages decode,aggregate,flows

Each round runs, per build, one fresh process (PYTHONPATH=<build dir>) that times
`passes` passes of each stage (nkstream.bench._stage_pass: the capture read through
open_capture, as `nkstream bench` does).  Prints ns/packet per build and stage: every
pass, and the median.  Speed is reported, never asserted.

Before each process, the build's extension modules are copied onto themselves (a new
file, so new page-cache pages): where the kernel happened to place a module's pages
moved one build's path without flow state from 27 to 35 ns/packet, the same code, in
every process run from that file, and back to 27 once the file was copied
(docs/benchmarks.md, "Measuring a change").  A new placement per round spreads that
luck over both builds instead of fixing it to one.
"""
import argparse
import glob
import shutil
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys
from nkstream.config import load_config
from nkstream.bench import capture_stats, classifiers, reset, _stage_pass
path, stages, passes = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
clf, full = classifiers(load_config(None))
n = capture_stats(path)["packets"]
out = {}
for st in stages:
    c = full if st == "flows" else clf
    out[st] = []
    for _ in range(passes):
        out[st].append(_stage_pass(path, c, st) * 1e9 / n)
        reset(c)
print(json.dumps(out))
"""


def recopy(build):
    """Give a build's extension modules new page-cache pages (a copy renamed over
    them; the import that follows maps the new file)."""
    for so in glob.glob(os.path.join(build, "nkstream", "*.so")):
        shutil.copy2(so, so + ".recopy")
        os.replace(so + ".recopy", so)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("capture")
    ap.add_argument("build_a", help="folder holding one build (its nkstream/ package)")
    ap.add_argument("build_b")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--stages", default="decode,aggregate,flows")
    a = ap.parse_args(argv)
    times = {b: {} for b in (a.build_a, a.build_b)}
    for rnd in range(a.rounds):
        builds = (a.build_a, a.build_b) if rnd % 2 == 0 else (a.build_b, a.build_a)
        for b in builds:
            recopy(b)
            env = dict(os.environ, PYTHONPATH=os.path.abspath(b))
            res = subprocess.run([sys.executable, "-c", CHILD, a.capture, a.stages,
                                  str(a.passes)], env=env, capture_output=True, text=True,
                                 check=True, cwd="/")
            for st, ns in json.loads(res.stdout).items():
                times[b].setdefault(st, []).extend(ns)
    for st in a.stages.split(","):
        for b in (a.build_a, a.build_b):
            ns = times[b][st]
            print(f"{st:<10} {b:<30} median {statistics.median(ns):6.1f} ns/packet   "
                  + " ".join(f"{x:.1f}" for x in ns))
    return times


if __name__ == "__main__":
    main()
