"""Reports over snapshots: shares by category, watched range, direction, peer and tag;
shares over time; the change of a share between two periods; plots.

Works on :class:`nkstream.snapshot.Snapshot` objects with numpy only, so the
``classify`` command can print :func:`summary_table` without importing pandas, and
``nkstream report`` runs where pandas is not installed.  matplotlib is needed only for
plots.  Every report is a :class:`Table`, rendered as aligned plain text, CSV or JSON.
"""
import csv
import datetime
import io
import json
import math
import pathlib

import numpy as np

from .snapshot import (NONE_LABEL, OVERFLOW_CATEGORY, OVERFLOW_IDS, OVERFLOW_LABEL,
                       Snapshot, load_snapshot, merge_snapshots, snapshot_paths)

DIMENSIONS = ("category", "watch", "direction", "peer", "tag")
METRICS = ("bytes", "packets")


class ReportError(ValueError):
    """A report that cannot be made from the given snapshots or options."""


class Table:
    """A titled table: ``columns`` (names), ``rows`` (lists of values: str, int or
    float shares in [0, 1] for columns ending in ``_share``), ``notes`` (lines shown
    under the table, included in JSON)."""

    def __init__(self, title, columns, rows, notes=()):
        self.title = title
        self.columns = list(columns)
        self.rows = [list(r) for r in rows]
        self.notes = list(notes)

    def records(self):
        return [dict(zip(self.columns, r)) for r in self.rows]

    def render(self, fmt="table"):
        if fmt == "table":
            return render_text(self)
        if fmt == "csv":
            return render_csv(self)
        if fmt == "json":
            rows = [{k: _json_value(v) for k, v in r.items()} for r in self.records()]
            return json.dumps({"title": self.title, "columns": self.columns, "rows": rows,
                               "notes": [n for n in self.notes if n]}, indent=1) + "\n"
        raise ReportError(f"unknown format {fmt!r} (table, csv or json)")


# -- rendering --------------------------------------------------------------------
def _json_value(v):
    # JSON has no NaN/Infinity: an undefined share is null, a new group's change "new".
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None if math.isnan(v) else "new"
    return v


def _cell(col, v):
    if v is None:
        return "-"
    if col.endswith("_share"):
        return "-" if isinstance(v, float) and math.isnan(v) else f"{100.0 * v:.1f}%"
    if col == "change":
        return format_change(v)
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isinf(v):
            return "new"
        return f"{v:.3g}"
    return str(v)


def render_text(table):
    """Aligned plain text: text columns left-aligned, numbers right-aligned."""
    head = [c.replace("_share", " %") for c in table.columns]
    body = [[_cell(c, v) for c, v in zip(table.columns, r)] for r in table.rows]
    numeric = [all(not isinstance(r[i], str) for r in table.rows) if table.rows else False
               for i in range(len(table.columns))]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(head)]

    def line(cells):
        return "  ".join(c.rjust(w) if num else c.ljust(w)
                         for c, w, num in zip(cells, widths, numeric)).rstrip()

    out = []
    if table.title:
        out.append(table.title)
    out.append(line(head))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(r) for r in body)
    out.extend(table.notes)
    return "\n".join(out) + "\n"


def render_csv(table):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(table.columns)
    for r in table.rows:
        w.writerow(["" if v is None else (repr(v) if isinstance(v, float) else v) for v in r])
    return buf.getvalue()


