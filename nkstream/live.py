"""Live sensor: capture workers in an AF_PACKET fanout group, per-window snapshots.

Process layout (docs/live-capture.md):

* The **parent** checks the configuration and the interface, opens one capture
  source per worker (AF_PACKET rings joined in one PACKET_FANOUT group, or libpcap
  handles), binds the metrics port, then drops root (``--user``) and forks the
  workers.  It never reads packets: it merges what the workers report once per
  window, writes the snapshot (named by window start and host, atomically), applies
  retention, serves metrics, handles signals and restarts dead workers.
* Each **worker** inherits its capture source through fork, builds its classifier
  and runs the hot loop: a block (or libpcap batch) at a time into
  ``classifier.process(data, recs)``; at every wall-clock window boundary
  ``[k*S, (k+1)*S)`` it takes ``classifier.snapshot(reset=True)`` and sends it, with
  the capture counters of the window, to the parent over a pipe (numpy arrays: cheap
  to pickle once per window).  Between batches it also obeys the parent's commands:
  ``stop`` (flush the partial window, exit), ``reload`` (build new tables and rules,
  swap them in; a bad file keeps the old ones and says why).

Packets are counted in the window in which a worker processes them; with the
default 10 ms block timeout that is at most a few tens of milliseconds after
capture.  Nothing is counted twice or dropped silently: kernel drops are in every
snapshot, and a worker that dies takes with it only the counts since its last
report, which the parent reports as ``lost`` (the packet and byte count from the
worker's last progress message, sent every half second) and logs as an error.
"""
import dataclasses
import errno
import math
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import socket
import sys
import time

from .ifaces import check_interface, sysfs_ifindex, sysfs_is_up, wait_for_interface

EXIT_REOPEN = 75            # worker exit status: the interface was re-created
PROGRESS_EVERY = 0.5        # seconds between a worker's progress messages
STOP_GRACE = 10.0           # seconds the parent waits for the workers' final reports


# -- structured logs: one logfmt line (key=value) per event on stderr -------------

_log_fields = {}


def _quote(v):
    s = str(v)
    if s == "" or re.search(r'[\s"=\\]', s):
        s = '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return s


