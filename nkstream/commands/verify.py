"""`nkstream verify FILE [--sample N]`: cross-check nkstream's decode against Wireshark.

Reads the capture with nkstream (the native decoder, as `classify` and `decode` see
it) and with Wireshark's dissectors (tshark), on a sample of N packets spread evenly
over the file (all packets with `--sample 0`), and compares, per packet, what the
classifier keys on:

  src, dst   the OUTER IP header's addresses (nkstream keeps the outer header of a
             tunnel; docs/decoder.md)
  proto      IPv4 protocol / IPv6 Next Header after the outer header's extension
             headers (hop-by-hop, routing, fragment, destination options)
  ports      TCP/UDP/SCTP ports when that transport follows the outer IP header
             directly (none for GRE, IP-in-IP, AH, ...)
  vlan       802.1Q/802.1ad ids before the outer IP header, outermost first

Every difference is printed (`frame N: FIELD: nkstream X, wireshark Y`); exit 0 when
all sampled packets agree, 1 otherwise (and for a file either reader cannot read).

Wireshark is driven as `tshark -T fields` with IP reassembly and TCP desegmentation
off, so each packet is dissected on its own as nkstream sees it.  (pyshark wraps the
same tshark, but builds a Python object per layer of every packet, about 1,100
packets/s here; the field output is the same data at tshark's own speed.)
"""
import ipaddress
import shutil
import subprocess

from ..cli import nonneg_int

FIELDS = ["frame.number", "frame.protocols", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst",
          "ip.proto", "ipv6.nxt", "ipv6.hopopts.nxt", "ipv6.routing.nxt",
          "ipv6.fraghdr.nxt", "ipv6.dstopts.nxt", "tcp.srcport", "tcp.dstport",
          "udp.srcport", "udp.dstport", "sctp.srcport", "sctp.dstport", "vlan.id"]
PREFS = ["-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE",
         "-o", "tcp.desegment_tcp_streams:FALSE"]
IPV6_EXT = {"ipv6.hopopts": "ipv6.hopopts.nxt", "ipv6.routing": "ipv6.routing.nxt",
            "ipv6.fraghdr": "ipv6.fraghdr.nxt", "ipv6.dstopts": "ipv6.dstopts.nxt"}
TRANSPORTS = ("tcp", "udp", "sctp")
COMPARED = ("src", "dst", "proto", "ports", "vlan")


def add_parser(subparsers):
    p = subparsers.add_parser(
        "verify",
        help="cross-check nkstream's decode against Wireshark's dissectors",
        description="Decode a sample of a capture's packets with nkstream and with "
                    "Wireshark (tshark) and report every difference in src, dst, proto, "
                    "ports and VLAN ids.  Exit 0 when all agree, 1 otherwise.",
    )
    p.add_argument("file", metavar="FILE", help="pcap/pcapng capture (not stdin: read twice)")
    p.add_argument("--sample", type=nonneg_int, default=1000, metavar="N",
                   help="packets to compare, spread evenly over the file; 0 = all "
                        "(default 1000)")
    p.add_argument("--max-report", type=nonneg_int, default=50, metavar="N",
                   help="print at most N differences (default 50)")
    return p