# -- grouping ---------------------------------------------------------------------
def _dim_ids(snap, dim):
    """Per-row integer ids and their names for one dimension of one snapshot."""
    if dim == "category":
        cats = list(dict.fromkeys(snap.labels["category"])) + [OVERFLOW_CATEGORY]
        lut = np.array([cats.index(c) for c in snap.labels["category"]] + [len(cats) - 1],
                       dtype=np.int64)
        tags = snap.columns["tag"].astype(np.int64)
        idx = np.where(tags == OVERFLOW_IDS["tag"], len(lut) - 1, tags)
        return lut[idx], cats
    if dim not in OVERFLOW_IDS:
        raise ReportError(f"cannot group by {dim!r} (one of {', '.join(DIMENSIONS)})")
    names = [NONE_LABEL if x is None else x for x in snap.labels[dim]] + [OVERFLOW_LABEL]
    ids = snap.columns[dim].astype(np.int64)
    return np.where(ids == OVERFLOW_IDS[dim], len(names) - 1, ids), names


def group(snaps, by):
    """Sum packets, bytes (and flows where every snapshot has them) per combination of
    the dimensions *by* over *snaps*; also the distinct peer labels of each group.
    Returns ``{names tuple: {"packets", "bytes", "flows", "peers": set}}``."""
    if isinstance(snaps, Snapshot):
        snaps = [snaps]
    by = list(by)
    with_flows = bool(snaps) and all(s.has_flows for s in snaps)
    out = {}
    for s in snaps:
        if len(s) == 0:
            continue
        parts, names = [], []
        for dim in by:
            ids, nm = _dim_ids(s, dim)
            parts.append(ids)
            names.append(nm)
        peer_ids, peer_names = _dim_ids(s, "peer")
        keys = np.stack(parts + [peer_ids], axis=1) if parts else peer_ids[:, None]
        uniq_gp, inv_gp = np.unique(keys, axis=0, return_inverse=True)
        inv_gp = inv_gp.reshape(-1)
        sums = {}
        for col in ("packets", "bytes") + (("flows",) if with_flows else ()):
            acc = np.zeros(len(uniq_gp), dtype=np.uint64)
            np.add.at(acc, inv_gp, s.columns[col].astype(np.uint64))
            sums[col] = acc.tolist()
        for j, row in enumerate(uniq_gp.tolist()):
            key = tuple(names[k][row[k]] for k in range(len(by)))
            g = out.setdefault(key, {"packets": 0, "bytes": 0,
                                     "flows": 0 if with_flows else None, "peers": set()})
            g["packets"] += sums["packets"][j]
            g["bytes"] += sums["bytes"][j]
            if with_flows:
                g["flows"] += sums["flows"][j]
            peer = peer_names[row[-1]]
            if peer not in (NONE_LABEL, OVERFLOW_LABEL) and (sums["packets"][j] or sums["bytes"][j]):
                g["peers"].add(peer)
    return out


def _share(x, total):
    return x / total if total else float("nan")


def share_table(snaps, by=("category",), top=None, title=None):
    """Shares of packets and bytes per group (sorted by bytes), with flows and the
    number of distinct peers where they apply; *top* keeps the N largest groups and
    sums the rest into one ``(other)`` row."""
    if isinstance(snaps, Snapshot):
        snaps = [snaps]
    if isinstance(by, str):
        by = [by]
    groups = group(snaps, by)
    with_flows = bool(snaps) and all(s.has_flows for s in snaps)
    tot_p = sum(g["packets"] for g in groups.values())
    tot_b = sum(g["bytes"] for g in groups.values())
    items = sorted(groups.items(), key=lambda kv: (-kv[1]["bytes"], -kv[1]["packets"], kv[0]))
    if top is not None and len(items) > top:
        rest = items[top:]
        other = {"packets": sum(g["packets"] for _, g in rest),
                 "bytes": sum(g["bytes"] for _, g in rest),
                 "flows": sum(g["flows"] for _, g in rest) if with_flows else None,
                 "peers": set().union(*(g["peers"] for _, g in rest))}
        items = items[:top] + [((f"(other {len(rest)})",) + ("",) * (len(by) - 1), other)]
    show_peers = "peer" not in by
    cols = list(by) + ["packets", "packets_share", "bytes", "bytes_share"]
    cols += ["flows"] if with_flows else []
    cols += ["peers"] if show_peers else []
    rows = []
    for key, g in items:
        r = list(key) + [g["packets"], _share(g["packets"], tot_p), g["bytes"], _share(g["bytes"], tot_b)]
        r += [g["flows"]] if with_flows else []
        r += [len(g["peers"])] if show_peers else []
        rows.append(r)
    total = ["total"] + [""] * (len(by) - 1) + [tot_p, 1.0 if tot_p else float("nan"),
                                                 tot_b, 1.0 if tot_b else float("nan")]
    total += [sum(g["flows"] for g in groups.values())] if with_flows else []
    total += [len(set().union(*(g["peers"] for g in groups.values())))] if show_peers else []
    rows.append(total)
    return Table(title if title is not None else f"Shares by {', '.join(by)}", cols, rows)