def log(event, level="info", **fields):
    t = time.time()
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"
    parts = [f"ts={ts}", f"level={level}", f"event={event}"]
    parts += [f"{k}={_quote(v)}" for k, v in {**_log_fields, **fields}.items() if v is not None]
    try:
        sys.stderr.write(" ".join(parts) + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


# -- options ---------------------------------------------------------------------

def parse_size(text):
    """'1M', '512k', '1048576' -> bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)(i?[bB])?\s*", str(text))
    if not m:
        raise ValueError(f"bad size {text!r} (e.g. 1048576, 512k, 1M)")
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2).lower()]


@dataclasses.dataclass
class LiveOptions:
    iface: str
    workers: int = 1
    engine: str = "afpacket"            # afpacket | pcap
    bpf: str = None
    interval: float = 60.0
    out_dir: str = "."
    duration: float = None
    user: str = None
    metrics: str = None                 # ADDR:PORT
    fanout: str = "hash"                # hash | cpu | lb
    block_size: int = 1 << 20
    block_count: int = 64
    block_timeout_ms: int = 10
    pcap_buffer: int = 64 << 20
    snaplen: int = 262144
    retain_count: int = None
    retain_age: float = None
    host: str = None

    def validate(self):
        if self.engine not in ("afpacket", "pcap"):
            raise ValueError(f"unknown engine {self.engine!r} (afpacket or pcap)")
        if not 1 <= self.workers <= 64:
            raise ValueError(f"workers must be between 1 and 64, not {self.workers}")
        if self.fanout not in ("hash", "cpu", "lb"):
            raise ValueError(f"unknown fanout mode {self.fanout!r} (hash, cpu or lb)")
        if not self.interval or self.interval < 1 or not float(self.interval).is_integer():
            raise ValueError(f"interval must be a whole number of seconds, at least 1, not {self.interval}")
        if self.duration is not None and self.duration <= 0:
            raise ValueError("duration must be positive")
        if self.retain_count is not None and self.retain_count < 1:
            raise ValueError("retain-count must be at least 1")
        if self.retain_age is not None and self.retain_age <= 0:
            raise ValueError("retain-age must be positive")
        if self.metrics is not None:
            parse_addr(self.metrics)
        if self.host is None:
            self.host = socket.gethostname()
        if not re.fullmatch(r"[A-Za-z0-9._-]+", self.host):
            raise ValueError(f"host name {self.host!r} cannot be used in a file name")


def parse_addr(text):
    host, sep, port = str(text).rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad metrics address {text!r} (ADDR:PORT, e.g. 127.0.0.1:9109)")
    return host.strip("[]") or "0.0.0.0", int(port)


# -- windows and files --------------------------------------------------------------

def window_index(t, interval):
    return int(math.floor(t / interval))


def snapshot_name(host, start_s):
    return f"nkstream-{host}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(start_s))}.msgpack"


_NAME_RE = re.compile(r"nkstream-(?P<host>.+)-(?P<ts>\d{8}T\d{6}Z)\.msgpack$")


def apply_retention(out_dir, host, retain_count=None, retain_age=None, now=None):
    """Delete this host's snapshot files beyond the newest ``retain_count`` or with a
    window start older than ``retain_age`` seconds; returns the deleted paths."""
    if retain_count is None and retain_age is None:
        return []
    now = time.time() if now is None else now
    files = []
    for name in os.listdir(out_dir):
        m = _NAME_RE.match(name)
        if m and m.group("host") == host:
            start = time.mktime(time.strptime(m.group("ts"), "%Y%m%dT%H%M%SZ")) - time.timezone
            files.append((start, name))
    files.sort(reverse=True)
    doomed = []
    for i, (start, name) in enumerate(files):
        if (retain_count is not None and i >= retain_count) or \
                (retain_age is not None and now - start > retain_age):
            doomed.append(os.path.join(out_dir, name))
    for path in doomed:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    return doomed


# -- privileges -----------------------------------------------------------------------

def drop_privileges(user):
    """setgroups([]), setgid, setuid to ``user`` (name or number); from root this
    leaves no capability behind.  Verified: getting root back must fail."""
    import pwd
    try:
        pw = pwd.getpwuid(int(user)) if str(user).isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise ValueError(f"no such user {user!r}") from None
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    if pw.pw_uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            raise RuntimeError(f"dropping privileges to {user!r} failed: could become root again")
    return pw


# -- capture sources ------------------------------------------------------------------

def open_source(opts, worker, group, bpf_prog):
    if opts.engine == "afpacket":
        from ._core import AfPacketRing
        return AfPacketRing(opts.iface, block_size=opts.block_size, block_count=opts.block_count,
                            block_timeout_ms=opts.block_timeout_ms, promisc=True,
                            fanout=opts.fanout if opts.workers > 1 else None,
                            fanout_group=group, bpf=bpf_prog, worker=worker)
    from ._pcap import PcapSource
    return PcapSource(opts.iface, snaplen=opts.snaplen, promisc=True, buffer_size=opts.pcap_buffer,
                      timeout_ms=opts.block_timeout_ms, bpf=opts.bpf,
                      fanout=opts.fanout if opts.workers > 1 else None,
                      fanout_group=group, worker=worker)


def _pump(src, clf, max_batches, timeout_ms):
    if hasattr(src, "process_blocks"):
        return src.process_blocks(clf, max_blocks=max_batches, timeout_ms=timeout_ms)
    return src.process_batches(clf, max_batches=max_batches, timeout_ms=timeout_ms)


class _KernelCounters:
    """Per-window deltas of a source's cumulative capture counters.  libpcap's are
    32-bit and wrap; the AF_PACKET engine's are 64-bit accumulations."""

    KEYS = ("packets", "drops", "freeze_q", "ifdrops")

    def __init__(self, src):
        # From zero, not from a first read: the socket has been counting since the
        # parent opened it, and packets that came before this worker started are
        # in its ring for it to process (a restarted AF_PACKET worker likewise gets
        # what the kernel counted since its predecessor's last read).
        self.src = src
        self.prev = dict.fromkeys(self.KEYS, 0)

    def _read(self):
        st = self.src.stats()
        return {k: int(st.get(k, 0)) for k in self.KEYS}

    def delta(self):
        cur = self._read()
        wrap = 1 << 32 if not hasattr(self.src, "process_blocks") else 1 << 64
        d = {"kernel_" + k if k == "packets" else k: (cur[k] - self.prev[k]) % wrap for k in self.KEYS}
        self.prev = cur
        return d


# -- worker ---------------------------------------------------------------------------

def worker_main(idx, sources, conn, opts, backend, config, proto, resync):
    """Body of a worker process (forked from the parent, so its source is open, and
    ``proto``, the classifier the parent built, is this process's own copy: the
    worker reads packets from its first instant, without a build first)."""
    signal.set_wakeup_fd(-1)                        # the parent's, inherited through fork
    src = sources[idx]
    for j, other in enumerate(sources):
        if j != idx:
            # A sibling's socket must not live on in this process: if that worker
            # dies and its socket is replaced, a copy here would stay in the fanout
            # group with nobody reading it.
            other.detach()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)         # the parent coordinates shutdown/reload
    _log_fields.clear()
    _log_fields["worker"] = idx
    _log_fields["pid"] = os.getpid()
    if resync and hasattr(src, "mark_resync"):
        src.mark_resync()                           # our predecessor's cursor is unknown
    clf = proto
    ifindex = sysfs_ifindex(opts.iface)
    S = opts.interval
    k = window_index(time.time(), S)
    pending = []                                    # snapshots of classifiers replaced this window
    counters = _KernelCounters(src)
    win_packets = win_bytes = 0
    last_progress = time.monotonic()

    def flush(final=False):
        nonlocal pending, win_packets, win_bytes
        snaps = pending + [backend.take(clf)]
        pending = []
        stats = {"packets": win_packets, "bytes": win_bytes, **counters.delta()}
        conn.send(("final" if final else "window", idx, k, snaps, stats))
        win_packets = win_bytes = 0

    def drain():
        """Count what the kernel already queued for us before the final report.
        The block the kernel is filling is handed over only when its timeout
        expires, so wait a little over one block timeout for it; bounded, since on
        a busy link packets keep coming."""
        nonlocal win_packets, win_bytes
        from ._core import InterfaceDownError
        limit = time.monotonic() + 2.0
        wait_ms = 2 * opts.block_timeout_ms + 20
        while time.monotonic() < limit:
            try:
                n, p, b = _pump(src, clf, 64, wait_ms)
            except InterfaceDownError:
                break
            win_packets += p
            win_bytes += b
            if n == 0:
                break

    def commands():
        """Obey the parent; returns False when told to stop."""
        nonlocal clf
        while conn.poll():
            try:
                msg = conn.recv()
            except EOFError:                        # the parent is gone: nobody to report to
                log("parent_gone", "error")
                os._exit(1)
            if msg[0] == "stop":
                drain()
                flush(final=True)
                return False
            if msg[0] == "reload":
                if build["thread"] is not None:
                    build["queued"] = msg[1]        # the newest config wins
                else:
                    start_build(msg[1])
        return True

    # Reloads build the new tables and rules in a thread, so this loop keeps
    # emptying the ring meanwhile (at low rates a ring holds only block_count
    # block timeouts of traffic); the swap happens between two batches.
    import threading
    build = {"thread": None, "holder": None, "queued": None}

    def start_build(cfg):
        holder = {}

        def run():
            try:
                holder["clf"] = backend.make_classifier(cfg)
            except Exception as exc:                # bad file: keep the running tables
                holder["error"] = f"{type(exc).__name__}: {exc}"
        t = threading.Thread(target=run, name="nkstream-reload", daemon=True)
        build.update(thread=t, holder=holder)
        t.start()

    def finish_build():
        nonlocal clf
        t = build["thread"]
        if t is None or t.is_alive():
            return
        holder = build["holder"]
        build["thread"] = build["holder"] = None
        if "error" in holder:
            conn.send(("reload_failed", idx, holder["error"]))
        else:
            pending.append(backend.take(clf))     # counted under the old labels
            clf = holder["clf"]
            conn.send(("reloaded", idx, None))
        if build["queued"] is not None:
            cfg, build["queued"] = build["queued"], None
            start_build(cfg)

    def tick():
        nonlocal k, last_progress
        now = time.time()
        if now >= (k + 1) * S:
            flush()
            k = window_index(now, S)
        if time.monotonic() - last_progress >= PROGRESS_EVERY:
            conn.send(("progress", idx, k, win_packets, win_bytes))
            last_progress = time.monotonic()

    from ._core import InterfaceDownError
    while True:
        timeout_ms = int(max(0.0, min(0.1, (k + 1) * S - time.time())) * 1000)
        try:
            _, p, b = _pump(src, clf, 64, timeout_ms)
            win_packets += p
            win_bytes += b
        except InterfaceDownError as exc:
            conn.send(("down", idx, str(exc)))
            while not sysfs_is_up(opts.iface):
                if not commands():
                    os._exit(0)
                tick()
                time.sleep(0.05)
            if sysfs_ifindex(opts.iface) != ifindex:
                # A new interface of the same name: this socket is bound to the old one.
                flush()
                conn.send(("gone", idx, None))
                os._exit(EXIT_REOPEN)
            conn.send(("up", idx, None))
        if not commands():
            os._exit(0)
        finish_build()
        tick()


