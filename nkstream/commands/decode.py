"""`nkstream decode FILE [--limit N]`: one JSON object per packet.

The inspection tool analysts use and the interface our cross-checks rely on.  Each
line is one packet, in capture order:

  ts         capture time, ns since the Unix epoch
  caplen     bytes captured;  len: bytes on the wire
  linktype   LINKTYPE_* of the packet (pcapng: of its interface)
  vlan       802.1Q/802.1ad VLAN ids, outermost first (at most 4 are stored; `nvlan`
             counts all the tags seen)
  ipver      4, 6 or null;  src, dst: addresses as text, or null
  proto      IP protocol number (after IPv6 extension headers), or null
  sport, dport  TCP/UDP/SCTP ports, or null (non-first fragments have none)
  frag       true for an IP fragment
  tcp_flags  TCP flags byte (TCP only), or null
  gre        {"ver", "ptype", "key"} for GRE (PPTP: ver 1, ptype 0x880B = 34827), or null
  spi        ESP/AH security parameter index, or null
  payload    bytes of L4 payload captured, or null
  tag, category   the signature the packet matched and its category (DESIGN.md
             vocabulary; `unknown` when no rule matched)
  src_label, dst_label  the address's watch label when it is in the watch table,
             else its peer label (a TLS SNI service label overrides the peer side's),
             or null
  direction  outbound / inbound / internal / transit (which side is watched)
  watch, peer  the counter key's watch and peer labels (what `classify` counts the
             packet under), or null
  error      the reason the packet could not be decoded fully, or null

The verdict columns come from the classifier that `classify` uses, built from the
shipped defaults or `-c CONFIG`, in one `Classifier.annotate` call per batch; it
counts nothing.  With flow state on (the config's default; `--no-flows` turns it
off) tag, category, watch, direction and peer are what `classify` counts the packet
under: a packet seen before its flow's payload / SNI verdict takes that verdict
(docs/flows.md), so packets are held until the verdict comes, the end of the input,
or FLOW_HOLD_PACKETS packets (then those still waiting keep their own per-packet
verdict, as when a snapshot window closes first).

Per-packet columns come from the native decoder in one call per batch
(`nkstream._core.decode_columns`); only the JSON formatting here is per packet, which
is what an inspection tool is for.  A damaged capture ends the output with a one-line
error naming the file and offset (exit 1) after every good packet before the damage;
a truncated last record is reported on stderr as a warning (exit 0).
"""
import ipaddress
import json
import os
import sys

from ..cli import nonneg_int

FLOW_HOLD_PACKETS = 1 << 20    # bound on packets held for a flow verdict

# decode flags, as in nkstream/core/types.pxi
PF_IP = 0x01
PF_PROTO = 0x02
PF_PORTS = 0x04
PF_FRAG = 0x08
PF_GRE = 0x20
PF_SPI = 0x40
PF_PAYLOAD = 0x80

IPPROTO_TCP = 6


def add_parser(subparsers):
    p = subparsers.add_parser(
        "decode",
        help="print one JSON object per packet of a capture",
        description="Decode every packet of a pcap/pcapng capture (optionally "
                    "gzip-compressed; '-' reads standard input) and print one JSON "
                    "object per packet: ts (ns), caplen, len, vlan, src, dst, proto, "
                    "sport, dport, tag, category, src_label, dst_label, error, ...",
    )
    p.add_argument("file", metavar="FILE", help="capture file, or - for standard input")
    p.add_argument("--limit", type=nonneg_int, metavar="N", default=None,
                   help="stop after N packets")
    p.add_argument("-c", "--config", help="TOML config (default: shipped tables and rules)")
    p.add_argument("--no-flows", action="store_true",
                   help="per-packet verdicts only (no flow state)")
    return p


