#!/usr/bin/env python3
"""Capture benchmark: the highest packet rate each capture setup holds with zero
drops on a veth pair, beside `tcpdump -i IFACE -w /dev/null` on the same traffic.

    sudo python3 bench/capture_rate.py [--packets 200000] [--rates 50000,100000,200000,400000,top]
                                       [--capture-only] [--seconds 3]

A network namespace and a veth pair are made for the run (and removed at the end);
tcpreplay sends a generated capture (small and mixed frames over many flows, some
802.1Q tagged) from the namespace end at each rate (``--pps R``, then
``--topspeed``), while one setup captures on the host end:

* tcpdump -i IFACE -w /dev/null (libpcap, default buffer), the reference;
* nkstream's AF_PACKET engine with 1 and 2 workers (fanout hash);
* nkstream's libpcap engine with 1 and 2 workers;
* the AF_PACKET engine again with tcpdump's buffer size (2 MiB, ``@2M``), since the
  sensor's default ring (64 MiB per worker) absorbs bursts tcpdump's cannot;

the nkstream setups run the live sensor itself (nkstream.live.LiveSensor: worker
processes, windows, the classifier when the pipeline is built, unless
``--capture-only``).  A setup "holds" a rate when it received every packet sent
and the kernel reported no drop.  Rates are what tcpreplay reports it achieved;
on a small machine tcpreplay itself is the limit at --topspeed.
"""
import argparse
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def sh(*cmd, check=True, timeout=30):
    return subprocess.run(cmd, check=check, timeout=timeout, capture_output=True, text=True)


