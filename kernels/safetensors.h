/* safetensors.h - safetensors checkpoints (one file or a sharded folder): validating mmap reader */
#ifndef QBAKE_SAFETENSORS_H
#define QBAKE_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* ---- dtypes ---- */

/* Every dtype the safetensors format names. Only F32, F16 and BF16 can be read as
 * numbers here; the others are recognised (listed, sized, validated) and a request
 * for their values is an error naming the dtype. */
enum {
	ST_BOOL, ST_U8, ST_I8, ST_F8_E5M2, ST_F8_E4M3, ST_F8_E8M0, ST_I16, ST_U16, ST_F16,
	ST_BF16, ST_I32, ST_U32, ST_F32, ST_C64, ST_F64, ST_I64, ST_U64, ST_F4, ST_F6_E2M3,
	ST_F6_E3M2, ST_DTYPE_COUNT
};

/* One row of the dtype table. */
typedef struct st_dtype_info {
	const char *name; /* as spelled in the header: "BF16" */
	uint32_t bits;    /* bits per element (4 and 6 for the packed float types) */
	bool readable;    /* st_read_f32 converts it (F32, F16, BF16) */
} st_dtype_info;

/* The table row for id, or NULL when id is out of range. */
const st_dtype_info *st_dtype(int id);
/* The dtype id spelled exactly name (case-sensitive, as the format is), or -1. */
int st_dtype_by_name(const char *name);

/* ---- tensors, shards, models ---- */

#define ST_MAX_DIMS 8

/* One tensor. Filled by the reader; everything points into the model that owns it. */
typedef struct st_tensor {
	char *name;                  /* owned by the model */
	int dtype;                   /* ST_F32 ... */
	uint32_t ndim;               /* 0 (a scalar) .. ST_MAX_DIMS */
	uint64_t shape[ST_MAX_DIMS]; /* outermost first, as in the file (PyTorch order);
	                                unused entries are 1 */
	uint64_t nelem;              /* product of the shape (1 for a scalar) */
	const void *data;            /* into the shard's mapping; may be unaligned */
	uint64_t nbytes;             /* bytes of data */
	uint64_t offset;             /* file offset of data in its shard (for messages) */
	uint32_t shard;              /* index into st_model.shards */
} st_tensor;

/* One string pair of a file's "__metadata__" (in the file's order). */
typedef struct st_kv {
	char *key;
	char *value;
} st_kv;

/* One .safetensors file, mapped read-only. */
typedef struct st_shard {
	char *path;          /* as opened, for messages */
	const uint8_t *map;  /* the whole file (or the caller's buffer, for st_parse) */
	uint64_t size;       /* file size */
	uint64_t header_len; /* the JSON header's length (it starts at offset 8) */
	uint64_t data_start; /* file offset of the data section: 8 + header_len */
	st_kv *meta;         /* its "__metadata__", n_meta pairs */
	size_t n_meta;
	int mapped;          /* map came from mmap (st_close unmaps it) */
} st_shard;

/* A checkpoint: one or more shards whose tensors have distinct names. */
typedef struct st_model {
	char *path;             /* as given to st_open (file, index or folder) */
	char *index_path;       /* the model.safetensors.index.json read, or NULL */
	st_shard *shards;       /* single file: one; sharded: the index's files, sorted by name */
	uint32_t n_shards;
	st_tensor *tensors;     /* shard by shard, by name (byte order) within a shard: the
	                           order llama.cpp's converter visits them */
	size_t n_tensors;
	st_tensor **by_name;    /* the same tensors sorted by name, for st_find */
	uint64_t total_bytes;   /* sum of the tensors' nbytes */
} st_model;

/* Opens path: a .safetensors file, a model.safetensors.index.json (its shards are read
 * from the same folder), or a folder holding either (the index wins). Everything is
 * validated before this returns. Returns 0, or -1 with e as "file: offset N: problem". */
int st_open(st_model *m, const char *path, err *e);
/* Validates an in-memory .safetensors image as a one-shard model (buf is not copied and
 * must outlive m); name is used in messages. Returns 0 or -1. The fuzz target drives it. */
int st_parse(st_model *m, const void *buf, uint64_t size, const char *name, err *e);
/* Releases everything; m may be zeroed or half-opened. */
void st_close(st_model *m);
/* The tensor named name, or NULL. */
const st_tensor *st_find(const st_model *m, const char *name);
/* The metadata value of key in the first shard's "__metadata__", or NULL. */
const char *st_meta_get(const st_model *m, const char *key);

/* Elements per row: the innermost dimension (1 for a scalar). */
uint64_t st_row_len(const st_tensor *t);
/* Number of rows: nelem / st_row_len (0 when the tensor is empty). */
uint64_t st_n_rows(const st_tensor *t);
/* Converts elements [first, first + n) of t to f32 in out (F16/BF16 exactly widened).
 * Returns 0, or -1 when the dtype is not readable or the range is outside the tensor. */
int st_read_f32(const st_model *m, const st_tensor *t, uint64_t first, uint64_t n, float *out,
		err *e);
/* Converts rows [row, row + nrows) to f32 (nrows * st_row_len floats); returns 0 or -1. */
int st_read_rows_f32(const st_model *m, const st_tensor *t, uint64_t row, uint64_t nrows,
		     float *out, err *e);

#endif
