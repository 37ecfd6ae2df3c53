#!/usr/bin/env python3
"""Regenerate (or check) the golden summaries of the public corpus captures.

    python scripts/golden.py            # rewrite tests/golden/<capture>.json
    python scripts/golden.py --check    # exit 1 and show a diff where one differs
    python scripts/golden.py -k quic    # only captures whose name contains 'quic'

Each golden file is what nkstream makes of one capture of shared/corpus/public with
the shipped default configuration: the snapshot's window, totals, named error
counters and one row per key (watch, direction, peer, tag, category, packets, bytes,
and flows where flow state counted any), sorted.  The summary goes through the same
path as `nkstream classify FILE -o SNAP`: a `Classifier` built from the default
config, `classify_files`, `Snapshot.from_counters`, an atomic write and
`load_snapshot` reading the file back (tests/test_golden.py also runs the real CLI on a
few captures and checks it gives the same summary).

As in nDPI's regression tests, a change of behaviour shows up as a diff of these
files: regenerate with this command and review the diff before committing it.
"""
import argparse
import difflib
import json
import os
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GOLDEN_DIR = ROOT / "tests" / "golden"
KEY_COLUMNS = ("watch", "direction", "peer", "tag", "category")
REGENERATE_HINT = "regenerate with python scripts/golden.py and review the diff"


def shared_dir():
    env = os.environ.get("NKSTREAM_SHARED")
    for cand in ([pathlib.Path(env)] if env else []) + [ROOT.parent / "shared", ROOT.parent.parent / "shared", ROOT / "shared"]:
        if (cand / "corpus" / "public").is_dir():
            return cand
    return None


def corpus_captures(corpus=None):
    """Every capture of the public corpus (not the upstream expected outputs)."""
    if corpus is None:
        shared = shared_dir()
        if shared is None:
            raise SystemExit("public corpus not found: set NKSTREAM_SHARED to the shared/ folder")
        corpus = shared / "corpus" / "public"
    return sorted(
        p for p in pathlib.Path(corpus).iterdir()
        if p.is_file() and not p.name.endswith((".expected.out", ".ndpireader42.txt"))
    )


class DefaultTables:
    """The default config's tables and rules, loaded once (the peer table takes most
    of the start-up time) and turned into a fresh Classifier per capture, so that no
    state (counters, flows) carries from one capture to the next."""

    def __init__(self, config=None):
        from nkstream.config import build_rules, build_tables, load_config

        self.cfg = load_config(config)
        self.watch, self.peers = build_tables(self.cfg)
        self.rules = build_rules(self.cfg)

    def classifier(self):
        from nkstream.classify import Classifier

        cfg = self.cfg
        return Classifier(self.watch, self.peers, self.rules,
                          counter_capacity=cfg.counter_capacity,
                          flow_capacity=cfg.flow_capacity if cfg.flows_enabled else 0,
                          flow_options=cfg.flow_options)


def classify_to_snapshot(path, tables, out_path):
    """Classify one capture as `nkstream classify PATH -o OUT` does; return the
    snapshot read back from the file, and the capture's warnings."""
    from nkstream import _core
    from nkstream.classify import classify_files
    from nkstream.snapshot import Snapshot, load_snapshot

    clf = tables.classifier()
    labels = clf.labels()
    warnings = []
    windows = classify_files([str(path)], clf, warn=warnings.append)
    (start, end, snap), = windows
    s = Snapshot.from_counters(
        snap, start_ns=start, end_ns=end, watch_labels=labels["watch"],
        peer_labels=labels["peer"], tags=labels["tag"], categories=labels["tag_category"],
        error_names=_core.ERROR_NAMES, flows=clf.flows_enabled,
        sensor={"host": "golden", "interfaces": [], "engine": "file", "workers": 1,
                "sources": [os.path.basename(str(path))]})
    s.write(out_path)
    return load_snapshot(out_path), [str(w) for w in warnings]


def summarize(snap, capture_name, warnings=()):
    """The deterministic summary of one snapshot (a plain dict, JSON-ready)."""
    df = snap.to_pandas()
    value_cols = ["packets", "bytes"] + (["flows"] if "flows" in df.columns else [])
    rows = []
    for rec in df[list(KEY_COLUMNS) + value_cols].itertuples(index=False):
        rows.append([str(x) for x in rec[:len(KEY_COLUMNS)]] + [int(x) for x in rec[len(KEY_COLUMNS):]])
    rows.sort()
    return {
        "capture": capture_name,
        "window": [snap.window.start, snap.window.end],
        "totals": {k: snap.totals[k] for k in sorted(snap.totals)},
        "errors": {k: snap.errors[k] for k in sorted(snap.errors)},
        "warnings": list(warnings),
        "columns": list(KEY_COLUMNS) + value_cols,
        "rows": rows,
    }


def summary_of_capture(path, tables):
    with tempfile.TemporaryDirectory(prefix="nkstream-golden-") as tmp:
        snap, warnings = classify_to_snapshot(path, tables, os.path.join(tmp, "snap.msgpack"))
    return summarize(snap, pathlib.Path(path).name, warnings)


def to_text(summary):
    """JSON with one key row per line, so that a change reads as a small diff."""
    lines = ["{"]
    for key in ("capture", "window", "totals", "errors", "warnings", "columns"):
        lines.append(f"  {json.dumps(key)}: {json.dumps(summary[key], sort_keys=True)},")
    lines.append('  "rows": [')
    rows = summary["rows"]
    for i, row in enumerate(rows):
        lines.append("    " + json.dumps(row) + ("," if i + 1 < len(rows) else ""))
    lines.append("  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def golden_path(capture_name):
    return GOLDEN_DIR / f"{capture_name}.json"


def diff_text(expected_text, actual_text, name):
    return "".join(difflib.unified_diff(
        expected_text.splitlines(True), actual_text.splitlines(True),
        fromfile=f"tests/golden/{name}.json (expected)", tofile=f"{name} (nkstream now)"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true",
                    help="compare instead of writing; exit 1 on any difference")
    ap.add_argument("-k", metavar="SUBSTR", help="only captures whose name contains SUBSTR")
    ap.add_argument("--corpus", help="corpus folder (default: $NKSTREAM_SHARED/corpus/public)")
    args = ap.parse_args(argv)

    captures = corpus_captures(args.corpus)
    if args.k:
        captures = [c for c in captures if args.k in c.name]
    tables = DefaultTables()
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    changed = 0
    for cap in captures:
        text = to_text(summary_of_capture(cap, tables))
        gp = golden_path(cap.name)
        old = gp.read_text() if gp.exists() else ""
        if old == text:
            continue
        changed += 1
        if args.check:
            sys.stdout.write(diff_text(old, text, cap.name))
        else:
            gp.write_text(text)
            print(f"{'updated' if old else 'created'} {gp.relative_to(ROOT)}")
    if not args.k:
        names = {golden_path(c.name).name for c in captures}
        for stale in sorted(GOLDEN_DIR.glob("*.json")):
            if stale.name not in names:
                changed += 1
                if args.check:
                    print(f"stale golden file (no such capture): {stale.relative_to(ROOT)}")
                else:
                    stale.unlink()
                    print(f"removed {stale.relative_to(ROOT)}")
    if args.check:
        if changed:
            print(f"{changed} golden file(s) differ: {REGENERATE_HINT}", file=sys.stderr)
            return 1
        print(f"{len(captures)} golden files match")
    else:
        print(f"{len(captures)} captures, {changed} golden file(s) written or removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