class _AddrText:
    """Address bytes -> text via `ipaddress`, memoised (captures repeat addresses)."""

    def __init__(self):
        self.cache = {}

    def __call__(self, ipver, raw16):
        key = raw16[:4] if ipver == 4 else raw16
        text = self.cache.get(key)
        if text is None:
            addr = ipaddress.IPv4Address(key) if ipver == 4 else ipaddress.IPv6Address(key)
            text = str(addr)
            if len(self.cache) > 1 << 16:
                self.cache.clear()
            self.cache[key] = text
        return text


DIRECTION_NAMES = ("transit", "outbound", "inbound", "internal")


class Verdicts:
    """Label tables of one classifier, as numpy object arrays indexed by id, so that a
    batch's verdict columns turn into names with one fancy-indexing call each."""

    def __init__(self, clf):
        import numpy as np

        self.clf = clf
        self.watch = np.array(list(clf.watch.labels), dtype=object)
        self.peer = np.array(list(clf.peers.labels), dtype=object)
        self.tag = np.array(list(clf.rules.tags), dtype=object)
        self.category = np.array(list(clf.rules.tag_category), dtype=object)
        self.direction = np.array(DIRECTION_NAMES, dtype=object)

    def columns(self, data, recs, flow=None):
        """Names of the verdict columns; `flow`: the batch's resolved annotate_flows
        output (tag, watch, direction, peer as counted with flow state)."""
        import numpy as np

        v = self.clf.annotate(data, recs)
        if flow is not None:
            # the SNI service label of a flow verdict is the peer side's label
            moved = flow["peer"] != v["peer"]
            inbound = flow["direction"] == 2
            v["peer_src"] = np.where(moved & inbound, flow["peer"], v["peer_src"])
            v["peer_dst"] = np.where(moved & ~inbound, flow["peer"], v["peer_dst"])
            for k in ("tag", "watch", "direction", "peer"):
                v[k] = flow[k]
        ws, wd = v["watch_src"], v["watch_dst"]
        # the watch label when the address is watched, else its peer label
        src = np.where(ws != 0, self.watch[ws], self.peer[v["peer_src"]])
        dst = np.where(wd != 0, self.watch[wd], self.peer[v["peer_dst"]])
        return {
            "tag": self.tag[v["tag"]].tolist(),
            "category": self.category[v["tag"]].tolist(),
            "src_label": src.tolist(),
            "dst_label": dst.tolist(),
            "direction": self.direction[v["direction"]].tolist(),
            "watch": self.watch[v["watch"]].tolist(),
            "peer": self.peer[v["peer"]].tolist(),
        }


