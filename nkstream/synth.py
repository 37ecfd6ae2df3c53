"""Seeded generator of realistic mixed traffic, written as a classic pcap file.

Used by the decode benchmark, the sample capture, `nkstream bench` and tests.  The
traffic is a mix of the study's categories, by bytes roughly:

  video-gaming ~70%   QUIC (UDP 443) and TLS to video services (SNI googlevideo.com,
                      fbcdn.net ...), RTMP (TCP 1935), game traffic on UDP game ports
  browsing-email ~17% HTTP (TCP 80, ``GET / HTTP/1.1``), TLS with a valid ClientHello
                      carrying server_name, DNS queries and answers, SMTP, IMAPS
  vpn-obfuscation ~13% PPTP (TCP 1723 control with the 0x1A2B3C4D magic cookie, data in
                      GRE version 1, protocol type 0x880B), IKE (UDP 500) + ESP (IP 50),
                      OpenVPN (UDP 1194), WireGuard (UDP 51820: 148-byte initiation,
                      92-byte response, type 4 data), Tor (TLS to ORPort 9001)
  mining ~0.5%        Stratum JSON-RPC (TCP 3333, mining.subscribe/authorize), Bitcoin
                      (TCP 8333, magic F9BEB4D9), Monero (TCP 18080, levin 0x0121010101010101)

Every flow has a watched address (from the default watch ranges, one side) and a peer
(from ``peers``), both directions, TCP handshakes, sequence numbers that follow the
payload, IPv4 header checksums; ~10% of flows are IPv6 (between a documentation
prefix, 2001:db8::/32, as the default watch table has no IPv6, and an IPv6 peer), ~10%
carry an 802.1Q tag.  The size distribution is small-packet heavy (ACKs, game and DNS
packets) with full-size 1514-byte frames for bulk transfer.  Timestamps increase
monotonically over ``duration_s``.

Fast: a few hundred template frames are built with ``struct`` (one per flow type,
packet role, IP version and VLAN), packets are emitted as index arrays into them, and
addresses, ports, sequence numbers, IP ids, checksums and timestamps are patched in
with numpy; 2M packets take a few seconds.

    python -m nkstream.synth OUT.pcap -n 2000000 [--seed S] [--duration 600]
"""
import argparse
import ipaddress
import struct
import sys

import numpy as np

# Watched networks of the study (nkstream/data/watch.csv) with a share of flows each.
WATCH_V4 = [("175.45.176.0/22", 0.6), ("210.52.109.0/24", 0.25), ("77.94.35.0/24", 0.15)]
WATCH_V6 = "2001:db8::/32"   # RFC 3849 documentation prefix: IPv6 flows are transit

# Default peers: announced prefixes of a few public services (and single Tor / VPN
# addresses), from shared/data/service-prefixes-2024-10.csv (snapshot of 2024-10,
# RIPEstat routing data and the Tor bulk exit list as collected by nDPI, LGPL-3.0).
DEFAULT_PEERS = [
    "31.13.64.0/18", "2620:0:1c00::/40",        # facebook
    "8.8.8.0/24", "2001:4860::/32",             # google
    "1.12.0.0/14", "2001:df5:4500::/48",        # tencent
    "8.129.0.0/16", "2400:3200::/32",           # alibaba
    "23.246.0.0/18", "2607:fb10::/32",          # netflix
    "103.10.124.0/23", "2404:3fc0::/46",        # steam
    "45.113.128.0/22", "2402:2a80::/32",        # twitch
    "2.58.56.35/32",                            # tor exit
    "2.56.190.2/32",                            # nordvpn
    "23.162.40.4/32",                           # mullvad
]

EPOCH0 = 1767225600          # 2026-01-01T00:00:00Z
SNAPLEN = 262144
LINKTYPE_ETHERNET = 1
MSS = 1448                   # TCP payload of a 1514-byte frame (20 IP + 32 TCP in practice; 20 here)

# L4 kinds of a template
L4_OTHER, L4_TCP, L4_UDP, L4_ESP, L4_GRE = 0, 1, 2, 3, 4

C2S, S2C = 0, 1


# --- payload builders (signature-bearing first packets) ------------------------------

def tls_client_hello(sni, rnd):
    """A TLS 1.3-style ClientHello record with server_name (RFC 6066 s3),
    supported_groups, signature_algorithms, supported_versions and key_share."""
    def ext(code, body):
        return struct.pack("!HH", code, len(body)) + body
    name = sni.encode()
    exts = (ext(0, struct.pack("!HBH", len(name) + 3, 0, len(name)) + name)
            + ext(10, struct.pack("!HHHH", 6, 0x001D, 0x0017, 0x0018))
            + ext(11, b"\x01\x00")
            + ext(13, struct.pack("!HHHHH", 8, 0x0403, 0x0804, 0x0401, 0x0201))
            + ext(16, b"\x00\x0c\x02h2\x08http/1.1")
            + ext(43, b"\x04\x03\x04\x03\x03")
            + ext(51, struct.pack("!HHH", 36, 0x001D, 32) + rnd(32)))
    suites = struct.pack("!HHHHH", 0x1301, 0x1302, 0x1303, 0xC02F, 0xC030)
    body = (b"\x03\x03" + rnd(32) + b"\x20" + rnd(32) + struct.pack("!H", len(suites)) + suites
            + b"\x01\x00" + struct.pack("!H", len(exts)) + exts)
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def tls_server_hello(rnd):
    body = (b"\x03\x03" + rnd(32) + b"\x20" + rnd(32) + b"\x13\x01\x00"
            + struct.pack("!H", 6) + struct.pack("!HHH", 43, 2, 0x0304))
    hs = b"\x02" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x03" + struct.pack("!H", len(hs)) + hs


