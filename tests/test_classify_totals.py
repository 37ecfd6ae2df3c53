"""Totals invariants of `nkstream classify` on every public corpus capture.

For each capture: the snapshot's totals equal the packet and byte counts capinfos
(Wireshark's tool, an independent reader) gives for the file, the rows sum to the
totals, and `nkstream report` reads the snapshot back.  Each capture is classified on
its own in-process through `classify_files` (the function the CLI calls); the real
entry point runs once over all captures together (one process, totals = the sums of
capinfos' counts) and once per capture for a few of them, each read back by
`nkstream report`.

Damage policy (docs/capture.md), checked on cut and corrupted copies of corpus files:
- a file cut inside its last record: a warning on stderr naming file and offset, the
  packets before it kept and counted, exit 0; capinfos stops at the same packet (it
  reports the cut as an error but counts only the whole packets before it), so the
  totals still equal capinfos';
- a damaged record header (an impossible length): exit 1 with one line on stderr
  naming the file and the offset of the bad record, and no snapshot written (a
  partial window would be mistaken for a whole one).
"""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, corpus_captures

_spec = importlib.util.spec_from_file_location("nkstream_golden", ROOT / "scripts" / "golden.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)

CAPTURES = corpus_captures()
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def capinfos(paths):
    """{path: (packets, bytes)} from one `capinfos -T -r -c -d -M` run.  -d is the
    data size: the sum of on-wire (original) lengths, which is what `bytes` counts."""
    res = subprocess.run(["capinfos", "-T", "-r", "-c", "-d", "-M"] + [str(p) for p in paths],
                         capture_output=True, text=True, timeout=300)
    out = {}
    for line in res.stdout.splitlines():
        name, pk, by = line.rsplit("\t", 2)
        out[name] = (int(pk), int(by))
    return out, res


@pytest.fixture(scope="module")
def expected():
    counts, res = capinfos(CAPTURES)
    assert len(counts) == len(CAPTURES), res.stderr
    return counts


@pytest.fixture(scope="module")
def tables():
    return golden.DefaultTables()


def nkstream(*args, stdin=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "nkstream", *map(str, args)], cwd=ROOT,
                          env=ENV, capture_output=True, timeout=timeout, input=stdin)


def report_total(snap_path):
    """`nkstream report SNAP --format json` (exit 0) -> the total row's (packets, bytes)."""
    res = nkstream("report", snap_path, "--format", "json")
    assert res.returncode == 0, res.stderr.decode()
    doc = json.loads(res.stdout)
    total, = [r for r in doc["rows"] if r["category"] == "total"]
    return total["packets"], total["bytes"]


def check_invariants(snap, what):
    cols = snap.columns
    t = snap.totals
    assert int(cols["packets"].sum()) == t["packets"], what
    assert int(cols["bytes"].sum()) == t["bytes"], what
    assert t["decoded"] + t["error_packets"] == t["packets"], what
    assert sum(snap.errors.values()) == t["error_packets"], what
    assert t["capbytes"] <= t["bytes"], what
    assert t["overflow_packets"] == 0, what


def test_corpus_present():
    assert len(CAPTURES) >= 90, "public corpus not found or incomplete (NKSTREAM_SHARED)"


@pytest.mark.parametrize("capture", CAPTURES, ids=[c.name for c in CAPTURES])
def test_totals_equal_capinfos(capture, expected, tables, tmp_path):
    snap, warnings = golden.classify_to_snapshot(capture, tables, tmp_path / "s.msgpack")
    assert warnings == []  # no corpus capture is cut short
    assert (snap.totals["packets"], snap.totals["bytes"]) == expected[str(capture)]
    check_invariants(snap, capture.name)


def test_cli_all_captures_in_one_process(expected, tmp_path):
    """Every capture through the real entry point in one run: the snapshot's totals
    are the sums of capinfos' counts, and `report` reads it back with those totals."""
    snap_path = tmp_path / "all.msgpack"
    res = nkstream("classify", *CAPTURES, "-o", snap_path, "--quiet")
    assert res.returncode == 0, res.stderr.decode()
    assert res.stderr.decode().strip() == f"snapshot: {snap_path}"
    from nkstream.snapshot import load_snapshot

    snap = load_snapshot(snap_path)
    want = (sum(p for p, _ in expected.values()), sum(b for _, b in expected.values()))
    assert (snap.totals["packets"], snap.totals["bytes"]) == want
    check_invariants(snap, "all captures")
    assert report_total(snap_path) == want


# One per reader path: pcap LE, pcap BE, pcap ns + PPI, pcapng with several
# interfaces, NFLOG, Linux SLL2.
CLI_CAPTURES = ["ndpi__pptp.pcap", "ndpi__nfsv2.pcap", "ndpi__someip_sd_sample.pcap",
                "ndpi__anydesk.pcapng", "arkime__nflog.pcap", "zeek__linux_dlt_sll2.pcap"]


@pytest.mark.parametrize("name", CLI_CAPTURES)
def test_cli_per_capture_and_report(name, corpus_dir, expected, tmp_path):
    snap_path = tmp_path / "s.msgpack"
    res = nkstream("classify", corpus_dir / name, "-o", snap_path, "--quiet")
    assert res.returncode == 0, res.stderr.decode()
    assert report_total(snap_path) == expected[str(corpus_dir / name)]


def _cut(src, dst, drop):
    data = src.read_bytes()
    dst.write_bytes(data[:len(data) - drop])
    return dst


@pytest.mark.parametrize("name,drop", [
    ("ndpi__pptp.pcap", 10),            # inside the last packet's data
    ("ndpi__pptp.pcap", 54 + 8),        # inside the last record header
    ("ndpi__anydesk.pcapng", 20),       # inside the last pcapng block
    ("suricata-verify__tor_bl.pcap", 700),  # several small records lost
])
def test_truncated_last_record_is_a_warning(name, drop, corpus_dir, tmp_path):
    cut = _cut(corpus_dir / name, tmp_path / name, drop)
    counts, res = capinfos([cut])
    assert "cut short" in res.stderr  # capinfos sees the cut too ...
    snap_path = tmp_path / "s.msgpack"
    res = nkstream("classify", cut, "-o", snap_path, "--quiet")
    assert res.returncode == 0, res.stderr.decode()
    err = res.stderr.decode()
    assert "warning" in err and str(cut) in err and "offset" in err
    # ... and counts the same whole packets before it
    assert report_total(snap_path) == counts[str(cut)]
    whole, _ = capinfos([corpus_dir / name])
    assert 0 < counts[str(cut)][0] < whole[str(corpus_dir / name)][0]


def test_damaged_record_is_an_error(corpus_dir, tmp_path):
    import struct

    data = bytearray((corpus_dir / "ndpi__pptp.pcap").read_bytes())
    off = 24  # pcap file header; records: 16-byte header (incl_len at +8) + data
    for _ in range(5):
        off += 16 + struct.unpack_from("<I", data, off + 8)[0]
    struct.pack_into("<I", data, off + 8, 0x7FFFFFFF)
    bad = tmp_path / "damaged.pcap"
    bad.write_bytes(bytes(data))
    snap_path = tmp_path / "s.msgpack"
    res = nkstream("classify", bad, "-o", snap_path, "--quiet")
    assert res.returncode == 1
    lines = res.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert str(bad) in lines[0] and f"offset {off}" in lines[0]
    assert not snap_path.exists()
