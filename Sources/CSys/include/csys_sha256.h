/* SHA-256 block compression with the x86 SHA extensions (SHA-NI), for the files subsystem's
 * checksums: the portable Swift compression (TetherPosix SHA256) runs near 300 MB/s, which
 * would cap a file transfer; these instructions do several times that. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* The 64 round constants (FIPS 180-4, 4.2.2), for this file's compression and the portable one. */
extern const uint32_t csys_sha256_round_constants[64];

/* 1 when this CPU has SHA-NI, SSSE3 and SSE4.1 (CPUID), else 0. */
int csys_sha256_accelerated(void);

/* Compresses `blocks` 64-byte blocks at `data` into `state` (the eight working words, in the
 * standard order). Only call when csys_sha256_accelerated() returned 1. */
void csys_sha256_blocks(uint32_t state[8], const uint8_t *data, size_t blocks);
