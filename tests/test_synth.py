"""nkstream.synth: the generated capture, read back by Wireshark (tshark, capinfos),
has the requested packet count, valid headers and the study's protocols."""
import collections
import ipaddress
import subprocess

import numpy as np
import pytest

from nkstream import synth
from nkstream.capture import open_capture

N = 50000
FIELDS = ["frame.len", "ip.proto", "ipv6.nxt", "vlan.id", "tcp.srcport", "tcp.dstport",
          "udp.srcport", "udp.dstport", "ip.checksum.status",
          "tls.handshake.extensions_server_name", "http.request.method", "http.request.uri",
          "dns.flags.response", "pptp.magic_cookie", "gre.proto", "gre.flags.version", "esp.spi",
          "isakmp.ispi", "wg.type", "bitcoin.magic", "openvpn.opcode", "ip.src", "ip.dst",
          "ipv6.src", "ipv6.dst", "frame.time_delta", "udp.length", "_ws.malformed"]


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    path = tmp_path_factory.mktemp("synth") / "synth.pcap"
    synth.write_pcap(path, N, seed=7, duration_s=120.0)
    res = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-o", "tcp.desegment_tcp_streams:FALSE",
         "-o", "ip.check_checksum:TRUE", "-T", "fields", "-E", "occurrence=f"]
        + sum((["-e", f] for f in FIELDS), []), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    rows = [dict(zip(FIELDS, line.split("\t"))) for line in res.stdout.splitlines()]
    return path, rows


def test_counts_and_lengths(capture):
    path, rows = capture
    assert len(rows) == N
    out = subprocess.run(["capinfos", "-M", "-T", "-r", "-c", "-d", str(path)],
                         capture_output=True, text=True, check=True).stdout.split("\t")
    assert int(out[1]) == N
    # our reader agrees with Wireshark on every frame length
    lens = np.concatenate([r["caplen"] for _, r in open_capture(path)])
    assert lens.tolist() == [int(r["frame.len"]) for r in rows]
    assert int(out[2]) == int(lens.sum())


def test_headers_are_valid(capture):
    _, rows = capture
    assert not any(r["_ws.malformed"] for r in rows)
    st = collections.Counter(r["ip.checksum.status"] for r in rows if r["ip.proto"])
    assert set(st) == {"1"}                     # every IPv4 header checksum is good
    assert all(float(r["frame.time_delta"]) >= 0 for r in rows)   # time order


def test_protocol_mix(capture):
    _, rows = capture
    n = len(rows)
    v6 = sum(1 for r in rows if r["ipv6.nxt"])
    vlan = sum(1 for r in rows if r["vlan.id"])
    assert 0.02 * n < v6 < 0.3 * n
    assert 0.02 * n < vlan < 0.3 * n
    snis = {r["tls.handshake.extensions_server_name"] for r in rows} - {""}
    assert any(s.endswith("googlevideo.com") or s.endswith("fbcdn.net") for s in snis)
    assert any(s in ("www.baidu.com", "www.qq.com", "g.alicdn.com") for s in snis)
    assert {(r["http.request.method"], r["http.request.uri"]) for r in rows} >= {("GET", "/")}
    q = sum(1 for r in rows if r["dns.flags.response"] == "0")
    a = sum(1 for r in rows if r["dns.flags.response"] == "1")
    assert q > 0 and a > 0
    assert any(r["pptp.magic_cookie"] == "0x1a2b3c4d" for r in rows)
    gre = [r for r in rows if r["gre.proto"]]
    assert gre and {(r["gre.proto"], r["gre.flags.version"]) for r in gre} == {("0x880b", "1")}
    assert any(r["esp.spi"] for r in rows) and any(r["isakmp.ispi"] for r in rows)
    wg = collections.Counter((r["wg.type"], r["udp.length"]) for r in rows if r["wg.type"])
    assert wg[("1", str(148 + 8))] > 0 and wg[("2", str(92 + 8))] > 0
    assert any(t == "4" for t, _ in wg)
    assert any(r["openvpn.opcode"] for r in rows)
    assert any(r["bitcoin.magic"] == "0xf9beb4d9" for r in rows)
    dports = collections.Counter(r["tcp.dstport"] for r in rows)
    for port in ("9001", "3333", "18080", "1935", "25", "993", "80"):
        assert dports[port] > 0, port
    udp = collections.Counter(r["udp.dstport"] for r in rows)
    assert udp["443"] > 0 and udp["1194"] > 0 and udp["51820"] > 0


