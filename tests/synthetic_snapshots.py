"""Build snapshots the way the pipeline does: real Counters filled per key, written by
the real writer.  Shared by test_snapshot.py and test_report.py."""
import numpy as np

from nkstream import _core
from nkstream.snapshot import Snapshot

WATCH = [None, "KP-allocated", "KP-via-China-Netcom", "KP-via-SatGate"]
PEER = [None, "facebook", "youtube", "tor", "AS4134", "qq", "pool.minexmr"]
TAGS = ["unknown", "https", "quic", "pptp-ctrl", "gre-pptp", "tor", "stratum", "dns"]
CATEGORIES = {
    "unknown": "unknown", "https": "browsing-email-downloads", "quic": "video-gaming",
    "pptp-ctrl": "vpn-obfuscation", "gre-pptp": "vpn-obfuscation", "tor": "vpn-obfuscation",
    "stratum": "mining", "dns": "infrastructure",
}
T0 = 1_795_000_000 * 10**9          # 2026-11-18T...Z


def counters_with(rows, capacity=1024, totals=None, errors=None):
    """Counters holding *rows*: (watch, direction, peer, tag, packets, bytes[, flows])."""
    c = _core.Counters(capacity)
    if rows:
        cols = list(zip(*rows))
        flows = cols[6] if len(cols) > 6 else None
        c.add_many(*cols[:6], flows)
    pk = sum(r[4] for r in rows)
    by = sum(r[5] for r in rows)
    c.add_totals(totals or {"packets": pk, "bytes": by, "capbytes": by, "decoded": pk})
    if errors is not None:
        c.add_errors(errors)
    return c


def make_snapshot(rows, *, start=T0, seconds=60, watch=WATCH, peer=PEER, tags=TAGS,
                  categories=CATEGORIES, host="sensor-a", flows=None, **kw):
    c = counters_with(rows, **{k: kw.pop(k) for k in ("capacity", "totals", "errors") if k in kw})
    return Snapshot.from_counters(
        c.snapshot(), start_ns=start, end_ns=start + seconds * 10**9, watch_labels=watch,
        peer_labels=peer, tags=tags, categories=categories,
        sensor={"host": host, "interfaces": ["eth0"], "workers": 2, "engine": "afpacket"},
        flows=flows, **kw)


def mixed_rows(rng, n=40, vpn_weight=1.0):
    """Random plausible rows; *vpn_weight* scales the VPN/obfuscation bytes."""
    rows = []
    for _ in range(n):
        tag = int(rng.integers(0, len(TAGS)))
        scale = vpn_weight if CATEGORIES[TAGS[tag]] == "vpn-obfuscation" else 1.0
        pk = int(rng.integers(1, 500))
        rows.append((int(rng.integers(0, len(WATCH))), int(rng.integers(0, 4)),
                     int(rng.integers(0, len(PEER))), tag, pk,
                     int(pk * rng.integers(60, 1500) * scale) + 1))
    return rows


def rng(seed=0):
    return np.random.default_rng(seed)
