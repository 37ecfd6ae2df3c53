"""A slow, obviously correct model of nkstream's flow state (docs/flows.md), in dicts.

The native pipeline with a FlowTable is held against it: the same packets, the same
window closes, the same counters per key and the same flow totals.  The model takes
per-packet facts from the decoder (`decode_columns`) and the per-packet tagger
(`Classifier.annotate`: tag, SNI label, strength); it computes the sides of a packet
with `ipaddress` over the tables' prefixes and does the flow bookkeeping itself:
an unbounded dict of flows (the native table must be large enough not to evict), a
dict for the first-fragment memory indexed like the native direct-mapped table.
"""
import ipaddress

from nkstream import _core

PF_IP, PF_PROTO, PF_PORTS, PF_FRAG, PF_FRAG_FIRST, PF_GRE, PF_SPI = 1, 2, 4, 8, 0x10, 0x20, 0x40
DIR_TRANSIT, DIR_OUTBOUND, DIR_INBOUND, DIR_INTERNAL = 0, 1, 2, 3
PORT_PROTOS = (6, 17, 136, 132)
TIME_SHIFT = 20
M64 = (1 << 64) - 1


def units(seconds):
    return int((seconds * 1e9) / (1 << TIME_SHIFT) + 0.5)


def sdiff32(x, y):
    d = (x - y) & 0xFFFFFFFF
    return d - (1 << 32) if d >= (1 << 31) else d


def _fmix64(k):
    k ^= k >> 33
    k = (k * 0xff51afd7ed558ccd) & M64
    k ^= k >> 33
    k = (k * 0xc4ceb9fe1a85ec53) & M64
    k ^= k >> 33
    return k


def _ld64(b, off):
    return int.from_bytes(b[off:off + 8], "little")


def frag_slot(src, dst, ident, proto):
    """The native first-fragment table is direct mapped (4096 slots): the model
    keeps the same slots so that a collision overwrites the same entry."""
    x = (_ld64(src, 0) ^ ((_ld64(src, 8) * 0x9E3779B97F4A7C15) & M64)
         ^ ((_ld64(dst, 0) * 0xC2B2AE3D27D4EB4F) & M64) ^ _ld64(dst, 8)
         ^ ((ident << 8) | proto))
    return _fmix64(x) & (_core.FLOW_FRAG_SLOTS - 1)


class PyLpm:
    def __init__(self, entries, labels):
        # entries: [(cidr, label text)]; labels: the table's label list (ids)
        self.nets = [(ipaddress.ip_network(c), list(labels).index(lab)) for c, lab in entries]

    def lookup(self, addr):
        best, blen = 0, -1
        for net, lid in self.nets:
            if addr.version == net.version and addr in net and net.prefixlen > blen:
                best, blen = lid, net.prefixlen
        return best


def sides(watch, peer, src, dst):
    """(watch, direction, peer) of a packet src -> dst (DESIGN.md vocabulary)."""
    ws, wd = watch.lookup(src), watch.lookup(dst)
    if ws:
        return ws, (DIR_INTERNAL if wd else DIR_OUTBOUND), peer.lookup(dst)
    if wd:
        return wd, DIR_INBOUND, peer.lookup(src)
    pd = peer.lookup(dst)
    return 0, DIR_TRANSIT, pd if pd else peer.lookup(src)


class Flow:
    def __init__(self, a, pa, b, pb, proto, ident, v6, now):
        self.a, self.pa, self.b, self.pb = a, pa, b, pb
        self.proto, self.ident, self.v6 = proto, ident, v6
        self.last = now
        self.strong = self.gaveup = False
        self.fin = [False, False]
        self.rst = False
        self.uncounted = True
        self.tag = self.sni = 0
        self.ftag = [0, 0]
        self.pkts = [0, 0]
        self.pbytes = [0, 0]
        self.seen = [0, 0]

    def klass(self):
        if self.proto == 6:
            return "tcp_closed" if (self.rst or all(self.fin)) else "tcp"
        if self.proto in (17, 136):
            return "udp"
        return "other"


