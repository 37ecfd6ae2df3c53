"""Network namespace + veth plumbing and traffic generation for the live tests.

Each test gets its own namespace and veth pair (DESIGN.md "Testing live capture
here"): the capture runs on the host end, traffic is sent from the namespace end
with tcpreplay.  IPv6 is disabled on both ends and neither end has an address, so
the kernel itself sends nothing and every packet seen is one the test sent.
"""
import itertools
import os
import re
import struct
import subprocess
import time

_seq = itertools.count()


def run(*cmd, check=True, timeout=20, **kw):
    return subprocess.run(cmd, check=check, timeout=timeout, capture_output=True, text=True, **kw)


class VethPair:
    """host <-> peer veth pair, peer inside namespace ``ns``."""

    def __init__(self):
        tag = f"{os.getpid() % 100000}x{next(_seq)}"
        self.host = f"nkh{tag}"[:15]
        self.peer = f"nkp{tag}"[:15]
        self.ns = f"nkns{tag}"

    def create(self, mtu=9000):
        run("ip", "netns", "add", self.ns)
        run("ip", "link", "add", self.host, "type", "veth", "peer", "name", self.peer)
        run("ip", "link", "set", self.peer, "netns", self.ns)
        run("sysctl", "-qw", f"net.ipv6.conf.{self.host}.disable_ipv6=1")
        run("ip", "netns", "exec", self.ns, "sysctl", "-qw", f"net.ipv6.conf.{self.peer}.disable_ipv6=1")
        run("ip", "link", "set", self.host, "mtu", str(mtu), "up")
        run("ip", "-n", self.ns, "link", "set", self.peer, "mtu", str(mtu), "up")
        run("ip", "-n", self.ns, "link", "set", "lo", "up")
        # Wait (bounded) until the host end reports carrier: both ends up.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with open(f"/sys/class/net/{self.host}/operstate") as f:
                if f.read().strip() == "up":
                    return self
            time.sleep(0.02)
        raise RuntimeError(f"{self.host} did not come up")

    def destroy(self):
        run("ip", "link", "del", self.host, check=False)
        run("ip", "netns", "del", self.ns, check=False)

    def set_host(self, state):
        run("ip", "link", "set", self.host, state)

    def promiscuity(self):
        out = run("ip", "-d", "-o", "link", "show", self.host).stdout
        return int(re.search(r"promiscuity (\d+)", out).group(1))

    def replay(self, path, pps=2000, timeout=60, extra=()):
        """Send every packet of ``path`` from the namespace end; returns the number
        tcpreplay sent, after checking it failed on none."""
        args = ["ip", "netns", "exec", self.ns, "tcpreplay", "-i", self.peer]
        args += ["--topspeed"] if pps == "top" else ["--pps", str(pps)]
        args += list(extra) + [str(path)]
        p = run(*args, timeout=timeout)
        return parse_tcpreplay(p.stdout + p.stderr)

    def replay_async(self, path, pps=2000, extra=()):
        args = ["ip", "netns", "exec", self.ns, "tcpreplay", "-i", self.peer]
        args += ["--topspeed"] if pps == "top" else ["--pps", str(pps)]
        args += list(extra) + [str(path)]
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def parse_tcpreplay(text):
    ok = re.search(r"Successful packets:\s+(\d+)", text)
    failed = re.search(r"Failed packets:\s+(\d+)", text)
    if not ok or not failed:
        raise RuntimeError(f"cannot read tcpreplay's summary:\n{text}")
    if int(failed.group(1)):
        raise RuntimeError(f"tcpreplay failed to send {failed.group(1)} packets:\n{text}")
    return int(ok.group(1))


# -- pcap files ------------------------------------------------------------------

