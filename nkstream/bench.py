"""`nkstream bench`: classification rate per stage, per worker count, and beside the
tools users run today.

What is measured (docs/benchmarks.md has the figures and how to read them):

- **Traffic**: a capture the user names, or one generated with nkstream.synth
  (seeded): the study's category mix, IPv4 and IPv6, 802.1Q tags, a small-packet-heavy
  size distribution, watched addresses in the default watch ranges and peer addresses
  drawn from the *loaded* peer table (a seeded sample of its prefixes).  It is written
  to a temporary file and read from the page cache, like a capture being classified.
- **Stages**, each cumulative (a stage's run does every stage before it) and each a
  full pass over the capture through ``open_capture``: ``read`` (the native record
  walker over the mmap'd file), ``decode``, ``lpm`` (+ watch and peer lookups of both
  addresses), ``tags`` (+ signatures and SNI), ``aggregate`` (the whole
  ``Classifier.process`` without flow state: the *full path* of the project's
  targets) and ``flows`` (the same with flow state, as ``nkstream classify`` runs by
  default).
  The stage loops are native (``_core.bench_stage``) and call the pipeline's own
  inline functions, so a stage's extra cost is what the pipeline pays for it.
  Repetitions interleave the stages, so load on a shared machine spreads over all of
  them; min / median / max over repetitions are reported.
- **Workers** (``--workers N``): the capture is read once, every packet is given a
  worker by a symmetric hash of its flow (as PACKET_FANOUT_HASH does), then N forked
  processes, released together from a barrier, each run the full path over their
  share (already in memory: the kernel's part of fanout is not timed).  The rate is
  all packets over the time from the barrier to the last worker's end.  With N > 1,
  one worker is measured the same way in the same invocation for the scaling ratio.
- **Compare** (``--compare``): on the same capture file, page cache warm, in the same
  invocation: ``tcpdump -r F -w /dev/null``, ``tshark -r F -q -z io,phs``,
  ``ndpiReader -i F``, the dpkt + pytricia script (nkstream.bench_baseline) and the
  whole ``nkstream classify`` process (startup included).  Slow tools run on the
  first packets of the capture (a prefix written to a temporary file) and are scaled
  to packets/s.  A tool that is not installed is listed as missing.
"""
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from . import __version__, _core

# In the order they add up.  `aggregate` is Classifier.process without flow state
# (the per-packet path: every packet tagged and counted), the *full path* the
# targets name (read, decode, two prefix tables, tags, aggregate); `flows` is
# Classifier.process with flow state, whose verdicts decide what is counted, so it
# cannot stop before counting: it is the path as configured by default, and its
# `+ns` over `aggregate` is what flow state costs.
STAGES = ("read", "decode", "lpm", "tags", "aggregate", "flows")
STAGE_TITLES = {
    "read": "read (walk records)",
    "decode": "+ decode L2-L4",
    "lpm": "+ LPM watch/peer",
    "tags": "+ tags (signatures, SNI)",
    "aggregate": "+ aggregate (full path)",
    "flows": "+ flow state (default)",
}
DEFAULT_PACKETS = 2_000_000
# Prefix sizes for the tools too slow to run on a whole multi-million-packet capture
# in a benchmark run (their rates are per packet, so a prefix measures them fairly).
SUBSET = {"tshark": 200_000, "ndpiReader": 10_000_000, "dpkt+pytricia": 200_000}
SYNTH_PEERS_V4 = 4096
SYNTH_PEERS_V6 = 1024


# ------------------------------------------------------------------ environment

def machine_info():
    cpu = None
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "cpu": cpu or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "kernel": platform.release(),
        "os": platform.system(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "nkstream": __version__,
        "numpy": np.__version__,
        "loadavg_start": load,
        "hostname": platform.node(),
    }


def has_flows(clf):
    """True when the classifier keeps flow state (docs/flows.md)."""
    return clf is not None and getattr(clf, "flow_table", None) is not None


def classifiers(cfg):
    """(plain, full): the configured classifier without flow state (the per-packet
    path the decode..aggregate stages time) and, when the configuration turns flow
    state on and this build has it, the configured one with it (else None)."""
    from .classify import Classifier

    try:
        plain = Classifier.from_config(cfg, flows=False)
    except TypeError:          # a build without flow state
        return Classifier.from_config(cfg), None
    full = Classifier.from_config(cfg) if getattr(cfg, "flows_enabled", False) else None
    return plain, (full if has_flows(full) else None)


