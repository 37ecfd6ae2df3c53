#!/usr/bin/env python3
"""What a Python user writes without nkstream: dpkt + pytricia + dicts.

A thin wrapper: the baseline lives in nkstream/bench_baseline.py so that an installed
nkstream (`nkstream bench --compare`) can run it.

    python bench/baseline_dpkt.py FILE.pcap [-c CONFIG] [--limit N] [--show]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nkstream.bench_baseline import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
