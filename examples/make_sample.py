#!/usr/bin/env python3
"""Regenerate the sample capture shipped with nkstream (nkstream/data/sample.pcap.gz,
also reachable as examples/sample.pcap.gz).

It is synthetic (nkstream.synth, seed 2026): a realistic mix of the study's categories
between the default watched ranges and well-known services' prefixes from the shipped
peer table, 10 minutes of capture time, so `nkstream classify --sample` and
`nkstream classify --sample --interval 60 --out-dir snaps/` show every part of a report.

    python examples/make_sample.py [-n PACKETS]
"""
import argparse
import gzip
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))  # this checkout, installed or not
OUT = os.path.join(HERE, "..", "nkstream", "data", "sample.pcap.gz")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--packets", type=int, default=20000)
    ap.add_argument("-o", "--output", default=OUT)
    args = ap.parse_args(argv)
    from nkstream import synth

    data = synth.generate(args.packets, seed=2026, duration_s=600.0)
    # mtime=0: the same bytes on every run, so the file only changes with the generator
    with open(args.output, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0,
                                                       compresslevel=9) as fh:
        fh.write(memoryview(data))
    print(f"{args.output}: {args.packets} packets, {os.path.getsize(args.output)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
