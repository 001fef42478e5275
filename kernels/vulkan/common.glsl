// Shared by every shader: reads of packed GGUF bytes from a buffer of 32-bit words.
//
// Weights are bound as `uint[]` and read a byte / half / word at a time at any byte offset, so
// no shader needs 8- or 16-bit storage (V3D and older GPUs lack it) and blocks of 18, 22 or 210
// bytes need no repacking. The including shader declares `W` (the uint[] binding) first.

uint w_u32(uint off) {
    uint s = (off & 3u) * 8u;
    uint lo = W[off >> 2];
    // An unaligned word straddles two: the next word holds the high bytes (it exists, since
    // the bytes being read do).
    return s == 0u ? lo : (lo >> s) | (W[(off >> 2) + 1u] << (32u - s));
}

uint w_u8(uint off) {
    return (W[off >> 2] >> ((off & 3u) * 8u)) & 0xffu;
}

// `off` is even: a half never straddles two words.
float w_f16(uint off) {
    return unpackHalf2x16((W[off >> 2] >> ((off & 2u) * 8u)) & 0xffffu).x;
}

int sext8(uint b) {
    return bitfieldExtract(int(b), 0, 8);
}