# -- windows and periods ------------------------------------------------------------
def windows_of(snaps):
    """Distinct (start, end) windows in ns, sorted by start, with their snapshots."""
    wins = {}
    for s in snaps:
        wins.setdefault((s.window.start, s.window.end), []).append(s)
    return sorted(wins.items())


def over_time_table(snaps, by="category", metric="bytes", top=None):
    """One row per window: the share of *metric* of each group (columns)."""
    _check_metric(metric)
    wins = windows_of(snaps)
    per = []
    names = {}
    for (start, end), ss in wins:
        g = group(ss, [by])
        tot = sum(x[metric] for x in g.values())
        shares = {k[0]: _share(x[metric], tot) for k, x in g.items()}
        per.append((start, end, tot, shares))
        for k, x in g.items():
            names[k[0]] = names.get(k[0], 0) + x[metric]
    order = sorted(names, key=lambda k: (-names[k], k))
    if top is not None and len(order) > top:
        keep, rest = order[:top], order[top:]
    else:
        keep, rest = order, []
    cols = ["start", "end", metric] + [f"{k}_share" for k in keep]
    cols += ["(other)_share"] if rest else []
    rows = []
    for start, end, tot, shares in per:
        r = [iso(start), iso(end), tot] + [shares.get(k, 0.0 if tot else float("nan")) for k in keep]
        if rest:
            r.append(sum(shares.get(k, 0.0) for k in rest) if tot else float("nan"))
        rows.append(r)
    return Table(f"Share of {metric} by {by} per window", cols, rows)


class Period:
    """A named selection of snapshots (some windows of the report)."""

    def __init__(self, label, snaps):
        self.label = label
        self.snaps = snaps


def parse_period(spec, snaps):
    """Select snapshots for a period given as: a window index (``0``, ``-1``; windows
    sorted by start), an index range ``I:J`` (J excluded, either may be empty), an
    ISO time (the window containing it), an ISO range ``T1/T2`` (windows starting in
    [T1, T2)), or a snapshot file or directory (the windows read from it)."""
    wins = windows_of(snaps)
    if not wins:
        raise ReportError("no snapshots to take periods from")
    spec = str(spec)
    p = pathlib.Path(spec)
    if p.exists():
        wanted = {q.resolve() for q in snapshot_paths([p])}
        sel = [s for s in snaps if s.path is not None and s.path.resolve() in wanted]
        if not sel:
            raise ReportError(f"period {spec!r}: that file is not among the snapshots reported")
        return Period(spec, sel)
    try:
        if ":" in spec and "T" not in spec:
            a, b = spec.split(":", 1)
            idx = range(len(wins))[slice(int(a) if a else None, int(b) if b else None)]
            sel = [s for i in idx for s in wins[i][1]]
            if not sel:
                raise ReportError(f"period {spec!r}: no windows in that range (there are {len(wins)})")
            return Period(f"windows {spec}", sel)
        i = int(spec)
    except ValueError:
        pass
    else:
        if not -len(wins) <= i < len(wins):
            raise ReportError(f"period {spec!r}: window index out of range (there are {len(wins)} windows)")
        (start, _), sel = wins[i]
        return Period(f"window {i % len(wins)} ({iso(start)})", sel)
    if "/" in spec:
        a, b = spec.split("/", 1)
        t1, t2 = parse_time(a), parse_time(b)
        sel = [s for (start, _), ss in wins if t1 <= start < t2 for s in ss]
        if not sel:
            raise ReportError(f"period {spec!r}: no window starts in that time range")
        return Period(spec, sel)
    t = parse_time(spec)
    sel = [s for (start, end), ss in wins if start <= t < end for s in ss]
    if not sel:
        raise ReportError(f"period {spec!r}: no window contains that time")
    return Period(f"{spec}", sel)