def sample_frames(total, n):
    """Frame numbers (1-based) of n packets spread evenly over total (all if n == 0)."""
    if n == 0 or n >= total:
        return list(range(1, total + 1))
    return sorted({1 + (i * total) // n for i in range(n)})


def tshark_rows(path, frames=None, timeout=None):
    """{frame number: {field: [values]}} from one tshark run (all frames, or the
    frame numbers given).  RuntimeError when tshark is missing or cannot read it."""
    tshark = shutil.which("tshark")
    if tshark is None:
        raise RuntimeError("tshark not found (Debian package tshark)")
    cmd = [tshark, "-n", "-r", str(path)] + PREFS + [
        "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,"]
    if frames is not None:
        cmd += ["-Y", "frame.number in {%s}" % ",".join(map(str, frames))]
    for f in FIELDS:
        cmd += ["-e", f]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        msg = " ".join(line.strip() for line in res.stderr.splitlines()
                       if line.strip() and "Running as user" not in line)
        raise RuntimeError(f"tshark could not read it: {msg or 'exit %d' % res.returncode}")
    rows = {}
    for line in res.stdout.splitlines():
        parts = line.split("\t")
        parts += [""] * (len(FIELDS) - len(parts))
        row = {k: (v.split(",") if v else []) for k, v in zip(FIELDS, parts)}
        rows[int(row["frame.number"][0])] = row
    return rows


def wireshark_view(row):
    """{src, dst, proto, ports, vlan} of the outer IP header from one tshark row."""
    protos = row["frame.protocols"][0].split(":") if row["frame.protocols"] else []
    outer = next((i for i, p in enumerate(protos) if p in ("ip", "ipv6")), None)
    nvlan_before = protos[:outer if outer is not None else len(protos)].count("vlan")
    view = dict(src=None, dst=None, proto=None, ports=None,
                vlan=[int(v) for v in row["vlan.id"][:nvlan_before]])
    if outer is None:
        return view
    kind = protos[outer]
    if not row[kind + ".src"]:
        return view   # the IP dissector found no usable header
    # the outermost header of its kind is the first occurrence of its fields
    view["src"] = str(ipaddress.ip_address(row[kind + ".src"][0]))
    view["dst"] = str(ipaddress.ip_address(row[kind + ".dst"][0]))
    rest = protos[outer + 1:]
    if kind == "ip":
        view["proto"] = int(row["ip.proto"][0]) if row["ip.proto"] else None
    else:
        view["proto"] = int(row["ipv6.nxt"][0]) if row["ipv6.nxt"] else None
        counts = {}
        while rest and rest[0] in IPV6_EXT:
            counts[rest[0]] = counts.get(rest[0], 0) + 1
            vals, k = row[IPV6_EXT[rest[0]]], counts[rest[0]] - 1
            view["proto"] = int(vals[k]) if len(vals) > k else None
            rest = rest[1:]
    if rest and rest[0] in TRANSPORTS:
        t = rest[0]
        k = protos[:outer].count(t)   # occurrences of that transport below the outer IP
        sp, dp = row[t + ".srcport"], row[t + ".dstport"]
        if len(sp) > k and len(dp) > k:
            view["ports"] = [int(sp[k]), int(dp[k])]
    return view


def nkstream_views(path, frames):
    """({frame: view}, packets in the file) from nkstream's reader and decoder."""
    from nkstream import _core
    from nkstream.capture import open_capture

    wanted = set(frames)
    views = {}
    seen = 0
    with open_capture(str(path)) as cap:
        for data, recs in cap:
            n = len(recs)
            idx = [f - 1 - seen for f in range(seen + 1, seen + n + 1) if f in wanted]
            if idx:
                sub = recs[idx]
                cols = _core.decode_columns(data, sub)
                for j, i in enumerate(idx):
                    views[seen + i + 1] = decode_view(cols, j)
            seen += n
    return views, seen


def decode_view(cols, i):
    """{src, dst, proto, ports, vlan} of packet i of `_core.decode_columns` output,
    in wireshark_view's terms."""
    from nkstream import _core

    PF = _core.DECODE_FLAGS
    fl = int(cols["flags"][i])
    nv = int(cols["nvlan"][i])
    view = dict(src=None, dst=None, proto=None, ports=None,
                vlan=[int(v) for v in cols["vlan"][i][:min(nv, _core.MAX_VLAN_IDS)]])
    if not fl & PF["PF_IP"]:
        return view
    raw_s, raw_d = bytes(cols["src"][i]), bytes(cols["dst"][i])
    if int(cols["ipver"][i]) == 4:
        view["src"], view["dst"] = (str(ipaddress.IPv4Address(raw_s[:4])),
                                    str(ipaddress.IPv4Address(raw_d[:4])))
    else:
        view["src"], view["dst"] = (str(ipaddress.IPv6Address(raw_s)),
                                    str(ipaddress.IPv6Address(raw_d)))
    if fl & PF["PF_PROTO"]:
        view["proto"] = int(cols["proto"][i])
    if fl & PF["PF_PORTS"]:
        view["ports"] = [int(cols["sport"][i]), int(cols["dport"][i])]
    return view


def compare(nk, ws):
    """[(frame, field, nkstream value, wireshark value)] for every difference."""
    diffs = []
    for frame in sorted(set(nk) | set(ws)):
        a, b = nk.get(frame), ws.get(frame)
        if a is None or b is None:
            diffs.append((frame, "packet", "present" if a else "missing",
                          "present" if b else "missing"))
            continue
        for field in COMPARED:
            if a[field] != b[field]:
                diffs.append((frame, field, a[field], b[field]))
    return diffs


def verify(path, sample=1000):
    """(packets compared, packets in the file, differences)."""
    # Count the file's packets with nkstream first, to pick the sample.
    _, total = nkstream_views(path, [])
    frames = sample_frames(total, sample)
    nk, _ = nkstream_views(path, frames)
    ws = tshark_rows(path, frames if len(frames) < total else None)
    ws_views = {f: wireshark_view(r) for f, r in ws.items()}
    return len(frames), total, compare(nk, ws_views)


def run(args):
    import os

    from ..capture import CaptureError
    from ..cli import UserError

    if args.file == "-":
        raise UserError("verify reads the file twice: give a file, not stdin")
    if not os.path.exists(args.file):
        raise UserError(f"{args.file}: no such file")
    try:
        n, total, diffs = verify(args.file, args.sample)
    except CaptureError as exc:
        raise UserError(str(exc)) from None
    except RuntimeError as exc:
        raise UserError(f"{args.file}: {exc}") from None
    for frame, field, a, b in diffs[:args.max_report]:
        print(f"frame {frame}: {field}: nkstream {_fmt(a)}, wireshark {_fmt(b)}")
    if len(diffs) > args.max_report:
        print(f"... {len(diffs) - args.max_report} more differences")
    bad = len({d[0] for d in diffs})
    if bad:
        print(f"{args.file}: {bad} of {n} sampled packets differ from Wireshark "
              f"({total} packets in the file)")
        return 1
    print(f"{args.file}: all {n} sampled packets agree with Wireshark "
          f"(src, dst, proto, ports, vlan; {total} packets in the file)")
    return 0


def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, list):
        return "[" + ",".join(map(str, v)) + "]" if v else "[]"
    return str(v)
