"""`nkstream decode` end to end: real captures through the CLI, against tshark.

NOTE (readers branch): the command calls nkstream._core.decode_columns and
ERROR_NAMES from the native decoder (nkstream/core/decode.pxi, decoder branch).  These
tests pass once that branch is merged; in the readers branch alone decode.pxi is a
placeholder and they fail with AttributeError.
"""
import decimal
import gzip
import json
import struct
import subprocess
import sys

import pytest

from conftest import ROOT

REQUIRED = ("ts", "caplen", "len", "vlan", "src", "dst", "proto", "sport", "dport",
            "tag", "category", "src_label", "dst_label", "error")


def nk_decode(*args, stdin=None, input=None):
    return subprocess.run([sys.executable, "-m", "nkstream", "decode", *map(str, args)],
                          cwd=ROOT, stdin=stdin, input=input, capture_output=True, timeout=120)


def lines(res):
    return [json.loads(x) for x in res.stdout.decode().splitlines()]


def tshark(path, *fields):
    cmd = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "occurrence=f"]
    for f in fields:
        cmd += ["-e", f]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return [line.split("\t") for line in res.stdout.splitlines()]


@pytest.mark.parametrize("name", ["ndpi__quic.pcap", "ndpi__http.pcapng", "zeek__linux_dlt_sll2.pcap",
                                  "ndpi__443-chrome.pcap", "zeek__ipv6-hbh-routing0.pcap"])
def test_decode_matches_tshark(corpus_dir, name):
    path = corpus_dir / name
    res = nk_decode(path)
    assert res.returncode == 0, res.stderr
    got = lines(res)
    rows = tshark(path, "frame.time_epoch", "frame.cap_len", "frame.len", "ip.src", "ip.dst",
                  "ipv6.src", "ipv6.dst", "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport")
    assert len(got) == len(rows) > 0
    for obj, (ts, cl, wl, s4, d4, s6, d6, ts_, td, us, ud) in zip(got, rows):
        assert set(REQUIRED) <= set(obj)
        assert obj["ts"] == int(decimal.Decimal(ts) * 10**9)
        assert (obj["caplen"], obj["len"]) == (int(cl), int(wl))
        assert obj["src"] == (s4 or s6 or None)
        assert obj["dst"] == (d4 or d6 or None)
        sport, dport = (ts_, td) if ts_ else (us, ud)
        assert obj["sport"] == (int(sport) if sport else None)
        assert obj["dport"] == (int(dport) if dport else None)
        assert isinstance(obj["tag"], str) and isinstance(obj["category"], str)


def test_decode_limit(corpus_dir):
    path = corpus_dir / "ndpi__teams.pcap"
    assert len(lines(nk_decode(path, "--limit", 5))) == 5
    assert nk_decode(path, "--limit", 0).stdout == b""
    assert nk_decode(path, "--limit", -1).returncode == 2


def test_decode_stdin_and_gzip_equal_file(corpus_dir, tmp_path):
    path = corpus_dir / "ndpi__alexa-app.pcapng"
    want = nk_decode(path)
    assert want.returncode == 0 and want.stdout
    with open(path, "rb") as f:
        piped = subprocess.run(f"cat {path} | {sys.executable} -m nkstream decode -", shell=True,
                               cwd=ROOT, capture_output=True, timeout=120)
    assert piped.returncode == 0 and piped.stdout == want.stdout
    z = tmp_path / "capture"
    z.write_bytes(gzip.compress(path.read_bytes()))
    assert nk_decode("-", input=z.read_bytes()).stdout == want.stdout
    assert nk_decode(z).stdout == want.stdout


def test_decode_into_head_is_not_an_error(corpus_dir):
    path = corpus_dir / "suricata-verify__tor_bl.pcap"
    res = subprocess.run(
        f"{sys.executable} -m nkstream decode {path} | head -n 1; exit ${{PIPESTATUS[0]}}",
        shell=True, executable="/bin/bash", cwd=ROOT, capture_output=True, timeout=120)
    assert res.returncode == 0
    assert res.stderr == b""
    assert len(res.stdout.splitlines()) == 1


def test_decode_damaged_file_is_one_line_error(corpus_dir, tmp_path):
    data = bytearray((corpus_dir / "ndpi__quic.pcap").read_bytes())
    pos = 24
    for _ in range(4):                          # the fifth record
        pos += 16 + struct.unpack("<I", data[pos + 8:pos + 12])[0]
    struct.pack_into("<I", data, pos + 8, 300000)
    p = tmp_path / "damaged.pcap"
    p.write_bytes(bytes(data))
    res = nk_decode(p)
    assert res.returncode == 1
    assert res.stderr.decode() == \
        f"nkstream decode: error: {p}: offset {pos}: record length 300000 exceeds 256 KiB\n"
    assert len(lines(res)) == 4                 # the packets before the damage


def test_decode_truncated_last_record_is_a_warning(corpus_dir, tmp_path):
    full = (corpus_dir / "ndpi__quic.pcap").read_bytes()
    n = len(lines(nk_decode(corpus_dir / "ndpi__quic.pcap")))
    p = tmp_path / "cut.pcap"
    p.write_bytes(full[:-5])
    res = nk_decode(p)
    assert res.returncode == 0
    err = res.stderr.decode()
    assert err.startswith(f"nkstream decode: warning: {p}: offset ") and "truncated last record" in err
    assert len(lines(res)) == n - 1


def test_decode_bad_magic(tmp_path):
    p = tmp_path / "x.pcap"
    p.write_bytes(b"hello world, not a capture")
    res = nk_decode(p)
    assert res.returncode == 1
    assert res.stderr.decode() == \
        f"nkstream decode: error: {p}: offset 0: bad magic 0x68656c6c: not a pcap or pcapng file\n"