def tls_app_data(n, rnd):
    """n bytes of TLS application-data records (type 23)."""
    if n < 6:
        return rnd(n)
    return b"\x17\x03\x03" + struct.pack("!H", n - 5) + rnd(n - 5)


def dns_query(name, qid):
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", 1, 1)


def dns_answer(name, qid, addr):
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
    return (struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + q + struct.pack("!HH", 1, 1)
            + struct.pack("!HHHIH", 0xC00C, 1, 1, 300, 4) + ipaddress.IPv4Address(addr).packed)


def quic_initial(rnd, size=1200):
    """QUIC v1 Initial (RFC 9000 s17.2.2): long header, DCID/SCID 8 bytes, no token,
    2-byte length, 4-byte packet number, protected payload (padded to `size`)."""
    head = b"\xc3" + struct.pack("!I", 1) + b"\x08" + rnd(8) + b"\x08" + rnd(8) + b"\x00"
    rest = size - len(head) - 2
    return head + struct.pack("!H", 0x4000 | rest) + rnd(rest)


def quic_short(n, rnd):
    return bytes([0x40 | (rnd(1)[0] & 0x3F)]) + rnd(n - 1)


def pptp_sccrq(reply=False):
    """PPTP Start-Control-Connection-Request/Reply (RFC 2637 s2.1/2.2): length 156,
    control message, magic cookie 0x1A2B3C4D."""
    head = struct.pack("!HHIHH", 156, 1, 0x1A2B3C4D, 2 if reply else 1, 0)
    body = struct.pack("!HBBIIHH", 0x0100, 1 if reply else 0, 0, 1, 1, 0, 0x1)
    host = b"nkstream".ljust(64, b"\0") + b"synth".ljust(64, b"\0")
    return head + body + host


def gre_pptp(payload, call_id, seq):
    """Enhanced GRE (RFC 2637 s4.1): K and S bits, version 1, protocol 0x880B, key =
    payload length + call id, sequence number."""
    return struct.pack("!BBHHHI", 0x30, 0x01, 0x880B, len(payload), call_id, seq) + payload


def ike_sa_init(spi_i, response=False):
    """IKEv2 header (RFC 7296 s3.1), IKE_SA_INIT, with a Nonce payload."""
    nonce = struct.pack("!BBH", 0, 0, 36) + bytes(range(32))
    return (spi_i + (bytes(range(8, 16)) if response else bytes(8))
            + struct.pack("!BBBBII", 40, 0x20, 34, 0x20 if response else 0x08, 0, 28 + len(nonce))
            + nonce)


def wireguard(msg_type, rnd):
    if msg_type == 1:
        return b"\x01\x00\x00\x00" + rnd(144)                     # 148 bytes
    if msg_type == 2:
        return b"\x02\x00\x00\x00" + rnd(88)                      # 92 bytes
    raise ValueError(msg_type)


def wireguard_data(n, rnd):
    return b"\x04\x00\x00\x00" + rnd(4) + struct.pack("<Q", 7) + rnd(max(n - 16, 16))


def openvpn_reset(rnd, server=False):
    if server:    # P_CONTROL_HARD_RESET_SERVER_V2 (8 << 3), ack of the client's packet 0
        return b"\x40" + rnd(8) + b"\x01" + struct.pack("!I", 0) + rnd(8) + struct.pack("!I", 0)
    return b"\x38" + rnd(8) + b"\x00" + struct.pack("!I", 0)   # P_CONTROL_HARD_RESET_CLIENT_V2


def openvpn_data(n, rnd):
    return b"\x48" + rnd(3) + rnd(n - 4)                      # P_DATA_V2


def bitcoin_msg(command, payload):
    import hashlib
    chk = hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    return (b"\xf9\xbe\xb4\xd9" + command.encode().ljust(12, b"\0")
            + struct.pack("<I", len(payload)) + chk + payload)


def levin(command, body):
    return (b"\x01\x21\x01\x01\x01\x01\x01\x01" + struct.pack("<QBIiII", len(body), 1, command, 0, 1, 1)
            + body)


