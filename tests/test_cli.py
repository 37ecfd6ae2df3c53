"""The command line through the real entry point (`python -m nkstream ...`).

Exit codes (DESIGN.md): 0 success, 2 bad usage, 1 runtime error with ONE line on
stderr naming the file (and offset or line).  Then the behaviour of `classify`
(--sample table, --interval windows, stdin), `decode`'s classifier columns (held
against `classify`'s counters and the prefix tables) and `verify` (against Wireshark).
"""
import collections
import decimal
import importlib.util
import json
import os
import struct
import subprocess
import sys

import pytest

from conftest import ROOT

ENV = dict(os.environ, PYTHONPATH=str(ROOT))

_spec = importlib.util.spec_from_file_location("nkstream_golden", ROOT / "scripts" / "golden.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)


def nk(*args, stdin=None, input=None, timeout=300, shell=None):
    if shell is not None:
        return subprocess.run(shell, shell=True, cwd=ROOT, env=ENV, capture_output=True,
                              timeout=timeout)
    return subprocess.run([sys.executable, "-m", "nkstream", *map(str, args)], cwd=ROOT,
                          env=ENV, capture_output=True, timeout=timeout, stdin=stdin,
                          input=input)


def subcommands():
    from nkstream.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sorted(action.choices)


def one_error_line(res, *needles):
    """Exit 1 and exactly one line on stderr that names each needle."""
    assert res.returncode == 1, (res.returncode, res.stderr)
    lines = res.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])
    assert "Traceback" not in lines[0]
    return lines[0]


# ------------------------------------------------------------------ help and usage

def test_subcommands_present():
    assert {"classify", "decode", "lookup", "report", "verify"} <= set(subcommands())


@pytest.mark.parametrize("cmd", [None] + subcommands())
def test_help_exits_0(cmd):
    res = nk(*([cmd] if cmd else []), "--help")
    assert res.returncode == 0, res.stderr
    assert b"usage: nkstream" in res.stdout


@pytest.mark.parametrize("argv", [
    [],                                              # no subcommand
    ["no-such-command"],
    ["classify"],                                    # no file and no --sample
    ["classify", "x.pcap", "--interval", "5"],       # --interval without --out-dir
    ["classify", "x.pcap", "--out-dir", "d"],        # --out-dir without --interval
    ["classify", "x.pcap", "--interval", "0", "--out-dir", "d"],
    ["classify", "x.pcap", "--interval", "soon", "--out-dir", "d"],
    ["decode"],
    ["decode", "x.pcap", "--limit", "-1"],
    ["lookup"],
    ["report"],
    ["report", "x", "--format", "xml"],
    ["verify"],
    ["verify", "x.pcap", "--sample", "many"],
    ["classify", "--no-such-option", "x.pcap"],
])
def test_bad_usage_exits_2(argv):
    res = nk(*argv)
    assert res.returncode == 2, (argv, res.returncode, res.stderr)
    assert b"usage:" in res.stderr


# ------------------------------------------------------------------ runtime errors

@pytest.mark.parametrize("cmd", [["classify"], ["decode"], ["verify"], ["report"]])
def test_missing_file(cmd, tmp_path):
    missing = tmp_path / "missing.pcap"
    one_error_line(nk(*cmd, missing), missing)


def _damaged(corpus_dir, tmp_path):
    """ndpi__pptp.pcap with the 6th record's captured length made impossible."""
    data = bytearray((corpus_dir / "ndpi__pptp.pcap").read_bytes())
    off = 24
    for _ in range(5):
        off += 16 + struct.unpack_from("<I", data, off + 8)[0]
    struct.pack_into("<I", data, off + 8, 0x7FFFFFFF)
    bad = tmp_path / "damaged.pcap"
    bad.write_bytes(bytes(data))
    return bad, off


@pytest.mark.parametrize("cmd", [["classify", "--quiet"], ["decode"], ["verify"]])
def test_damaged_capture(cmd, corpus_dir, tmp_path):
    bad, off = _damaged(corpus_dir, tmp_path)
    one_error_line(nk(*cmd, bad), bad, f"offset {off}")


def test_decode_damaged_keeps_good_packets(corpus_dir, tmp_path):
    bad, _ = _damaged(corpus_dir, tmp_path)
    res = nk("decode", bad)
    assert res.returncode == 1
    assert len(res.stdout.decode().splitlines()) == 5   # the packets before the damage


