"""Capture.processed() -- the reader classifying each chunk of records as it walks
them (Classifier.walk_process), what `nkstream classify` and `nkstream bench` run --
counts exactly what iterating the capture and calling process() on every batch
counts: every public corpus capture (pcap, pcapng, gzip streams), flow state on and
off, batches that end inside a walk chunk, and a capture cut inside its last record
(same packets, same warning); and the flow table's two prefetch modes (the
fingerprint-guided "deep" one against "home") count exactly the same."""
import numpy as np
import pytest

from conftest import corpus_captures
from nkstream.capture import open_capture
from nkstream.classify import Classifier
from nkstream.config import load_config


def _run(path, flows, fused, batch, prefetch=None):
    clf = Classifier.from_config(load_config(None), flows=flows)
    if prefetch:
        clf.flow_table.prefetch = prefetch
    recs = []
    with open_capture(path, batch_packets=batch) as cap:
        for b in (cap.processed(clf.core) if fused else cap):
            if not fused:
                clf.process(b.data, b.recs)
            recs.append(b.recs.copy())
        warnings = [str(w) for w in cap.warnings]
    if flows:
        clf.close_window()
    snap = clf.snapshot()
    c = snap["columns"]
    rows = sorted(zip(*(c[k].tolist() for k in sorted(c))))
    return snap["totals"], rows, (np.concatenate(recs) if recs else None), warnings


CAPTURES = corpus_captures()


@pytest.mark.parametrize("flows", [False, True, "deep"], ids=["per-packet", "flows", "flows-deep"])
@pytest.mark.parametrize("path", CAPTURES, ids=[p.name for p in CAPTURES])
def test_processed_counts_what_process_counts(path, flows):
    # 1,500-packet batches: every batch ends inside a 1,024-record walk chunk.
    # "flows-deep": process() in the "home" prefetch mode, the fused reader "deep".
    deep = flows == "deep"
    t0, rows0, recs0, w0 = _run(path, bool(flows), False, 1500, "home" if deep else None)
    t1, rows1, recs1, w1 = _run(path, bool(flows), True, 1500, "deep" if deep else None)
    assert t1 == t0 and rows1 == rows0 and w1 == w0
    assert (recs0 is None) == (recs1 is None)
    if recs0 is not None:
        assert np.array_equal(recs0, recs1)
    assert t0["packets"] > 0


def test_processed_cut_capture_same_packets_and_warning(tmp_path):
    src = next(p for p in CAPTURES if p.name == "ndpi__pptp.pcap")
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(src.read_bytes()[:-10])
    for flows in (False, True):
        t0, rows0, _r0, w0 = _run(cut, flows, False, 7)
        t1, rows1, _r1, w1 = _run(cut, flows, True, 7)
        assert (t1, rows1, w1) == (t0, rows0, w0)
        assert any("cut" in w or "truncat" in w for w in w1), w1