# --- flow types ------------------------------------------------------------------------
# Each: tag, share of bytes, IP protocol kind, server ports, the first packets
# (direction, payload-maker or kind), bulk classes (direction, payload size, weight),
# mean packets per flow, mean gap between packets (ms), IPv6 allowed.

def _flow_types():
    T = []

    def add(tag, share, l4, ports, first, bulk, mean_pkts, gap_ms, v6=True, extra=None):
        T.append(dict(tag=tag, share=share, l4=l4, ports=ports, first=first, bulk=bulk,
                      mean_pkts=mean_pkts, gap_ms=gap_ms, v6=v6, extra=extra or {}))

    hs = [(C2S, "syn"), (S2C, "synack"), (C2S, "ack")]
    video_sni = ["rr3---sn-oguelnsy.googlevideo.com", "video-hkg4-1.xx.fbcdn.net",
                 "scontent.xx.fbcdn.net", "occ-0-2433-2430.1.nflxvideo.net", "v16m.tiktokcdn.com"]
    web_sni = ["www.baidu.com", "www.qq.com", "g.alicdn.com", "www.wikipedia.org", "mail.google.com",
               "www.bing.com", "cdn.jsdelivr.net"]
    # Bulk downloads are acknowledged segment by segment (quick ACKs in slow start,
    # receivers that ACK every segment): as many small ACKs as full-size frames.
    tls_bulk_down = [(S2C, MSS, 8), (C2S, 0, 8), (S2C, 600, 1), (C2S, 90, 1)]
    # video-gaming
    add("https", 29.0, L4_TCP, [443], hs + [(C2S, ("tls_ch", video_sni)), (S2C, "tls_sh")],
        tls_bulk_down, 400, 2.0)
    add("quic", 23.5, L4_UDP, [443], [(C2S, "quic_initial"), (S2C, "quic_initial")],
        [(S2C, 1252, 8), (C2S, 40, 6), (S2C, 300, 1)], 400, 2.0)
    add("rtmp", 5.0, L4_TCP, [1935], hs + [(C2S, "rtmp_c0c1"), (S2C, "rtmp_s0s1")],
        [(C2S, MSS, 6), (S2C, 0, 3), (C2S, 400, 1)], 300, 3.0, v6=False)
    add("game", 12.0, L4_UDP, [27015, 3074, 7777, 5055, 9000],
        [(C2S, "game")], [(C2S, 60, 4), (S2C, 120, 4), (S2C, 300, 2), (C2S, 32, 2)], 150, 30.0)
    # browsing-email-downloads
    add("https", 9.0, L4_TCP, [443], hs + [(C2S, ("tls_ch", web_sni)), (S2C, "tls_sh")],
        [(S2C, MSS, 4), (C2S, 0, 5), (S2C, 700, 2), (C2S, 300, 1)], 40, 15.0)
    add("http", 4.0, L4_TCP, [80], hs + [(C2S, "http_get"), (S2C, "http_ok")],
        [(S2C, MSS, 4), (C2S, 0, 4), (S2C, 500, 1)], 30, 10.0)
    add("dns", 1.0, L4_UDP, [53], [(C2S, "dns_q"), (S2C, "dns_a")], [(C2S, "dns_q", 1), (S2C, "dns_a", 1)],
        2, 20.0)
    add("smtp", 1.0, L4_TCP, [25], hs + [(S2C, "smtp_banner"), (C2S, "smtp_ehlo")],
        [(C2S, MSS, 3), (S2C, 0, 3), (S2C, 80, 1)], 20, 20.0)
    add("imaps", 2.0, L4_TCP, [993], hs + [(C2S, ("tls_ch", ["imap.qq.com", "imap.gmail.com"])),
                                          (S2C, "tls_sh")],
        [(S2C, 900, 3), (C2S, 0, 3), (C2S, 120, 1)], 25, 30.0)
    # vpn-obfuscation
    add("pptp", 3.0, L4_TCP, [1723], hs + [(C2S, "pptp_sccrq"), (S2C, "pptp_sccrp")],
        [(C2S, ("gre", 1400), 4), (S2C, ("gre", 1400), 4), (C2S, ("gre", 80), 2), (S2C, ("gre", 80), 2)],
        200, 5.0, v6=False)
    add("ipsec", 3.0, L4_UDP, [500], [(C2S, "ike_init"), (S2C, "ike_init_r")],
        [(C2S, ("esp", 1400), 4), (S2C, ("esp", 1400), 4), (C2S, ("esp", 100), 2), (S2C, ("esp", 100), 1)],
        200, 5.0)
    add("openvpn", 2.5, L4_UDP, [1194], [(C2S, "ovpn_reset_c"), (S2C, "ovpn_reset_s")],
        [(C2S, ("ovpn", 1300), 3), (S2C, ("ovpn", 1300), 4), (C2S, ("ovpn", 90), 2)], 200, 5.0)
    add("wireguard", 2.5, L4_UDP, [51820], [(C2S, "wg_init"), (S2C, "wg_resp")],
        [(C2S, ("wg", 1400), 3), (S2C, ("wg", 1400), 4), (C2S, ("wg", 32), 2)], 200, 5.0)
    add("tor", 2.0, L4_TCP, [9001], hs + [(C2S, ("tls_ch", ["www.5ktjpz3bk.com", "www.qwdftl2n.net"])),
                                         (S2C, "tls_sh")],
        [(S2C, 543, 4), (C2S, 543, 2), (C2S, 0, 3), (S2C, MSS, 2)], 150, 10.0)
    # mining
    add("stratum", 0.2, L4_TCP, [3333], hs + [(C2S, "stratum_sub"), (S2C, "stratum_sub_r"),
                                              (C2S, "stratum_auth")],
        [(S2C, 300, 2), (C2S, 0, 1), (C2S, 160, 1)], 30, 500.0, v6=False)
    add("bitcoin", 0.2, L4_TCP, [8333], hs + [(C2S, "btc_version"), (S2C, "btc_version"),
                                              (C2S, "btc_verack")],
        [(S2C, 500, 2), (C2S, 0, 2), (C2S, 61, 1)], 40, 200.0)
    add("monero", 0.1, L4_TCP, [18080], hs + [(C2S, "levin_hs"), (S2C, "levin_hs")],
        [(S2C, 400, 2), (C2S, 0, 2), (C2S, 60, 1)], 30, 200.0)
    return T


