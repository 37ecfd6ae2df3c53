"""Decode-only throughput of nkstream beside tcpdump's read+rewrite, in one run.

    python bench/decode_rate.py [--packets 2000000] [--file CAPTURE] [--batch 65536]

Generates (once, cached in /tmp) a 2,000,000-packet mixed capture with
nkstream.synth, warms the page cache, then measures on the same file:

- ``tcpdump -r FILE -w /dev/null``: libpcap reading every record and writing it out
  again, no dissection (wall time of the whole process, best of 3);
- nkstream in-process, best of 3 after a warm-up run:
  * read:   open_capture() over all batches (the native record walker),
  * decode: read + ``_core.decode_columns`` on every batch (L2-L4 decode into
            per-packet columns),
  * decode, counts only: read + ``_core.decode_error_counts`` (the decode the
            pipeline pays, without storing columns), where the build has it;

and prints packets/s, ns/packet and the ratio to tcpdump.  If the core was built
without the decoder (decode.pxi not merged), only reading is measured, and it says so.
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from nkstream import _core, synth                      # noqa: E402
from nkstream.capture import open_capture               # noqa: E402

SYNTH_VERSION = 2     # bump when nkstream.synth's output changes


def cached_capture(n, seed):
    path = f"/tmp/nkstream-bench-synth-v{SYNTH_VERSION}-{n}-seed{seed}.pcap"
    if not os.path.exists(path):
        t = time.perf_counter()
        tmp = path + ".tmp"
        synth.write_pcap(tmp, n, seed=seed)
        os.replace(tmp, path)
        print(f"generated {path} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return path


def warm(path):
    with open(path, "rb") as f:
        while f.read(16 << 20):
            pass


def best_of(fn, repeat, warmup=True):
    if warmup:
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        n = fn()
        times.append(time.perf_counter() - t)
    return n, min(times)


def run_read(path, batch):
    def go():
        n = 0
        with open_capture(path, batch_packets=batch) as cap:
            for _data, recs in cap:
                n += len(recs)
        return n
    return go


def run_decode(path, batch, fn):
    def go():
        n = 0
        with open_capture(path, batch_packets=batch) as cap:
            for data, recs in cap:
                fn(data, recs)
                n += len(recs)
        return n
    return go


def run_tcpdump(path):
    def go():
        subprocess.run(["tcpdump", "-r", path, "-w", "/dev/null"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return None
    return go


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--packets", type=int, default=2_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--file", help="measure this capture instead of a generated one")
    ap.add_argument("--batch", type=int, default=65536, help="packets per batch")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)

    path = a.file or cached_capture(a.packets, a.seed)
    warm(path)
    with open_capture(path) as cap:
        for _ in cap:
            pass
        packets, wirebytes = cap.stats.packets, cap.stats.bytes
    size = os.path.getsize(path)
    print(f"capture: {path}\n  {packets} packets, {size} bytes in the file, "
          f"mean frame {wirebytes / max(packets, 1):.0f} bytes on the wire; batch {a.batch} packets")

    rows = []
    if shutil.which("tcpdump"):
        _, t = best_of(run_tcpdump(path), a.repeat, warmup=True)
        rows.append(("tcpdump -r FILE -w /dev/null (process)", t))
    else:
        print("  tcpdump not found: no baseline")
    n, t = best_of(run_read(path, a.batch), a.repeat)
    assert n == packets
    rows.append(("nkstream read (open_capture, in-process)", t))
    if hasattr(_core, "decode_columns"):
        n, t = best_of(run_decode(path, a.batch, _core.decode_columns), a.repeat)
        rows.append(("nkstream read + decode_columns", t))
    else:
        print("  nkstream._core has no decode_columns (decoder not merged in this build): "
              "read-only measured")
    if hasattr(_core, "decode_error_counts"):
        n, t = best_of(run_decode(path, a.batch, _core.decode_error_counts), a.repeat)
        rows.append(("nkstream read + decode (counts only)", t))

    base = rows[0][1] if rows and rows[0][0].startswith("tcpdump") else None
    print(f"\n{'what':45s} {'packets/s':>12s} {'ns/packet':>10s} {'vs tcpdump':>10s}")
    for name, t in rows:
        ratio = f"{base / t:9.2f}x" if base else ""
        print(f"{name:45s} {packets / t / 1e6:10.2f} M {t / packets * 1e9:10.1f} {ratio:>10s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
