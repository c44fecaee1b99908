/* gguf.h - GGUF files: type table, metadata, validating mmap reader, streaming writer */
#ifndef QBAKE_GGUF_H
#define QBAKE_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* ---- ggml tensor types ---- */

/* ggml type ids as stored in GGUF tensor infos. */
enum {
	GGUF_TYPE_F32 = 0, GGUF_TYPE_F16 = 1, GGUF_TYPE_Q4_0 = 2, GGUF_TYPE_Q4_1 = 3,
	GGUF_TYPE_Q5_0 = 6, GGUF_TYPE_Q5_1 = 7, GGUF_TYPE_Q8_0 = 8, GGUF_TYPE_Q8_1 = 9,
	GGUF_TYPE_Q2_K = 10, GGUF_TYPE_Q3_K = 11, GGUF_TYPE_Q4_K = 12, GGUF_TYPE_Q5_K = 13,
	GGUF_TYPE_Q6_K = 14, GGUF_TYPE_Q8_K = 15, GGUF_TYPE_IQ2_XXS = 16, GGUF_TYPE_IQ2_XS = 17,
	GGUF_TYPE_IQ3_XXS = 18, GGUF_TYPE_IQ1_S = 19, GGUF_TYPE_IQ4_NL = 20, GGUF_TYPE_IQ3_S = 21,
	GGUF_TYPE_IQ2_S = 22, GGUF_TYPE_IQ4_XS = 23, GGUF_TYPE_I8 = 24, GGUF_TYPE_I16 = 25,
	GGUF_TYPE_I32 = 26, GGUF_TYPE_I64 = 27, GGUF_TYPE_F64 = 28, GGUF_TYPE_IQ1_M = 29,
	GGUF_TYPE_BF16 = 30, GGUF_TYPE_TQ1_0 = 34, GGUF_TYPE_TQ2_0 = 35, GGUF_TYPE_MXFP4 = 39,
	GGUF_TYPE_COUNT = 40
};

/* One row of the type table. */
typedef struct gguf_type_info {
	const char *name;  /* "Q4_K"; NULL for ids no ggml type uses */
	uint32_t blck;     /* elements per block (1 for plain types) */
	uint32_t size;     /* bytes per block */
	bool quantized;    /* block-quantized (not F32/F16/BF16/F64/integers) */
} gguf_type_info;

/* The table row for id, or NULL for an id outside the table or unused. */
const gguf_type_info *gguf_type(uint32_t id);
/* The type id named name (case-insensitive), or -1. */
int gguf_type_by_name(const char *name);
/* Bytes of a row of ne0 elements, or 0 if ne0 is not a multiple of the block size. */
uint64_t gguf_row_size(uint32_t type, uint64_t ne0);

/* ---- metadata ---- */

/* Metadata value types (GGUF spec numbering). */
enum {
	GGUF_U8 = 0, GGUF_I8 = 1, GGUF_U16 = 2, GGUF_I16 = 3, GGUF_U32 = 4, GGUF_I32 = 5,
	GGUF_F32 = 6, GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9, GGUF_U64 = 10,
	GGUF_I64 = 11, GGUF_F64 = 12
};

/* A string: bytes plus length (not necessarily NUL-terminated inside arrays, but every
 * string the reader or the setters make is followed by a NUL for convenience). */
typedef struct gguf_str {
	uint64_t len;
	char *ptr;
} gguf_str;

/* One metadata value, fully owned by the gguf_meta that holds it. */
typedef struct gguf_value {
	uint32_t type;  /* GGUF_U8 ... GGUF_F64 */
	uint32_t atype; /* element type when type == GGUF_ARRAY (never GGUF_ARRAY) */
	uint64_t n;     /* element count when type == GGUF_ARRAY */
	union {
		uint64_t u;  /* U8, U16, U32, U64, BOOL (0/1) */
		int64_t i;   /* I8, I16, I32, I64 */
		double f;    /* F32, F64 (an F32 is exact in a double; only a signalling
		                NaN scalar comes back quieted when written out again) */
		gguf_str s;  /* STRING */
		void *arr;   /* ARRAY: n elements in native layout: uint8_t[], ..., float[],
		                double[], bool as uint8_t[], gguf_str[] for strings */
	};
} gguf_value;

typedef struct gguf_kv {
	char *key;
	gguf_value v;
} gguf_kv;

/* Ordered key/value metadata. Order is the file's order; a set on an existing key
 * replaces its value in place, a new key is appended (as gguf_set_* in ggml does). */
typedef struct gguf_meta {
	gguf_kv *kv;
	size_t n, cap;
} gguf_meta;

/* The entry for key, or NULL. */
const gguf_kv *gguf_meta_find(const gguf_meta *m, const char *key);
/* Index of key, or -1. */
long gguf_meta_index(const gguf_meta *m, const char *key);
/* Typed getters: return 0 and store the value, or -1 if missing or of another type
 * (integers of any width and signedness convert when the value fits). */