FLOW_TYPES = _flow_types()


def _payload(spec, rnd, rng):
    """Bytes of a packet role's payload, and TCP flags if TCP data."""
    if isinstance(spec, tuple) and spec[0] == "tls_ch":
        return tls_client_hello(spec[1][int(rng.integers(len(spec[1])))], rnd)
    if isinstance(spec, tuple):
        kind, n = spec
        if kind == "gre":
            return b"\xff\x03\x00\xfd" + rnd(n - 4)           # PPP, MPPE-compressed data
        if kind == "esp":
            return rnd(n)                                     # SPI, sequence patched
        if kind == "ovpn":
            return openvpn_data(n, rnd)
        if kind == "wg":
            return wireguard_data(n, rnd)
        raise ValueError(kind)
    if isinstance(spec, int):
        return rnd(spec)
    name = spec
    if name == "tls_sh":
        return tls_server_hello(rnd)
    if name == "quic_initial":
        return quic_initial(rnd)
    if name == "rtmp_c0c1":
        return b"\x03" + struct.pack("!II", 0, 0) + rnd(MSS - 9)
    if name == "rtmp_s0s1":
        return b"\x03" + struct.pack("!II", 0, 0) + rnd(MSS - 9)
    if name == "game":
        return rnd(int(rng.integers(40, 120)))
    if name == "http_get":
        host = ["www.baidu.com", "www.sina.com.cn", "example.com", "www.qq.com"][int(rng.integers(4))]
        return (f"GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Mozilla/5.0 (Windows NT 10.0)\r\n"
                "Accept: */*\r\nConnection: keep-alive\r\n\r\n").encode()
    if name == "http_ok":
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 24000\r\n\r\n"
        return head + b"<html>" + bytes(rng.integers(97, 123, MSS - len(head) - 6, dtype=np.uint8))
    if name in ("dns_q", "dns_a"):
        qname = ["www.qq.com", "www.baidu.com", "googlevideo.com", "mail.google.com", "kcna.kp"][int(rng.integers(5))]
        qid = int(rng.integers(65536))
        return dns_query(qname, qid) if name == "dns_q" else dns_answer(qname, qid, "203.205.254.157")
    if name == "smtp_banner":
        return b"220 mx.example.net ESMTP ready\r\n"
    if name == "smtp_ehlo":
        return b"EHLO client.example.org\r\n"
    if name == "pptp_sccrq":
        return pptp_sccrq(False)
    if name == "pptp_sccrp":
        return pptp_sccrq(True)
    if name == "ike_init":
        return ike_sa_init(rnd(8))
    if name == "ike_init_r":
        return ike_sa_init(rnd(8), response=True)
    if name == "ovpn_reset_c":
        return openvpn_reset(rnd)
    if name == "ovpn_reset_s":
        return openvpn_reset(rnd, server=True)
    if name == "wg_init":
        return wireguard(1, rnd)
    if name == "wg_resp":
        return wireguard(2, rnd)
    if name == "stratum_sub":
        return b'{"id": 1, "method": "mining.subscribe", "params": ["cgminer/4.10.0"]}\n'
    if name == "stratum_sub_r":
        return (b'{"id":1,"result":[[["mining.notify","ae6812eb4cd7735a302a8a9dd95cf71f"]],'
                b'"08000002",4],"error":null}\n')
    if name == "stratum_auth":
        return b'{"params": ["worker.1", "x"], "id": 2, "method": "mining.authorize"}\n'
    if name == "btc_version":
        body = struct.pack("<iQq", 70015, 1, EPOCH0) + rnd(26) + rnd(26) + rnd(8) + b"\x10/Satoshi:25.0.0/" + \
            struct.pack("<i?", 800000, True)
        return bitcoin_msg("version", body)
    if name == "btc_verack":
        return bitcoin_msg("verack", b"")
    if name == "levin_hs":
        return levin(1001, rnd(180))
    raise ValueError(name)


