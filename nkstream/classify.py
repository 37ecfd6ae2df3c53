"""The offline job: capture files -> native Classifier -> counters -> snapshots.

`Classifier` is the configured classifier the CLI, the live sensor and the benchmark
share: a watch table, a peer table, compiled signature rules and native counters,
wired into the native `_core.Classifier`, fed one batch at a time.
"""
import os
import sys
import time

import numpy as np

from . import __version__, _core
from .capture import open_capture
from .config import build_rules, build_tables, load_config


class Classifier:
    """Tables + rules + native counters.

    >>> clf = Classifier.from_config(load_config(None))
    >>> for batch in open_capture("x.pcap"): clf.process(batch.data, batch.recs)
    >>> snap = clf.snapshot()          # counters of the window, reset
    """

    def __init__(self, watch, peers, rules, counter_capacity=1 << 18, flow_capacity=0,
                 flow_options=None):
        """`flow_capacity` > 0 turns flow state on with a native FlowTable of that
        many slots (docs/flows.md); `flow_options` are its timeouts and inspection
        budget (FlowTable keyword arguments)."""
        self.watch = watch
        self.peers = peers
        self.rules = rules
        # Compile the rules first: SNI services and peer-label hints intern their
        # labels into the peer table, which must be built after that.
        self.rule_core = rules.compile(peers)
        self.counters = _core.Counters(counter_capacity)
        self.flow_table = (_core.FlowTable(flow_capacity, **(flow_options or {}))
                           if flow_capacity else None)
        self.core = _core.Classifier(watch.core, peers.core, self.rule_core, self.counters,
                                     self.flow_table)

    @property
    def flows_enabled(self):
        return self.flow_table is not None

    @classmethod
    def from_config(cls, cfg=None, flows=None):
        """`flows`: None follows the config's [flows] enabled; False/True override."""
        if cfg is None or isinstance(cfg, (str, os.PathLike)):
            cfg = load_config(cfg)
        watch, peers = build_tables(cfg)
        rules = build_rules(cfg)
        enabled = cfg.flows_enabled if flows is None else bool(flows)
        return cls(watch, peers, rules, counter_capacity=cfg.counter_capacity,
                   flow_capacity=cfg.flow_capacity if enabled else 0,
                   flow_options=cfg.flow_options)

    def reload(self, watch, peers, rules):
        """Swap in new tables and rules (built by the caller, off the hot path)."""
        rule_core = rules.compile(peers)
        self.core.swap_tables(watch.core, peers.core, rule_core)
        self.watch, self.peers, self.rules, self.rule_core = watch, peers, rules, rule_core

    def process(self, data, recs):
        return self.core.process(data, recs)

    def annotate(self, data, recs):
        return self.core.annotate(data, recs)

    def annotate_flows(self, data, recs):
        """Per-packet verdicts with flow state (counts too); see resolve_flow_verdicts."""
        return self.core.annotate_flows(data, recs)

    def close_window(self):
        """A snapshot window closes: count pending packets of undecided flows, end
        idle flows (see _core.Classifier.close_window).  Call before snapshot()."""
        return self.core.close_window()

    def flush(self):
        """End every flow, counting their pending packets (end of input, reload)."""
        return self.core.flush()

    def snapshot(self, reset=True):
        return self.counters.snapshot(reset=reset)

    def labels(self):
        """The dictionaries a snapshot needs to name its ids."""
        return {
            "watch": list(self.watch.labels),
            "peer": list(self.peers.labels),
            "tag": list(self.rules.tags),
            "tag_category": list(self.rules.tag_category),
        }


