"""Example analysis: load a directory of nkstream snapshots with pandas and plot the
share of bytes of each category over time.

    python examples/analysis.py SNAPSHOT_DIR [--out shares.png] [--freq 10min]

`nkstream.load_snapshots` returns one tidy DataFrame (one row per key per window:
start, end, watch, direction, peer, tag, category, packets, bytes[, flows], sensor), so
everything else is ordinary pandas: resample the windows to a coarser period, pivot
categories into columns, normalise to shares, and plot.
"""
import argparse
import sys

import nkstream


def category_shares(df, freq=None, metric="bytes", watch=None, direction=None):
    """Share of *metric* per category per period (rows: period start, columns: category)."""
    if watch is not None:
        df = df[df["watch"] == watch]
    if direction is not None:
        df = df[df["direction"] == direction]
    per = df.groupby(["start", "category"])[metric].sum().unstack(fill_value=0)
    if freq:
        per = per.resample(freq).sum()
    per = per.loc[per.sum(axis=1) > 0]
    shares = per.div(per.sum(axis=1), axis=0)
    return shares[shares.sum().sort_values(ascending=False).index]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("snapshots", nargs="+", help="snapshot files or directories")
    ap.add_argument("--out", default="category-shares.png", help="PNG to write")
    ap.add_argument("--freq", help="resample windows to this pandas period (e.g. 10min, 1h)")
    ap.add_argument("--metric", choices=("bytes", "packets"), default="bytes")
    ap.add_argument("--watch", help="only this watched range (label)")
    ap.add_argument("--direction", choices=("inbound", "outbound", "internal", "transit"))
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = nkstream.load_snapshots(args.snapshots)
    print(f"{df['start'].nunique()} windows, {len(df)} rows, "
          f"{df['packets'].sum():,} packets, {df['bytes'].sum():,} bytes")
    shares = category_shares(df, args.freq, args.metric, args.watch, args.direction)
    print((100 * shares).round(1).to_string())

    # Who the mining and VPN traffic talks to: distinct peers and bytes per category.
    peers = (df[df["peer"] != "(none)"].groupby("category")
             .agg(peers=("peer", "nunique"), bytes=("bytes", "sum"))
             .sort_values("bytes", ascending=False))
    print(peers.to_string())

    ax = (100 * shares).plot.area(figsize=(10, 5), linewidth=0)
    ax.set_ylabel(f"share of {args.metric} (%)")
    ax.set_xlabel("window start (UTC)")
    ax.set_ylim(0, 100)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small")
    plt.tight_layout()
    plt.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