def reset(clf):
    """Empty the flow table (ending its flows) and the counters, between passes."""
    if has_flows(clf):
        clf.flush()
    clf.counters.reset()


def config_info(clf, cfg, full=None):
    n4w, _, _, n6w, _, _ = clf.watch._arrays()
    n4p, _, _, n6p, _, _ = clf.peers._arrays()
    rules = clf.rules
    nrules = 0
    for tag in rules.tags[1:]:
        d = rules.definition(tag)
        nrules += sum(len(getattr(d, k, ()) or ()) for k in
                      ("ports", "protocols", "gre", "payload", "sni", "peer_labels"))
    flows = getattr(full, "flow_table", None)
    return {
        "config": cfg.path,
        "watch_prefixes": {"ipv4": int(len(n4w)), "ipv6": int(len(n6w))},
        "watch_labels": len(clf.watch.labels) - 1,
        "peer_prefixes": {"ipv4": int(len(n4p)), "ipv6": int(len(n6p))},
        "peer_labels": len(clf.peers.labels) - 1,
        "lpm_memory_bytes": int(clf.watch.core.nbytes_v4 + clf.watch.core.nbytes_v6
                                + clf.peers.core.nbytes_v4 + clf.peers.core.nbytes_v6),
        "tags": len(rules.tags) - 1,
        "rules": nrules,
        "payload_signatures": int(clf.rule_core.n_signatures),
        "sni_suffixes": int(clf.rule_core.n_suffixes),
        "counter_capacity": int(clf.counters.capacity),
        "counter_memory_bytes": int(clf.counters.memory_bytes),
        "flow_state": flows is not None,
        "flow_capacity": int(flows.capacity) if flows is not None else None,
        "flow_memory_bytes": int(flows.memory_bytes) if flows is not None else None,
        "flow_settings": dict(getattr(flows, "settings", None) or {}) if flows is not None else None,
    }


# ------------------------------------------------------------------ traffic

def synth_peers(peers, seed, max_v4=SYNTH_PEERS_V4, max_v6=SYNTH_PEERS_V6):
    """A seeded sample of the peer table's prefixes (CIDR text) for nkstream.synth,
    so generated peer addresses hit the loaded table; None (synth's defaults) when
    the table has no IPv4 prefix."""
    rows = list(peers.prefixes())
    v4 = [c for c, _ in rows if ":" not in c]
    v6 = [c for c, _ in rows if ":" in c]
    if not v4:
        return None
    rng = np.random.default_rng(seed)
    if len(v4) > max_v4:
        v4 = [v4[i] for i in np.sort(rng.choice(len(v4), max_v4, replace=False))]
    if len(v6) > max_v6:
        v6 = [v6[i] for i in np.sort(rng.choice(len(v6), max_v6, replace=False))]
    return v4 + v6


def generate(path, packets, seed, peers):
    from . import synth

    synth.write_pcap(path, packets, seed=seed, peers=peers)


def warm(path):
    """Read the file once so every timed pass reads it from the page cache."""
    with open(path, "rb") as f:
        while f.read(16 << 20):
            pass


def _smaps():
    """[(start, end, path or "", {field: kB})] of this process's mappings
    (/proc/self/smaps), or None where it cannot be read."""
    try:
        with open("/proc/self/smaps") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    maps = []
    for line in lines:
        head = line.split(None, 5)
        if len(head) >= 5 and "-" in head[0] and ":" not in head[0]:
            lo, _, hi = head[0].partition("-")
            maps.append((int(lo, 16), int(hi, 16), head[5] if len(head) == 6 else "", {}))
        elif maps and len(head) >= 2 and head[0].endswith(":") and head[1].isdigit():
            maps[-1][3][head[0][:-1]] = int(head[1])
    return maps


def page_cache_mapping(path):
    """How this process maps `path` now: {"rss_kb", "pmd_mapped_kb"} summed over its
    mappings, or None (not mapped, no smaps).

    A capture whose page cache is in large folios (a file read sequentially on a
    recent kernel) is mapped 2 MiB at a time (FilePmdMapped); one cached in 4 KiB
    pages (written in small pieces, or partly evicted and read back) costs the
    walker a page-table entry per 4 KiB, which shows as a slower `read` stage."""
    maps = _smaps()
    real = os.path.realpath(path)
    mine = [m[3] for m in maps or () if m[2] == real]
    if not mine:
        return None
    return {"rss_kb": sum(m.get("Rss", 0) for m in mine),
            "pmd_mapped_kb": sum(m.get("FilePmdMapped", 0) for m in mine)}


