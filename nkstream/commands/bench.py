"""`nkstream bench [FILE] [-c CONFIG] [-n PACKETS] [--seed S] [--repeat R] [--workers N]
[--compare] [--json] [--stages read,decode,lpm,tags,flows,aggregate]`"""
import sys

# Kept here (and checked against nkstream.bench by the tests) so that building the
# CLI parser imports neither numpy nor the native core: every subcommand pays for it.
DEFAULT_PACKETS = 2_000_000
STAGES = ("read", "decode", "lpm", "tags", "aggregate", "flows")


def add_parser(sub):
    p = sub.add_parser(
        "bench",
        help="classification rate per stage, per worker count, beside other tools",
        description="Measure nkstream's classification rate on generated traffic (the "
        "study's category mix, IPv4/IPv6, VLANs, small-packet-heavy sizes, addresses "
        "from the loaded tables; seeded) or on a capture FILE: packets/s, Gbit/s and "
        "ns/packet per stage (read, decode, +LPM, +tags, +aggregate, +flows), min / "
        "median / max over repetitions, with the machine and configuration. --workers "
        "runs the full path in N processes over flow-hash partitions; --compare runs "
        "tcpdump, tshark, ndpiReader, a dpkt+pytricia script and the whole `nkstream "
        "classify` process on the same capture (tools not installed are listed).",
    )
    p.add_argument("file", nargs="?", metavar="FILE",
                   help="capture to measure (default: generate traffic)")
    p.add_argument("-c", "--config", help="TOML config (default: shipped tables and rules)")
    p.add_argument("-n", "--packets", type=int, default=DEFAULT_PACKETS, metavar="PACKETS",
                   help=f"packets to generate ({DEFAULT_PACKETS:,}; ignored with FILE)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (0)")
    p.add_argument("--repeat", type=int, default=5, metavar="R",
                   help="timed repetitions per stage (5)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="also run the full path in N processes (and 1, for the scaling)")
    p.add_argument("--compare", action="store_true",
                   help="also run tcpdump, tshark, ndpiReader, dpkt+pytricia and the "
                   "classify process on the same capture")
    p.add_argument("--stages", default=",".join(STAGES),
                   help=f"comma-separated stages to time ({','.join(STAGES)})")
    p.add_argument("--save", metavar="PCAP",
                   help="keep the generated capture here (to rerun with FILE, or feed other tools)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    p.set_defaults(_parser=p)
    return p


def run(args):
    from ..bench import dumps, render, run_bench

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        args._parser.error(f"unknown stage {bad[0]!r} (choose from {','.join(STAGES)})")
    if args.repeat < 1:
        args._parser.error("--repeat must be >= 1")
    if args.packets < 1:
        args._parser.error("-n must be >= 1")
    if args.save and args.file:
        args._parser.error("--save keeps generated traffic; it cannot be used with FILE")
    if args.workers is not None and args.workers < 1:
        args._parser.error("--workers must be >= 1")
    result = run_bench(file=args.file, config=args.config, packets=args.packets,
                       seed=args.seed, repeat=args.repeat, workers=args.workers,
                       compare=args.compare, stages=stages,
                       progress=not args.no_progress, save=args.save,
                       command=" ".join(["nkstream", "bench"] + sys.argv[2:]))
    print(dumps(result) if args.json else render(result))
    sys.stdout.flush()
    return 0