def write_pcap(path, frames, linktype=1, t0=1_700_000_000):
    """Classic pcap (microsecond) with every frame captured whole."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype))
        for i, fr in enumerate(frames):
            f.write(struct.pack("<IIII", t0 + i // 1000, (i % 1000) * 1000, len(fr), len(fr)))
            f.write(fr)
    return path


def read_pcap(path):
    """[(caplen bytes, wirelen)] of a classic pcap file (either byte order, us or ns)."""
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        e = "<"
    elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
        e = ">"
    else:
        raise ValueError(f"{path}: not a classic pcap file")
    linktype = struct.unpack(e + "I", data[20:24])[0]
    out, off = [], 24
    while off + 16 <= len(data):
        _, _, incl, orig = struct.unpack(e + "IIII", data[off:off + 16])
        out.append((data[off + 16:off + 16 + incl], orig))
        off += 16 + incl
    return linktype, out


def _csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4_udp(src, dst, sport, dport, payload, ttl=64):
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, ttl, 17, 0,
                      bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return hdr + udp


def ipv4_tcp(src, dst, sport, dport, payload, flags=0x18):
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, flags, 65535, 0, 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0,
                      bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return hdr + tcp


DST_MAC = bytes.fromhex("020000000001")
SRC_MAC = bytes.fromhex("020000000002")


def ether(l3, ethertype=0x0800, vlans=()):
    """Ethernet II frame; ``vlans`` = [(tpid, tci), ...] outermost first."""
    tags = b"".join(struct.pack("!HH", tpid, tci) for tpid, tci in vlans)
    return DST_MAC + SRC_MAC + tags + struct.pack("!H", ethertype) + l3


def mixed_frames(n, flows=64, jumbo_every=97):
    """``n`` frames over ``flows`` different UDP/TCP flows; every 5th 802.1Q tagged
    (VLAN 100 + i % 7), every 11th QinQ (802.1ad 0x88a8 outer, 802.1Q inner), and
    every ``jumbo_every``-th a jumbo frame (> 1500 bytes)."""
    frames = []
    for i in range(n):
        f = i % flows
        src = f"10.{f // 250}.{f % 250}.1"
        dst = "175.45.176.9" if i % 2 else "8.8.8.8"
        size = 8000 if jumbo_every and i % jumbo_every == 0 else 18 + (i * 37) % 1200
        payload = bytes((i + j) & 0xFF for j in range(size))
        if i % 3 == 0:
            l3 = ipv4_tcp(src, dst, 1024 + f, 443, payload)
        else:
            l3 = ipv4_udp(src, dst, 1024 + f, 53 if i % 4 else 51820, payload)
        if i % 11 == 0:
            vl = [(0x88A8, 200), (0x8100, 100 + i % 7)]
        elif i % 5 == 0:
            vl = [(0x8100, (i % 8) << 13 | (100 + i % 7))]
        else:
            vl = []
        frames.append(ether(l3, vlans=vl))
    return frames


def strip_outer_vlan(frame):
    """What AF_PACKET puts in the ring for a tagged frame: the outer tag removed
    (the kernel keeps it in the skb and reports it as tp_vlan_tci/tp_vlan_tpid)."""
    tpid, tci = struct.unpack("!HH", frame[12:16])
    return frame[:12] + frame[16:], tpid, tci


def restore_vlan(frame, tpid, tci):
    return frame[:12] + struct.pack("!HH", tpid, tci) + frame[12:]


# -- capture helpers ---------------------------------------------------------------

class Collected:
    """What a capture got: frames as they sat in the batch buffer, with their records."""

    def __init__(self):
        self.frames = []      # (bytes in the buffer, wirelen, vlan_tpid, vlan_tci, ts_ns, iface)
        self.batches = 0

    def process(self, data, recs):
        # Test-side copy of every frame so it can be compared with the file later;
        # the engines themselves never touch packets from Python.
        mv = memoryview(data)
        for r in recs:
            off, cap = int(r["off"]), int(r["caplen"])
            self.frames.append((bytes(mv[off:off + cap]), int(r["wirelen"]), int(r["vlan_tpid"]),
                                int(r["vlan_tci"]), int(r["ts_ns"]), int(r["iface"])))
        self.batches += 1

    @property
    def packets(self):
        return len(self.frames)

    @property
    def bytes(self):
        return sum(f[1] for f in self.frames)

    def on_wire(self):
        """Frames as they were on the wire: the stripped outer tag put back."""
        return [restore_vlan(b, tpid, tci) if tpid else b for b, _, tpid, tci, _, _ in self.frames]


def capture_during(sources, sender, quiet_s=0.3, deadline_s=60):
    """Drain ``sources`` [(pump, sink)] while ``sender`` (a Popen) runs, then until
    every source has been quiet for ``quiet_s``.  ``pump(sink, timeout_ms)`` reads one
    round into ``sink`` and returns how many batches it handled.  Bounded by
    ``deadline_s``; returns the sender's output."""
    deadline = time.monotonic() + deadline_s
    quiet_since = None
    while time.monotonic() < deadline:
        got = sum(pump(sink, 20) for pump, sink in sources)
        if sender.poll() is None:
            continue
        if got:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            break
    else:
        sender.kill()
        raise TimeoutError("capture did not finish in time")
    out = sender.communicate(timeout=10)[0]
    return out


def ring_pump(ring):
    def pump(sink, timeout_ms):
        return ring.process_blocks(sink, max_blocks=16, timeout_ms=timeout_ms)[0]
    return pump


def pcap_pump(src):
    def pump(sink, timeout_ms):
        return src.process_batches(sink, max_batches=16, timeout_ms=timeout_ms)[0]
    return pump


class Tcpdump:
    """tcpdump writing a pcap on ``iface`` (an independent reference capture)."""

    def __init__(self, iface, path, expr=None, netns=None):
        self.path = str(path)
        cmd = (["ip", "netns", "exec", netns] if netns else []) + \
            ["tcpdump", "-i", iface, "-w", self.path, "-U", "-n", "--immediate-mode"]
        if expr:
            cmd.append(expr)
        self.cmd = cmd
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # tcpdump says "listening on IFACE" once its socket is bound and filtered.
        deadline = time.monotonic() + 10
        line = ""
        while time.monotonic() < deadline and "listening on" not in line:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"tcpdump exited: {self.proc.stderr.read()}")
        return self

    def __exit__(self, *exc):
        self.proc.send_signal(2)
        try:
            self.stats = self.proc.communicate(timeout=10)[1]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise

    def frames(self):
        return [b for b, _ in read_pcap(self.path)[1]]
