"""libpcap engine (nkstream._pcap.PcapSource) against the real kernel, and the BPF
compiler checked against tcpdump's own compilation."""
import errno
import subprocess
import struct
import time

import pytest

pcap_mod = pytest.importorskip("nkstream._pcap", reason="nkstream._pcap not built (libpcap-dev missing)")
from nkstream._pcap import PcapSource, compile_bpf  # noqa: E402
from nkstream._core import InterfaceDownError  # noqa: E402

from .netns import (Collected, Tcpdump, capture_during, mixed_frames, parse_tcpreplay,  # noqa: E402
                    pcap_pump, read_pcap, write_pcap)

pytestmark = [pytest.mark.live, pytest.mark.timeout(90)]


def _capture(veth, src, path, pps=5000):
    sink = Collected()
    out = capture_during([(pcap_pump(src), sink)], veth.replay_async(path, pps=pps))
    return sink, parse_tcpreplay(out)


def test_generated_traffic_exact(veth, tmp_path):
    frames = mixed_frames(600)
    path = write_pcap(tmp_path / "mixed.pcap", frames)
    t0 = time.time_ns()
    with PcapSource(veth.host) as src:
        sink, sent = _capture(veth, src, path)
        st = src.stats()
        assert src.linktype == 1
    assert sent == sink.packets == len(frames)
    assert sink.bytes == sum(map(len, frames))
    assert st["packets"] == len(frames) and st["drops"] == 0 and st["overflow"] == 0
    # libpcap puts the stripped tag back into the data itself: no vlan_tpid to restore.
    assert [f[0] for f in sink.frames] == frames
    assert all(f[2] == 0 and f[3] == 0 for f in sink.frames)
    ts = [f[4] for f in sink.frames]
    assert ts == sorted(ts) and t0 <= ts[0] <= ts[-1] <= time.time_ns()


def test_small_batches_carry_over(veth, tmp_path):
    """A batch full mid-dispatch keeps the next packet for the next batch: with
    room for 7 packets or one 9100-byte frame per batch, nothing is lost or reordered."""
    frames = mixed_frames(300, jumbo_every=13)
    path = write_pcap(tmp_path / "small.pcap", frames)
    with PcapSource(veth.host, snaplen=9100, batch_bytes=9100, batch_packets=7) as src:
        sink, sent = _capture(veth, src, path)
        st = src.stats()
    assert [f[0] for f in sink.frames] == frames
    assert st["overflow"] == 0 and st["drops"] == 0
    assert st["batches"] > len(frames) // 7


def test_corpus_replay_exact(veth, corpus_dir):
    name = "zeek__http-qinq-0.pcap"
    _, packets = read_pcap(corpus_dir / name)
    with PcapSource(veth.host) as src:
        sink, sent = _capture(veth, src, corpus_dir / name)
    assert sent == sink.packets == len(packets)
    assert [f[0] for f in sink.frames] == [b for b, _ in packets]


@pytest.mark.parametrize("expr", ["udp", "vlan and udp", "tcp or vlan 102"])
def test_bpf_filter_same_as_tcpdump(veth, tmp_path, expr):
    """With a filter, PcapSource captures exactly what tcpdump with the same filter
    captures on the same interface at the same time (libpcap's live VLAN handling:
    the kernel strips the outer tag before the filter runs)."""
    frames = mixed_frames(300, jumbo_every=0)
    path = write_pcap(tmp_path / "f.pcap", frames)
    with Tcpdump(veth.host, tmp_path / "ref.pcap", expr) as ref:
        with PcapSource(veth.host, bpf=expr) as src:
            sink, sent = _capture(veth, src, path)
    want = ref.frames()
    assert sent == len(frames) and 0 < len(want) < len(frames)
    assert [f[0] for f in sink.frames] == want


def test_compile_bpf_matches_tcpdump(tmp_path):
    """compile_bpf gives the program tcpdump -d prints for the same expression."""
    for expr in ("udp", "tcp port 443 or udp port 53", "net 175.45.176.0/22"):
        prog = compile_bpf(expr)
        ours = [struct.unpack("<HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
        dump = subprocess.run(["tcpdump", "-y", "EN10MB", "-dd", expr], capture_output=True,
                              text=True, check=True, timeout=10).stdout
        theirs = [tuple(int(x, 0) for x in line.strip(" {},").split(","))
                  for line in dump.splitlines() if line.strip().startswith("{")]
        assert ours == theirs, expr


def test_promisc_released_on_close(veth):
    assert veth.promiscuity() == 0
    src = PcapSource(veth.host)
    assert veth.promiscuity() == 1
    src.close()
    assert veth.promiscuity() == 0 and src.closed


def test_fanout_two_sources(veth, tmp_path):
    frames = mixed_frames(600, flows=64, jumbo_every=0)
    path = write_pcap(tmp_path / "fan.pcap", frames)
    group = 0x5000 + (id(veth) & 0xFFF)
    a = PcapSource(veth.host, fanout="hash", fanout_group=group, worker=0)
    b = PcapSource(veth.host, fanout="hash", fanout_group=group, worker=1)
    try:
        sa, sb = Collected(), Collected()
        capture_during([(pcap_pump(a), sa), (pcap_pump(b), sb)], veth.replay_async(path, pps=5000))
        da, db = a.stats()["drops"], b.stats()["drops"]
    finally:
        a.close()
        b.close()
    assert sa.packets + sb.packets == len(frames) and sa.packets and sb.packets
    assert da == db == 0
    assert sorted([f[0] for f in sa.frames] + [f[0] for f in sb.frames]) == sorted(frames)


def test_interface_down_and_up(veth, tmp_path):
    """libpcap (1.10) notes ENETDOWN and keeps waiting instead of failing: no packets
    while the interface is down, capture resumes when it is up again."""
    path = write_pcap(tmp_path / "d.pcap", mixed_frames(40, jumbo_every=0))
    with PcapSource(veth.host) as src:
        veth.set_host("down")
        assert all(src.next_batch(20) is None for _ in range(5))
        veth.set_host("up")
        time.sleep(0.2)
        sink, sent = _capture(veth, src, path)
    assert sink.packets == sent == 40


def test_interface_deleted(veth):
    with PcapSource(veth.host) as src:
        veth.destroy()
        with pytest.raises(OSError) as ei:
            for _ in range(20):
                src.next_batch(50)
        assert ei.value.errno == errno.ENODEV and veth.host in str(ei.value)


def test_errors(veth):
    with pytest.raises(OSError) as ei:
        PcapSource("nkno-such-if1")
    assert ei.value.errno == errno.ENODEV and "nkno-such-if1" in str(ei.value)
    with pytest.raises(ValueError, match="bad BPF filter 'udp prot 1'"):
        PcapSource(veth.host, bpf="udp prot 1")
    with pytest.raises(ValueError, match="batch_bytes"):
        PcapSource(veth.host, snaplen=65536, batch_bytes=1000)
    assert veth.promiscuity() == 0
