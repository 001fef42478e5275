/* The prefill GEMM's loop over tiles, shared by gemm_x86.c and gemm_dotprod.c. The includer
 * defines TILE_TOKENS (4 or 8) and tile(codes, nb, w, a, nt, out, ldo, rows), which
 * LE_TILE_SWITCH calls with a constant nt. Token
 * tiles are outermost: a tile's activations stay in L1 while the panels stream from L2. */
#ifndef LE_GEMM_TILES_H
#define LE_GEMM_TILES_H

/* Runs CALL(nt) with nt the constant equal to k (1..TILE_TOKENS), so each token count of a tile
 * compiles to straight-line code. */
#if TILE_TOKENS == 8
#define LE_TILE_SWITCH(k, CALL)                                                                                        \
    switch (k) {                                                                                                       \
    case 8: CALL(8); break;                                                                                            \
    case 7: CALL(7); break;                                                                                            \
    case 6: CALL(6); break;                                                                                            \
    case 5: CALL(5); break;                                                                                            \
    case 4: CALL(4); break;                                                                                            \
    case 3: CALL(3); break;                                                                                            \
    case 2: CALL(2); break;                                                                                            \
    default: CALL(1); break;                                                                                           \
    }
#else
#define LE_TILE_SWITCH(k, CALL)                                                                                        \
    switch (k) {                                                                                                       \
    case 4: CALL(4); break;                                                                                            \
    case 3: CALL(3); break;                                                                                            \
    case 2: CALL(2); break;                                                                                            \
    default: CALL(1); break;                                                                                           \
    }
#endif

static inline __attribute__((always_inline)) void gemm(le_codes codes, int nb, const le_block_x8 *w, int np,
                                                       int nrows, const le_block_q8_0x *a, int nt, float *out,
                                                       size_t ldo) {
    for (int t0 = 0; t0 < nt; t0 += TILE_TOKENS) {
        const int k = nt - t0 < TILE_TOKENS ? nt - t0 : TILE_TOKENS;
        for (int p = 0; p < np; p++) {
            const le_block_x8 *wp = w + (size_t)p * nb;
            const le_block_q8_0x *at = a + (size_t)t0 * nb;
            float *o = out + (size_t)t0 * ldo + 8 * p;
            const int rows = nrows - 8 * p;
#define CALL(n) tile(codes, nb, wp, at, n, o, ldo, rows)
            LE_TILE_SWITCH(k, CALL)
#undef CALL
        }
    }
}

#endif /* LE_GEMM_TILES_H */