def test_byte_shares(capture):
    """VPN/obfuscation ~13% of bytes, video+gaming the bulk (port-based estimate)."""
    _, rows = capture
    total = sum(int(r["frame.len"]) for r in rows)
    vpn_ports = {"1723", "500", "1194", "51820", "9001"}

    def is_vpn(r):
        ports = {r["tcp.srcport"], r["tcp.dstport"], r["udp.srcport"], r["udp.dstport"]}
        return bool(r["gre.proto"] or r["esp.spi"] or ports & vpn_ports)

    vpn = sum(int(r["frame.len"]) for r in rows if is_vpn(r)) / total
    assert 0.05 < vpn < 0.25
    video_ports = {"1935", "27015", "3074", "7777", "5055", "9000"}
    quic_rtmp_game = sum(int(r["frame.len"]) for r in rows
                         if r["udp.dstport"] == "443" or r["udp.srcport"] == "443"
                         or {r["tcp.srcport"], r["tcp.dstport"], r["udp.srcport"], r["udp.dstport"]}
                         & video_ports) / total
    assert quic_rtmp_game > 0.2


def test_watched_addresses_on_one_side(capture):
    _, rows = capture
    watch = [ipaddress.ip_network(c) for c, _ in synth.WATCH_V4]
    peers = [ipaddress.ip_network(c) for c in synth.DEFAULT_PEERS]
    doc6 = ipaddress.ip_network(synth.WATCH_V6)
    for r in rows:
        if r["ip.src"]:
            s, d = ipaddress.ip_address(r["ip.src"]), ipaddress.ip_address(r["ip.dst"])
            ws, wd = any(s in w for w in watch), any(d in w for w in watch)
            assert ws != wd
            assert any((d if ws else s) in p for p in peers)
        elif r["ipv6.src"]:
            s, d = ipaddress.ip_address(r["ipv6.src"]), ipaddress.ip_address(r["ipv6.dst"])
            assert (s in doc6) != (d in doc6)


def test_payload_signatures_present(capture):
    path, _ = capture
    data = path.read_bytes()
    assert b'"method": "mining.subscribe"' in data
    assert b"\x01\x21\x01\x01\x01\x01\x01\x01" in data           # levin (Monero)
    assert b"GET / HTTP/1.1\r\n" in data


def test_deterministic_and_exact_count():
    a = synth.generate(3000, seed=3)
    b = synth.generate(3000, seed=3)
    c = synth.generate(3000, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    for n in (0, 1, 17, 3000):
        data = synth.generate(n, seed=1)
        pos, k = 24, 0
        while pos < len(data):
            pos += 16 + int(data[pos + 8:pos + 12].view("<u4")[0])
            k += 1
        assert k == n and pos == len(data)


def test_custom_peers_v4_only():
    data = synth.generate(2000, seed=5, peers=["192.0.2.0/24"])
    # no IPv6 peer: no IPv6 packets; every peer address inside the given prefix
    from nkstream.capture_reference import read_reference
    recs, outcome = read_reference(data.tobytes())
    assert outcome is None and len(recs) == 2000
    net = ipaddress.ip_network("192.0.2.0/24")
    watch = [ipaddress.ip_network(c) for c, _ in synth.WATCH_V4]
    for r in recs:
        f = r.frame
        et = f[12:14] if f[12:14] != b"\x81\x00" else f[16:18]
        assert et == b"\x08\x00"
        ip = 14 if f[12:14] != b"\x81\x00" else 18
        s, d = ipaddress.ip_address(f[ip + 12:ip + 16]), ipaddress.ip_address(f[ip + 16:ip + 20])
        peer = d if any(s in w for w in watch) else s
        assert peer in net