# -- parent ---------------------------------------------------------------------------

class _Window:
    def __init__(self, k):
        self.k = k
        self.snaps = []
        self.reported = set()
        self.final = False
        self.stats = {}
        self.lost = {"packets": 0, "bytes": 0, "workers": []}

    def add_stats(self, idx, st):
        self.stats.setdefault(idx, {})
        for key, v in st.items():
            self.stats[idx][key] = self.stats[idx].get(key, 0) + v


class _Metrics:
    """Prometheus counters, when prometheus-client is installed and --metrics given."""

    def __init__(self, addr):
        from prometheus_client import CollectorRegistry, Counter, start_http_server
        self.registry = CollectorRegistry()
        lbl = ["worker"]
        self.packets = Counter("nkstream_packets", "packets classified", lbl, registry=self.registry)
        self.bytes = Counter("nkstream_bytes", "on-wire bytes classified", lbl, registry=self.registry)
        self.drops = Counter("nkstream_kernel_drops", "packets the kernel dropped (ring full)", lbl,
                             registry=self.registry)
        self.lost = Counter("nkstream_lost_packets", "packets counted by a worker that died before reporting",
                            registry=self.registry)
        self.category = Counter("nkstream_category_bytes", "on-wire bytes per category", ["category"],
                                registry=self.registry)
        self.windows = Counter("nkstream_snapshots_written", "snapshot files written", registry=self.registry)
        host, port = parse_addr(addr)
        start_http_server(port, addr=host, registry=self.registry)

    def worker(self, idx, st):
        w = str(idx)
        self.packets.labels(w).inc(st.get("packets", 0))
        self.bytes.labels(w).inc(st.get("bytes", 0))
        self.drops.labels(w).inc(st.get("drops", 0))


