# Declarations from <sys/mman.h>: the TPACKET_V3 ring is mapped once, shared with the
# kernel (MAP_SHARED), PROT_READ|PROT_WRITE because user space writes block_status
# back to TP_STATUS_KERNEL (packet_mmap.rst "TPACKET_V3 example").
cdef extern from "<sys/mman.h>" nogil:
    enum:
        PROT_READ
        PROT_WRITE
        MAP_SHARED
        MAP_LOCKED
        MAP_POPULATE
    void* MAP_FAILED
    void* mmap(void* addr, size_t length, int prot, int flags, int fd, long offset)
    int munmap(void* addr, size_t length)
