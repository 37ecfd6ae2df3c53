# tag_frame(): the tagger behind the real decoder, for tests and inspection.
#
# Kept apart from rules.pxi because it needs decode_packet() (decode.pxi): the spine
# includes this file after both (`include "core/rules_frame.pxi"` after
# decode.pxi and rules.pxi).

def tag_frame(RuleCore rules, frame, int linktype, peer_label=0):
    """Decode one frame (`decode_packet`) and tag it (`tag_packet`).

    Returns `(tag id, sni label id, decode error id)`; the frame is given as bytes
    (or any buffer) with its LINKTYPE_* number.
    """
    cdef pkt_t pkt
    cdef uint32_t sni = 0, label = peer_label
    cdef uint16_t tag, err
    cdef bytes buf = bytes(frame)
    cdef const uint8_t* f = buf
    cdef uint32_t n = len(buf)
    cdef uint32_t lt = linktype
    with nogil:
        err = decode_packet(f, n, lt, &pkt)
        tag = tag_packet(rules.r, &pkt, f, label, &sni)
    return tag, sni, err