class LiveSensor:
    """``nkstream run``: see the module docstring.  ``backend`` builds classifiers,
    merges their snapshots and writes files (``nkstream.live_backend``)."""

    def __init__(self, opts, backend, config=None):
        opts.validate()
        self.opts = opts
        self.backend = backend
        self.config = config
        self.stop_reason = None
        self.reload_wanted = False
        self.exit_status = 0

    # signals: handlers only set flags; the wakeup fd ends the parent's wait at once
    def _on_signal(self, signum, frame):
        if signum == signal.SIGHUP:
            self.reload_wanted = True
        else:
            self.stop_reason = signal.Signals(signum).name

    def run(self):
        o = self.opts
        _log_fields.clear()
        _log_fields["pid"] = os.getpid()
        if self.config is None:
            self.config = self.backend.load()        # raises on a bad config: nothing opened yet
        # Built here once: it checks the tables and rules, and every worker forked
        # later starts with its own copy instead of building one while its ring fills.
        self.proto = self.backend.make_classifier(self.config)
        from .classify import flow_fanout_warning
        warning = flow_fanout_warning(o.fanout, getattr(self.proto, "flows_enabled", False),
                                      o.workers)
        if warning:
            log("fanout_splits_flows", "warning", message=warning)
        check_interface(o.iface)
        if o.user:
            import pwd
            try:
                pwd.getpwuid(int(o.user)) if str(o.user).isdigit() else pwd.getpwnam(o.user)
            except KeyError:
                raise ValueError(f"no such user {o.user!r}") from None
        bpf_prog = None
        if o.bpf and o.engine == "afpacket":
            from ._pcap import compile_bpf
            bpf_prog = compile_bpf(o.bpf)
        os.makedirs(o.out_dir, exist_ok=True)
        group = os.getpid() & 0xFFFF
        self.group = group
        self.bpf_prog = bpf_prog
        self.sources = []
        try:
            for i in range(o.workers):
                self.sources.append(open_source(o, i, group, bpf_prog))
            self.metrics = _Metrics(o.metrics) if o.metrics else None
            if o.user:
                # Everything imported from here on is read as the new user, who may
                # not be able to read this Python installation (e.g. under /root).
                import multiprocessing.popen_fork  # noqa: F401
                import pwd  # noqa: F401
                preload = getattr(self.backend, "preload", None)
                if preload is not None:
                    preload()
                pw = drop_privileges(o.user)
                log("privileges_dropped", user=pw.pw_name, uid=pw.pw_uid, gid=pw.pw_gid)
            if not os.access(o.out_dir, os.W_OK | os.X_OK):
                raise PermissionError(f"output directory {o.out_dir} is not writable"
                                      + (f" by user {o.user}" if o.user else ""))
            return self._supervise()
        finally:
            for s in self.sources:
                s.close()

    def _start_worker(self, idx, resync, restart=False):
        ctx = multiprocessing.get_context("fork")
        parent_end, child_end = ctx.Pipe(duplex=True)
        p = ctx.Process(target=worker_main, name=f"nkstream-worker-{idx}",
                        args=(idx, self.sources, child_end, self.opts, self.backend,
                              self.config, self.proto, resync), daemon=True)
        p.start()
        child_end.close()
        self.procs[idx] = p
        self.conns[idx] = parent_end
        self.progress[idx] = (None, 0, 0)
        self.started[idx] = time.monotonic()
        log("worker_started", worker=idx, worker_pid=p.pid, restarted=restart or None)

    def _supervise(self):
        o = self.opts
        S = o.interval
        self.t_start = time.time()
        rfd, wfd = os.pipe()
        os.set_blocking(wfd, False)
        old_wakeup = signal.set_wakeup_fd(wfd)
        old_handlers = {s: signal.signal(s, self._on_signal)
                        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        self.procs, self.conns, self.progress, self.started = {}, {}, {}, {}
        self.windows = {}
        self.restarts = 0
        log("sensor_started", iface=o.iface, engine=o.engine, workers=o.workers,
            fanout=o.fanout if o.workers > 1 else None, interval=S, out_dir=o.out_dir,
            block_size=o.block_size if o.engine == "afpacket" else None,
            block_count=o.block_count if o.engine == "afpacket" else None, bpf=o.bpf)
        try:
            for i in range(o.workers):
                self._start_worker(i, resync=False)
            deadline = self.t_start + o.duration if o.duration else None
            while self.stop_reason is None:
                if deadline is not None and time.time() >= deadline:
                    self.stop_reason = "duration"
                    break
                timeout = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.time()))
                ready = multiprocessing.connection.wait(
                    list(self.conns.values()) + [p.sentinel for p in self.procs.values()] + [rfd],
                    timeout=timeout)
                if rfd in ready:
                    try:
                        os.read(rfd, 512)
                    except BlockingIOError:
                        pass
                for idx, c in list(self.conns.items()):
                    while c in ready and c.poll():
                        try:
                            self._on_message(c.recv())
                        except EOFError:
                            break
                for idx, p in list(self.procs.items()):
                    if not p.is_alive():
                        self._on_death(idx, p)
                if self.reload_wanted:
                    self.reload_wanted = False
                    self._reload()
                self._write_complete(time.time())
            self._shutdown()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for s, h in old_handlers.items():
                signal.signal(s, h)
            os.close(rfd)
            os.close(wfd)
            for p in self.procs.values():
                if p.is_alive():
                    p.kill()
                p.join(5)
        return self.exit_status

    def _window(self, k):
        if k not in self.windows:
            self.windows[k] = _Window(k)
        return self.windows[k]

    def _on_message(self, msg):
        kind, idx = msg[0], msg[1]
        if kind in ("window", "final"):
            _, _, k, snaps, st = msg
            w = self._window(k)
            w.snaps.extend(snaps)
            w.reported.add(idx)
            w.add_stats(idx, st)
            w.final = w.final or kind == "final"
            self.progress[idx] = (None, 0, 0)
            if self.metrics:
                self.metrics.worker(idx, st)
            if st.get("drops"):
                log("kernel_drops", "warning", worker=idx, window=k, drops=st["drops"])
        elif kind == "progress":
            self.progress[idx] = (msg[2], msg[3], msg[4])
        elif kind == "down":
            log("interface_down", "warning", worker=idx, iface=self.opts.iface, why=msg[2],
                action="waiting for it to come back up")
        elif kind == "up":
            log("interface_up", worker=idx, iface=self.opts.iface)
        elif kind == "gone":
            log("interface_recreated", "warning", worker=idx, iface=self.opts.iface)
        elif kind == "reloaded":
            log("reloaded", worker=idx)
        elif kind == "reload_failed":
            log("reload_failed", "error", worker=idx, why=msg[2], action="kept the running tables and rules")

    def _on_death(self, idx, p):
        # Drain whatever it managed to say first (a window report, progress).
        c = self.conns.pop(idx)
        try:
            while c.poll():
                self._on_message(c.recv())
        except (EOFError, OSError):
            pass
        c.close()
        p.join(1)
        code = p.exitcode
        del self.procs[idx]
        k, packets, nbytes = self.progress.pop(idx, (None, 0, 0))
        if self.stop_reason is not None or self.exit_status:
            return
        if k is None:
            k = window_index(time.time(), self.opts.interval)
        w = self._window(k)
        if code != EXIT_REOPEN:              # that one reported its window before leaving
            w.lost["packets"] += packets
            w.lost["bytes"] += nbytes
            w.lost["workers"].append(idx)
        if self.metrics:
            self.metrics.lost.inc(packets)
        level = "info" if code == EXIT_REOPEN else "error"
        log("worker_died", level, worker=idx, exitcode=code, window=k, lost_packets=packets,
            lost_bytes=nbytes, note="counts since its last report are lost")
        self.restarts += 1
        if time.monotonic() - self.started[idx] < 2.0:
            time.sleep(1.0)                          # do not spin on a worker that dies at once
        if code == EXIT_REOPEN or self.opts.engine == "pcap":
            # A new socket is needed (libpcap's ring cursor lives in the dead process;
            # or the interface was re-created): only possible with privileges.
            try:
                self.sources[idx].close()
                if not wait_for_interface(self.opts.iface, stop=lambda: self.stop_reason is not None):
                    return
                self.sources[idx] = open_source(self.opts, idx, self.group, self.bpf_prog)
            except (OSError, ValueError) as exc:
                log("reopen_failed", "error", worker=idx, why=str(exc),
                    action="stopping (run as root, or with CAP_NET_RAW and without --user, to reopen)")
                self.stop_reason = "reopen_failed"
                self.exit_status = 1
                return
            self._start_worker(idx, resync=False, restart=True)
        else:
            self._start_worker(idx, resync=True, restart=True)

    def _reload(self):
        """SIGHUP: check the new tables and rules here first (a bad file changes
        nothing), then have every worker build and swap them between batches."""
        try:
            config = self.backend.load()
            proto = self.backend.make_classifier(config)
        except Exception as exc:
            log("reload_failed", "error", why=f"{type(exc).__name__}: {exc}",
                action="kept the running tables and rules")
            return
        self.config, self.proto = config, proto     # for workers started from now on
        for c in self.conns.values():
            c.send(("reload", config))
        log("reload_started", workers=len(self.conns))

    def _write_complete(self, now):
        """Write every window all workers have reported, or whose grace period ended."""
        S = self.opts.interval
        grace = max(2.0, 0.25 * S)
        for k in sorted(self.windows):
            w = self.windows[k]
            done = w.reported >= set(self.procs) and now >= (k + 1) * S
            if done or now >= (k + 1) * S + grace:
                if not done:
                    missing = sorted(set(self.procs) - w.reported)
                    log("window_incomplete", "error", window=k, missing_workers=missing)
                    w.lost["workers"].extend(missing)
                self._write(w, end=(k + 1) * S)
                del self.windows[k]

    def _write(self, w, end):
        o = self.opts
        S = o.interval
        start = max(w.k * S, self.t_start)
        per_worker = {i: w.stats[i] for i in sorted(w.stats)}
        capture = {
            "engine": o.engine, "workers": o.workers,
            "packets": sum(s.get("packets", 0) for s in per_worker.values()),
            "bytes": sum(s.get("bytes", 0) for s in per_worker.values()),
            "kernel_packets": sum(s.get("kernel_packets", 0) for s in per_worker.values()),
            "drops": sum(s.get("drops", 0) for s in per_worker.values()),
            "ifdrops": sum(s.get("ifdrops", 0) for s in per_worker.values()),
            "freeze_q": sum(s.get("freeze_q", 0) for s in per_worker.values()),
            "lost_packets": w.lost["packets"], "lost_bytes": w.lost["bytes"],
            "lost_workers": sorted(set(w.lost["workers"])),
            "worker_restarts": self.restarts,
            "per_worker": {str(i): s for i, s in per_worker.items()},
        }
        sensor = {"host": o.host, "interface": o.iface}
        path = os.path.join(o.out_dir, snapshot_name(o.host, w.k * S))
        try:
            summary = self.backend.write(path, w.snaps, start_ns=int(start * 1e9),
                                         end_ns=int(min(end, time.time() if w.final else end) * 1e9),
                                         sensor=sensor, capture=capture)
        except Exception as exc:
            log("snapshot_failed", "error", path=path, why=f"{type(exc).__name__}: {exc}")
            self.exit_status = 1
            return
        if self.metrics:
            self.metrics.windows.inc()
            for cat, nbytes in (summary or {}).get("category_bytes", {}).items():
                self.metrics.category.labels(cat).inc(nbytes)
        log("snapshot_written", path=path, window_start=int(start), packets=capture["packets"],
            bytes=capture["bytes"], drops=capture["drops"],
            lost_packets=capture["lost_packets"] or None, partial=w.final or None)
        for gone in apply_retention(o.out_dir, o.host, o.retain_count, o.retain_age):
            log("snapshot_expired", path=gone)

    def _shutdown(self):
        log("stopping", reason=self.stop_reason)
        for c in self.conns.values():
            try:
                c.send(("stop",))
            except OSError:
                pass
        deadline = time.monotonic() + STOP_GRACE
        waiting = set(self.conns)
        while waiting and time.monotonic() < deadline:
            ready = multiprocessing.connection.wait([self.conns[i] for i in waiting],
                                                    timeout=max(0.0, deadline - time.monotonic()))
            for idx in list(waiting):
                c = self.conns[idx]
                if c not in ready:
                    continue
                try:
                    while c.poll():
                        msg = c.recv()
                        self._on_message(msg)
                        if msg[0] == "final":
                            waiting.discard(idx)
                except (EOFError, OSError):
                    waiting.discard(idx)
        for idx in sorted(waiting):
            log("worker_unresponsive", "error", worker=idx, note="its last window is lost")
        # Everything reported is written: whole windows first, the partial one last.
        now = time.time()
        for k in sorted(self.windows):
            w = self.windows.pop(k)
            w.final = True
            self._write(w, end=min((k + 1) * self.opts.interval, now))
        for p in self.procs.values():
            p.join(5)
        log("stopped", reason=self.stop_reason, exit=self.exit_status)


