# Declarations from <pcap/pcap.h> (libpcap >= 1.5, for pcap_set_immediate_mode and
# pcap_set_tstamp_precision) used by nkstream._pcap.  Only what nkstream calls is
# declared.  Reference: pcap(3PCAP) and the per-function man pages at
# https://www.tcpdump.org/manpages/
cdef extern from "<sys/time.h>" nogil:
    struct timeval:
        long tv_sec
        long tv_usec

cdef extern from "<pcap/pcap.h>" nogil:
    ctypedef struct pcap_t:
        pass
    ctypedef unsigned int bpf_u_int32

    struct pcap_pkthdr:
        timeval ts              # tv_usec holds nanoseconds with PCAP_TSTAMP_PRECISION_NANO
        bpf_u_int32 caplen
        bpf_u_int32 len

    # struct bpf_insn has the layout of the kernel's struct sock_filter (8 bytes).
    struct bpf_insn:
        unsigned short code
        unsigned char jt
        unsigned char jf
        bpf_u_int32 k

    struct bpf_program:
        unsigned int bf_len
        bpf_insn* bf_insns

    # ps_recv: packets that reached the filter (Linux: drops included), ps_drop:
    # dropped for lack of buffer space, ps_ifdrop: dropped by the interface/driver.
    struct pcap_stat:
        unsigned int ps_recv
        unsigned int ps_drop
        unsigned int ps_ifdrop

    ctypedef void (*pcap_handler)(unsigned char* user, const pcap_pkthdr* h,
                                  const unsigned char* data) noexcept nogil

    enum:
        PCAP_ERRBUF_SIZE
        PCAP_NETMASK_UNKNOWN
        PCAP_ERROR
        PCAP_ERROR_BREAK
        PCAP_ERROR_NO_SUCH_DEVICE
        PCAP_ERROR_PERM_DENIED
        PCAP_ERROR_IFACE_NOT_UP
        PCAP_ERROR_PROMISC_PERM_DENIED
        PCAP_TSTAMP_PRECISION_NANO

    pcap_t* pcap_create(const char* source, char* errbuf)
    pcap_t* pcap_open_dead(int linktype, int snaplen)
    int pcap_set_snaplen(pcap_t* p, int snaplen)
    int pcap_set_promisc(pcap_t* p, int promisc)
    int pcap_set_timeout(pcap_t* p, int to_ms)
    int pcap_set_buffer_size(pcap_t* p, int buffer_size)
    int pcap_set_immediate_mode(pcap_t* p, int immediate)
    int pcap_set_tstamp_precision(pcap_t* p, int precision)
    int pcap_get_tstamp_precision(pcap_t* p)
    int pcap_activate(pcap_t* p)
    int pcap_setnonblock(pcap_t* p, int nonblock, char* errbuf)
    int pcap_get_selectable_fd(pcap_t* p)
    int pcap_datalink(pcap_t* p)
    int pcap_compile(pcap_t* p, bpf_program* fp, const char* expr, int optimize,
                     bpf_u_int32 netmask)
    int pcap_setfilter(pcap_t* p, bpf_program* fp)
    void pcap_freecode(bpf_program* fp)
    int pcap_dispatch(pcap_t* p, int cnt, pcap_handler callback, unsigned char* user)
    void pcap_breakloop(pcap_t* p)
    int pcap_stats(pcap_t* p, pcap_stat* ps)
    char* pcap_geterr(pcap_t* p)
    const char* pcap_statustostr(int error)
    const char* pcap_lib_version()
    void pcap_close(pcap_t* p)