def huge_page_share(address, length):
    """Share of the memory [address, address + length) that the kernel backs with
    transparent huge pages now (AnonHugePages of the mappings that hold it), or None
    where smaps cannot be read.  The flow table asks for huge pages (MADV_HUGEPAGE);
    when memory is fragmented it may get 4 KiB pages, and every flow lookup then adds
    a TLB miss."""
    maps = _smaps()
    if maps is None or not length:
        return None
    end = address + length
    huge = sum(m[3].get("AnonHugePages", 0) * 1024 for m in maps
               if m[0] < end and m[1] > address)
    return min(huge, length) / length


def capture_stats(path):
    from .capture import open_capture

    n = wire = cap_ = 0
    with open_capture(path) as cap:
        for b in cap:
            r = b.recs
            n += len(r)
            wire += int(r["wirelen"].sum(dtype=np.uint64))
            cap_ += int(r["caplen"].sum(dtype=np.uint64))
        fmt = cap.format
        mapping = page_cache_mapping(path)      # while the walk's mapping is live
    return {"packets": n, "wire_bytes": wire, "captured_bytes": cap_, "format": fmt,
            "file_bytes": os.path.getsize(path),
            "mean_wire_bytes": (wire / n) if n else 0.0,
            "page_cache": mapping}


# ------------------------------------------------------------------ stages

def _stage_pass(path, clf, stage):
    """One timed pass of `stage` over the whole capture; returns seconds."""
    from .capture import open_capture

    core = clf.core
    stages = _core.BENCH_STAGES
    t0 = time.perf_counter()
    with open_capture(path) as cap:
        if stage == "read":
            for _b in cap:
                pass
        elif stage in ("aggregate", "flows"):
            # the whole path as `nkstream classify` runs it: for a mapped file the
            # reader classifies each chunk of records as it walks them
            for _b in cap.processed(clf.core):
                pass
        else:
            up = stages[stage]
            run = _core.bench_stage
            for b in cap:
                run(core, b.data, b.recs, up)
    return time.perf_counter() - t0


def _summary(seconds, packets, wire_bytes):
    med = statistics.median(seconds)
    return {
        "seconds": seconds,
        "pps_min": packets / max(seconds),
        "pps_median": packets / med,
        "pps_max": packets / min(seconds),
        "ns_per_packet_median": med * 1e9 / packets,
        "ns_per_packet_min": min(seconds) * 1e9 / packets,
        "gbps_median": wire_bytes * 8 / med / 1e9,
        "gbps_max": wire_bytes * 8 / min(seconds) / 1e9,
    }


def run_stages(path, clf, stages, repeat, stats, progress=None, full=None):
    """{stage: summary or {"available": False, "why": ...}} for the requested stages.
    `clf` has no flow state; `full` (or None) is the classifier with flow state."""
    out = {}
    avail = []
    for s in STAGES:
        if s not in stages:
            continue
        if s == "flows" and full is None:
            out[s] = {"available": False,
                      "why": "flow state off in this configuration or build"}
            continue
        avail.append(s)
    # one untimed pass of the full path warms caches, branch predictors, tables
    _stage_pass(path, clf, "aggregate")
    reset(clf)
    if full is not None and "flows" in avail:
        _stage_pass(path, full, "flows")
        reset(full)
    times = {s: [] for s in avail}
    for rep in range(repeat):
        for s in avail:
            if progress:
                progress(f"rep {rep + 1}/{repeat} {s}")
            times[s].append(_stage_pass(path, full if s == "flows" else clf, s))
            if s in ("aggregate", "flows") and rep != repeat - 1:
                reset(full if s == "flows" else clf)
    for s in avail:
        out[s] = dict(available=True, **_summary(times[s], stats["packets"], stats["wire_bytes"]))
    prev = None
    for s in STAGES:
        if s in out and out[s].get("available"):
            if prev is not None:
                out[s]["ns_added"] = out[s]["ns_per_packet_median"] - out[prev]["ns_per_packet_median"]
            prev = s
    return out


