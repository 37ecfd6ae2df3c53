"""`nkstream run` end to end with the real classification pipeline: traffic replayed
into a veth pair, snapshots read back with nkstream.snapshot, totals and per-category
counts checked against what was sent and against `nkstream classify` on the same
captures."""
import json
import os
import pathlib
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from .netns import mixed_frames, read_pcap, write_pcap
from .sensor import ROOT, SensorProc, wait_operstate

pytestmark = [pytest.mark.live, pytest.mark.timeout(150)]

snapshot = pytest.importorskip("nkstream.snapshot", reason="snapshot module not in this build")

# Public corpus captures across the study's categories (VPN, mining, mail, tunnels),
# VLAN-tagged and QinQ included.
CORPUS = ["ndpi__pptp.pcap", "arkime__wireshark-esp.pcap", "peafowl__bitcoin.pcap",
          "zeek__http-qinq-0.pcap", "ndpi__smtp-starttls.pcap", "ndpi__mullvad_wireguard.pcap",
          "peafowl__ethereum-stratum.pcap", "arkime__IKEv2.pcap"]


def _run(tmp_path, veth, *extra, config=None):
    out = tmp_path / "out"
    args = ["-m", "nkstream", "run", "-i", veth.host, "--interval", "2", "--out-dir", str(out),
            "--host", "testhost"] + list(extra)
    if config:
        args += ["-c", str(config)]
    return SensorProc(args, tmp_path / "run.log"), out


def _merged(out):
    paths = sorted(pathlib.Path(out).glob("*.msgpack"))
    assert paths, f"no snapshot in {out}"
    return snapshot.merge_snapshots([snapshot.load_snapshot(p) for p in paths]), paths


def _by(snap, column):
    df = snap.to_pandas()
    return {k: (int(v["packets"]), int(v["bytes"])) for k, v in df.groupby(column)[["packets", "bytes"]].sum().iterrows()}


def _replay_all(veth, paths, pps=4000):
    return sum(veth.replay(p, pps=pps) for p in paths)


def _offline(paths, tmp_path, config=None):
    out = tmp_path / "offline.msgpack"
    cmd = [sys.executable, "-m", "nkstream", "classify", "-q", "--no-progress", "-o", str(out)]
    cmd += (["-c", str(config)] if config else []) + [str(p) for p in paths]
    subprocess.run(cmd, check=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), timeout=120,
                   capture_output=True)
    return snapshot.load_snapshot(out)


@pytest.mark.parametrize("engine,workers", [("afpacket", 1), ("afpacket", 2), ("pcap", 1)])
def test_run_classifies_live_traffic_like_the_files(veth, tmp_path, corpus_dir, engine, workers):
    gen = write_pcap(tmp_path / "gen.pcap", mixed_frames(600, flows=48))
    paths = [corpus_dir / n for n in CORPUS] + [gen]
    sent_frames = [b for p in paths for b, _ in read_pcap(p)[1]]
    s, out = _run(tmp_path, veth, "--engine", engine, "-w", str(workers))
    s.start()
    try:
        s.wait_event("worker_started", count=workers)
        sent = _replay_all(veth, paths)
        time.sleep(0.3)
        assert s.stop() == 0
    finally:
        s.kill()
    assert sent == len(sent_frames)
    snap, files = _merged(out)
    assert snap.totals["packets"] == len(sent_frames)
    assert snap.totals["bytes"] == sum(map(len, sent_frames))
    assert snap.drops.get("kernel") == 0
    assert snap.lost.get("packets", 0) == 0
    assert all(f.name.startswith("nkstream-testhost-") for f in files)
    # the same captures classified from the files: the same categories, to the byte
    offline = _offline(paths, tmp_path)
    assert offline.totals["packets"] == snap.totals["packets"]
    assert _by(snap, "category") == _by(offline, "category")
    assert _by(snap, "tag") == _by(offline, "tag")
    assert snap.errors == offline.errors


def test_run_sighup_reload_good_and_bad_tables(veth, tmp_path):
    watch = tmp_path / "watch.csv"
    watch.write_text("10.0.0.0/8,lab-a\n")
    cfg = tmp_path / "nkstream.toml"
    cfg.write_text('[tables]\nwatch = ["watch.csv"]\n')
    frames = mixed_frames(300, jumbo_every=0)            # every source is in 10.0.0.0/8
    gen = write_pcap(tmp_path / "g.pcap", frames)
    s, out = _run(tmp_path, veth, "-w", "2", "--interval", "60", config=cfg)
    s.start()
    try:
        s.wait_event("worker_started", count=2)
        veth.replay(gen, pps=4000)
        watch.write_text("10.0.0.0/8,lab-b\n")
        s.signal(signal.SIGHUP)
        s.wait_event("reloaded", count=2)
        veth.replay(gen, pps=4000)
        watch.write_text("10.0.0.0/33,lab-c\n")          # not a prefix
        s.signal(signal.SIGHUP)
        ev = s.wait_event("reload_failed")[0]
        assert "watch.csv" in ev["why"] and ev["action"] == "kept the running tables and rules"
        veth.replay(gen, pps=4000)
        time.sleep(0.3)
        assert s.stop() == 0
    finally:
        s.kill()
    snap, _ = _merged(out)
    assert snap.totals["packets"] == 3 * len(frames)
    by_watch = _by(snap, "watch")
    assert by_watch["lab-a"][0] == len(frames)
    assert by_watch["lab-b"][0] == 2 * len(frames)
    assert "lab-c" not in by_watch
    assert len(s.events("reloaded")) == 2