class FlowModel:
    def __init__(self, watch, peer, tag_fields, settings):
        self.watch, self.peer = watch, peer
        self.tag_fields = tag_fields          # (proto, sport, dport, peer) -> tag
        self.timeout = {
            "tcp": units(settings["tcp_timeout"]),
            "tcp_closed": units(settings["tcp_closed_timeout"]),
            "udp": units(settings["udp_timeout"]),
            "other": units(settings["other_timeout"]),
        }
        self.n_inspect = settings["inspect_packets"]
        self.b_inspect = settings["inspect_bytes"]
        self.flows = {}
        self.frags = {}
        self.now = None
        self.reset_window()

    def reset_window(self):
        self.rows = {}
        self.totals = dict(packets=0, bytes=0, flows=0, flow_timeouts=0, flow_evictions=0,
                           pending_packets=0, pending_bytes=0, flows_active=0)

    def add(self, key, packets, nbytes, flows):
        r = self.rows.setdefault(key, [0, 0, 0])
        r[0] += packets
        r[1] += nbytes
        r[2] += flows

    def expired(self, f, now):
        return sdiff32(now, f.last) > self.timeout[f.klass()]

    def emit(self, f, d, tag, sni, pending):
        if f.pkts[d] == 0:
            return
        src, dst = (f.a, f.b) if d == 0 else (f.b, f.a)
        w, direction, p = sides(self.watch, self.peer, src, dst)
        flows = 0
        if d == 0 and f.uncounted:
            flows = 1
            f.uncounted = False
        self.add((w, direction, sni or p, tag), f.pkts[d], f.pbytes[d], flows)
        if pending:
            self.totals["pending_packets"] += f.pkts[d]
            self.totals["pending_bytes"] += f.pbytes[d]
        f.pkts[d] = 0
        f.pbytes[d] = 0

    def flush_pending(self, f):
        self.emit(f, 0, f.ftag[0], 0, True)
        self.emit(f, 1, f.ftag[1], 0, True)

    def key(self, pk):
        """(canonical key, Flow constructor args) or None; mirrors flows.pxi flow_key."""
        fl = pk["flags"]
        if not (fl & PF_IP) or not (fl & PF_PROTO):
            return None
        proto, v6 = pk["proto"], pk["ipver"] == 6
        src, dst = pk["src"], pk["dst"]
        if proto in PORT_PROTOS:
            sport, dport = pk["sport"], pk["dport"]
            if fl & PF_FRAG:
                slot = frag_slot(pk["src16"], pk["dst16"], pk["frag_id"], proto)
                if fl & PF_FRAG_FIRST:
                    if not fl & PF_PORTS:
                        return None
                    self.frags[slot] = (pk["ipver"], src, dst, pk["frag_id"], proto, sport, dport)
                else:
                    e = self.frags.get(slot)
                    if e is None or e[:5] != (pk["ipver"], src, dst, pk["frag_id"], proto):
                        return None
                    sport, dport = e[5], e[6]
                    pk["ports_from_frag"] = True
                    pk["sport"], pk["dport"] = sport, dport
            elif not fl & PF_PORTS:
                return None
            canon = (proto, v6) + tuple(sorted([(src.packed, sport), (dst.packed, dport)]))
            return canon, (src, sport, dst, dport, proto, 0, v6)
        ident = pk["spi"] if fl & PF_SPI else (pk["gre_key"] if fl & PF_GRE else 0)
        canon = (proto, v6, ident) + tuple(sorted([src.packed, dst.packed]))
        return canon, (src, 0, dst, 0, proto, ident, v6)

    def packet(self, pk):
        """pk: dict of decoded fields + per-packet verdict (tag, sni, strong)."""
        wl = pk["wirelen"]
        self.totals["packets"] += 1
        self.totals["bytes"] += wl
        if pk["ipver"]:
            w, direction, peer = sides(self.watch, self.peer, pk["src"], pk["dst"])
        else:
            w, direction, peer = 0, DIR_TRANSIT, 0
        k = self.key(pk)
        if pk.get("ports_from_frag"):
            tag, sni, strong = self.tag_fields(pk["proto"], pk["sport"], pk["dport"], peer), 0, 0
        else:
            tag, sni, strong = pk["tag"], pk["sni"], pk["strong"]
        if k is None:
            self.add((w, direction, sni or peer, tag), 1, wl, 0)
            return
        canon, args = k
        now = (pk["ts_ns"] >> TIME_SHIFT) & 0xFFFFFFFF
        if self.now is None or sdiff32(now, self.now) > 0:
            self.now = now
        f = self.flows.get(canon)
        if f is None:
            f = self.flows[canon] = Flow(*args[:6], args[6], now)
            self.totals["flows"] += 1
            d = 0
        else:
            src, sport, dst, dport = args[:4]
            d = 0 if (f.a, f.pa, f.b, f.pb) == (src, sport, dst, dport) else 1
            tf = pk["tcp_flags"] if pk["proto"] == 6 else 0
            if self.expired(f, now):
                self.flush_pending(f)
                self.totals["flow_timeouts"] += 1
                f = self.flows[canon] = Flow(*args[:6], args[6], now)
                self.totals["flows"] += 1
                d = 0
            elif (tf & 0x12) == 0x02 and f.klass() == "tcp_closed":
                self.flush_pending(f)
                f = self.flows[canon] = Flow(*args[:6], args[6], now)
                self.totals["flows"] += 1
                d = 0
        if sdiff32(now, f.last) > 0:
            f.last = now
        if pk["proto"] == 6:
            if pk["tcp_flags"] & 0x04:
                f.rst = True
            if pk["tcp_flags"] & 0x01:
                f.fin[d] = True
        if f.strong:
            self.add((w, direction, f.sni or peer, f.tag), 1, wl, 0)
            return
        if f.gaveup:
            # the direction's fallback tag, fixed once inspected (IP-in-IP excepted)
            if f.seen[d] and pk["proto"] not in (4, 41):
                self.add((w, direction, peer, f.ftag[d]), 1, wl, 0)
            else:
                self.add((w, direction, sni or peer, tag), 1, wl, 0)
            return
        assert f.pbytes[d] + wl <= 0xFFFFFFFF
        f.pkts[d] += 1
        f.pbytes[d] += wl
        f.ftag[d] = tag
        f.seen[d] = min(255, f.seen[d] + 1)
        if strong:
            f.tag, f.sni, f.strong = tag, sni, True
            self.emit(f, 0, tag, sni, False)
            self.emit(f, 1, tag, sni, False)
        elif (f.seen[0] + f.seen[1] >= 2 * self.n_inspect
              or ((f.seen[0] >= self.n_inspect or f.pbytes[0] >= self.b_inspect)
                  and (f.seen[1] >= self.n_inspect or f.pbytes[1] >= self.b_inspect))):
            f.gaveup = True
            self.emit(f, 0, f.ftag[0], 0, False)
            self.emit(f, 1, f.ftag[1], 0, False)

    def close_window(self):
        """Returns (rows, totals) of the window and starts the next."""
        for canon in list(self.flows):
            f = self.flows[canon]
            if self.now is not None and self.expired(f, self.now):
                self.flush_pending(f)
                self.totals["flow_timeouts"] += 1
                del self.flows[canon]
            else:
                self.flush_pending(f)
        self.totals["flows_active"] = len(self.flows)
        out = ({k: tuple(v) for k, v in self.rows.items() if v != [0, 0, 0]}, dict(self.totals))
        self.reset_window()
        return out