def traffic_shares(clf):
    """Shares of the last full-path pass (sanity: the traffic hits the tables)."""
    if has_flows(clf):
        clf.flush()
    snap = clf.counters.snapshot(reset=True)
    t = snap["totals"]
    n = t.get("packets", 0) or 1
    cols = snap["columns"]
    peer_matched = int(cols["packets"][cols["peer"] != 0].sum()) if len(cols["peer"]) else 0
    tagged = int(cols["packets"][cols["tag"] != 0].sum()) if len(cols["tag"]) else 0
    out = {"packets": int(t.get("packets", 0)),
            "watched": 1 - t.get("unmatched", 0) / n,
            "decoded": t.get("decoded", 0) / n,
            "peer_matched": peer_matched / n,
            "tagged": tagged / n,
            "keys": int(snap["keys"])}
    if t.get("flows"):
        out["flows"] = int(t["flows"])
    return out


# ------------------------------------------------------------------ workers

def _load_batches(path, nparts):
    """(capture, [(data, recs)], [[recs of worker w per batch]]) with the partition
    computed once, outside any timing."""
    from .capture import open_capture

    cap = open_capture(path)
    batches = []
    parts = [[] for _ in range(nparts)]
    for b in cap:
        recs = np.ascontiguousarray(b.recs).copy()
        batches.append((b.data, recs))
        p = _core.flow_partition(b.data, recs, nparts)
        for w in range(nparts):
            parts[w].append(np.ascontiguousarray(recs[p == w]))
    return cap, batches, parts


def _worker(clf, batches, mine, barrier, conn, repeat):
    try:
        process = clf.process
        res = []
        for _ in range(repeat):
            reset(clf)
            barrier.wait()
            t0 = time.perf_counter()
            n = 0
            for (data, _r), recs in zip(batches, mine):
                if len(recs):
                    n += process(data, recs)
            t1 = time.perf_counter()
            res.append((t0, t1, n))
        conn.send(("ok", res, int(clf.counters.totals_dict().get("packets", 0))))
    except BaseException as exc:  # report, never hang the parent
        conn.send(("error", repr(exc), 0))
    finally:
        conn.close()


def run_workers(path, clf, nworkers, repeat, stats, progress=None):
    """Full path in `nworkers` forked processes over hash partitions; with
    nworkers > 1 the 1-worker rate is measured too.  Returns the result dict."""
    import multiprocessing as mp

    if nworkers < 1:
        raise ValueError("--workers must be >= 1")
    if "fork" not in mp.get_all_start_methods():
        raise ValueError("--workers needs the 'fork' start method (Linux)")
    ctx = mp.get_context("fork")
    out = {"workers": nworkers, "partition": "symmetric 5-tuple hash (as PACKET_FANOUT_HASH)",
           "flow_state": has_flows(clf), "runs": {}}
    counts = sorted({1, nworkers})
    for n in counts:
        if progress:
            progress(f"workers: partitioning for {n}")
        cap, batches, parts = _load_batches(path, n)
        try:
            barrier = ctx.Barrier(n)
            pipes, procs = [], []
            for w in range(n):
                rd, wr = ctx.Pipe(duplex=False)
                p = ctx.Process(target=_worker, args=(clf, batches, parts[w], barrier, wr, repeat),
                                daemon=True)
                p.start()
                wr.close()
                pipes.append(rd)
                procs.append(p)
            if progress:
                progress(f"workers: {n} running")
            results = []
            for w, rd in enumerate(pipes):
                msg = rd.recv() if rd.poll(3600) else ("error", "no answer", 0)
                if msg[0] != "ok":
                    raise RuntimeError(f"worker {w} failed: {msg[1]}")
                results.append(msg)
            for p in procs:
                p.join(10)
        finally:
            del batches
            cap.close()
        per_worker_packets = [int(sum(len(r) for r in parts[w])) for w in range(n)]
        counted = [m[2] for m in results]
        secs = []
        for rep in range(repeat):
            t0 = min(m[1][rep][0] for m in results)
            t1 = max(m[1][rep][1] for m in results)
            secs.append(t1 - t0)
        run = _summary(secs, stats["packets"], stats["wire_bytes"])
        run.update({
            "workers": n,
            "packets_per_worker": per_worker_packets,
            "packets_total": int(sum(per_worker_packets)),
            "packets_counted_last_rep": counted,
            "worker_seconds_median": [statistics.median(m[1][rep][1] - m[1][rep][0]
                                                        for rep in range(repeat))
                                      for m in results],
        })
        out["runs"][str(n)] = run
    one = out["runs"]["1"]["pps_median"]
    mine = out["runs"][str(nworkers)]
    out["pps_median"] = mine["pps_median"]
    out["pps_max"] = mine["pps_max"]
    out["packets_per_worker"] = mine["packets_per_worker"]
    out["packets_total"] = mine["packets_total"]
    out["scaling_vs_1"] = mine["pps_median"] / one if one else None
    out["efficiency"] = out["scaling_vs_1"] / nworkers if out["scaling_vs_1"] else None
    return out


