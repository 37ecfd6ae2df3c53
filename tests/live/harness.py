"""Run the live sensor's supervisor (nkstream.live.LiveSensor) with a counting
backend: every batch's packets and on-wire bytes summed with numpy, per window, so
tests can check the capture and windowing machinery to the packet independently of
the classifier.  Usage: python tests/live/harness.py OPTIONS_JSON CONFIG_JSON_PATH

The "config" is a JSON file; a file that does not parse is a bad config (startup
fails, SIGHUP keeps the running one), like a bad table file for the real pipeline.
"""
import json
import os
import sys

import msgpack

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from nkstream.live import LiveOptions, LiveSensor  # noqa: E402


class Counting:
    def __init__(self, generation):
        self.generation = generation
        self.packets = self.bytes = self.batches = 0

    def process(self, data, recs):
        self.packets += len(recs)
        self.bytes += int(recs["wirelen"].sum())
        self.batches += 1

    def snapshot(self, reset=True):
        s = {"packets": self.packets, "bytes": self.bytes, "generation": self.generation}
        if reset:
            self.packets = self.bytes = self.batches = 0
        return s


class CountingBackend:
    def __init__(self, path):
        self.path = path

    def load(self):
        with open(self.path) as f:
            return json.load(f)

    def make_classifier(self, config):
        return Counting(config.get("generation", 0))

    def take(self, clf):
        return clf.snapshot(reset=True)

    def write(self, path, snaps, start_ns, end_ns, sensor, capture):
        d = {"packets": sum(s["packets"] for s in snaps), "bytes": sum(s["bytes"] for s in snaps),
             "generations": sorted({s["generation"] for s in snaps}),
             "start_ns": start_ns, "end_ns": end_ns, "sensor": sensor, "capture": capture}
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(msgpack.packb(d))
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
        return {}


def main():
    opts = LiveOptions(**json.loads(sys.argv[1]))
    try:
        return LiveSensor(opts, CountingBackend(sys.argv[2])).run()
    except (OSError, ValueError) as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