# -- the classification pipeline, as the sensor uses it ---------------------------------

class PipelineBackend:
    """How the sensor uses the classification pipeline.  The protocol (also met by
    the tests' counting backend):

    * ``load()`` -> config (``nkstream.config.load_config``; ConfigError names the
      file and key), ``settings(config)`` -> the config's sensor settings;
    * ``make_classifier(config)`` -> object with ``process(data, recs)``;
    * ``take(classifier)`` -> the window's counts, reset (picklable: sent by the
      worker to the parent), with the label dictionaries they refer to, so counts
      taken before a reload keep their own labels;
    * ``write(path, pieces, start_ns, end_ns, sensor, capture)`` merges the pieces of
      every worker and writes one snapshot file atomically; returns a summary dict
      (``category_bytes`` for the metrics).
    """

    def __init__(self, config_path=None):
        self.path = config_path

    def load(self):
        from .config import load_config
        return load_config(self.path)

    @staticmethod
    def preload():
        """Import now what writing snapshots and reloading tables import lazily:
        after --user the Python installation may not be readable any more."""
        import csv  # noqa: F401
        import gzip  # noqa: F401
        import ipaddress  # noqa: F401
        import json  # noqa: F401

        import msgpack  # noqa: F401

        from . import classify, config, prefixes, rules, snapshot  # noqa: F401

    @staticmethod
    def settings(cfg):
        """LiveOptions fields from the config's [capture], [output], [sensor]."""
        return {"iface": cfg.interface, "engine": cfg.engine, "workers": cfg.workers,
                "fanout": cfg.fanout, "bpf": cfg.bpf or None, "block_size": cfg.block_size,
                "block_count": cfg.block_count, "block_timeout_ms": cfg.block_timeout_ms,
                "snaplen": cfg.snaplen, "interval": cfg.interval, "out_dir": cfg.out_dir,
                "retain_count": cfg.retain_count or None, "retain_age": cfg.retain_age or None,
                "host": cfg.sensor or None}

    def make_classifier(self, config):
        from .classify import Classifier
        return Classifier.from_config(config)

    def take(self, clf):
        # flow state: count the pending packets of undecided flows and end idle flows
        # before the counters are read (docs/flows.md), so the window adds up
        if hasattr(clf, "close_window"):
            clf.close_window()
        return clf.snapshot(reset=True), clf.labels()

    def write(self, path, pieces, start_ns, end_ns, sensor, capture):
        from . import _core
        from .snapshot import Snapshot, merge_snapshots
        meta = {"host": sensor["host"], "interfaces": [sensor["interface"]],
                "engine": capture["engine"], "workers": capture["workers"]}
        snaps = [Snapshot.from_counters(counts, start_ns=start_ns, end_ns=end_ns,
                                        watch_labels=labels["watch"], peer_labels=labels["peer"],
                                        tags=labels["tag"], categories=labels["tag_category"],
                                        error_names=_core.ERROR_NAMES, sensor=meta)
                 for counts, labels in pieces]
        snap = snaps[0] if len(snaps) == 1 else merge_snapshots(snaps)
        # The pieces are the workers' shares of one window of one sensor, not
        # separate sources; the capture counters belong to the window as a whole.
        snap.sources = []
        snap.sensor = dict(meta)
        snap.window = type(snap.window)(start_ns, end_ns)
        per = capture["per_worker"]
        workers = range(capture["workers"])
        drops = {"kernel": [per.get(str(w), {}).get("drops", 0) for w in workers]}
        if capture["engine"] == "afpacket":
            drops["freeze_q"] = [per.get(str(w), {}).get("freeze_q", 0) for w in workers]
        else:
            drops["ifdrop"] = [per.get(str(w), {}).get("ifdrops", 0) for w in workers]
        snap.drops_per_worker = drops
        snap.lost = {"packets": capture["lost_packets"], "bytes": capture["lost_bytes"],
                     "workers": len(capture["lost_workers"])}
        snap.write(path)
        cats = {}
        if len(snap):
            for cat, nbytes in zip(snap.names("category"), snap.columns["bytes"]):
                cats[cat] = cats.get(cat, 0) + int(nbytes)
        return {"category_bytes": cats}
