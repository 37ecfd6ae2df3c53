"""scripts/accuracy.py: the upstream flow-line parser, the taxonomy mapping, and
docs/accuracy.md being what the script produces now."""
import contextlib
import importlib.util
import io
import subprocess

import pytest

from conftest import ROOT

_spec = importlib.util.spec_from_file_location("nkstream_accuracy", ROOT / "scripts" / "accuracy.py")
accuracy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(accuracy)


def capinfos_bytes(path):
    out = subprocess.run(["capinfos", "-T", "-r", "-d", "-M", str(path)], capture_output=True,
                         text=True, timeout=60).stdout
    return int(out.split("\t")[-1])


@pytest.mark.parametrize("name,suffix", [
    ("ndpi__smtp-starttls.pcap", ".expected.out"),
    ("ndpi__smtp-starttls.pcap", ".ndpireader42.txt"),
    ("ndpi__pptp.pcap", ".expected.out"),
    ("arkime__IKEv2.pcap", ".ndpireader42.txt"),
])
def test_flow_lines_cover_the_capture(name, suffix, corpus_dir):
    """Captures with IP flows only: the parsed flows' bytes add up to capinfos'."""
    flows = accuracy.parse_flows(corpus_dir / (name + suffix))
    assert flows
    assert sum(f.bytes for f in flows) == capinfos_bytes(corpus_dir / name)


def test_parse_flow_fields(corpus_dir):
    flows = accuracy.parse_flows(corpus_dir / "ndpi__smtp-starttls.pcap.expected.out")
    f, = [f for f in flows if len(f.key[1][0]) == 4]      # the IPv4 flow to port 25
    assert 25 in (f.key[1][1], f.key[2][1])
    assert f.key[0] == 6 and f.protos == ["SMTPS", "Google"] and f.cat == "Email"
    assert f.category == "browsing-email-downloads"
    assert (f.packets, f.bytes) == (36, 8403)


@pytest.mark.parametrize("protos,cat,want", [
    (["DNS", "Google"], "Web", "infrastructure"),      # a lookup is plumbing
    (["TLS", "Tor"], "Web", "vpn-obfuscation"),        # protocol override
    (["TLS", "YouTube"], "Media", "video-gaming"),
    (["QUIC", "GMail"], "Email", "browsing-email-downloads"),
    (["Mining"], "Mining", "mining"),
    (["Unknown"], None, "unknown"),
    (["AnyDesk"], "RemoteAccess", "other"),
    (["X"], "SomethingNew", "other"),
])
def test_mapping(protos, cat, want):
    assert accuracy.mapped_category(protos, cat) == want


def test_inner_key_of_ip_in_ip():
    import struct

    tcp = struct.pack("!HH", 40000, 443) + bytes(16)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, bytes([10, 0, 0, 2]),
                     bytes([10, 0, 0, 1])) + tcp
    assert accuracy.inner_key(ip) == (6, (bytes([10, 0, 0, 1]), 443), (bytes([10, 0, 0, 2]), 40000))
    assert accuracy.inner_key(ip[:19]) is None


def test_docs_accuracy_is_current():
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert accuracy.main([]) == 0
    doc = (ROOT / "docs" / "accuracy.md").read_text()
    assert buf.getvalue() == doc, ("docs/accuracy.md is stale: regenerate with "
                                   "python scripts/accuracy.py > docs/accuracy.md and review the diff")