def format_batch(recs, cols, error_names, addr_text, verdicts=None):
    """JSON lines (one string) for one batch of records and their decoded columns
    (and, when given, the classifier's verdict columns of `Verdicts.columns`)."""
    n = len(recs)
    if verdicts is None:
        none = [None] * n
        verdicts = {k: none for k in ("tag", "category", "src_label", "dst_label",
                                      "direction", "watch", "peer")}
    tag = verdicts["tag"]
    category = verdicts["category"]
    src_label = verdicts["src_label"]
    dst_label = verdicts["dst_label"]
    direction = verdicts["direction"]
    watch = verdicts["watch"]
    peer = verdicts["peer"]
    ts = recs["ts_ns"].tolist()
    caplen = recs["caplen"].tolist()
    wirelen = recs["wirelen"].tolist()
    linktype = recs["linktype"].tolist()
    error = cols["error"].tolist()
    ipver = cols["ipver"].tolist()
    proto = cols["proto"].tolist()
    flags = cols["flags"].tolist()
    nvlan = cols["nvlan"].tolist()
    vlan = cols["vlan"].tolist()
    sport = cols["sport"].tolist()
    dport = cols["dport"].tolist()
    src = cols["src"]
    dst = cols["dst"]
    src_b = src.tobytes()
    dst_b = dst.tobytes()
    gre_ver = cols["gre_ver"].tolist()
    gre_ptype = cols["gre_ptype"].tolist()
    gre_key = cols["gre_key"].tolist()
    spi = cols["spi"].tolist()
    tcp_flags = cols["tcp_flags"].tolist()
    l4_len = cols["l4_len"].tolist()
    dumps = json.JSONEncoder(separators=(", ", ": ")).encode
    out = []
    for i in range(n):
        f = flags[i]
        has_ip = f & PF_IP
        v = ipver[i]
        has_ports = f & PF_PORTS
        nv = nvlan[i]
        obj = {
            "ts": ts[i],
            "caplen": caplen[i],
            "len": wirelen[i],
            "linktype": linktype[i],
            "vlan": vlan[i][:min(nv, len(vlan[i]))],
            "nvlan": nv,
            "ipver": v if v else None,
            "src": addr_text(v, src_b[16 * i:16 * i + 16]) if has_ip else None,
            "dst": addr_text(v, dst_b[16 * i:16 * i + 16]) if has_ip else None,
            "proto": proto[i] if f & PF_PROTO else None,
            "sport": sport[i] if has_ports else None,
            "dport": dport[i] if has_ports else None,
            "frag": bool(f & PF_FRAG),
            "tcp_flags": tcp_flags[i] if has_ports and proto[i] == IPPROTO_TCP else None,
            "gre": ({"ver": gre_ver[i], "ptype": gre_ptype[i], "key": gre_key[i]}
                    if f & PF_GRE else None),
            "spi": spi[i] if f & PF_SPI else None,
            "payload": l4_len[i] if f & PF_PAYLOAD else None,
            "tag": tag[i],
            "category": category[i],
            "src_label": src_label[i],
            "dst_label": dst_label[i],
            "direction": direction[i],
            "watch": watch[i],
            "peer": peer[i],
            "error": error_names[error[i]],
        }
        out.append(dumps(obj))
    out.append("")
    return "\n".join(out)


def run(args):
    import numpy as np

    from nkstream import _core
    from nkstream.capture import CaptureError, open_capture
    from nkstream.classify import Classifier
    from nkstream.cli import UserError

    limit = args.limit
    if args.file != "-" and not os.path.exists(args.file):
        raise UserError(f"{args.file}: no such file")
    clf = Classifier.from_config(args.config, flows=False if args.no_flows else None)
    verdicts = Verdicts(clf)
    held = []          # flow state: (data, recs, annotate_flows output) awaiting verdicts

    def write_held():
        from nkstream.classify import resolve_flow_verdicts

        resolve_flow_verdicts([f for _, _, f in held])
        for d, r, f in held:
            stdout.write(format_batch(r, _core.decode_columns(d, r), names, addr_text,
                                      verdicts.columns(d, r, f)))
        held.clear()

    addr_text = _AddrText()
    names = _core.ERROR_NAMES
    stdout = sys.stdout
    try:
        cap = open_capture(args.file)
    except CaptureError as exc:
        raise UserError(str(exc)) from None
    written = 0
    try:
        with cap:
            try:
                for data, recs in cap:
                    if limit is not None:
                        if written >= limit:
                            break
                        recs = recs[:limit - written]
                    if clf.flows_enabled:
                        # the buffer may be reused by the reader: keep copies
                        data, recs = np.array(data, dtype=np.uint8, copy=True), recs.copy()
                        held.append((data, recs, clf.annotate_flows(data, recs)))
                        if sum(len(r) for _, r, _ in held) >= FLOW_HOLD_PACKETS:
                            write_held()
                    else:
                        cols = _core.decode_columns(data, recs)
                        stdout.write(format_batch(recs, cols, names, addr_text,
                                                  verdicts.columns(data, recs)))
                    written += len(recs)
            except CaptureError as exc:
                write_held()
                stdout.flush()
                raise UserError(str(exc)) from None
            write_held()
            stdout.flush()
            for w in cap.warnings:
                print(f"nkstream decode: warning: {w}", file=sys.stderr)
    except BrokenPipeError:
        # `nkstream decode big.pcap | head`: the reader went away.  Point stdout at
        # /dev/null so the interpreter's final flush does not complain again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stdout.fileno())
        os.close(devnull)
        return 0
    return 0
