"""Golden tests: each public corpus capture beside its expected summary.

tests/golden/<capture>.json holds what nkstream makes of the capture with the shipped
default config (window, totals, errors, one row per key); scripts/golden.py
regenerates them all with one command.  A difference fails with the diff and the
instruction to regenerate and review it.
"""
import importlib.util
import os
import subprocess
import sys

import pytest

from conftest import ROOT, corpus_captures

_spec = importlib.util.spec_from_file_location("nkstream_golden", ROOT / "scripts" / "golden.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)

CAPTURES = corpus_captures()


@pytest.fixture(scope="module")
def tables():
    return golden.DefaultTables()


def _compare(summary, name):
    gp = golden.golden_path(name)
    if not gp.exists():
        pytest.fail(f"no golden file {gp.relative_to(ROOT)}: {golden.REGENERATE_HINT}")
    expected = gp.read_text()
    actual = golden.to_text(summary)
    if expected != actual:
        pytest.fail(f"{name}: summary differs from tests/golden/{name}.json; "
                    f"{golden.REGENERATE_HINT}\n" + golden.diff_text(expected, actual, name),
                    pytrace=False)


def test_corpus_present():
    assert len(CAPTURES) >= 90, "public corpus not found or incomplete (NKSTREAM_SHARED)"


@pytest.mark.parametrize("capture", CAPTURES, ids=[c.name for c in CAPTURES])
def test_golden(capture, tables):
    _compare(golden.summary_of_capture(capture, tables), capture.name)


def test_no_stale_golden_files():
    names = {f"{c.name}.json" for c in CAPTURES}
    stale = sorted(p.name for p in golden.GOLDEN_DIR.glob("*.json") if p.name not in names)
    assert not stale, f"golden files without a capture: {stale}; {golden.REGENERATE_HINT}"


def test_golden_files_are_consistent():
    """Every golden file's rows add up to its totals (the invariant the files record)."""
    import json

    for c in CAPTURES:
        g = json.loads(golden.golden_path(c.name).read_text())
        cols = g["columns"]
        pk, by = cols.index("packets"), cols.index("bytes")
        assert sum(r[pk] for r in g["rows"]) == g["totals"]["packets"], c.name
        assert sum(r[by] for r in g["rows"]) == g["totals"]["bytes"], c.name
        assert g["rows"] == sorted(g["rows"]), c.name
        assert sum(g["errors"].values()) == g["totals"]["error_packets"], c.name


# Captures where the CLI run is compared with the golden file: a PPTP control
# channel, a VLAN/IPv6 SMTP capture with several keys, and a pcapng one.
CLI_CAPTURES = ["ndpi__pptp.pcap", "ndpi__smtp-starttls.pcap", "ndpi__anydesk.pcapng"]


@pytest.mark.parametrize("name", CLI_CAPTURES)
def test_cli_snapshot_matches_golden(name, corpus_dir, tmp_path):
    """`nkstream classify F -o SNAP` through the real entry point gives the summary
    the golden file holds (the golden path is the CLI's path)."""
    from nkstream.snapshot import load_snapshot

    snap_path = tmp_path / "snap.msgpack"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run(
        [sys.executable, "-m", "nkstream", "classify", str(corpus_dir / name), "-o",
         str(snap_path), "--quiet"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120)
    assert res.returncode == 0, res.stderr
    _compare(golden.summarize(load_snapshot(snap_path), name), name)