def parse_time(text):
    """ISO 8601 time (``Z`` or an offset; naive means UTC) -> ns since the epoch."""
    t = text.strip()
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    try:
        dt = datetime.datetime.fromisoformat(t)
    except ValueError:
        raise ReportError(f"{text!r} is not a window index, a snapshot file or an ISO time "
                          "(e.g. 2026-11-28T20:00Z)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    delta = dt - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def change_ratio(share_a, share_b):
    """share_b / share_a: ``inf`` when the group is new in B, None when absent in both."""
    if not share_a and not share_b:
        return None
    if not share_a:
        return math.inf
    return share_b / share_a


def format_change(ratio):
    if ratio is None:
        return "-"
    if math.isinf(ratio):
        return "new"
    return f"×{ratio:.1f}" if ratio >= 0.95 or ratio == 0 else f"×{ratio:.2f}"


def compare_table(snaps, spec_a, spec_b, by="category", metric="bytes", top=None):
    """The share of *metric* of each group in period A and in period B and its change
    (column ``change`` = share in B / share in A: a float, ``inf`` for a group absent
    from A, None for one absent from both; shown as ×N / new), with one headline line
    per group (e.g. ``vpn-obfuscation ×12.0 from window 0 (...) to window 5 (...)``)."""
    _check_metric(metric)
    a, b = parse_period(spec_a, snaps), parse_period(spec_b, snaps)
    ga, gb = group(a.snaps, [by]), group(b.snaps, [by])
    ta = sum(x[metric] for x in ga.values())
    tb = sum(x[metric] for x in gb.values())
    names = sorted(set(ga) | set(gb), key=lambda k: (-(gb.get(k, {}).get(metric, 0)), k))
    rows, notes = [], []
    for k in names:
        sa = _share(ga.get(k, {}).get(metric, 0), ta) if ta else 0.0
        sb = _share(gb.get(k, {}).get(metric, 0), tb) if tb else 0.0
        rows.append([k[0], sa, sb, change_ratio(sa, sb)])
    if top is not None:
        rows = rows[:top]
    for r in rows:
        notes.append(f"{r[0]} {format_change(r[3])} from {a.label} to {b.label}"
                     f" ({100 * r[1]:.1f}% -> {100 * r[2]:.1f}% of {metric})")
    t = Table(f"Change of the share of {metric} by {by}: A = {a.label}, B = {b.label}",
              [by, "A_share", "B_share", "change"], rows, notes=[""] + notes)
    return t


def _check_metric(metric):
    if metric not in METRICS:
        raise ReportError(f"unknown metric {metric!r} (bytes or packets)")


# -- plot -----------------------------------------------------------------------------
def plot_shares(snaps, path, by="category", metric="bytes", top=8):
    """Draw the share of *metric* by *by* per window (stacked areas; bars for a single
    window) into a PNG.  Needs matplotlib (``pip install nkstream[analysis]``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ReportError("--plot needs matplotlib: pip install 'nkstream[analysis]'") from None
    t = over_time_table(snaps, by=by, metric=metric, top=top)
    share_cols = [i for i, c in enumerate(t.columns) if c.endswith("_share")]
    labels = [t.columns[i][: -len("_share")] for i in share_cols]
    times = [datetime.datetime.fromisoformat(r[0].replace("Z", "+00:00")) for r in t.rows]
    ys = [[0.0 if math.isnan(r[i]) else 100.0 * r[i] for r in t.rows] for i in share_cols]
    fig, ax = plt.subplots(figsize=(10, 5))
    try:
        if len(times) > 1:
            ax.stackplot(times, ys, labels=labels)
            fig.autofmt_xdate()
        else:
            bottom = 0.0
            for lab, y in zip(labels, ys):
                ax.bar([0], y, bottom=bottom, label=lab)
                bottom += y[0] if y else 0.0
            ax.set_xticks([0], [t.rows[0][0]] if t.rows else [""])
        ax.set_ylim(0, 100)
        ax.set_ylabel(f"share of {metric} (%)")
        ax.set_xlabel("window start (UTC)")
        ax.set_title(f"Share of {metric} by {by} per window")
        if labels:
            ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small")
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=100)
    finally:
        plt.close(fig)
    return pathlib.Path(path)


# -- summary for `classify` -------------------------------------------------------------
def summary_table(snapshot, top=10):
    """Plain-text summary of one snapshot (or a list, merged): window and sensor,
    totals, shares of bytes and packets by category, top peers, per watched range and
    direction, error counters and capture drops.  Needs numpy only."""
    if not isinstance(snapshot, Snapshot):
        snapshot = merge_snapshots(list(snapshot))
    s = snapshot
    t = s.totals
    host = s.sensor.get("host")
    ifaces = s.sensor.get("interfaces")
    seconds = (s.window.end - s.window.start) / 1e9
    out = [f"nkstream summary: {iso(s.window.start)} .. {iso(s.window.end)} ({seconds:g} s)"
           + (f", host {_text(host)}" if host else "")
           + (f", interfaces {_text(ifaces)}" if ifaces else ""),
           f"packets {t.get('packets', 0):,}, bytes {t.get('bytes', 0):,}; "
           f"decoded {t.get('decoded', 0):,}, unmatched {t.get('unmatched', 0):,}, "
           f"errors {t.get('error_packets', 0):,}, overflow {t.get('overflow_packets', 0):,}"]
    if s.has_flows or t.get("flows"):
        out.append(f"flows {t.get('flows', 0):,}, active {t.get('flows_active', 0):,}, "
                   f"evicted {t.get('flow_evictions', 0):,}, timed out {t.get('flow_timeouts', 0):,}")
    drops = s.drops
    if drops or s.lost:
        out.append("capture drops: " + (", ".join(f"{k} {v:,}" for k, v in drops.items()) or "none")
                   + ("; lost: " + ", ".join(f"{k} {v:,}" for k, v in s.lost.items()) if s.lost else ""))
    out.append("")
    out.append(render_text(share_table(s, ["category"], title="By category")))
    out.append(render_text(share_table(s, ["peer"], top=top, title="Top peers (by bytes)")))
    out.append(render_text(share_table(s, ["watch", "direction"], title="Per watched range and direction")))
    if s.errors:
        rows = sorted(s.errors.items(), key=lambda kv: (-kv[1], kv[0]))
        total = t.get("packets", 0)
        out.append(render_text(Table("Errors", ["reason", "packets", "packets_share"],
                                     [[k, v, _share(v, total)] for k, v in rows])))
    return "\n".join(out)


# -- helpers ------------------------------------------------------------------------------
def load_all(paths):
    """Snapshots from files and directories, in the order given (directories sorted)."""
    return [load_snapshot(p) for p in snapshot_paths(paths)]


def iso(ns):
    sec, frac = divmod(int(ns), 10**9)
    t = datetime.datetime.fromtimestamp(sec, datetime.timezone.utc)
    s = t.strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        s += f".{frac:09d}".rstrip("0")
    return s + "Z"


def _text(x):
    return ",".join(map(str, x)) if isinstance(x, (list, tuple)) else str(x)
