# cython: language_level=3
"""nkstream native core.

A spine in the manner of uvloop's ``loop.pyx``: one ``.pxi`` per subsystem, included
in dependency order, compiled as one C unit so the per-packet path (decode -> LPM ->
tag -> flows -> count) is plain C calls the compiler can inline, with no vtable
dispatch and no Python object per packet.  Directives are set once, in setup.py.

Every ``cdef`` function states how it reports errors: ``noexcept nogil`` for the hot
path (errors are counted under named reasons, never raised), ``except -1`` where a
failure must become a Python exception (allocation at build time).
"""
from libc.stdint cimport (uint8_t, uint16_t, uint32_t, uint64_t, int64_t, int32_t,
                          uintptr_t)
from libc.string cimport memchr, memcpy, memset, memcmp
from libc.stdlib cimport malloc, calloc, realloc, free

cimport numpy as cnp
import numpy as np
import sys

cnp.import_array()

include "core/types.pxi"        # shared structs: rec_t (batch index), pkt_t (decode result)
include "core/decode.pxi"       # L2 -> L4 decoder, named error reasons
include "core/source_pcap.pxi"  # pcap / pcapng record walkers -> rec_t batches
include "core/lpm.pxi"          # IPv4 / IPv6 longest-prefix match
include "core/rules.pxi"        # signature tables, payload signatures, TLS SNI
include "core/rules_frame.pxi"  # tag_frame(): decode + tag one frame (tests, inspection)
include "core/aggregate.pxi"    # counters per key, totals, error counters
include "core/flows.pxi"        # bounded flow table, flow verdicts
include "core/pipeline.pxi"     # Classifier: the per-batch loop tying them together
include "core/source_afpacket.pxi"  # AF_PACKET TPACKET_V3 ring -> rec_t batches
include "core/bench_stages.pxi"   # stage-limited pipeline loops and the fanout-hash partition for `nkstream bench`