# --- frame templates ---------------------------------------------------------------------

MAC_C = bytes.fromhex("020000000001")
MAC_S = bytes.fromhex("020000000002")


def _frame(l4kind, v6, vlan, direction, payload, tcp_flags):
    """(frame bytes, ip offset, l4 offset) with zero addresses/ports/seq/id/checksum."""
    src_mac, dst_mac = (MAC_C, MAC_S) if direction == C2S else (MAC_S, MAC_C)
    if l4kind == L4_TCP:
        l4 = struct.pack("!HHIIBBHHH", 0, 0, 0, 0, 5 << 4, tcp_flags, 64240, 0, 0) + payload
        proto = 6
    elif l4kind == L4_UDP:
        l4 = struct.pack("!HHHH", 0, 0, 8 + len(payload), 0) + payload
        proto = 17
    elif l4kind == L4_ESP:
        l4 = payload          # SPI (4) and sequence (4) are the first bytes, patched
        proto = 50
    elif l4kind == L4_GRE:
        l4 = payload          # already a GRE packet
        proto = 47
    else:
        raise ValueError(l4kind)
    ethertype = 0x86DD if v6 else 0x0800
    eth = dst_mac + src_mac + (struct.pack("!HH", 0x8100, 0) if vlan else b"") + struct.pack("!H", ethertype)
    ttl = 64 if direction == C2S else 52
    if v6:
        ip = struct.pack("!IHBB", 0x60000000, len(l4), proto, ttl) + bytes(32)
    else:
        ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(l4), 0, 0x4000, ttl, proto, 0) + bytes(8)
    return eth + ip + l4, len(eth), len(eth) + len(ip)


class _Templates:
    def __init__(self):
        self.blobs = []
        self.meta = []          # (len, ipoff, v6, l4kind, direction, paylen, vlan)

    def add(self, l4kind, v6, vlan, direction, payload, tcp_flags=0x18):
        frame, ipoff, l4off = _frame(l4kind, v6, vlan, direction, payload, tcp_flags)
        rec = struct.pack("<IIII", 0, 0, len(frame), len(frame)) + frame
        self.blobs.append(rec)
        hdr_l4 = {L4_TCP: 20, L4_UDP: 8}.get(l4kind, 0)
        self.meta.append((len(rec), 16 + ipoff, v6, l4kind, direction, len(frame) - l4off - hdr_l4, vlan))
        return len(self.blobs) - 1


def _role_templates(T, rng, rnd):
    """For each flow type: table[type][(v6, vlan)] -> array of template ids per role
    (first roles, then bulk classes), and per type the bulk class weights."""
    tm = _Templates()
    tables = []
    for ft in T:
        per = {}
        for v6 in (False, True):
            if v6 and not ft["v6"]:
                continue
            for vlan in (False, True):
                ids = []
                for direction, spec in ft["first"]:
                    ids.append(_template_for(tm, ft, v6, vlan, direction, spec, rng, rnd, first=True))
                for direction, spec, _w in ft["bulk"]:
                    ids.append(_template_for(tm, ft, v6, vlan, direction, spec, rng, rnd, first=False))
                per[(v6, vlan)] = np.array(ids, dtype=np.int64)
        tables.append(per)
    return tm, tables


def _template_for(tm, ft, v6, vlan, direction, spec, rng, rnd, first):
    l4 = ft["l4"]
    if spec == "syn":
        return tm.add(L4_TCP, v6, vlan, direction, b"", 0x02)
    if spec == "synack":
        return tm.add(L4_TCP, v6, vlan, direction, b"", 0x12)
    if spec == "ack":
        return tm.add(L4_TCP, v6, vlan, direction, b"", 0x10)
    if isinstance(spec, tuple) and spec[0] == "gre":
        inner = _payload(spec, rnd, rng)
        return tm.add(L4_GRE, v6, vlan, direction, gre_pptp(inner, 0x4000 + direction, 0))
    if isinstance(spec, tuple) and spec[0] == "esp":
        return tm.add(L4_ESP, v6, vlan, direction, _payload(spec, rnd, rng))
    if isinstance(spec, int) and ft["tag"] in ("https", "tor", "imaps") and spec > 0:
        payload = tls_app_data(spec, rnd)
    elif isinstance(spec, int) and ft["tag"] == "quic":
        payload = quic_short(spec, rnd)
    else:
        payload = _payload(spec, rnd, rng) if spec != 0 else b""
    flags = 0x18 if payload else 0x10
    return tm.add(l4, v6, vlan, direction, payload, flags)


# --- packets -------------------------------------------------------------------------------

