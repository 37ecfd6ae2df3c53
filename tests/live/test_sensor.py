"""The live sensor's supervisor (nkstream.live) against the real kernel, with a
counting backend (tests/live/harness.py) so every window is checked to the packet:
windows aligned to the wall clock, SIGTERM flush, SIGHUP reload (good and bad),
worker death and restart with lost counts, interface down/up, --user, retention."""
import json
import os
import pathlib
import pwd
import re
import shutil
import signal
import tempfile
import time

import pytest

from .netns import mixed_frames, write_pcap
from .sensor import SensorProc, snapshots, wait_operstate

pytestmark = [pytest.mark.live, pytest.mark.timeout(120)]

NAME_RE = re.compile(r"nkstream-testhost-(\d{8}T\d{6}Z)\.msgpack$")


def _sensor(tmp_path, veth, config=None, **opts):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(config or {"generation": 1}))
    out = tmp_path / "out"
    o = {"iface": veth.host, "interval": 2, "out_dir": str(out), "host": "testhost",
         "block_count": 32, **opts}
    return SensorProc(["tests/live/harness.py", json.dumps(o), str(cfg)], tmp_path / "sensor.log"), out, cfg


def _clear_of_window_edge(interval, margin=3.0):
    """Sleep past the next window edge if it is less than `margin` seconds away:
    windows are aligned to multiples of the interval since the epoch, and a test
    that needs a stretch of traffic inside one window must not straddle an edge."""
    left = interval - (time.time() % interval)
    if left < margin:
        time.sleep(left + 0.05)


def _totals(out):
    snaps = snapshots(out)
    return (sum(d["packets"] for _, d in snaps), sum(d["bytes"] for _, d in snaps),
            sum(d["capture"]["drops"] for _, d in snaps), snaps)


@pytest.mark.parametrize("engine,workers", [("afpacket", 1), ("afpacket", 2), ("pcap", 2)])
def test_sigterm_flush_exact_totals(veth, tmp_path, engine, workers):
    frames = mixed_frames(1500, flows=32)
    path = write_pcap(tmp_path / "t.pcap", frames)
    s, out, _ = _sensor(tmp_path, veth, engine=engine, workers=workers)
    s.start()
    try:
        s.wait_event("worker_started", count=workers)
        sent = veth.replay(path, pps=3000)
        time.sleep(0.3)
        assert s.stop() == 0
    finally:
        s.kill()
    packets, nbytes, drops, snaps = _totals(out)
    assert sent == len(frames)
    assert (packets, nbytes, drops) == (len(frames), sum(map(len, frames)), 0)
    # the capture counters agree with what the classifier saw
    assert sum(d["capture"]["packets"] for _, d in snaps) == len(frames)
    assert sum(d["capture"]["kernel_packets"] for _, d in snaps) == len(frames)
    assert all(d["capture"]["lost_packets"] == 0 for _, d in snaps)
    # windows: file named by its aligned start, start/end inside [k*S, (k+1)*S]
    for name, d in snaps:
        m = NAME_RE.match(name)
        assert m, name
        k0 = time.mktime(time.strptime(m.group(1), "%Y%m%dT%H%M%SZ")) - time.timezone
        assert k0 % 2 == 0
        assert k0 * 1e9 <= d["start_ns"] < d["end_ns"] <= (k0 + 2) * 1e9
        assert d["sensor"] == {"host": "testhost", "interface": veth.host}
    assert len(snaps) >= 1 and not any(n.endswith(".tmp") for n in os.listdir(out))
    if workers == 2:
        per = [sum(d["capture"]["per_worker"].get(str(w), {}).get("packets", 0) for _, d in snaps)
               for w in (0, 1)]
        assert per[0] > 0 and per[1] > 0 and sum(per) == len(frames)
    ev = s.events("stopped")
    assert ev and ev[0]["reason"] == "SIGTERM" and ev[0]["exit"] == "0"


def test_sigint_and_duration(veth, tmp_path):
    s, out, _ = _sensor(tmp_path, veth, duration=1.5)
    s.start()
    try:
        assert s.wait(20) == 0
    finally:
        s.kill()
    assert s.events("stopped")[0]["reason"] == "duration"
    s2, out2, _ = _sensor(tmp_path, veth)
    s2.start()
    try:
        s2.wait_event("worker_started")
        s2.signal(signal.SIGINT)
        assert s2.wait(20) == 0
    finally:
        s2.kill()
    assert s2.events("stopped")[0]["reason"] == "SIGINT"


