/* Q3_K's sixteen 6-bit scales, unpacked from their 12 bytes and unbiased (-32..31), as ggml
 * lays them out: low 4 bits in the nibbles of bytes 0..7, high 2 bits in bytes 8..11. Inline:
 * every Q3_K kernel needs it once per 256 values. */
#ifndef LE_Q3K_SCALES_H
#define LE_Q3K_SCALES_H
#include <stdint.h>
#include <string.h>

/* The four little-endian words of the sixteen biased scales (0..63), bytes 4i..4i+3 in word i. */
static inline void q3_K_scale_words(const uint8_t packed[12], uint32_t aux[4]) {
    memcpy(aux, packed, 12);
    const uint32_t tmp = aux[2], m2 = 0x0f0f0f0f, m1 = 0x03030303;
    aux[2] = ((aux[0] >> 4) & m2) | (((tmp >> 4) & m1) << 4);
    aux[3] = ((aux[1] >> 4) & m2) | (((tmp >> 6) & m1) << 4);
    aux[0] = (aux[0] & m2) | ((tmp & m1) << 4);
    aux[1] = (aux[1] & m2) | (((tmp >> 2) & m1) << 4);
}

static inline void q3_K_scales(const uint8_t packed[12], int8_t sc[16]) {
    uint32_t aux[4];
    q3_K_scale_words(packed, aux);
    memcpy(sc, aux, 16);
    for (int i = 0; i < 16; i++) {
        sc[i] = (int8_t)(sc[i] - 32);
    }
}
#endif