def _parse_peers(peers):
    v4, v6 = [], []
    for p in peers:
        net = ipaddress.ip_network(p, strict=False)
        (v4 if net.version == 4 else v6).append(net)
    return v4, v6


def _random_v4(rng, nets, weights, n):
    k = rng.choice(len(nets), size=n, p=weights) if n else np.zeros(0, np.int64)
    base = np.array([int(x.network_address) for x in nets], dtype=np.uint64)
    size = np.array([x.num_addresses for x in nets], dtype=np.uint64)
    off = (rng.random(n) * size[k]).astype(np.uint64)
    # avoid the network address itself where the prefix has room
    off = np.where((size[k] > 2) & (off == 0), 1, off)
    return (base[k] + off).astype(np.uint32)


def _random_v6(rng, nets, n):
    k = rng.integers(0, len(nets), size=n)
    nb = np.array([list(x.network_address.packed) for x in nets], dtype=np.uint8)
    masks = np.array([list(x.netmask.packed) for x in nets], dtype=np.uint8)
    rand = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    rand[:, 15] |= 1
    return (nb[k] & masks[k]) | (rand & ~masks[k])


def _put_be(out, pos, values, nbytes):
    """out[pos + j] = big-endian bytes of values, for every position."""
    if len(pos) == 0:
        return
    v = np.asarray(values).astype(">u%d" % nbytes if nbytes in (2, 4, 8) else None)
    b = v.view(np.uint8).reshape(-1, nbytes)
    out[pos[:, None] + np.arange(nbytes)] = b


def _put_le32(out, pos, values):
    if len(pos) == 0:
        return
    b = np.asarray(values).astype("<u4").view(np.uint8).reshape(-1, 4)
    out[pos[:, None] + np.arange(4)] = b


