/* wal_internal.h - the on-disk sizes of wal.h's format and the portable
 * CRC32C, for wal.c, its tests and its benchmark. Nothing else includes
 * this. */
#ifndef CORE_WAL_INTERNAL_H
#define CORE_WAL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#define WAL_MAGIC "ESWAL001"
#define WAL_SEGMENT_HEADER 24u /* magic, first seq, crc, 4 zero bytes */
#define WAL_RECORD_HEADER 24u  /* len, crc, seq, kind, reserved */

/* Bytes a record with a payload of len bytes takes in a segment. */
static inline uint64_t wal_record_bytes(uint64_t len)
{
    return WAL_RECORD_HEADER + ((len + 7) & ~(uint64_t)7);
}

/* The table-driven CRC32C that wal_crc32c falls back to without SSE4.2;
 * always built, so tests can check that both agree. Same convention as
 * wal_crc32c (0 to start, continues from a previous result). */
uint32_t wal_crc32c_portable(uint32_t crc, const void *data, size_t len);

#endif
