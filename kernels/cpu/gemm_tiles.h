/* The prefill GEMM's loop over tiles, shared by gemm_x86.c and gemm_dotprod.c. The includer
 * defines TILE_TOKENS (4 or 8) and tile(codes, nb, w, a, nt, out, ldo, rows), which the switch
 * below calls with a constant nt so each token count compiles to straight-line code. Token
 * tiles are outermost: a tile's activations stay in L1 while the panels stream from L2. */
#ifndef LE_GEMM_TILES_H
#define LE_GEMM_TILES_H

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
            switch (k) {
#if TILE_TOKENS == 8
            case 8:
                tile(codes, nb, wp, at, 8, o, ldo, rows);
                break;
            case 7:
                tile(codes, nb, wp, at, 7, o, ldo, rows);
                break;
            case 6:
                tile(codes, nb, wp, at, 6, o, ldo, rows);
                break;
            case 5:
                tile(codes, nb, wp, at, 5, o, ldo, rows);
                break;
#endif
            case 4:
                tile(codes, nb, wp, at, 4, o, ldo, rows);
                break;
            case 3:
                tile(codes, nb, wp, at, 3, o, ldo, rows);
                break;
            case 2:
                tile(codes, nb, wp, at, 2, o, ldo, rows);
                break;
            default:
                tile(codes, nb, wp, at, 1, o, ldo, rows);
                break;
            }
        }
    }
}

#endif /* LE_GEMM_TILES_H */