def _window_of(ts_ns, interval_ns):
    return (int(ts_ns) // interval_ns) * interval_ns


def classify_files(paths, clf, *, interval=None, on_window=None, progress=None,
                   warn=None):
    """Classify capture files in order with one classifier.

    Without `interval`, all packets go into one window, returned as
    [(start_ns, end_ns, counters_snapshot)].  With `interval` (seconds), a window
    closes whenever a packet's capture time reaches the next multiple of `interval`
    (windows aligned to the epoch like the live sensor's); each closed window is
    passed to `on_window(start_ns, end_ns, snap)` as soon as it closes, and also
    returned.  Packets are expected in capture-time order; one that goes back in
    time is counted in the current window.
    """
    windows = []
    interval_ns = int(interval * 1e9) if interval else 0
    cur_start = None
    first_ts = last_ts = None

    def close(start, end):
        if hasattr(clf, "close_window"):
            clf.close_window()
        snap = clf.snapshot(reset=True)
        windows.append((start, end, snap))
        if on_window is not None:
            on_window(start, end, snap)

    for path in paths:
        with open_capture(path) as cap:
            # One window: the reader classifies as it walks (Capture.processed).
            # Windows cut batches by capture time, so those go batch by batch.
            fused = not interval_ns and hasattr(clf, "core")
            for batch in (cap.processed(clf.core) if fused else cap):
                recs = batch.recs
                n = len(recs)
                if n == 0:
                    continue
                ts = recs["ts_ns"]
                if first_ts is None:
                    first_ts = int(ts[0])
                if interval_ns:
                    lo = 0
                    if cur_start is None:
                        cur_start = _window_of(ts[0], interval_ns)
                    while lo < n:
                        end = cur_start + interval_ns
                        # first packet at or past the window's end (in file order)
                        past = np.flatnonzero(ts[lo:] >= end)
                        hi = lo + int(past[0]) if len(past) else n
                        if hi > lo:
                            clf.process(batch.data, recs[lo:hi])
                        if hi < n:
                            close(cur_start, end)
                            cur_start = _window_of(ts[hi], interval_ns)
                        lo = hi
                elif not fused:
                    clf.process(batch.data, recs)
                last_ts = int(ts[-1]) if last_ts is None else max(last_ts, int(ts[-1]))
                if progress is not None:
                    progress(cap, n)
            for w in getattr(cap, "warnings", ()):
                if warn is not None:
                    warn(w)
    if interval_ns:
        if cur_start is not None:
            close(cur_start, cur_start + interval_ns)
    else:
        start = first_ts if first_ts is not None else time.time_ns()
        end = (last_ts + 1) if last_ts is not None else start
        close(start, end)
    return windows


def resolve_flow_verdicts(parts):
    """Final per-packet verdicts from a sequence of `annotate_flows` outputs (one
    window, in order): a packet held pending takes its flow's verdict when a later
    packet fixed one (tag, and the verdict's service label as peer when it has one),
    else keeps its own tag.  Updates the parts' `tag` and `peer` in place and
    returns them."""
    verdicts = {}
    for o in parts:
        for i in np.flatnonzero(o["verdict_fid"]):
            verdicts[int(o["verdict_fid"][i])] = (int(o["tag"][i]), int(o["verdict_sni"][i]))
    if not verdicts:
        return parts
    for o in parts:
        for i in np.flatnonzero(o["pending"]):
            v = verdicts.get(int(o["fid"][i]))
            if v is not None:
                o["tag"][i] = v[0]
                if v[1]:
                    o["peer"][i] = v[1]
    return parts


def snapshot_meta(clf, sources, extra=None):
    meta = {
        "host": os.uname().nodename if hasattr(os, "uname") else "",
        "interface": None,
        "sources": [str(s) for s in sources],
        "version": __version__,
        "engine": "file",
        "workers": 1,
    }
    if extra:
        meta.update(extra)
    return meta


FANOUT_FLOW_WARNING = (
    "fanout mode {fanout!r} with flow state on: the kernel may hand the two directions "
    "(and even the packets) of one flow to different workers, so flow verdicts are "
    "lost or split and flows are counted more than once; use fanout = \"hash\" "
    "(both directions of a flow reach the same worker) or turn [flows] off")


def flow_fanout_warning(fanout, flows_enabled, workers=None):
    """The warning a live sensor prints when its AF_PACKET fanout mode spreads one
    flow's packets over several workers while flow state is on, else None.

    PACKET_FANOUT_HASH hashes the flow symmetrically (skb flow dissector: both
    directions of a 5-tuple land on one socket); PACKET_FANOUT_CPU and _LB pick a
    socket by receiving CPU or round robin (linux/if_packet.h), which splits flows.
    `workers`: with one worker nothing is split (None: assume several).
    """
    if not flows_enabled or fanout is None or (workers is not None and workers <= 1):
        return None
    mode = str(fanout).lower()
    if mode in ("hash", ""):
        return None
    return FANOUT_FLOW_WARNING.format(fanout=mode)