def test_sighup_reload_good_and_bad(veth, tmp_path):
    frames = mixed_frames(600, jumbo_every=0)
    path = write_pcap(tmp_path / "r.pcap", frames)
    s, out, cfg = _sensor(tmp_path, veth, workers=2, interval=60)
    s.start()
    try:
        s.wait_event("worker_started", count=2)
        veth.replay(path, pps=4000)
        cfg.write_text(json.dumps({"generation": 2}))
        s.signal(signal.SIGHUP)
        s.wait_event("reloaded", count=2)
        veth.replay(path, pps=4000)
        cfg.write_text("{not json")
        s.signal(signal.SIGHUP)
        ev = s.wait_event("reload_failed")[0]
        assert "config.json" in ev["why"] or "Expecting" in ev["why"]
        assert ev["action"] == "kept the running tables and rules"
        veth.replay(path, pps=4000)
        time.sleep(0.3)
        assert s.stop() == 0
    finally:
        s.kill()
    packets, nbytes, drops, snaps = _totals(out)
    assert packets == 3 * len(frames) and nbytes == 3 * sum(map(len, frames)) and drops == 0
    # counts from before and after the swap are both in the window
    assert {g for _, d in snaps for g in d["generations"]} == {1, 2}
    assert len(s.events("reloaded")) == 2       # the bad file reached no worker


@pytest.mark.parametrize("engine,workers", [("afpacket", 1), ("pcap", 2)])
def test_worker_killed_is_restarted_and_loss_reported(veth, tmp_path, engine, workers):
    """AF_PACKET: the new worker reads on from the same ring.  libpcap: the parent
    opens a new handle, and the dead worker's socket must be gone from the fanout
    group (no sibling may keep a copy), or its share of the traffic would vanish."""
    frames = mixed_frames(400, flows=32, jumbo_every=0)
    path = write_pcap(tmp_path / "k.pcap", frames)
    s, out, _ = _sensor(tmp_path, veth, interval=60, engine=engine, workers=workers)
    s.start()
    try:
        started = s.wait_event("worker_started", count=workers)
        pid = int(next(e for e in started if e["worker"] == "0")["worker_pid"])
        # The replay and the kill must fall in one window: at a window edge the
        # worker reports its counts, and then nothing is lost (the test failed so,
        # about once in twenty runs, before it kept clear of the edge).
        _clear_of_window_edge(60)
        veth.replay(path, pps=4000)
        time.sleep(1.2)                             # a progress report covers all of it
        os.kill(pid, signal.SIGKILL)
        died = s.wait_event("worker_died")[0]
        assert died["level"] == "error" and int(died["lost_packets"]) > 0
        if workers == 1:
            assert died["lost_packets"] == str(len(frames))
        restarted = s.wait_event("worker_started", count=workers + 1)[workers]
        assert restarted["restarted"] == "True" and int(restarted["worker_pid"]) != pid
        veth.replay(path, pps=4000)                 # the new worker reads the same ring
        time.sleep(0.3)
        assert s.stop() == 0
    finally:
        s.kill()
    packets, nbytes, drops, snaps = _totals(out)
    lost = sum(d["capture"]["lost_packets"] for _, d in snaps)
    assert 0 < lost <= len(frames) and drops == 0
    assert packets + lost == 2 * len(frames)          # the second replay, all of it
    # (the run may straddle a window edge: look in every file)
    assert [w for _, d in snaps for w in d["capture"]["lost_workers"]] == [0]


def test_interface_down_and_up(veth, tmp_path):
    frames = mixed_frames(300, jumbo_every=0)
    path = write_pcap(tmp_path / "d.pcap", frames)
    s, out, _ = _sensor(tmp_path, veth)
    s.start()
    try:
        s.wait_event("worker_started")
        veth.replay(path, pps=4000)
        veth.set_host("down")
        ev = s.wait_event("interface_down")[0]
        assert ev["level"] == "warning" and veth.host in ev["why"]
        time.sleep(2.5)                             # a window boundary passes while down
        veth.set_host("up")
        wait_operstate(veth.host, "up")
        s.wait_event("interface_up")
        veth.replay(path, pps=4000)
        time.sleep(0.3)
        assert s.stop() == 0
    finally:
        s.kill()
    packets, nbytes, drops, _ = _totals(out)
    assert (packets, nbytes, drops) == (2 * len(frames), 2 * sum(map(len, frames)), 0)


def test_user_nobody(veth, tmp_path):
    nobody = pwd.getpwnam("nobody")
    frames = mixed_frames(300, jumbo_every=0)
    path = write_pcap(tmp_path / "u.pcap", frames)
    # pytest's tmp_path is under a root-only directory: give nobody its own
    base = tempfile.mkdtemp(prefix="nkstream-live-")
    os.chmod(base, 0o755)
    out = pathlib.Path(base) / "out"
    out.mkdir()
    os.chown(out, nobody.pw_uid, nobody.pw_gid)
    s, _, _ = _sensor(tmp_path, veth, user="nobody", workers=2, out_dir=str(out))
    s.start()
    try:
        started = s.wait_event("worker_started", count=2)
        ev = s.events("privileges_dropped")[0]
        assert ev["user"] == "nobody" and ev["uid"] == str(nobody.pw_uid)
        for e in started + [{"worker_pid": s.proc.pid}]:
            with open(f"/proc/{e['worker_pid']}/status") as f:
                status = f.read()
            uids = re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split()
            assert set(uids) == {str(nobody.pw_uid)}            # real, effective, saved, fs
            assert re.search(r"^Groups:\s*$", status, re.M)      # no supplementary groups
            assert re.search(r"^CapEff:\s+0+$", status, re.M)    # no capability left
        veth.replay(path, pps=4000)
        time.sleep(0.3)
        assert s.stop() == 0
        packets, nbytes, drops, _ = _totals(out)
        assert (packets, nbytes, drops) == (len(frames), sum(map(len, frames)), 0)
        assert all(os.stat(out / n).st_uid == nobody.pw_uid for n in os.listdir(out))
    finally:
        s.kill()
        shutil.rmtree(base, ignore_errors=True)