int gguf_meta_get_u64(const gguf_meta *m, const char *key, uint64_t *out);
int gguf_meta_get_i64(const gguf_meta *m, const char *key, int64_t *out);
int gguf_meta_get_f64(const gguf_meta *m, const char *key, double *out);
int gguf_meta_get_bool(const gguf_meta *m, const char *key, bool *out);
/* The string value of key (NUL-terminated), or NULL. */
const char *gguf_meta_get_str(const gguf_meta *m, const char *key);
/* The array value of key with element type atype, or NULL. */
const gguf_value *gguf_meta_get_arr(const gguf_meta *m, const char *key, uint32_t atype);

/* Setters copy their arguments; return 0, or -1 on out of memory. */
int gguf_meta_set_scalar(gguf_meta *m, const char *key, uint32_t type, const gguf_value *v);
int gguf_meta_set_u32(gguf_meta *m, const char *key, uint32_t v);
int gguf_meta_set_i32(gguf_meta *m, const char *key, int32_t v);
int gguf_meta_set_u64(gguf_meta *m, const char *key, uint64_t v);
int gguf_meta_set_f32(gguf_meta *m, const char *key, float v);
int gguf_meta_set_bool(gguf_meta *m, const char *key, bool v);
int gguf_meta_set_str(gguf_meta *m, const char *key, const char *s);
/* Array of n elements of atype; data is in the native layout described in gguf_value
 * (gguf_str[] for strings). */
int gguf_meta_set_arr(gguf_meta *m, const char *key, uint32_t atype, const void *data, uint64_t n);
/* Deep copy of one value under key (for copying keys between files). */
int gguf_meta_set_value(gguf_meta *m, const char *key, const gguf_value *v);
/* Removes key if present; returns 1 if it was there. */
int gguf_meta_remove(gguf_meta *m, const char *key);
/* Deep copy of src into dst (dst must be empty); returns 0 or -1. */
int gguf_meta_copy(gguf_meta *dst, const gguf_meta *src);
/* Frees every key and value. */
void gguf_meta_free(gguf_meta *m);

/* ---- tensors and files ---- */

typedef struct gguf_tensor {
	char *name;         /* owned */
	uint32_t type;      /* ggml type id */
	uint32_t n_dims;    /* 1..4 */
	uint64_t ne[4];     /* elements per dimension, ne[0] innermost; unused dims are 1 */
	uint64_t offset;    /* from the start of the data section */
	uint64_t nbytes;    /* bytes of data (set by the reader and by gguf_writer_begin) */
	const void *data;   /* reader: points into the mapping; writer: unused */
} gguf_tensor;

/* An open GGUF file: metadata parsed and owned, tensor data mapped read-only. */
typedef struct gguf_file {
	char *path;            /* as given to gguf_open, for messages */
	uint32_t version;      /* 2 or 3 */
	uint32_t alignment;    /* general.alignment or 32 */
	gguf_meta meta;
	gguf_tensor *tensors;  /* in file order */
	uint64_t n_tensors;
	uint64_t data_offset;  /* file offset of the data section */
	const uint8_t *map;    /* the whole file */
	uint64_t size;         /* file size */
	int mapped;            /* map came from mmap (gguf_close unmaps it) */
} gguf_file;

/* Opens and validates path; returns 0, or -1 with e as "path: offset N: problem". */
int gguf_open(gguf_file *f, const char *path, err *e);
/* Validates an in-memory image (not copied: buf must outlive f); name is used in
 * messages. Returns 0 or -1. This is what the fuzz target drives. */
int gguf_parse(gguf_file *f, const void *buf, uint64_t size, const char *name, err *e);
/* Releases everything; f may be zeroed or half-opened. */
void gguf_close(gguf_file *f);
/* The tensor named name, or NULL. */
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);
/* Total element count of t (the product of its first n_dims dimensions). */
uint64_t gguf_nelements(const gguf_tensor *t);

/* A streaming writer. The header (metadata and tensor infos) is written by
 * gguf_writer_begin; tensor data then follows in order through gguf_writer_write,
 * each tensor's exact byte count, with alignment padding inserted automatically.
 * The file is written beside path and renamed into place by gguf_writer_finish. */
typedef struct gguf_writer gguf_writer;

/* Starts writing path (GGUF v3) with the given alignment (0 = general.alignment or 32),
 * metadata and tensor infos (offsets and nbytes are computed here, names and shapes
 * copied; each tensor's n_dims is written as given). A nonzero alignment that
 * general.alignment contradicts is an error; one other than 32 with no such key appends
 * the key (u32), since readers learn the alignment only from it. Everything is
 * validated first (keys, types, shapes, block multiples, duplicate names), so what is
 * written reads back. Returns the writer, or NULL with e set and nothing at path. */
gguf_writer *gguf_writer_begin(const char *path, uint32_t alignment, const gguf_meta *meta,
			       const gguf_tensor *tensors, uint64_t n, err *e);
/* Appends n bytes of tensor data (a call may span several tensors); returns 0, or -1
 * (also when more bytes arrive than all the tensors hold); after -1, abort. */
int gguf_writer_write(gguf_writer *w, const void *buf, size_t n, err *e);
/* Checks every tensor was written in full, pads, fsyncs and renames into place; frees w.
 * sha256 (may be NULL) receives the file's digest. Returns 0, or -1 with nothing left
 * at path. */
int gguf_writer_finish(gguf_writer *w, uint8_t sha256[32], err *e);
/* Abandons the file (temp file removed, nothing at path); frees w. */
void gguf_writer_abort(gguf_writer *w);

#endif
