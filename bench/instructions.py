"""Instructions per packet, per line of the native core's sources, counted by
valgrind's cachegrind: the tool for this VM, which exposes no hardware performance
counters (perf stat: <not supported>), and a deterministic one, where timings of a
small change drown in the shared machine's noise.

    NKSTREAM_DEBUGINFO=1 python3 setup.py build_ext --inplace   # line tables (-g)
    python3 bench/instructions.py CAPTURE --stage aggregate --top 30

The child process classifies `batches` consecutive batches (of --batch packets, from
--skip batches into the capture, so flow state is already going) once with 1 batch
and once with 3; the difference of the two counts is what batches 2 and 3 cost, free
of startup.  Printed per packet: the total, then the source lines (the .pxi line the
generated C line belongs to) with their instructions, conditional branches and the
mispredictions of cachegrind's simple predictor (a hint, not the CPU's).  Needs
valgrind (Debian: valgrind).  Nothing is asserted.
"""
import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

CHILD = r"""
import sys, numpy as np
from nkstream.capture import open_capture
from nkstream.config import load_config
from nkstream.bench import classifiers
path, stage, bp, skip, k, fcap, warm = (sys.argv[1], sys.argv[2], int(sys.argv[3]),
                                        int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]),
                                        int(sys.argv[7]))
cfg = load_config(None)
if fcap:
    cfg.flow_capacity = fcap
plain, full = classifiers(cfg)
clf = full if stage == "flows" else plain
batches = []
with open_capture(path, batch_packets=bp) as cap:
    it = iter(cap)
    for _ in range(skip):
        b = next(it)
        if warm:    # the same in both runs: cancels out of the difference
            clf.process(np.frombuffer(bytes(b.data), np.uint8), b.recs.copy())
    for _ in range(3):
        b = next(it)
        batches.append((np.frombuffer(bytes(b.data), np.uint8), b.recs.copy()))
for data, recs in batches[:k]:
    clf.process(data, recs)
"""

MARK = re.compile(r'^\s*/\* "([^"]+)":(\d+)')


def run(path, stage, bp, skip, k, fcap, warm, out):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", "--branch-sim=yes",
                    f"--cachegrind-out-file={out}", sys.executable, "-c", CHILD, path, stage,
                    str(bp), str(skip), str(k), str(fcap), str(int(warm))], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def counts(path, cfile):
    """{C line: [Ir, Bc, Bcm]} of the core's generated C file in one cachegrind output."""
    out = collections.defaultdict(lambda: [0, 0, 0])
    mine = False
    with open(path) as f:
        for line in f:
            if line.startswith("fl="):
                mine = line.strip().endswith(cfile)
            elif mine and line[:1].isdigit():
                p = [int(x) for x in line.split()]
                v = out[p[0]]
                for i in range(3):
                    v[i] += p[i + 1] if len(p) > i + 1 else 0
    return out


DEF = re.compile(r"^\s*(?:cdef|cpdef|def)\s+(?:inline\s+)?(?:[\w\*\[\]]+\s+)*?(\w+)\s*\(")


def by_function(per, top):
    """Sum per-line counts into (file, line of the function's definition)."""
    starts = {}
    out = collections.defaultdict(lambda: [0, 0, 0])
    for key, v in per.items():
        fkey = key
        if key:
            fn = os.path.join(top, key[0])
            if fn not in starts:
                st = []
                try:
                    with open(fn) as f:
                        for i, line in enumerate(f, 1):
                            if DEF.match(line):
                                st.append(i)
                except OSError:
                    pass
                starts[fn] = st
            prev = [i for i in starts[fn] if i <= key[1]]
            fkey = (key[0], prev[-1]) if prev else key
        w = out[fkey]
        for i in range(3):
            w[i] += v[i]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("capture")
    ap.add_argument("--stage", choices=("aggregate", "flows"), default="aggregate")
    ap.add_argument("--batch", type=int, default=65536)
    ap.add_argument("--skip", type=int, default=10)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--flow-capacity", type=int, default=0,
                    help="flow table slots (default: the configuration's)")
    ap.add_argument("--warm", action="store_true",
                    help="classify the skipped batches too (flow state built up), not "
                         "only read past them")
    ap.add_argument("--by-function", action="store_true",
                    help="sum the lines per function of the .pxi sources")
    a = ap.parse_args(argv)
    import nkstream._core as core
    root = os.path.dirname(core.__file__)
    csrc = os.path.join(root, "_core.c")
    with tempfile.TemporaryDirectory() as tmp:
        one, three = os.path.join(tmp, "cg.1"), os.path.join(tmp, "cg.3")
        run(a.capture, a.stage, a.batch, a.skip, 1, a.flow_capacity, a.warm, one)
        run(a.capture, a.stage, a.batch, a.skip, 3, a.flow_capacity, a.warm, three)
        c1, c3 = counts(one, "nkstream/_core.c"), counts(three, "nkstream/_core.c")
    # the .pxi line each generated C line comes from
    where, cur = {}, None
    with open(csrc) as f:
        for i, line in enumerate(f, 1):
            m = MARK.match(line)
            if m:
                cur = (m.group(1), int(m.group(2)))
            where[i] = cur
    per = collections.defaultdict(lambda: [0, 0, 0])
    for ln in set(c1) | set(c3):
        v = per[where.get(ln)]
        for i in range(3):
            v[i] += c3[ln][i] - c1[ln][i]
    n = 2 * a.batch
    if a.by_function:
        per = by_function(per, os.path.dirname(root))
    total = sum(v[0] for v in per.values())
    if total == 0:
        sys.exit("no line counts: build with NKSTREAM_DEBUGINFO=1 (see the docstring)")
    print(f"{a.stage}: {total / n:.1f} instructions/packet (2 batches of {a.batch} packets)")
    print(f"{'instr':>7} {'branches':>8} {'mispred':>8}  source")
    src = {}
    for key, v in sorted(per.items(), key=lambda kv: -kv[1][0])[:a.top]:
        text = ""
        if key:
            fn = os.path.join(os.path.dirname(root), key[0])
            if fn not in src:
                try:
                    with open(fn) as f:
                        src[fn] = f.read().split("\n")
                except OSError:
                    src[fn] = []
            lines = src[fn]
            text = f"{key[0]}:{key[1]}  " + (lines[key[1] - 1].strip()[:80] if key[1] <= len(lines) else "")
        print(f"{v[0] / n:7.1f} {v[1] / n:8.1f} {v[2] / n:8.2f}  {text or '(no source line)'}")


if __name__ == "__main__":
    main()