def test_user_nobody_unwritable_out_dir(veth, tmp_path):
    s, out, _ = _sensor(tmp_path, veth, user="nobody")
    out.mkdir(mode=0o755)                          # owned by root
    s.start()
    try:
        assert s.wait(20) == 1
    finally:
        s.kill()
    assert "not writable by user nobody" in "\n".join(s.lines())
    assert veth.promiscuity() == 0                 # sockets closed on the way out


def test_retention_by_count(veth, tmp_path):
    s, out, _ = _sensor(tmp_path, veth, interval=1, retain_count=2, duration=4.5)
    s.start()
    try:
        assert s.wait(30) == 0
    finally:
        s.kill()
    names = sorted(os.listdir(out))
    assert len(names) == 2 and all(NAME_RE.match(n) for n in names)
    assert len(s.events("snapshot_written")) >= 4
    assert len(s.events("snapshot_expired")) == len(s.events("snapshot_written")) - 2


def test_missing_interface_and_bad_config(veth, tmp_path):
    s, _, _ = _sensor(tmp_path, veth, iface="nkno-such-if9")
    s.start()
    try:
        assert s.wait(20) == 1
    finally:
        s.kill()
    assert "no such interface 'nkno-such-if9'" in "\n".join(s.lines())
    veth.set_host("down")
    s, _, _ = _sensor(tmp_path, veth)
    s.start()
    try:
        assert s.wait(20) == 1
    finally:
        s.kill()
    assert f"interface {veth.host} is down" in "\n".join(s.lines())
    veth.set_host("up")
    s, _, cfg = _sensor(tmp_path, veth)
    cfg.write_text("{bad")
    s.start()
    try:
        assert s.wait(20) == 1
    finally:
        s.kill()
    assert veth.promiscuity() == 0


def test_metrics_endpoint(veth, tmp_path):
    pytest.importorskip("prometheus_client")
    import socket
    import urllib.request
    with socket.socket() as sk:                    # a free port on loopback
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    frames = mixed_frames(500, flows=32, jumbo_every=0)
    path = write_pcap(tmp_path / "m.pcap", frames)
    s, out, _ = _sensor(tmp_path, veth, interval=1, workers=2, metrics=f"127.0.0.1:{port}")
    s.start()
    try:
        s.wait_event("worker_started", count=2)
        veth.replay(path, pps=4000)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            written = sum(int(e["packets"]) for e in s.events("snapshot_written"))
            if written == len(frames):
                break
            time.sleep(0.1)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert s.stop() == 0
    finally:
        s.kill()
    vals = {}
    for line in text.splitlines():
        m = re.match(r'(nkstream_\w+)\{worker="(\d)"\} ([\d.e+]+)', line)
        if m:
            vals[(m.group(1), m.group(2))] = float(m.group(3))
    assert vals[("nkstream_packets_total", "0")] + vals[("nkstream_packets_total", "1")] == len(frames)
    assert vals[("nkstream_bytes_total", "0")] + vals[("nkstream_bytes_total", "1")] == sum(map(len, frames))
    assert vals[("nkstream_kernel_drops_total", "0")] == vals[("nkstream_kernel_drops_total", "1")] == 0
    assert re.search(r"^nkstream_snapshots_written_total [1-9]", text, re.M)


def test_interface_recreated(veth, tmp_path):
    """The interface is deleted and made again under the same name: the old socket
    is bound to a dead ifindex, so the sensor opens a new one (root) and goes on."""
    frames = mixed_frames(200, jumbo_every=0)
    path = write_pcap(tmp_path / "re.pcap", frames)
    s, out, _ = _sensor(tmp_path, veth)
    s.start()
    try:
        s.wait_event("worker_started")
        veth.replay(path, pps=4000)
        time.sleep(0.3)
        veth.destroy()
        s.wait_event("interface_down")
        veth.create()
        s.wait_event("interface_recreated")
        s.wait_event("worker_started", count=2)
        time.sleep(0.3)
        veth.replay(path, pps=4000)
        time.sleep(0.3)
        assert s.stop() == 0
    finally:
        s.kill()
    packets, nbytes, drops, snaps = _totals(out)
    assert (packets, nbytes, drops) == (2 * len(frames), 2 * sum(map(len, frames)), 0)
    assert sum(d["capture"]["lost_packets"] for _, d in snaps) == 0
    assert all(d["capture"]["lost_workers"] == [] for _, d in snaps)
