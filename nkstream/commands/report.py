"""`nkstream report PATH...`: tables, shares over time, changes and plots from snapshots."""
import sys

DESCRIPTION = """\
Read snapshot files (or directories of *.msgpack snapshots) and report shares of
bytes and packets by category, watched range, direction, peer or tag; shares per
window over time; or the change of each share between two periods.

Periods for --compare are window indices (0 = first window, -1 = last), index ranges
(I:J, J excluded), ISO times (the window containing it, e.g. 2026-11-28T20:00Z), ISO
ranges (T1/T2: windows starting in [T1, T2)) or snapshot files/directories.
"""

EPILOG = """\
examples:
  nkstream report snaps/                          shares by category
  nkstream report snaps/ --by watch,direction     per watched range and direction
  nkstream report snaps/ --over-time --plot s.png category shares per window, plotted
  nkstream report snaps/ --compare 0 -1           change from first to last window
  nkstream report a.msgpack --by peer --top 20 --format csv
"""


def add_parser(sub):
    import argparse

    p = sub.add_parser("report", help="tables, trends and plots from snapshots",
                       description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="snapshot file or directory")
    p.add_argument("--by", default=["category"], type=_dimensions,
                   help="dimension(s), comma-separated: category, watch, direction, peer, tag; "
                        "or 'time' for category shares per window (default: category)")
    p.add_argument("--over-time", action="store_true",
                   help="shares of the --by dimension per window")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"),
                   help="change of each share from period A to period B")
    p.add_argument("--metric", choices=("bytes", "packets"), default="bytes",
                   help="what shares over time, changes and plots measure (default: bytes)")
    p.add_argument("--top", type=_positive, metavar="N", help="show the N largest groups only")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--plot", metavar="PNG", help="draw shares per window into a PNG (needs matplotlib)")
    return p


DIMENSIONS = ("category", "watch", "direction", "peer", "tag")


def _dimensions(text):
    import argparse

    dims = [d.strip() for d in text.split(",") if d.strip()]
    if dims == ["time"]:
        return dims
    bad = [d for d in dims if d not in DIMENSIONS]
    if not dims or bad:
        raise argparse.ArgumentTypeError(
            f"{text!r}: use one or more of {', '.join(DIMENSIONS)} (comma-separated), or time")
    return dims


def _positive(text):
    import argparse

    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {n}")
    return n


def run(args):
    from nkstream import report

    by = list(args.by)
    over_time = args.over_time
    if by == ["time"]:
        by, over_time = ["category"], True
    if (over_time or args.compare or args.plot) and len(by) > 1:
        raise report.ReportError("--over-time, --compare and --plot take a single --by dimension")
    snaps = report.load_all(args.paths)
    if args.compare:
        table = report.compare_table(snaps, args.compare[0], args.compare[1], by=by[0],
                                     metric=args.metric, top=args.top)
    elif over_time:
        table = report.over_time_table(snaps, by=by[0], metric=args.metric, top=args.top)
    else:
        table = report.share_table(snaps, by, top=args.top)
        if args.format == "table":
            table.title = _header(report, snaps) + "\n\n" + table.title
    sys.stdout.write(table.render(args.format))
    if args.plot:
        path = report.plot_shares(snaps, args.plot, by=by[0], metric=args.metric,
                                  top=args.top or 8)
        print(f"nkstream report: wrote {path}", file=sys.stderr)
    return 0


def _header(report, snaps):
    start = min(s.window.start for s in snaps)
    end = max(s.window.end for s in snaps)
    hosts = sorted({str(s.sensor.get("host")) for s in snaps})
    packets = sum(s.totals.get("packets", 0) for s in snaps)
    nbytes = sum(s.totals.get("bytes", 0) for s in snaps)
    return (f"{len(snaps)} snapshot(s), {len(report.windows_of(snaps))} window(s) "
            f"{report.iso(start)} .. {report.iso(end)}, sensors {', '.join(hosts)}; "
            f"{packets:,} packets, {nbytes:,} bytes read")