def test_run_interface_down_and_up(veth, tmp_path):
    frames = mixed_frames(200, jumbo_every=0)
    gen = write_pcap(tmp_path / "d.pcap", frames)
    s, out = _run(tmp_path, veth)
    s.start()
    try:
        s.wait_event("worker_started")
        veth.replay(gen, pps=4000)
        veth.set_host("down")
        s.wait_event("interface_down")
        veth.set_host("up")
        wait_operstate(veth.host, "up")
        s.wait_event("interface_up")
        veth.replay(gen, pps=4000)
        time.sleep(0.3)
        assert s.stop() == 0
    finally:
        s.kill()
    snap, _ = _merged(out)
    assert snap.totals["packets"] == 2 * len(frames)
    assert snap.totals["bytes"] == 2 * sum(map(len, frames))


def test_run_user_nobody(veth, tmp_path):
    nobody = pwd.getpwnam("nobody")
    base = tempfile.mkdtemp(prefix="nkstream-run-")
    os.chmod(base, 0o755)
    out = pathlib.Path(base) / "out"
    out.mkdir()
    os.chown(out, nobody.pw_uid, nobody.pw_gid)
    frames = mixed_frames(300, jumbo_every=0)
    gen = write_pcap(tmp_path / "u.pcap", frames)
    s = SensorProc(["-m", "nkstream", "run", "-i", veth.host, "--interval", "2", "--out-dir", str(out),
                    "--user", "nobody", "-w", "2"], tmp_path / "run.log")
    s.start()
    try:
        started = s.wait_event("worker_started", count=2)
        for e in started:
            with open(f"/proc/{e['worker_pid']}/status") as f:
                assert f"Uid:\t{nobody.pw_uid}\t{nobody.pw_uid}" in f.read()
        veth.replay(gen, pps=4000)
        time.sleep(0.3)
        assert s.stop() == 0
        snap, paths = _merged(out)
        assert snap.totals["packets"] == len(frames)
        assert all(os.stat(p).st_uid == nobody.pw_uid for p in paths)
    finally:
        s.kill()
        shutil.rmtree(base, ignore_errors=True)


def test_run_errors(veth, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[nonsense]\nx = 1\n")
    cases = [
        (["-i", veth.host, "-c", str(bad)], "bad.toml"),
        (["-i", "nkno-such-if7"], "no such interface 'nkno-such-if7'"),
        (["-i", veth.host, "--bpf", "udp prot 1"], "bad BPF filter"),
        (["-i", veth.host, "--user", "no-such-user-nk"], "no such user"),
        (["-i", veth.host, "--interval", "0.5"], "interval"),
    ]
    for args, needle in cases:
        p = subprocess.run([sys.executable, "-m", "nkstream", "run", "--out-dir", str(tmp_path / "o")] + args,
                           cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 1, (args, p.stderr)
        last = p.stderr.strip().splitlines()[-1]
        assert last.startswith("nkstream run: error:") and needle in last, (args, p.stderr)
    veth.set_host("down")
    p = subprocess.run([sys.executable, "-m", "nkstream", "run", "-i", veth.host], cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and f"interface {veth.host} is down" in p.stderr
    assert veth.promiscuity() == 0
    p = subprocess.run([sys.executable, "-m", "nkstream", "run"], cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "no interface" in p.stderr


def test_run_metrics_per_category(veth, tmp_path, corpus_dir):
    pytest.importorskip("prometheus_client")
    import re
    import socket
    import urllib.request
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    paths = [corpus_dir / "peafowl__bitcoin.pcap", corpus_dir / "ndpi__pptp.pcap"]
    s, out = _run(tmp_path, veth, "--interval", "1", "--metrics", f"127.0.0.1:{port}")
    s.start()
    try:
        s.wait_event("worker_started")
        sent = _replay_all(veth, paths)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if sum(int(e["packets"]) for e in s.events("snapshot_written")) == sent:
                break
            time.sleep(0.1)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert s.stop() == 0
    finally:
        s.kill()
    snap, _ = _merged(out)
    metric = {m.group(1): int(float(m.group(2)))
              for m in re.finditer(r'^nkstream_category_bytes_total\{category="([^"]+)"\} (\S+)$', text, re.M)}
    assert metric == {k: v[1] for k, v in _by(snap, "category").items()}
    assert sum(metric.values()) == snap.totals["bytes"]


def test_run_drops_are_reported(veth, tmp_path):
    """A worker that cannot keep up (stopped here with SIGSTOP while a 2-block ring
    fills): every packet sent is either in the snapshots or in their kernel drop
    counter, and the drops are logged."""
    frames = mixed_frames(1500, jumbo_every=0)
    gen = write_pcap(tmp_path / "x.pcap", frames)
    s, out = _run(tmp_path, veth, "--block-count", "2", "--block-size", "64k")
    s.start()
    try:
        pid = int(s.wait_event("worker_started")[0]["worker_pid"])
        os.kill(pid, signal.SIGSTOP)
        try:
            veth.replay(gen, pps=5000)
        finally:
            os.kill(pid, signal.SIGCONT)
        time.sleep(0.5)
        assert s.stop() == 0
    finally:
        s.kill()
    snap, _ = _merged(out)
    assert snap.drops["kernel"] > 0
    assert snap.totals["packets"] + snap.drops["kernel"] == len(frames)
    assert s.events("kernel_drops")