# ------------------------------------------------------------------ compare

def write_prefix(path, out, packets):
    """Write the first `packets` packets of a capture as a classic microsecond pcap,
    the format every compared tool reads (the first packet's link type; packets of
    other link types, possible in pcapng, are skipped).  Returns the packets written."""
    import struct

    from .capture import open_capture

    n = 0
    lt = None
    with open_capture(path) as cap, open(out, "wb") as f:
        for b in cap:
            recs = b.recs
            data = memoryview(b.data)
            if lt is None and len(recs):
                lt = int(recs["linktype"][0])
                f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, lt))
            pack = struct.Struct("<IIII").pack
            for ts, off, caplen, wirelen, rlt in zip(
                    recs["ts_ns"].tolist(), recs["off"].tolist(), recs["caplen"].tolist(),
                    recs["wirelen"].tolist(), recs["linktype"].tolist()):
                if n >= packets:
                    return n
                if rlt != lt:
                    continue
                f.write(pack(ts // 1_000_000_000, (ts % 1_000_000_000) // 1000, caplen, wirelen))
                f.write(data[off:off + caplen])
                n += 1
    return n


def _is_gzip(path):
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _timed(cmd, repeat=1, env=None):
    best = None
    last = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        dt = time.perf_counter() - t0
        last = p
        if p.returncode != 0:
            break
        best = dt if best is None else min(best, dt)
    return best, last


def _tool_result(name, cmd, packets, seconds, proc, subset):
    if seconds is None:
        err = (proc.stderr or b"").decode(errors="replace").strip().splitlines()
        return {"name": name, "command": " ".join(cmd), "error":
                f"exit {proc.returncode}: {err[-1] if err else ''}"}
    return {"name": name, "command": " ".join(cmd), "packets": packets, "seconds": seconds,
            "pps": packets / seconds if seconds > 0 else 0.0, "subset": subset}


def run_compare(path, clf, cfg_path, stats, nk_pps, repeat, workdir, progress=None,
                env=None, nk_path="aggregate", full_path_pps=None):
    """Run the other tools on the capture; returns {"tools": [...], "missing": [...]}.

    Each tool's rate is put beside two of nkstream's: `nk_pps`, the in-process path
    as `nkstream classify` runs with this configuration (`nk_path`: "flows" when flow
    state is on, as it is by default), and `full_path_pps`, the full path of the
    issues' targets -- read, decode, two prefix tables, tags, aggregate, no flow
    state (the aggregate stage; `nk_pps` when None)."""
    from . import bench_baseline

    env = dict(os.environ if env is None else env)
    which = lambda t: shutil.which(t, path=env.get("PATH"))  # noqa: E731
    n = stats["packets"]
    tools, missing = [], []
    prefixes = {}
    converted = None
    if stats.get("format") != "pcap" or _is_gzip(path):
        # pcapng or gzip: every tool gets the same packets as a plain pcap
        if progress:
            progress("compare: writing the capture as plain pcap")
        converted = os.path.join(workdir, "capture.pcap")
        n = write_prefix(path, converted, n)
        path = converted
        warm(path)

    def prefix(k):
        k = min(k, n)
        if k == n:
            return path, n
        if k not in prefixes:
            out = os.path.join(workdir, f"prefix-{k}.pcap")
            prefixes[k] = (out, write_prefix(path, out, k))
            warm(out)
        return prefixes[k]

    reps = max(1, min(repeat, 3))

    def external(exe, title, args, subset=None, why="not found on PATH"):
        # One installed tool on the whole capture (best of `reps`) or on a prefix of
        # `subset` packets (once); a missing one is listed with `why`.
        if not which(exe):
            missing.append({"name": exe, "why": why})
            return None, None
        if progress:
            progress(f"compare: {exe}")
        f, k = (path, n) if subset is None else prefix(subset)
        cmd = [which(exe), *args(f)]
        secs, p = _timed(cmd, reps if subset is None else 1, env)
        r = _tool_result(title, cmd, k, secs, p, k < n)
        tools.append(r)
        return r, p

    # tcpdump: libpcap reading and rewriting every record, no dissection
    external("tcpdump", "tcpdump -r F -w /dev/null", lambda f: ["-r", f, "-w", "/dev/null"])
    # tshark: Wireshark's dissectors, protocol hierarchy statistics
    external("tshark", "tshark -q -z io,phs", lambda f: ["-r", f, "-q", "-z", "io,phs"],
             subset=SUBSET["tshark"])
    # ndpiReader: nDPI's flow classifier
    r, p = external("ndpiReader", "ndpiReader -i F (nDPI)", lambda f: ["-i", f],
                    subset=SUBSET["ndpiReader"], why="not found on PATH (Debian: libndpi-bin)")
    if r is not None and "error" not in r:
        import re

        m = re.search(rb"of\s+(\d+)\s+packets total", p.stdout or b"")
        if m:
            r["packets_reported"] = int(m.group(1))
    # dpkt + pytricia: the Python script a user would write
    gone = bench_baseline.missing()
    if not gone:
        if progress:
            progress("compare: dpkt+pytricia")
        f, k = prefix(SUBSET["dpkt+pytricia"])
        r = bench_baseline.measure(f, clf.watch, clf.peers)
        tools.append({"name": "dpkt + pytricia (nkstream.bench_baseline)",
                      "command": f"python -m nkstream.bench_baseline {f}",
                      "packets": r["packets"], "seconds": r["seconds"], "pps": r["pps"],
                      "subset": k < n})
    else:
        missing.append({"name": "dpkt+pytricia", "why": f"Python module(s) {', '.join(gone)} "
                        "not installed (pip install nkstream[bench])"})
    # the whole nkstream classify process, startup included
    if progress:
        progress("compare: nkstream classify")
    cmd = [sys.executable, "-m", "nkstream", "classify", path, "-q", "--no-progress"]
    if cfg_path:
        cmd += ["-c", cfg_path]
    secs, p = _timed(cmd, reps, env)
    cl = _tool_result("nkstream classify (whole process)", cmd, n, secs, p, False)
    tools.append(cl)
    if full_path_pps is None:
        full_path_pps = nk_pps
    for t in tools:
        if "pps" in t and t["pps"]:
            t["nkstream_ratio"] = nk_pps / t["pps"]
            t["nkstream_full_path_ratio"] = full_path_pps / t["pps"]
    tcp = next((t for t in tools if t["name"].startswith("tcpdump") and "pps" in t), None)
    if tcp and "pps" in cl:
        cl["vs_tcpdump"] = cl["pps"] / tcp["pps"]
    return {"tools": tools, "missing": missing, "nkstream_in_process_pps": nk_pps,
            "converted_to_pcap": converted is not None,
            "nkstream_in_process_stage": nk_path, "nkstream_full_path_pps": full_path_pps}


# ------------------------------------------------------------------ the run

class _Progress:
    def __init__(self, enabled):
        self.enabled = enabled and sys.stderr.isatty()
        self.t0 = time.perf_counter()

    def __call__(self, msg):
        if self.enabled:
            sys.stderr.write(f"\r\x1b[K[{time.perf_counter() - self.t0:6.1f}s] {msg}")
            sys.stderr.flush()

    def done(self):
        if self.enabled:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def run_bench(file=None, config=None, packets=DEFAULT_PACKETS, seed=0, repeat=5,
              workers=None, compare=False, stages=STAGES, progress=True, env=None,
              save=None, command=None):
    """Run the benchmark; returns the result dict that --json prints.  `save`: keep
    the generated capture at this path (it is generated there, not in a temporary
    directory)."""
    from .config import load_config

    if repeat < 1:
        raise ValueError("--repeat must be >= 1")
    if packets < 1:
        raise ValueError("-n must be >= 1")
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage {unknown[0]!r} (stages: {','.join(STAGES)})")
    prog = _Progress(progress)
    cfg = load_config(config)
    prog("loading tables and rules")
    clf, full = classifiers(cfg)
    result = {"nkstream_bench": 1, "machine": machine_info(),
              "configuration": config_info(clf, cfg, full),
              "command": command}
    workdir = tempfile.mkdtemp(prefix="nkstream-bench-")
    try:
        if file is None:
            path = save or os.path.join(workdir, f"synth-{packets}-seed{seed}.pcap")
            prog(f"generating {packets:,} packets")
            peers = synth_peers(clf.peers, seed)
            t0 = time.perf_counter()
            generate(path, packets, seed, peers)
            traffic = {"source": "generated", "generator": "nkstream.synth", "seed": seed,
                       "requested_packets": packets,
                       "peer_prefixes_sampled": len(peers) if peers else None,
                       "generate_seconds": time.perf_counter() - t0,
                       "saved_to": os.path.abspath(save) if save else None}
        else:
            if not os.path.exists(file):
                raise ValueError(f"{file}: no such file")
            path = file
            traffic = {"source": "file", "path": os.path.abspath(file)}
        prog("warming the page cache")
        warm(path)
        stats = capture_stats(path)
        if stats["packets"] == 0:
            raise ValueError(f"{path}: no packets")
        traffic.update(stats)
        result["traffic"] = traffic
        result["repeat"] = repeat
        result["stages"] = run_stages(path, clf, stages, repeat, stats, prog, full=full)
        if "flows" in stages and full is not None:
            result["traffic"]["shares"] = traffic_shares(full)
        elif "aggregate" in stages:
            result["traffic"]["shares"] = traffic_shares(clf)
        if workers:
            # the full path as configured: with flow state when it is on
            result["workers"] = run_workers(path, full or clf, workers, repeat, stats, prog)
        if compare:
            # compared: the full path as `nkstream classify` runs it with this config
            which = "flows" if full is not None else "aggregate"
            rates = {}
            for stage in dict.fromkeys((which, "aggregate")):
                st = result["stages"].get(stage)
                if not st or not st.get("available"):
                    prog(f"compare: measuring the {stage} stage")
                    st = run_stages(path, clf, (stage,), repeat, stats, full=full)[stage]
                rates[stage] = st["pps_median"]
            result["compare"] = run_compare(path, full or clf, cfg.path, stats, rates[which],
                                            repeat, workdir, prog, env=env, nk_path=which,
                                            full_path_pps=rates["aggregate"])
        result["machine"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    finally:
        prog.done()
        shutil.rmtree(workdir, ignore_errors=True)
    return result


# ------------------------------------------------------------------ text output

def _m(x):
    return f"{x / 1e6:,.2f}"


def render(result):
    m, c, t = result["machine"], result["configuration"], result["traffic"]
    lines = []
    lines.append(f"machine: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), "
                 f"Linux {m['kernel']}, Python {m['python']}, nkstream {m['nkstream']}, "
                 f"numpy {m['numpy']}, load {' '.join(f'{x:.2f}' for x in (m['loadavg_start'] or []))}")
    lines.append(f"tables: watch {c['watch_prefixes']['ipv4']:,} IPv4 + {c['watch_prefixes']['ipv6']:,} IPv6 "
                 f"prefixes, peers {c['peer_prefixes']['ipv4']:,} IPv4 + {c['peer_prefixes']['ipv6']:,} IPv6 "
                 f"({c['peer_labels']} labels); {c['tags']} tags, {c['rules']} rules "
                 f"({c['payload_signatures']} payload signatures, {c['sni_suffixes']} SNI suffixes); "
                 f"counters {c['counter_capacity']:,} slots; flow table "
                 + (f"{c['flow_capacity']:,} flows ({c['flow_memory_bytes'] / 2**20:.0f} MiB)"
                    if c["flow_state"] else "off"))
    src = (f"generated (nkstream.synth, seed {t['seed']})" if t["source"] == "generated"
           else t["path"])
    lines.append(f"traffic: {src}: {t['packets']:,} packets, {t['wire_bytes'] / 1e6:,.1f} MB on the wire, "
                 f"mean {t['mean_wire_bytes']:.0f} B/packet")
    pc = t.get("page_cache")
    if pc and pc["rss_kb"]:
        share = pc["pmd_mapped_kb"] / pc["rss_kb"]
        lines.append(f"         page cache: {share:.0%} of the mapped capture in 2 MiB mappings"
                     + ("" if share >= 0.9 else
                        " (the rest in 4 KiB pages slows `read`: docs/benchmarks.md, "
                        "\"Page cache\")"))
    sh = t.get("shares")
    if sh:
        lines.append(f"         watched {sh['watched']:.1%}, peer matched {sh['peer_matched']:.1%}, "
                     f"tagged {sh['tagged']:.1%}, decoded {sh['decoded']:.1%}, {sh['keys']:,} keys"
                     + (f", {sh['flows']:,} flows" if sh.get("flows") else ""))
    lines.append("")
    lines.append(f"per stage (cumulative; {result['repeat']} repetitions; M packets/s min / median / max)")
    lines.append(f"  {'stage':<26} {'min':>8} {'median':>8} {'max':>8} {'ns/pkt':>8} {'+ns':>7} {'Gbit/s':>7}")
    for s in STAGES:
        r = result["stages"].get(s)
        if r is None:
            continue
        if not r.get("available"):
            lines.append(f"  {STAGE_TITLES[s]:<26} {'n/a':>8}   ({r['why']})")
            continue
        add = f"{r['ns_added']:7.1f}" if "ns_added" in r else f"{'':>7}"
        lines.append(f"  {STAGE_TITLES[s]:<26} {_m(r['pps_min']):>8} {_m(r['pps_median']):>8} "
                     f"{_m(r['pps_max']):>8} {r['ns_per_packet_median']:8.1f} {add} {r['gbps_median']:7.2f}")
    w = result.get("workers")
    if w:
        lines.append("")
        lines.append(f"workers ({w['partition']}; full path "
                     f"{'with' if w.get('flow_state') else 'without'} flow state over in-memory partitions)")
        for k, r in sorted(w["runs"].items(), key=lambda kv: int(kv[0])):
            lines.append(f"  {k:>3} worker(s): {_m(r['pps_median'])} M packets/s median "
                         f"({_m(r['pps_max'])} best), packets per worker {r['packets_per_worker']}")
        if w.get("scaling_vs_1") is not None:
            lines.append(f"  scaling vs 1 worker: {w['scaling_vs_1']:.2f}x "
                         f"({w['efficiency']:.0%} of linear)")
    cmp_ = result.get("compare")
    if cmp_:
        lines.append("")
        stage = cmp_.get("nkstream_in_process_stage", "aggregate")
        full_pps = cmp_.get("nkstream_full_path_pps", cmp_["nkstream_in_process_pps"])
        lines.append("compare (same capture, page cache warm; nkstream in-process: full path "
                     f"(read..aggregate, no flow state) {_m(full_pps)} M packets/s"
                     + (f", as configured (+ flow state) {_m(cmp_['nkstream_in_process_pps'])} "
                        "M packets/s)" if stage == "flows" else ")"))
        two = stage == "flows"
        lines.append(f"  {'tool':<42} {'packets':>11} {'M pkt/s':>8} {'full path x':>11}"
                     + (f" {'+ flows x':>10}" if two else ""))
        for tl in cmp_["tools"]:
            if "error" in tl:
                lines.append(f"  {tl['name']:<42} failed: {tl['error']}")
                continue
            sub = "*" if tl.get("subset") else " "
            ratio = tl.get("nkstream_ratio")
            fr = tl.get("nkstream_full_path_ratio", ratio)
            lines.append(f"  {tl['name']:<42} {tl['packets']:>10,}{sub} {tl['pps'] / 1e6:8.3f} "
                         f"{(f'{fr:10.1f}x' if fr else ''):>11}"
                         + (f" {(f'{ratio:9.1f}x' if ratio else ''):>10}" if two else ""))
            if "vs_tcpdump" in tl:
                lines.append(f"  {'':<42} whole process = {tl['vs_tcpdump']:.2f}x tcpdump's rate")
        if any(tl.get("subset") for tl in cmp_["tools"]):
            lines.append("  * on the capture's first packets (rate scales per packet)")
        for mi in cmp_["missing"]:
            lines.append(f"  missing: {mi['name']}: {mi['why']}")
    return "\n".join(lines)


def dumps(result):
    return json.dumps(result, indent=2, sort_keys=False)
