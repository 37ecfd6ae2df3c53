"""Drive a sensor process (`nkstream run` or the counting harness) from a test:
start it, wait for log events (logfmt lines on its stderr), signal it, stop it —
every wait bounded."""
import os
import re
import signal
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
_KV = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def parse_logfmt(line):
    out = {}
    for k, v in _KV.findall(line):
        if v.startswith('"'):
            v = v[1:-1].replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
        out[k] = v
    return out


class SensorProc:
    def __init__(self, args, log_path, env=None):
        self.args = [sys.executable] + list(args)
        self.log_path = str(log_path)
        self.env = dict(os.environ, PYTHONPATH=ROOT, **(env or {}))
        self.proc = None

    def start(self):
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        return self

    def lines(self):
        with open(self.log_path) as f:
            return f.read().splitlines()

    def events(self, name=None):
        evs = [parse_logfmt(line) for line in self.lines() if "event=" in line]
        return [e for e in evs if name is None or e.get("event") == name]

    def wait_event(self, name, count=1, timeout=20, **match):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            evs = [e for e in self.events(name) if all(e.get(k) == str(v) for k, v in match.items())]
            if len(evs) >= count:
                return evs
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {count}x event={name} {match} in time; log:\n" + "\n".join(self.lines()[-40:]))

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=30):
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
            self._log.close()

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def snapshots(out_dir):
    import msgpack
    names = sorted(n for n in os.listdir(out_dir) if n.endswith(".msgpack"))
    return [(n, msgpack.unpackb(open(os.path.join(out_dir, n), "rb").read())) for n in names]


def wait_operstate(iface, state, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/sys/class/net/{iface}/operstate") as f:
                if f.read().strip() == state:
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"{iface} did not become {state}")
