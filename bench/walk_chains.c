/* How fast could the record walk be if it fetched only the lines it reads?

   A measurement, not part of nkstream.  nkstream's pcap walker (core/source_pcap.pxi)
   chases record lengths through the mapped file and, so that the chase never waits
   on memory, prefetches every cache line 8 KiB ahead of it: the whole file passes
   through the caches (490 bytes a packet on the benchmark capture, of which the
   classifier reads the 16-byte header and the frame's first line or two).  This
   program times that walk against K chains walked side by side over K regions of
   the file, each prefetching only its next header and the line after it, so that
   K misses are in flight and the payload lines are never fetched.  The regions'
   first records are taken from a first pass (not timed): a real walker would have
   to find them (a plausible header whose chain of lengths holds for a few records)
   and accept a region only once the previous chain lands exactly on its first
   record.  So the figures are a bound on what such a walker could gain.

       gcc -O3 -o /tmp/walk_chains bench/walk_chains.c
       /tmp/walk_chains /tmp/nkstream-bench-10M.pcap 64 262144     # K, region bytes

   Classic little-endian pcap only; prints ns per record, 3 rounds. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static inline uint32_t rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s CAPTURE.pcap [K [REGION_BYTES]]\n", argv[0]);
        return 2;
    }
    int fd = open(argv[1], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        perror(argv[1]);
        return 1;
    }
    size_t n = st.st_size;
    int K = argc > 2 ? atoi(argv[2]) : 64;
    size_t RB = argc > 3 ? (size_t)atol(argv[3]) : 262144;
    if (K < 1 || K > 256) {
        fprintf(stderr, "K must be 1..256\n");
        return 2;
    }
    const uint8_t *b = mmap(NULL, n, PROT_READ, MAP_SHARED, fd, 0);
    if (b == MAP_FAILED || n < 24 || rd32(b) != 0xa1b2c3d4u) {
        fprintf(stderr, "%s: not a little-endian microsecond pcap\n", argv[1]);
        return 1;
    }
    /* first pass (not timed): every record's offset */
    size_t cap = 1 << 20, nr = 0;
    uint64_t *off = malloc(cap * 8);
    for (size_t pos = 24; pos + 16 <= n;) {
        if (nr == cap) off = realloc(off, (cap *= 2) * 8);
        off[nr++] = pos;
        pos += 16 + rd32(b + pos + 8);
    }
    printf("%zu records\n", nr);
    for (int round = 0; round < 3; round++) {
        /* one chain, every line prefetched 8 KiB ahead (as nkstream's walker) */
        double t0 = cpu_now();
        uint64_t sum = 0;
        size_t pf = 24;
        for (size_t pos = 24; pos + 16 <= n;) {
            size_t pe = pos + 8192 < n ? pos + 8192 : n;
            for (; pf < pe; pf += 64) __builtin_prefetch(b + pf, 0, 3);
            uint32_t cl = rd32(b + pos + 8);
            sum += cl + b[pos + 16] + b[pos + 16 + 40];   /* the frame's first line */
            pos += 16 + cl;
        }
        double t1 = cpu_now();
        printf("one chain, every line prefetched: %6.2f ns/record (check %lu)\n",
               (t1 - t0) / nr * 1e9, (unsigned long)sum);
        /* K chains over K regions of RB bytes */
        t0 = cpu_now();
        sum = 0;
        uint64_t pos[256], end[256];
        size_t r0 = 0;
        while (r0 < nr) {
            int k, m;
            for (k = 0; k < K && r0 < nr; k++) {
                pos[k] = off[r0];
                uint64_t lim = off[r0] + RB;
                size_t lo = r0 + 1, hi = nr;      /* first record at or past lim */
                while (lo < hi) {
                    size_t mid = (lo + hi) / 2;
                    if (off[mid] < lim) lo = mid + 1; else hi = mid;
                }
                end[k] = lo < nr ? off[lo] : n;
                r0 = lo;
                __builtin_prefetch(b + pos[k], 0, 3);
            }
            m = k;
            for (int live = 1; live;) {
                live = 0;
                for (k = 0; k < m; k++) {
                    uint64_t p = pos[k];
                    if (p >= end[k] || p + 16 > n) continue;
                    live = 1;
                    uint32_t cl = rd32(b + p + 8);
                    sum += cl + b[p + 16] + b[p + 16 + 40];
                    p += 16 + cl;
                    pos[k] = p;
                    __builtin_prefetch(b + p, 0, 3);
                    __builtin_prefetch(b + p + 64, 0, 3);
                }
            }
        }
        t1 = cpu_now();
        printf("%d chains, regions of %zu bytes:  %6.2f ns/record (check %lu)\n", K, RB,
               (t1 - t0) / nr * 1e9, (unsigned long)sum);
    }
    return 0;
}
