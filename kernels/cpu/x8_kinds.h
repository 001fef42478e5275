/* The four interleaved legacy kinds (see le_block_q4_0x8) by their two traits, for the kernels
 * that specialise an always-inlined body per kind: X8_DISPATCH(type, body, args...) calls
 * body(five, with_min, args...) with constant traits, so each kind compiles to its own loop. */
#ifndef LE_X8_KINDS_H
#define LE_X8_KINDS_H

#define X8_DISPATCH(type, body, ...)                                                                                   \
    do {                                                                                                               \
        switch (type) {                                                                                                \
        case LE_TYPE_Q4_0:                                                                                             \
            body(0, 0, __VA_ARGS__);                                                                                   \
            break;                                                                                                     \
        case LE_TYPE_Q4_1:                                                                                             \
            body(0, 1, __VA_ARGS__);                                                                                   \
            break;                                                                                                     \
        case LE_TYPE_Q5_0:                                                                                             \
            body(1, 0, __VA_ARGS__);                                                                                   \
            break;                                                                                                     \
        case LE_TYPE_Q5_1:                                                                                             \
            body(1, 1, __VA_ARGS__);                                                                                   \
            break;                                                                                                     \
        }                                                                                                              \
    } while (0)

/* Bytes of one plain block: d, then m (Q*_1), then qh (Q5_*), then 16 bytes of qs. Eight of them
 * make an interleaved block, laid out in the same order. */
#define X8_PLAIN_BYTES(five, with_min) (18 + 2 * (size_t)(with_min) + 4 * (size_t)(five))

#endif /* LE_X8_KINDS_H */
