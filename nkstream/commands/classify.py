"""`nkstream classify FILE... [-c CONFIG] [-o SNAPSHOT] [--interval S --out-dir DIR]`"""
import os
import sys
import time


def add_parser(sub):
    p = sub.add_parser(
        "classify",
        help="classify capture files, print a summary table, write snapshot(s)",
        description="Classify pcap/pcapng captures (gzip and '-' for stdin too): every "
        "packet is decoded, looked up in the watch and peer tables, tagged by the "
        "signature rules and counted per (watch label, direction, peer label, tag). "
        "Prints a summary table; -o writes one snapshot, --interval S --out-dir DIR "
        "one snapshot per capture-time window of S seconds.",
    )
    p.add_argument("files", nargs="*", metavar="FILE", help="capture files ('-' = stdin)")
    p.add_argument("--sample", action="store_true",
                   help="classify the sample capture shipped with nkstream")
    p.add_argument("-c", "--config", help="TOML config (default: shipped tables and rules)")
    p.add_argument("-o", "--output", metavar="SNAPSHOT", help="write the snapshot here")
    p.add_argument("--interval", type=float, metavar="S",
                   help="one snapshot per S seconds of capture time (needs --out-dir)")
    p.add_argument("--out-dir", metavar="DIR", help="directory for --interval snapshots")
    p.add_argument("--no-flows", action="store_true",
                   help="per-packet verdicts only: no flow state, no flow counts "
                   "(default: the config's [flows] enabled, on by default)")
    p.add_argument("--top", type=int, default=10, metavar="N", help="rows of top peers (10)")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary table")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(_parser=p)
    return p


def sample_capture():
    import importlib.resources as res

    path = res.files("nkstream") / "data" / "sample.pcap.gz"
    return str(path)


def _progress_bar(files):
    """A tqdm bar over input bytes, on terminals only, for inputs over 32 MiB."""
    if not sys.stderr.isatty():
        return None, None
    try:
        total = sum(os.path.getsize(f) for f in files if f != "-")
    except OSError:
        return None, None
    if total < (32 << 20):
        return None, None
    try:
        from tqdm import tqdm
    except ImportError:
        return None, None
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="classify", file=sys.stderr,
               leave=False)
    state = {"pos": 0}

    def update(cap, n):
        pos = getattr(cap, "position", None)
        if pos is None:
            return
        bar.update(max(0, pos - state["pos"]))
        state["pos"] = pos

    return bar, update


def run(args):
    from ..classify import Classifier, classify_files
    from ..cli import UserError
    from ..config import load_config
    from ..report import summary_table
    from ..snapshot import Snapshot, merge_snapshots, snapshot_filename

    files = list(args.files)
    if args.sample:
        files.append(sample_capture())
    if not files:
        args._parser.error("no capture file given (name one, or --sample)")
    if args.interval is not None and not args.out_dir:
        args._parser.error("--interval needs --out-dir")
    if args.out_dir and args.interval is None:
        args._parser.error("--out-dir needs --interval")
    if args.interval is not None and args.interval <= 0:
        args._parser.error("--interval must be positive")
    for f in files:
        if f != "-" and not os.path.exists(f):
            raise UserError(f"{f}: no such file")

    cfg = load_config(args.config)
    clf = Classifier.from_config(cfg, flows=False if args.no_flows else None)
    labels = clf.labels()
    from .. import _core
    sensor = {"host": cfg.sensor_name, "interfaces": [], "engine": "file", "workers": 1,
              "sources": [os.path.basename(f) for f in files]}

    def to_snapshot(start, end, snap):
        return Snapshot.from_counters(
            snap, start_ns=start, end_ns=end, watch_labels=labels["watch"],
            peer_labels=labels["peer"], tags=labels["tag"],
            categories=labels["tag_category"], error_names=_core.ERROR_NAMES,
            sensor=sensor, flows=clf.flows_enabled)

    written = []
    snaps = []

    def on_window(start, end, snap):
        s = to_snapshot(start, end, snap)
        snaps.append(s)
        if args.out_dir:
            os.makedirs(args.out_dir, exist_ok=True)
            path = os.path.join(args.out_dir, snapshot_filename(start, cfg.sensor_name))
            written.append(s.write(path))

    bar, progress = (None, None) if args.no_progress else _progress_bar(files)
    t0 = time.perf_counter()
    try:
        classify_files(files, clf, interval=args.interval, on_window=on_window,
                       progress=progress,
                       warn=lambda w: print(f"nkstream classify: warning: {w}", file=sys.stderr))
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - t0
    whole = snaps[0] if len(snaps) == 1 else merge_snapshots(snaps)
    if args.output:
        d = os.path.dirname(os.path.abspath(args.output))
        os.makedirs(d, exist_ok=True)
        written.append(whole.write(args.output))
    if not args.quiet:
        print(summary_table(whole, top=args.top))
        pk = whole.totals.get("packets", 0)
        rate = f", {pk / elapsed / 1e6:.2f} M packets/s" if elapsed > 0 and pk else ""
        print(f"\n{pk:,} packets in {elapsed:.2f} s{rate}")
    for w in written:
        print(f"snapshot: {w}", file=sys.stderr if args.quiet else sys.stdout)
    return 0
