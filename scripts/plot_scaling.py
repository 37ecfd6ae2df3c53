#!/usr/bin/env python3
"""Plot packets/s against worker count from `nkstream bench --workers N --json` outputs.

    nkstream bench --workers 1 --json > w1.json
    nkstream bench --workers 2 --json > w2.json
    python scripts/plot_scaling.py w1.json w2.json [more.json ...] -o docs/scaling.png

Every file contributes its worker runs (a `--workers N` run holds N workers and
1 worker, measured in the same invocation).  Where several files hold the same worker
count, the best median is plotted.  Linear scaling is drawn from the 1-worker rate of
the file with the most workers (the same machine and load as its N-worker figure).
Needs matplotlib.
"""
import argparse
import json
import sys


def load_points(paths):
    """{machine label: {workers: (pps_median, pps_max)}}, and the reference 1-worker
    pps per machine label."""
    series, ref = {}, {}
    for path in paths:
        with open(path) as fh:
            r = json.load(fh)
        w = r.get("workers")
        if not w:
            raise SystemExit(f"{path}: no 'workers' section (run nkstream bench --workers N --json)")
        m = r["machine"]
        label = f"{m['cpu']}, {m['cores']} cores"
        pts = series.setdefault(label, {})
        for k, run in w["runs"].items():
            n = int(k)
            cur = pts.get(n)
            if cur is None or run["pps_median"] > cur[0]:
                pts[n] = (run["pps_median"], run["pps_max"])
        top = max(int(k) for k in w["runs"])
        if label not in ref or top > ref[label][0]:
            ref[label] = (top, w["runs"]["1"]["pps_median"])
    return series, {k: v[1] for k, v in ref.items()}


def plot(series, ref, out, title=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    allx = sorted({n for pts in series.values() for n in pts})
    for label, pts in series.items():
        xs = sorted(pts)
        ys = [pts[x][0] / 1e6 for x in xs]
        ax.plot(xs, ys, "o-", label=f"nkstream, median ({label})")
        best = [pts[x][1] / 1e6 for x in xs]
        ax.plot(xs, best, "^", alpha=0.5, label="best repetition")
        one = ref[label] / 1e6
        ax.plot(allx, [one * x for x in allx], "--", color="grey",
                label=f"linear from 1 worker ({one:.1f} M/s)")
        for x, y in zip(xs, ys):
            ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(6, -12), fontsize=8)
    ax.set_xlabel("workers (processes, flow-hash partitions)")
    ax.set_ylabel("M packets/s (full path)")
    ax.set_xticks(allx)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.set_title(title or "nkstream bench --workers N: full path vs workers")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(out)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", nargs="+", help="nkstream bench --workers N --json outputs")
    ap.add_argument("-o", "--output", default="docs/scaling.png")
    ap.add_argument("--title")
    a = ap.parse_args(argv)
    series, ref = load_points(a.json)
    plot(series, ref, a.output, a.title)
    for label, pts in series.items():
        for n in sorted(pts):
            print(f"{label}: {n} workers: {pts[n][0] / 1e6:.2f} M packets/s median "
                  f"({pts[n][0] / ref[label] / n:.0%} of linear)")
    print(f"wrote {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
