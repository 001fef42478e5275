/* Software prefetch for the decode products, which stream each weight once. The hardware
 * prefetchers of server cores stop at 4 KiB pages and keep too few lines in flight for two
 * threads to reach the memory's rate: on this project's Xeon runner, prefetching 4 KiB ahead
 * took Qwen2-0.5B Q4_0 decode from 42 to 56-59 tok/s (PERF.md step 37; 1, 2, 8 and 16 KiB
 * were measured too). Prefetches past the end of a tensor are harmless hints. */
#ifndef LE_PREFETCH_X86_H
#define LE_PREFETCH_X86_H

#include "llava_kernels.h" /* LE_PREFETCH_AHEAD, shared with the bench's read-rate bound */

/* The lines of [p, p + bytes) one LE_PREFETCH_AHEAD further on. */
static inline void le_prefetch_ahead(const void *p, int bytes) {
    for (int o = 0; o < bytes; o += 64) {
        /* The builtin with constant arguments: through _mm_prefetch's inline wrapper, GCC 12
         * dropped every prefetch of gemm_x86.c (its hint argument was not yet constant). */
        __builtin_prefetch((const char *)p + LE_PREFETCH_AHEAD + o, 0, 3);
    }
}

#endif /* LE_PREFETCH_X86_H */
