# Declarations from <linux/filter.h>: a classic BPF program for SO_ATTACH_FILTER.
# struct sock_filter is 8 bytes {u16 code; u8 jt; u8 jf; u32 k}, the same layout as
# libpcap's struct bpf_insn, so the bytes nkstream._pcap.compile_bpf() returns are
# attached as they are.
from libc.stdint cimport uint8_t, uint16_t, uint32_t

cdef extern from "<linux/filter.h>" nogil:
    struct sock_filter:
        uint16_t code
        uint8_t jt
        uint8_t jf
        uint32_t k
    struct sock_fprog:
        unsigned short len
        sock_filter* filter
    enum:
        BPF_MAXINSNS