@pytest.mark.parametrize("text,needle", [
    ('[counters]\ncapacity = "lots"\n', "counters.capacity"),
    ("[counters\ncapacity = 3\n", "line 1"),
])
@pytest.mark.parametrize("cmd", ["classify", "decode"])
def test_bad_config(cmd, text, needle, corpus_dir, tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    one_error_line(nk(cmd, "-c", cfg, corpus_dir / "ndpi__pptp.pcap"), cfg, needle)


def test_bad_prefix_file(corpus_dir, tmp_path):
    pfx = tmp_path / "watch.csv"
    pfx.write_text("175.45.176.0/22,KP\nnot-a-prefix,oops\n")
    one_error_line(nk("lookup", "--prefixes", pfx, "1.2.3.4"), f"{pfx}:2")
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(f'[tables]\nwatch = ["{pfx}"]\n')
    one_error_line(nk("classify", "-c", cfg, corpus_dir / "ndpi__pptp.pcap"), f"{pfx}:2")


def test_report_of_a_non_snapshot(corpus_dir):
    path = corpus_dir / "ndpi__pptp.pcap"
    one_error_line(nk("report", path), path)


# ------------------------------------------------------------------ classify

def test_classify_sample_prints_table():
    from nkstream.commands.classify import sample_capture

    res = nk("classify", "--sample", "--no-progress")
    assert res.returncode == 0, res.stderr
    out = res.stdout.decode()
    assert "By category" in out and "Top peers" in out
    # the table's total row: every packet of the sample (capinfos reads the .gz too)
    ci = subprocess.run(["capinfos", "-T", "-r", "-c", "-d", "-M", sample_capture()],
                        capture_output=True, text=True, timeout=60)
    packets, nbytes = map(int, ci.stdout.split("\t")[1:3])
    total_rows = [line.split() for line in out.splitlines() if line.startswith("total ")]
    assert total_rows and all(r[1:4:2] == [f"{packets:,}", f"{nbytes:,}"] for r in total_rows)
    for cat in ("video-gaming", "browsing-email-downloads", "vpn-obfuscation"):
        assert cat in out
    assert "packets in" in out


def _tshark_times(path):
    res = subprocess.run(["tshark", "-n", "-r", str(path), "-T", "fields", "-e",
                          "frame.time_epoch"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return [int(decimal.Decimal(t) * 10**9) for t in res.stdout.split()]


def test_classify_interval_windows(corpus_dir, tmp_path):
    """--interval S --out-dir DIR: one snapshot per S-second window of capture time
    that holds packets, aligned to multiples of S; each window holds exactly the
    packets tshark timestamps into it; the windows sum to the file's totals."""
    from nkstream.snapshot import load_snapshot

    path = corpus_dir / "ndpi__teams.pcap"           # 1540 packets over 25.6 s
    S = 5
    out = tmp_path / "windows"
    res = nk("classify", path, "--interval", S, "--out-dir", out, "--quiet")
    assert res.returncode == 0, res.stderr
    snaps = sorted((load_snapshot(p) for p in out.iterdir()), key=lambda s: s.window.start)
    per_window = collections.Counter(t // (S * 10**9) * S * 10**9 for t in _tshark_times(path))
    assert len(snaps) == len(per_window) >= 5
    for s in snaps:
        assert s.window.start % (S * 10**9) == 0
        assert s.window.end - s.window.start == S * 10**9
        assert s.totals["packets"] == per_window[s.window.start]
        assert int(s.columns["packets"].sum()) == s.totals["packets"]
    whole = golden.summary_of_capture(path, golden.DefaultTables())["totals"]
    assert sum(s.totals["packets"] for s in snaps) == whole["packets"] == 1540
    assert sum(s.totals["bytes"] for s in snaps) == whole["bytes"]


def test_classify_stdin_equals_file(corpus_dir, tmp_path):
    from nkstream.snapshot import load_snapshot

    path = corpus_dir / "ndpi__anydesk.pcapng"
    a, b = tmp_path / "file.msgpack", tmp_path / "stdin.msgpack"
    assert nk("classify", path, "-o", a, "--quiet").returncode == 0
    res = nk(shell=f"cat {path} | {sys.executable} -m nkstream classify - -o {b} --quiet")
    assert res.returncode == 0, res.stderr
    sa, sb = load_snapshot(a), load_snapshot(b)
    assert sa.totals == sb.totals
    assert golden.summarize(sa, "x")["rows"] == golden.summarize(sb, "x")["rows"]


# ------------------------------------------------------------------ decode verdicts

VERDICT_CAPTURES = ["ndpi__smtp-starttls.pcap", "ndpi__instagram.pcap",
                    "suricata-verify__tor_bl.pcap", "arkime__IKEv2.pcap",
                    "ndpi__pptp.pcap", "peafowl__802.1Q_dvlan.cap"]


@pytest.mark.parametrize("name", VERDICT_CAPTURES)
def test_decode_verdicts_add_up_to_classify(name, corpus_dir):
    """Grouping `decode`'s per-packet (watch, direction, peer, tag, category) gives
    exactly the rows `classify` counts (the golden file of the capture)."""
    res = nk("decode", corpus_dir / name)
    assert res.returncode == 0, res.stderr
    rows = collections.defaultdict(lambda: [0, 0])
    for line in res.stdout.decode().splitlines():
        o = json.loads(line)
        key = (o["watch"] or "(none)", o["direction"], o["peer"] or "(none)", o["tag"],
               o["category"])
        rows[key][0] += 1
        rows[key][1] += o["len"]
    got = sorted([*k, *v] for k, v in rows.items())
    g = json.loads(golden.golden_path(name).read_text())
    assert got == [r[:7] for r in g["rows"]]


def test_decode_labels_follow_the_tables(corpus_dir):
    """src_label/dst_label: the watch label of a watched address, else its peer label
    (looked up here through the Python PrefixTable API), except where a TLS SNI named
    the service (the peer side then carries the SNI's label)."""
    from nkstream.classify import Classifier

    clf = Classifier.from_config(None)
    res = nk("decode", corpus_dir / "ndpi__instagram.pcap")
    assert res.returncode == 0
    n_labelled = 0
    for line in res.stdout.decode().splitlines():
        o = json.loads(line)
        for side in ("src", "dst"):
            addr, label = o[side], o[side + "_label"]
            if addr is None:
                assert label is None
                continue
            want = clf.watch.lookup(addr) or clf.peers.lookup(addr)
            peer_side = ("dst" if o["direction"] in ("outbound", "internal", "transit")
                         else "src")
            if label != want:
                # only the peer side may differ, and then it is the key's SNI peer
                assert side == peer_side and label == o["peer"], (o, side, want)
            n_labelled += label is not None
    assert n_labelled > 100


# ------------------------------------------------------------------ verify

@pytest.mark.parametrize("name,sample", [
    ("ndpi__gnutella.pcap", 300),          # IPv6 ext headers, malformed packets
    ("peafowl__802.1Q_dvlan.cap", 0),      # stacked VLANs, every packet
    ("ndpi__6in4tunnel.pcap", 0),          # tunnel: outer header
    ("ndpi__anydesk.pcapng", 50),          # pcapng, several interfaces
])
def test_verify_agrees_on_corpus(name, sample, corpus_dir):
    res = nk("verify", corpus_dir / name, "--sample", sample)
    assert res.returncode == 0, res.stdout + res.stderr
    assert b"agree with Wireshark" in res.stdout


def test_verify_reports_a_difference(corpus_dir, tmp_path):
    """nkstream stores at most 4 VLAN ids per packet (docs/decoder.md); a real frame
    given five 802.1Q tags is one Wireshark shows in full: verify must say so."""
    src = (corpus_dir / "peafowl__802.1Q_dvlan.cap").read_bytes()
    hdr, rec = src[:24], src[24:]
    ts, incl, orig = struct.unpack_from("<8sII", rec, 0)
    frame = rec[16:16 + incl]
    assert frame[12:14] in (b"\x81\x00", b"\x88\xa8")
    extra = b"".join(b"\x81\x00" + struct.pack(">H", 100 + i) for i in range(3))
    frame = frame[:12] + extra + frame[12:]
    out = tmp_path / "five_tags.pcap"
    out.write_bytes(hdr + struct.pack("<8sII", ts, len(frame), orig + len(extra)) + frame)
    res = nk("verify", out)
    assert res.returncode == 1, res.stdout
    text = res.stdout.decode()
    assert "frame 1: vlan: nkstream [" in text and "1 of 1 sampled packets differ" in text