class Veth:
    def __init__(self):
        tag = f"{os.getpid() % 100000}"
        self.host, self.peer, self.ns = f"nkbh{tag}", f"nkbp{tag}", f"nkbns{tag}"

    def __enter__(self):
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "add", self.host, "type", "veth", "peer", "name", self.peer)
        sh("ip", "link", "set", self.peer, "netns", self.ns)
        sh("sysctl", "-qw", f"net.ipv6.conf.{self.host}.disable_ipv6=1")
        sh("ip", "netns", "exec", self.ns, "sysctl", "-qw", f"net.ipv6.conf.{self.peer}.disable_ipv6=1")
        sh("ip", "link", "set", self.host, "mtu", "9000", "up")
        sh("ip", "-n", self.ns, "link", "set", self.peer, "mtu", "9000", "up")
        time.sleep(0.3)
        return self

    def __exit__(self, *exc):
        sh("ip", "link", "del", self.host, check=False)
        sh("ip", "netns", "del", self.ns, check=False)

    senders = 1

    def replay(self, path, rate, loops):
        """Send with ``senders`` tcpreplay processes at once (each at rate/senders);
        returns (packets sent, achieved packets/s summed over the senders)."""
        args = ["ip", "netns", "exec", self.ns, "tcpreplay", "-i", self.peer, f"--loop={loops}"]
        args += ["--topspeed"] if rate == "top" else [f"--pps={rate / self.senders:.0f}"]
        procs = [subprocess.Popen(args + [str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for _ in range(self.senders)]
        sent, pps = 0, 0.0
        for p in procs:
            text = p.communicate(timeout=600)[0]
            sent += int(re.search(r"Successful packets:\s+(\d+)", text).group(1))
            retried = sum(int(x) for x in re.findall(r"Retried packets \(\w+\):\s+(\d+)", text))
            if retried:
                print(f"  tcpreplay retried {retried} sends", file=sys.stderr)
            m = re.search(r"Rated: [\d.]+ Bps, [\d.]+ Mbps, ([\d.]+) pps", text)
            pps += float(m.group(1)) if m else float("nan")
        return sent, pps


def make_capture(path, n):
    """n Ethernet frames over 4096 UDP/TCP flows, 60..400 bytes, every 7th tagged."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(n):
            flow = (i * 2654435761) % 4096
            plen = 18 + (i * 37) % 340
            src = bytes([10, flow >> 8, flow & 0xFF, 1])
            dst = bytes([175, 45, 176, 1 + i % 200])
            l4 = struct.pack("!HHHH", 1024 + flow, 443, 8 + plen, 0) + bytes(plen)
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0, 64, 17, 0, src, dst) + l4
            eth = bytes.fromhex("020000000001020000000002")
            eth += (struct.pack("!HH", 0x8100, 100 + i % 5) if i % 7 == 0 else b"") + b"\x08\x00"
            frame = eth + ip
            f.write(struct.pack("<IIII", 1_700_000_000, i % 1000000, len(frame), len(frame)) + frame)


# -- setups ---------------------------------------------------------------------------

def run_tcpdump(veth, path, rate, loops):
    p = subprocess.Popen(["tcpdump", "-i", veth.host, "-w", "/dev/null", "-n"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = ""
    deadline = time.monotonic() + 10
    while "listening on" not in line and time.monotonic() < deadline:
        line = p.stderr.readline()
    sent, pps = veth.replay(path, rate, loops)
    time.sleep(1.5)          # tcpdump's 1 s libpcap timeout: let the last block be read
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=30)[1]
    got = int(re.search(r"(\d+) packets? captured", err).group(1))
    drops = int(re.search(r"(\d+) packets? dropped by kernel", err).group(1))
    return sent, pps, got, drops


class _Results:
    """Backend for the benchmark: the real classifier (or a count), and instead of
    snapshot files, the capture counters of each window appended to a JSON file."""

    def __init__(self, out, classify):
        self.out, self.classify = out, classify

    def load(self):
        if self.classify:
            from nkstream.config import load_config
            return load_config(None)
        return None

    def make_classifier(self, config):
        if self.classify:
            from nkstream.classify import Classifier
            return Classifier.from_config(config)
        return _Count()

    def take(self, clf):
        return None

    def write(self, path, pieces, start_ns, end_ns, sensor, capture):
        with open(self.out, "a") as f:
            f.write(json.dumps(capture) + "\n")
        return {}


class _Count:
    def process(self, data, recs):
        pass


def run_nkstream(veth, path, rate, loops, engine, workers, classify, ring=None):
    from nkstream.live import LiveOptions, LiveSensor
    tmp = tempfile.mkdtemp(prefix="nkbench-")
    res = os.path.join(tmp, "res.jsonl")
    opts = LiveOptions(iface=veth.host, engine=engine, workers=workers, interval=3600,
                       out_dir=tmp, host="bench")
    if ring:                       # same buffer as tcpdump's default: 16 x 128 KiB blocks
        opts.block_size, opts.block_count, opts.pcap_buffer = ring // 16, 16, ring
    pid = os.fork()
    if pid == 0:                                    # the sensor, as `nkstream run` runs it
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            code = LiveSensor(opts, _Results(res, classify)).run()
        except BaseException:
            code = 1
        os._exit(code)
    try:
        time.sleep(1.5 if classify else 0.5)         # workers built their classifiers
        sent, pps = veth.replay(path, rate, loops)
        time.sleep(0.5)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"sensor exited with {status}")
        caps = [json.loads(line) for line in open(res)]
        got = sum(c["packets"] for c in caps)
        drops = sum(c["drops"] for c in caps)
        kern = sum(c["kernel_packets"] for c in caps)
        if kern != got:
            print(f"  kernel counted {kern} packets at the sockets, workers {got}", file=sys.stderr)
        return sent, pps, got, drops
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- drain mode: how fast a setup empties a full buffer -------------------------------

def drain_tcpdump(veth, path, n):
    """tcpdump with a buffer big enough for all n packets, stopped while they are
    sent, then timed from SIGCONT until it has written n packets (-c n)."""
    p = subprocess.Popen(["tcpdump", "-i", veth.host, "-w", "/dev/null", "-n", "-c", str(n),
                          "-B", str(512 << 10)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    line = ""
    deadline = time.monotonic() + 10
    while "listening on" not in line and time.monotonic() < deadline:
        line = p.stderr.readline()
    p.send_signal(signal.SIGSTOP)
    sent, _ = veth.replay(path, "top", 1)
    time.sleep(0.5)
    t0 = time.perf_counter()
    p.send_signal(signal.SIGCONT)
    err = p.communicate(timeout=120)[1]
    dt = time.perf_counter() - t0
    got = int(re.search(r"(\d+) packets? captured", err).group(1))
    drops = int(re.search(r"(\d+) packets? dropped by kernel", err).group(1))
    return sent, got, drops, dt


def _drain_worker(engine, idx, workers, group, iface, classify, ready_w, go_r, out_w):
    from nkstream.live import open_source, LiveOptions
    opts = LiveOptions(iface=iface, engine=engine, workers=workers, block_size=1 << 20,
                       block_count=512, pcap_buffer=512 << 20)
    src = open_source(opts, idx, group, None)
    if classify:
        from nkstream.classify import Classifier
        clf = Classifier.from_config(None)
    else:
        clf = _Count()
    os.write(ready_w, b"r")
    os.read(go_r, 1)
    t0 = time.perf_counter()
    got, last = 0, t0
    pump = src.process_blocks if engine == "afpacket" else src.process_batches
    while True:
        _, p, _ = pump(clf, 64, 200)
        if p:
            got += p
            last = time.perf_counter()
        elif time.perf_counter() - last > 0.2:
            break
    drops = src.stats()["drops"]
    os.write(out_w, json.dumps([got, drops, last - t0]).encode())
    os._exit(0)


def drain_nkstream(veth, path, engine, workers, classify):
    group = (os.getpid() + workers) & 0xFFFF
    kids = []
    for i in range(workers):
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        out_r, out_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                _drain_worker(engine, i, workers, group, veth.host, classify, ready_w, go_r, out_w)
            finally:
                os._exit(1)
        kids.append((pid, ready_r, go_w, out_r))
    for _, ready_r, _, _ in kids:
        os.read(ready_r, 1)
    sent, _ = veth.replay(path, "top", 1)
    time.sleep(0.5)
    for _, _, go_w, _ in kids:
        os.write(go_w, b"g")
    got = drops = 0
    dt = 0.0
    for pid, _, _, out_r in kids:
        g, d, t = json.loads(os.read(out_r, 4096))
        os.waitpid(pid, 0)
        got, drops, dt = got + g, drops + d, max(dt, t)
    return sent, got, drops, dt


def drain_main(args, classify):
    tmp = tempfile.mkdtemp(prefix="nkbench-")
    cap = os.path.join(tmp, "traffic.pcap")
    make_capture(cap, args.packets)
    rows = []
    try:
        with Veth() as veth:
            for rep in range(args.repeat):          # interleaved, so load drifts hit all alike
                for setup in args.setups.split(","):
                    if setup == "tcpdump":
                        r = drain_tcpdump(veth, cap, args.packets)
                    else:
                        engine, workers = setup.split("@")[0].split("-")
                        r = drain_nkstream(veth, cap, engine, int(workers), classify)
                    sent, got, drops, dt = r
                    rows.append((setup, sent, got, drops, dt))
                    print(f"{setup:12s} sent={sent} drained={got} drops={drops} in {dt:.3f} s",
                          file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\ndrain: {args.packets} frames of 60-400 bytes queued while the reader was stopped, "
          f"then read; classifying: {classify}; {os.cpu_count()} CPUs\n")
    print(f"| setup | packets | drained (all runs) | drops | best s | median s | packets/s (best) |")
    print("|---|---|---|---|---|---|---|")
    for setup in args.setups.split(","):
        mine = [r for r in rows if r[0] == setup]
        times = sorted(r[4] for r in mine)
        best = times[0]
        print(f"| {setup} | {mine[0][1]} | {'all' if all(r[2] == r[1] for r in mine) else 'NOT all'} | "
              f"{sum(r[3] for r in mine)} | {best:.3f} | {times[len(times) // 2]:.3f} | "
              f"{mine[0][1] / best:,.0f} |")


def parse_size(text):
    from nkstream.live import parse_size as ps
    return ps(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=100000, help="frames in the generated capture")
    ap.add_argument("--seconds", type=float, default=3.0, help="about how long each rate step sends")
    ap.add_argument("--rates", default="50000,100000,200000,400000,top")
    ap.add_argument("--drain", action="store_true",
                    help="instead: queue --packets while each reader is stopped, then time how "
                         "fast it empties its buffer (no sender competing for the CPUs)")
    ap.add_argument("--repeat", type=int, default=3, help="drain runs per setup (best and median shown)")
    ap.add_argument("--senders", type=int, default=1, help="tcpreplay processes sending at once")
    ap.add_argument("--capture-only", action="store_true", help="count only, do not classify")
    ap.add_argument("--setups", default="tcpdump,afpacket-1,afpacket-2,pcap-1,pcap-2,afpacket-1@2M,afpacket-2@2M",
                    help="tcpdump, ENGINE-WORKERS, ENGINE-WORKERS@RING (ring bytes per worker, "
                         "e.g. @2M = tcpdump's default buffer; default ring 64 MiB)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("capture_rate.py: needs root (network namespace, veth pair, packet sockets)")
    classify = not args.capture_only
    if classify:
        try:
            import nkstream.classify  # noqa: F401
            import nkstream.snapshot  # noqa: F401
        except ImportError:
            print("classifier not built: capture only", file=sys.stderr)
            classify = False
    if args.drain:
        return drain_main(args, classify)
    rates = [r if r == "top" else int(r) for r in args.rates.split(",")]
    setups = args.setups.split(",")
    tmp = tempfile.mkdtemp(prefix="nkbench-")
    cap = os.path.join(tmp, "traffic.pcap")
    make_capture(cap, args.packets)
    rows = []
    try:
        with Veth() as veth:
            veth.senders = args.senders
            for rate in rates:
                loops = 1 if rate == "top" else max(1, round(args.seconds * rate / args.packets))
                if rate == "top":       # tcpreplay does 0.2-0.3 M pps here at best
                    loops = max(1, round(args.seconds * 250000 / args.packets))
                for setup in setups:
                    if setup == "tcpdump":
                        r = run_tcpdump(veth, cap, rate, loops)
                    else:
                        name, _, ring = setup.partition("@")
                        engine, workers = name.split("-")
                        r = run_nkstream(veth, cap, rate, loops, engine, int(workers), classify,
                                         ring=parse_size(ring) if ring else None)
                    sent, pps, got, drops = r
                    rows.append((setup, rate, sent, pps, got, drops))
                    print(f"{setup:12s} rate={rate!s:>7} sent={sent} achieved={pps:,.0f} pps "
                          f"received={got} drops={drops}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nclassifying: {classify}; {args.packets} frames of 60-400 bytes, "
          f"{args.senders} tcpreplay sender(s), {os.cpu_count()} CPUs\n")
    print(f"| setup | {' | '.join(str(r) for r in rates)} | highest rate held (pps) |")
    print("|---" * (len(rates) + 2) + "|")
    for setup in setups:
        cells, best = [], 0.0
        for rate in rates:
            row = next(x for x in rows if x[0] == setup and x[1] == rate)
            _, _, sent, pps, got, drops = row
            ok = got == sent and drops == 0
            cells.append(f"{pps:,.0f} {'ok' if ok else f'lost {sent - got} (drops {drops})'}")
            if ok:
                best = max(best, pps)
        print(f"| {setup} | {' | '.join(cells)} | {best:,.0f} |")


if __name__ == "__main__":
    main()