def generate(n_packets, seed=0, peers=None, ipv6_share=0.1, vlan_share=0.1, duration_s=600.0):
    """Generate a pcap file (microsecond timestamps, Ethernet) of `n_packets` packets;
    returns its bytes as a uint8 numpy array."""
    n_packets = int(n_packets)
    if n_packets < 0:
        raise ValueError("n_packets must be >= 0")
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 256, size=1 << 16, dtype=np.uint8).tobytes()

    def rnd(n):
        start = int(rng.integers(0, len(pool) - n)) if n < len(pool) else 0
        return pool[start:start + n]

    T = FLOW_TYPES
    peers4, peers6 = _parse_peers(DEFAULT_PEERS if peers is None else peers)
    if not peers4:
        raise ValueError("peers must include at least one IPv4 prefix")
    if not peers6:
        ipv6_share = 0.0
    tm, tables = _role_templates(T, rng, rnd)
    t_len = np.array([m[0] for m in tm.meta], dtype=np.int64)
    t_ipoff = np.array([m[1] for m in tm.meta], dtype=np.int64)
    t_v6 = np.array([m[2] for m in tm.meta], dtype=bool)
    t_l4 = np.array([m[3] for m in tm.meta], dtype=np.int8)
    t_dir = np.array([m[4] for m in tm.meta], dtype=np.int8)
    t_pay = np.array([m[5] for m in tm.meta], dtype=np.int64)
    t_vlan = np.array([m[6] for m in tm.meta], dtype=bool)

    # Flow mix: probability of a type per flow such that its expected bytes match its share.
    exp_bytes = []
    for ti, ft in enumerate(T):
        ids = tables[ti][(False, False)]
        k = len(ft["first"])
        w = np.array([b[2] for b in ft["bulk"]], dtype=float)
        bulk_mean = float((t_len[ids[k:]] * w).sum() / w.sum())
        first_sum = float(t_len[ids[:k]].sum())
        mp = max(ft["mean_pkts"], k)
        exp_bytes.append(first_sum + (mp - k) * bulk_mean)
    share = np.array([ft["share"] for ft in T])
    p_type = share / np.array(exp_bytes)
    p_type /= p_type.sum()
    mean_pkts = np.array([max(ft["mean_pkts"], len(ft["first"])) for ft in T], dtype=float)
    avg = float((p_type * mean_pkts).sum())

    # Draw flows until they hold n_packets packets.
    nflows = max(1, int(n_packets / avg * 1.3) + 8)
    ftype = rng.choice(len(T), size=nflows, p=p_type)
    kfirst = np.array([len(ft["first"]) for ft in T])
    # packets per flow: the first packets plus a geometric number of bulk packets
    extra = rng.geometric(1.0 / np.maximum(mean_pkts[ftype] - kfirst[ftype] + 1, 1.0)) - 1
    if T and any(ft["tag"] == "dns" for ft in T):
        dns = np.array([ft["tag"] == "dns" for ft in T])[ftype]
        extra[dns] = 0
    counts = kfirst[ftype] + extra
    while counts.sum() < n_packets:          # rare: not enough; add more flows
        more = rng.choice(len(T), size=nflows, p=p_type)
        ftype = np.concatenate([ftype, more])
        counts = np.concatenate([counts, kfirst[more] + rng.geometric(
            1.0 / np.maximum(mean_pkts[more] - kfirst[more] + 1, 1.0)) - 1])
    csum = np.cumsum(counts)
    last = int(np.searchsorted(csum, n_packets)) if n_packets else -1
    ftype = ftype[:last + 1]
    counts = counts[:last + 1].copy()
    if n_packets:
        counts[-1] -= int(csum[last] - n_packets)
    F = len(ftype)
    n = int(counts.sum())

    # Per-flow attributes.
    v6ok = np.array([ft["v6"] for ft in T])[ftype] if F else np.zeros(0, bool)
    is6 = (rng.random(F) < ipv6_share) & v6ok
    vlan = rng.random(F) < vlan_share
    vlan_id = rng.choice(np.array([10, 20, 100, 101, 500, 1001]), size=F)
    watch_nets = [ipaddress.ip_network(c) for c, _ in WATCH_V4]
    watch_w = np.array([w for _, w in WATCH_V4])
    watch4 = _random_v4(rng, watch_nets, watch_w / watch_w.sum(), F)
    peer4 = _random_v4(rng, peers4, np.full(len(peers4), 1.0 / len(peers4)), F)
    n6 = int(is6.sum())
    watch6 = _random_v6(rng, [ipaddress.ip_network(WATCH_V6)], n6)
    peer6 = _random_v6(rng, peers6, n6) if n6 else np.zeros((0, 16), np.uint8)
    # the watched side is the client in most flows
    watched_client = rng.random(F) < 0.85
    cport = rng.integers(32768, 61000, size=F)
    sports = [np.array(ft["ports"]) for ft in T]
    sport = np.array([sports[t][rng.integers(len(sports[t]))] for t in ftype.tolist()],
                     dtype=np.int64) if F else np.zeros(0, np.int64)
    isn = rng.integers(0, 1 << 32, size=(F, 2), dtype=np.uint64)
    ipid = rng.integers(0, 1 << 16, size=(F, 2))
    spi = rng.integers(0x100, 1 << 32, size=(F, 2), dtype=np.uint64)
    start = rng.random(F) * duration_s * 0.9
    gap = np.array([ft["gap_ms"] for ft in T])[ftype] / 1000.0

    # Per-packet: flow, index in flow, role, template.
    flow = np.repeat(np.arange(F), counts)
    fstart = np.cumsum(counts) - counts
    k = np.arange(n) - fstart[flow]
    ptype = ftype[flow]
    kf = kfirst[ptype]
    nb = max(len(ft["bulk"]) for ft in T)
    cum = np.zeros((len(T), nb))
    for ti, ft in enumerate(T):
        w = np.array([b[2] for b in ft["bulk"]], dtype=float)
        c = np.cumsum(w / w.sum())
        cum[ti, :len(c)] = c
        cum[ti, len(c):] = 2.0
    u = rng.random(n)
    bulk_class = (u[:, None] >= cum[ptype]).sum(axis=1)
    role = np.where(k < kf, k, kf + bulk_class)
    tid = np.empty(n, dtype=np.int64)
    # template lookup per (type, v6, vlan): small loop over combinations, vectorised inside
    pv6 = is6[flow]
    pvlan = vlan[flow]
    for ti in range(len(T)):
        for key, ids in tables[ti].items():
            m = (ptype == ti) & (pv6 == key[0]) & (pvlan == key[1])
            if m.any():
                tid[m] = ids[role[m]]
    direction = t_dir[tid]

    # Timestamps: flow start + cumulative exponential gaps; then the whole capture in
    # time order.
    g = rng.exponential(1.0, size=n) * gap[flow]
    g[fstart[counts > 0]] = 0.0
    cg = np.cumsum(g)
    within = cg - cg[fstart[flow]]
    ts = start[flow] + within
    ts = np.minimum(ts, duration_s)
    ts_us = (ts * 1e6).astype(np.int64)
    order = np.argsort(ts_us, kind="stable")

    # TCP sequence numbers: ISN + payload sent so far in that direction of the flow.
    pay = t_pay[tid]
    seq = np.zeros(n, dtype=np.uint64)
    ack = np.zeros(n, dtype=np.uint64)
    for d in (C2S, S2C):
        sent = np.where(direction == d, pay, 0)
        cs = np.cumsum(sent) - sent                       # before this packet
        cs_flow = cs - cs[fstart[flow]]
        if d == C2S:
            seq_c = isn[flow, 0] + cs_flow.astype(np.uint64)
            ack_s = isn[flow, 0] + (cs_flow + sent).astype(np.uint64)
        else:
            seq_s = isn[flow, 1] + cs_flow.astype(np.uint64)
            ack_c = isn[flow, 1] + (cs_flow + sent).astype(np.uint64)
    seq = np.where(direction == C2S, seq_c, seq_s) & 0xFFFFFFFF
    ack = np.where(direction == C2S, ack_c, ack_s) & 0xFFFFFFFF
    ipid_p = (ipid[flow, direction] + k) & 0xFFFF

    # Reorder everything into time order.
    tid = tid[order]
    flow = flow[order]
    direction = direction[order]
    ts_us = ts_us[order]
    seq = seq[order]
    ack = ack[order]
    ipid_p = ipid_p[order]

    # The file: global header, then the template records back to back.
    ghdr = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET)
    blobs = tm.blobs
    rec = len(ghdr) + np.cumsum(t_len[tid]) - t_len[tid]
    total = len(ghdr) + int(t_len[tid].sum())
    out = np.empty(total, dtype=np.uint8)
    out[:len(ghdr)] = np.frombuffer(ghdr, np.uint8)
    step = 1 << 17          # joined in slices: memory stays at the file plus one slice
    for a in range(0, n, step):
        piece = b"".join([blobs[i] for i in tid[a:a + step].tolist()])
        o = int(rec[a])
        out[o:o + len(piece)] = np.frombuffer(piece, np.uint8)

    # Record headers: timestamps.
    ts_abs = EPOCH0 * 1_000_000 + ts_us
    _put_le32(out, rec, ts_abs // 1_000_000)
    _put_le32(out, rec + 4, ts_abs % 1_000_000)

    ip = rec + t_ipoff[tid]
    v6p = t_v6[tid]
    c2s = direction == C2S
    wc = watched_client[flow]
    # VLAN TCI (priority 0)
    vm = t_vlan[tid]
    _put_be(out, rec[vm] + 16 + 14, vlan_id[flow[vm]], 2)

    # IPv4: id, addresses, then the header checksum (RFC 791 / RFC 1071).
    m4 = ~v6p
    client4 = np.where(watched_client, watch4, peer4)[flow[m4]]
    server4 = np.where(watched_client, peer4, watch4)[flow[m4]]
    src4 = np.where(c2s[m4], client4, server4)
    dst4 = np.where(c2s[m4], server4, client4)
    ip4 = ip[m4]
    _put_be(out, ip4 + 4, ipid_p[m4], 2)
    _put_be(out, ip4 + 12, src4, 4)
    _put_be(out, ip4 + 16, dst4, 4)
    if len(ip4):
        hdr = out[ip4[:, None] + np.arange(20)].astype(np.uint32)
        s = (hdr[:, 0::2] << 8 | hdr[:, 1::2]).sum(axis=1)
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        _put_be(out, ip4 + 10, (~s) & 0xFFFF, 2)

    # IPv6 addresses: flows are indexed into the IPv6 address arrays by rank.
    m6 = v6p
    if m6.any():
        rank6 = np.cumsum(is6) - 1
        f6 = rank6[flow[m6]]
        wc6 = wc[flow[m6]]
        client6 = np.where(wc6[:, None], watch6[f6], peer6[f6])
        server6 = np.where(wc6[:, None], peer6[f6], watch6[f6])
        c6 = c2s[m6][:, None]
        src6 = np.where(c6, client6, server6)
        dst6 = np.where(c6, server6, client6)
        ip6 = ip[m6]
        out[(ip6 + 8)[:, None] + np.arange(16)] = src6
        out[(ip6 + 24)[:, None] + np.arange(16)] = dst6

    # Ports, sequence numbers, SPIs.
    l4 = ip + np.where(v6p, 40, 20)
    kind = t_l4[tid]
    mp = (kind == L4_TCP) | (kind == L4_UDP)
    cp = cport[flow[mp]]
    sp = sport[flow[mp]]
    d = c2s[mp]
    _put_be(out, l4[mp], np.where(d, cp, sp), 2)
    _put_be(out, l4[mp] + 2, np.where(d, sp, cp), 2)
    mt = kind == L4_TCP
    _put_be(out, l4[mt] + 4, seq[mt], 4)
    _put_be(out, l4[mt] + 8, ack[mt], 4)
    me = kind == L4_ESP
    _put_be(out, l4[me], spi[flow[me], direction[me]], 4)
    _put_be(out, l4[me] + 4, ipid_p[me] + 1, 4)
    return out


def write_pcap(path, n_packets, **kw):
    """Generate and write a capture; returns the number of bytes written."""
    data = generate(n_packets, **kw)
    with open(path, "wb") as f:
        data.tofile(f)
    return len(data)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m nkstream.synth", description=__doc__.split("\n")[0])
    ap.add_argument("out", help="output pcap file")
    ap.add_argument("-n", "--packets", type=int, default=100000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of traffic")
    ap.add_argument("--ipv6-share", type=float, default=0.1)
    ap.add_argument("--vlan-share", type=float, default=0.1)
    ap.add_argument("--peers", nargs="*", help="peer CIDRs (default: a few public service prefixes)")
    a = ap.parse_args(argv)
    size = write_pcap(a.out, a.packets, seed=a.seed, peers=a.peers, ipv6_share=a.ipv6_share,
                      vlan_share=a.vlan_share, duration_s=a.duration)
    print(f"{a.out}: {a.packets} packets, {size} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
