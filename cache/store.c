/* store.c - the content-addressed cache: objects, action cache, stat cache, refs, gc, verify */
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LAYOUT "qbake-cache 1\n"
#define SUMLINE 69 /* "sum " + 64 hex + "\n": the last line of every record */
#define STAT_TOUCH_NS (86400LL * 1000000000LL)     /* refresh a used stat entry's mtime daily */
#define STAT_EXPIRE_NS (30LL * 86400 * 1000000000LL) /* gc drops stat entries unused this long */
#define IOBUF (1u << 20)

/* The sub-folders of a cache; anything else at the top level makes store_open refuse it. */
static const char *const subdirs[] = { "objects", "ac", "stat", "refs", "tmp", "locks" };

/* ---- small helpers ---- */

static void warnf(store *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warnf(store *s, const char *fmt, ...)
{
	char msg[1200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	__atomic_add_fetch(&s->nwarnings, 1, __ATOMIC_RELAXED);
	if (s->warn)
		s->warn(s->warn_ctx, msg);
	else
		fprintf(stderr, "qbake: warning: %s\n", msg);
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t ts_ns(struct timespec ts)
{
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* "<dir>/<sub>/<hh>/<hex>" for a digest-named entry. */
static char *entry_path(const store *s, const char *sub, const uint8_t d[32], char *buf, size_t n)
{
	char hex[65];

	sha256_hex(d, hex);
	snprintf(buf, n, "%s/%s/%.2s/%s", s->dir, sub, hex, hex);
	return buf;
}

char *store_object_path(const store *s, const uint8_t d[32], char *buf, size_t n)
{
	return entry_path(s, "objects", d, buf, n);
}

static int mkdir_one(const char *path, err *e)
{
	if (mkdir(path, 0755) == 0 || errno == EEXIST)
		return 0;
	return err_errno(e, "%s: cannot create the folder", path);
}

static int mkdir_p(const char *path, err *e)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);

	if (len >= sizeof buf)
		return err_set(e, "%s: path too long", path);
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			return err_errno(e, "%s: cannot create the folder", buf);
		*p = '/';
	}
	return mkdir_one(buf, e);
}

/* A growing text buffer for records. */
typedef struct sbuf {
	char *p;
	size_t n, cap;
	int oom; /* set when an append failed; the buffer is then useless */
} sbuf;

static void sb_add(sbuf *b, const void *p, size_t n)
{
	if (b->oom)
		return;
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 256;
		char *q;

		while (cap < b->n + n + 1)
			cap *= 2;
		q = realloc(b->p, cap);
		if (!q) {
			b->oom = 1;
			return;
		}
		b->p = q;
		b->cap = cap;
	}
	memcpy(b->p + b->n, p, n);
	b->n += n;
	b->p[b->n] = 0;
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	int k;

	va_start(ap, fmt);
	k = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (k < 0 || (size_t)k >= sizeof tmp) {
		b->oom = 1;
		return;
	}
	sb_add(b, tmp, (size_t)k);
}

/* Appends the checksum line that every record ends with. */
static void sb_seal(sbuf *b)
{
	uint8_t d[32];
	char hex[65];

	if (b->oom)
		return;
	sha256_buf(b->p, b->n, d);
	sb_printf(b, "sum %s\n", sha256_hex(d, hex));
}

/* Checks the checksum line; returns the length of the body before it, or -1. */
static long unseal(const char *p, size_t n)
{
	uint8_t d[32], want[32];
	char hex[65];

	if (n < SUMLINE || memcmp(p + n - SUMLINE, "sum ", 4) != 0 || p[n - 1] != '\n')
		return -1;
	memcpy(hex, p + n - SUMLINE + 4, 64);
	hex[64] = 0;
	if (sha256_unhex(hex, want) < 0)
		return -1;
	sha256_buf(p, n - SUMLINE, d);
	if (memcmp(d, want, 32) != 0)
		return -1;
	return (long)(n - SUMLINE);
}

/* Reads a whole small file; returns a malloc'd NUL-terminated buffer, or NULL with errno set
 * (ENOENT for a miss). */
static char *slurp(const char *path, size_t *n, struct stat *st)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat sb;
	char *buf;
	size_t got = 0;

	if (fd < 0)
		return NULL;
	if (fstat(fd, &sb) < 0 || sb.st_size > (64 << 20)) {
		if (sb.st_size > (64 << 20))
			errno = EFBIG;
		close(fd);
		return NULL;
	}
	buf = malloc((size_t)sb.st_size + 1);
	if (!buf) {
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	while (got < (size_t)sb.st_size) {
		ssize_t r = read(fd, buf + got, (size_t)sb.st_size - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	buf[got] = 0;
	*n = got;
	if (st)
		*st = sb;
	return buf;
}

/* Makes the afile (whose temp is in <dir>/tmp) land at final instead of its own target: every
 * temp lives in tmp/ so that a crash's leftovers are found in one place. */
static int commit_as(afile *f, const char *final, uint8_t *digest, err *e)
{
	char dir[PATH_MAX];
	char *slash, *copy;

	snprintf(dir, sizeof dir, "%s", final);
	slash = strrchr(dir, '/');
	if (slash) {
		*slash = 0;
		if (mkdir_one(dir, e) < 0) {
			afile_abort(f);
			return -1;
		}
	}
	copy = strdup(final);
	if (!copy) {
		afile_abort(f);
		return err_set(e, "%s: out of memory", final);
	}
	free(f->path);
	f->path = copy;
	return afile_commit(f, digest, e);
}

/* Writes a small record atomically to final. */
static int put_record(store *s, const char *final, const char *p, size_t n, err *e)
{
	char tmp[PATH_MAX];
	afile f;

	snprintf(tmp, sizeof tmp, "%s/tmp/record", s->dir);
	if (afile_open(&f, tmp, 0, 0, e) < 0)
		return err_prefix(e, "%s", final);
	if (afile_write(&f, p, n, e) < 0) {
		afile_abort(&f);
		return err_prefix(e, "%s", final);
	}
	return commit_as(&f, final, NULL, e);
}

/* ---- opening ---- */

int store_default_dir(char *buf, size_t n, err *e)
{
	const char *v;
	int k;

	if ((v = getenv("QBAKE_CACHE")) && *v)
		k = snprintf(buf, n, "%s", v);
	else if ((v = getenv("XDG_CACHE_HOME")) && *v)
		k = snprintf(buf, n, "%s/qbake", v);
	else if ((v = getenv("HOME")) && *v)
		k = snprintf(buf, n, "%s/.cache/qbake", v);
	else
		return err_set(e, "no cache directory: set QBAKE_CACHE, XDG_CACHE_HOME or HOME, or pass --cache DIR");
	if (k < 0 || (size_t)k >= n)
		return err_set(e, "%s: cache directory path too long", v);
	return 0;
}

static int is_known(const char *name)
{
	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0 || strcmp(name, "lock") == 0 ||
	    strcmp(name, "VERSION") == 0 || strncmp(name, ".qbake-tmp.", 11) == 0)
		return 1;
	for (size_t i = 0; i < sizeof subdirs / sizeof *subdirs; i++)
		if (strcmp(name, subdirs[i]) == 0)
			return 1;
	return 0;
}

/* Creates or checks VERSION and the sub-folders. A folder holding other things and no VERSION
 * is refused, so that gc never deletes files in a folder given by mistake. */
static int check_layout(store *s, err *e)
{
	char path[PATH_MAX];
	size_t n;
	char *v;

	snprintf(path, sizeof path, "%s/VERSION", s->dir);
	v = slurp(path, &n, NULL);
	if (v) {
		int ok = strcmp(v, LAYOUT) == 0;

		free(v);
		if (!ok)
			return err_set(e, "%s: not a cache layout this qbake understands (expected \"%.*s\")",
				       path, (int)strlen(LAYOUT) - 1, LAYOUT);
	} else if (errno != ENOENT) {
		return err_errno(e, "%s: cannot read", path);
	} else {
		DIR *d = opendir(s->dir);
		struct dirent *de;

		if (!d)
			return err_errno(e, "%s: cannot list the cache directory", s->dir);
		while ((de = readdir(d)))
			if (!is_known(de->d_name)) {
				err_set(e, "%s: not a qbake cache (it holds '%s' and no VERSION file); "
					"give an empty or new folder", s->dir, de->d_name);
				closedir(d);
				return -1;
			}
		closedir(d);
		if (afile_put(path, LAYOUT, strlen(LAYOUT), e) < 0)
			return err_prefix(e, "cache directory not writable");
	}
	for (size_t i = 0; i < sizeof subdirs / sizeof *subdirs; i++) {
		snprintf(path, sizeof path, "%s/%s", s->dir, subdirs[i]);
		if (mkdir_one(path, e) < 0)
			return err_prefix(e, "cache directory not writable");
	}
	return 0;
}

/* Removes everything in <dir>/<sub> (flat); only called under the exclusive lock, when no
 * other process can be writing there. Returns how many files went. */
static uint64_t clear_dir(store *s, const char *sub)
{
	char path[PATH_MAX];
	struct dirent *de;
	uint64_t k = 0;
	DIR *d;

	snprintf(path, sizeof path, "%s/%s", s->dir, sub);
	d = opendir(path);
	if (!d)
		return 0;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' && (!de->d_name[1] || (de->d_name[1] == '.' && !de->d_name[2])))
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0) == 0)
			k++;
	}
	closedir(d);
	return k;
}

int store_open(store *s, const char *dir, err *e)
{
	char def[PATH_MAX], path[PATH_MAX];

	memset(s, 0, sizeof *s);
	s->lockfd = -1;
	s->racy_ns = 2000000000LL;
	if (!dir) {
		if (store_default_dir(def, sizeof def, e) < 0)
			return -1;
		dir = def;
	}
	if (strlen(dir) > PATH_MAX - 200)
		return err_set(e, "%s: cache directory path too long", dir);
	s->dir = strdup(dir);
	if (!s->dir)
		return err_set(e, "%s: out of memory", dir);
	if (mkdir_p(dir, e) < 0) {
		store_close(s);
		return err_prefix(e, "cache directory");
	}
	/* Absolute from now on: a later chdir (an action's working folder) must not move it. */
	{
		char *abs = realpath(dir, NULL);

		if (abs && strlen(abs) <= PATH_MAX - 200) {
			free(s->dir);
			s->dir = abs;
		} else {
			free(abs);
		}
	}
	snprintf(path, sizeof path, "%s/lock", s->dir);
	s->lockfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (s->lockfd < 0) {
		err_errno(e, "%s: cannot open the cache lock (is the cache directory read-only?)", path);
		store_close(s);
		return -1;
	}
	/* Alone on the cache: leftovers in tmp/ belong to dead processes. */
	if (flock(s->lockfd, LOCK_EX | LOCK_NB) == 0) {
		if (check_layout(s, e) < 0) {
			store_close(s);
			return -1;
		}
		clear_dir(s, "tmp");
		if (flock(s->lockfd, LOCK_SH) < 0)
			goto lockfail;
		return 0;
	}
	if (flock(s->lockfd, LOCK_SH) < 0)
		goto lockfail;
	if (check_layout(s, e) < 0) {
		store_close(s);
		return -1;
	}
	return 0;
lockfail:
	err_errno(e, "%s: cannot lock", path);
	store_close(s);
	return -1;
}

void store_close(store *s)
{
	if (s->lockfd >= 0)
		close(s->lockfd);
	s->lockfd = -1;
	free(s->dir);
	s->dir = NULL;
}

/* Switches the cache lock to exclusive (waiting for other users, with a note) and back. */
static int lock_exclusive(store *s, err *e)
{
	if (flock(s->lockfd, LOCK_EX | LOCK_NB) == 0)
		return 0;
	fprintf(stderr, "qbake: waiting for other qbake processes using %s to finish\n", s->dir);
	if (flock(s->lockfd, LOCK_EX) < 0)
		return err_errno(e, "%s/lock: cannot lock", s->dir);
	return 0;
}

static void lock_shared(store *s)
{
	flock(s->lockfd, LOCK_SH);
}

/* ---- objects ---- */

int store_has(store *s, const uint8_t d[32], uint64_t size, err *e)
{
	char path[PATH_MAX];
	struct stat st;

	store_object_path(s, d, path, sizeof path);
	if (stat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		return err_errno(e, "%s: cannot stat", path);
	}
	if (size != UINT64_MAX && (uint64_t)st.st_size != size) {
		warnf(s, "%s: object is %llu bytes, expected %llu: corrupt, removed", path,
		      (unsigned long long)st.st_size, (unsigned long long)size);
		unlink(path);
		return 0;
	}
	return 1;
}

int store_open_object(store *s, const uint8_t d[32], uint64_t size, err *e)
{
	char path[PATH_MAX];
	struct stat st;
	int fd;

	store_object_path(s, d, path, sizeof path);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return err_set(e, "%s: object missing from the cache", path);
		return err_errno(e, "%s: cannot open", path);
	}
	if (fstat(fd, &st) < 0) {
		close(fd);
		return err_errno(e, "%s: cannot stat", path);
	}
	if (size != UINT64_MAX && (uint64_t)st.st_size != size) {
		close(fd);
		warnf(s, "%s: object is %llu bytes, expected %llu: corrupt, removed", path,
		      (unsigned long long)st.st_size, (unsigned long long)size);
		unlink(path);
		return err_set(e, "%s: object corrupt (wrong size), removed from the cache", path);
	}
	return fd;
}

int store_writer_open(store *s, store_writer *w, err *e)
{
	char tmp[PATH_MAX];

	memset(w, 0, sizeof *w);
	w->s = s;
	w->f.fd = -1;
	snprintf(tmp, sizeof tmp, "%s/tmp/object", s->dir);
	if (afile_open(&w->f, tmp, 0, 0, e) < 0)
		return err_prefix(e, "cache object");
	if (sha256_init(&w->sha) < 0) {
		afile_abort(&w->f);
		return err_set(e, "%s: out of memory", s->dir);
	}
	w->open = 1;
	return 0;
}

int store_writer_write(store_writer *w, const void *p, size_t n, err *e)
{
	sha256_update(&w->sha, p, n);
	if (afile_write(&w->f, p, n, e) < 0)
		return err_prefix(e, "cache object");
	return 0;
}

void store_writer_abort(store_writer *w)
{
	if (!w->open)
		return;
	afile_abort(&w->f);
	sha256_free(&w->sha);
	w->open = 0;
}

int store_writer_commit(store_writer *w, const uint8_t *expect, uint8_t d[32], uint64_t *size,
			err *e)
{
	char path[PATH_MAX], hex[65], hex2[65];
	uint8_t got[32];
	uint64_t n = w->f.size;
	struct stat st;

	sha256_final(&w->sha, got);
	sha256_free(&w->sha);
	w->open = 0;
	if (expect && memcmp(expect, got, 32) != 0) {
		afile_abort(&w->f);
		return err_set(e, "object %s: the bytes received have digest %s: refused",
			       sha256_hex(expect, hex), sha256_hex(got, hex2));
	}
	if (d)
		memcpy(d, got, 32);
	if (size)
		*size = n;
	store_object_path(w->s, got, path, sizeof path);
	/* Same name, same bytes: an existing object of the right size is kept as is (its inode
	 * may be hardlinked into release folders). */
	if (stat(path, &st) == 0 && (uint64_t)st.st_size == n) {
		afile_abort(&w->f);
		return 0;
	}
	fchmod(w->f.fd, 0444);
	return commit_as(&w->f, path, NULL, e);
}

int store_put_buf(store *s, const void *p, size_t n, uint8_t d[32], err *e)
{
	store_writer w;

	if (store_writer_open(s, &w, e) < 0)
		return -1;
	if (store_writer_write(&w, p, n, e) < 0) {
		store_writer_abort(&w);
		return -1;
	}
	return store_writer_commit(&w, NULL, d, NULL, e);
}

/* Reads fd from offset 0 to the end into sha (and into w when non-NULL); returns bytes or -1. */
static int64_t hash_fd(int fd, const char *path, sha256 *sha, store_writer *w, err *e)
{
	char *buf = malloc(IOBUF);
	int64_t total = 0;

	if (!buf)
		return err_set(e, "%s: out of memory", path);
	for (;;) {
		ssize_t r = pread(fd, buf, IOBUF, total);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			err_errno(e, "%s: read failed at byte %lld", path, (long long)total);
			free(buf);
			return -1;
		}
		if (r == 0)
			break;
		if (sha)
			sha256_update(sha, buf, (size_t)r);
		if (w && store_writer_write(w, buf, (size_t)r, e) < 0) {
			free(buf);
			return -1;
		}
		total += r;
	}
	free(buf);
	return total;
}

static int digest_fd(store *s, int fd, const char *path, uint8_t d[32], uint64_t *size, err *e)
{
	sha256 sha;
	int64_t n;

	if (sha256_init(&sha) < 0)
		return err_set(e, "%s: out of memory", path);
	n = hash_fd(fd, path, &sha, NULL, e);
	sha256_final(&sha, d);
	sha256_free(&sha);
	if (n < 0)
		return -1;
	/* Atomic: the engine may hash inputs from several threads through one store. */
	__atomic_add_fetch(&s->nhashed, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&s->bytes_hashed, (uint64_t)n, __ATOMIC_RELAXED);
	if (size)
		*size = (uint64_t)n;
	return 0;
}

/* Links path into the store under its digest; returns 0, 1 when linking is impossible here
 * (the caller copies instead), or -1. */
static int put_link(store *s, const char *path, uint8_t d[32], uint64_t *size, err *e)
{
	char tmp[PATH_MAX], final[PATH_MAX];
	uint64_t n = 0;
	int fd, rc;

	for (int tries = 0;; tries++) {
		snprintf(tmp, sizeof tmp, "%s/tmp/.qbake-tmp.link.%ld.%d.%08x", s->dir, (long)getpid(),
			 tries, (unsigned)rand());
		if (link(path, tmp) == 0)
			break;
		if (errno == EEXIST && tries < 100)
			continue;
		if (errno == EXDEV || errno == EPERM || errno == EMLINK || errno == ENOTSUP)
			return 1;
		return err_errno(e, "%s: cannot link into the cache at %s", path, tmp);
	}
	/* Hash what was linked (the same inode), so the name matches the content. */
	fd = open(tmp, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		err_errno(e, "%s: cannot open", tmp);
		unlink(tmp);
		return -1;
	}
	rc = digest_fd(s, fd, path, d, &n, e);
	if (rc == 0 && fsync(fd) < 0)
		rc = err_errno(e, "%s: fsync failed", path);
	close(fd);
	if (rc < 0) {
		unlink(tmp);
		return -1;
	}
	if (size)
		*size = n;
	rc = store_has(s, d, n, e);
	if (rc != 0) {
		unlink(tmp);
		return rc < 0 ? -1 : 0;
	}
	chmod(tmp, 0444);
	store_object_path(s, d, final, sizeof final);
	{
		char dir[PATH_MAX];

		snprintf(dir, sizeof dir, "%s", final);
		*strrchr(dir, '/') = 0;
		if (mkdir_one(dir, e) < 0) {
			unlink(tmp);
			return -1;
		}
	}
	if (rename(tmp, final) < 0) {
		err_errno(e, "%s: cannot rename into place", final);
		unlink(tmp);
		return -1;
	}
	return 0;
}

int store_put_file(store *s, const char *path, int flags, uint8_t d[32], uint64_t *size, err *e)
{
	store_writer w;
	int fd;

	if (flags & STORE_PUT_LINK) {
		int rc = put_link(s, path, d, size, e);

		if (rc <= 0)
			return rc;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_errno(e, "%s: cannot open", path);
	if (store_writer_open(s, &w, e) < 0) {
		close(fd);
		return -1;
	}
	if (hash_fd(fd, path, NULL, &w, e) < 0) {
		close(fd);
		store_writer_abort(&w);
		return -1;
	}
	close(fd);
	return store_writer_commit(&w, NULL, d, size, e);
}

/* ---- materialise ---- */

static int copy_out(store *s, const char *obj, const uint8_t d[32], const char *dest, err *e)
{
	char *buf = NULL;
	uint8_t got[32];
	char hex[65];
	int64_t off = 0;
	sha256 sha;
	afile f;
	int fd;

	fd = open(obj, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_errno(e, "%s: cannot open", obj);
	if (afile_open(&f, dest, 0, 0, e) < 0) {
		close(fd);
		return -1;
	}
	buf = malloc(IOBUF);
	if (!buf || sha256_init(&sha) < 0) {
		free(buf);
		close(fd);
		afile_abort(&f);
		return err_set(e, "%s: out of memory", dest);
	}
	for (;;) {
		ssize_t r = pread(fd, buf, IOBUF, off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			err_errno(e, "%s: read failed at byte %lld", obj, (long long)off);
			goto fail;
		}
		if (r == 0)
			break;
		sha256_update(&sha, buf, (size_t)r);
		if (afile_write(&f, buf, (size_t)r, e) < 0)
			goto fail;
		off += r;
	}
	sha256_final(&sha, got);
	if (memcmp(got, d, 32) != 0) {
		warnf(s, "%s: object content has digest %s: corrupt, removed", obj, sha256_hex(got, hex));
		unlink(obj);
		err_set(e, "%s: cache object %s was corrupt (removed); build again", dest, obj);
		goto fail;
	}
	sha256_free(&sha);
	free(buf);
	close(fd);
	return afile_commit(&f, NULL, e);
fail:
	sha256_free(&sha);
	free(buf);
	close(fd);
	afile_abort(&f);
	return -1;
}

int store_materialize(store *s, const uint8_t d[32], uint64_t size, const char *dest, int flags,
		      err *e)
{
	char obj[PATH_MAX], tmp[PATH_MAX];
	struct stat so, sd;
	const char *slash;

	store_object_path(s, d, obj, sizeof obj);
	if (stat(obj, &so) < 0) {
		if (errno == ENOENT)
			return err_set(e, "%s: object missing from the cache (wanted for %s)", obj, dest);
		return err_errno(e, "%s: cannot stat", obj);
	}
	if (size != UINT64_MAX && (uint64_t)so.st_size != size) {
		warnf(s, "%s: object is %llu bytes, expected %llu: corrupt, removed", obj,
		      (unsigned long long)so.st_size, (unsigned long long)size);
		unlink(obj);
		return err_set(e, "%s: cache object %s was corrupt (removed); build again", dest, obj);
	}
	if (flags & STORE_MAT_COPY)
		return copy_out(s, obj, d, dest, e);
	if (stat(dest, &sd) == 0 && sd.st_dev == so.st_dev && sd.st_ino == so.st_ino)
		return 0;
	slash = strrchr(dest, '/');
	for (int tries = 0;; tries++) {
		if (slash)
			snprintf(tmp, sizeof tmp, "%.*s/.qbake-tmp.%ld.%d.%08x", (int)(slash - dest), dest,
				 (long)getpid(), tries, (unsigned)rand());
		else
			snprintf(tmp, sizeof tmp, ".qbake-tmp.%ld.%d.%08x", (long)getpid(), tries,
				 (unsigned)rand());
		if (link(obj, tmp) == 0)
			break;
		if (errno == EEXIST && tries < 100)
			continue;
		return copy_out(s, obj, d, dest, e); /* another filesystem, or no links here */
	}
	if (rename(tmp, dest) < 0) {
		err_errno(e, "%s: cannot rename into place", dest);
		unlink(tmp);
		return -1;
	}
	return 0;
}

/* ---- stat cache ---- */

/* One stat cache entry: what the file looked like when its digest was computed. */
typedef struct stat_entry {
	uint64_t dev, ino, size;
	int64_t mtime, ctime; /* ns */
	int64_t recorded;     /* ns, wall clock, taken after the hash */
	uint8_t digest[32];
} stat_entry;

static char *stat_path(const store *s, const struct stat *st, char *buf, size_t n)
{
	snprintf(buf, n, "%s/stat/%" PRIx64 "-%" PRIx64, s->dir, (uint64_t)st->st_dev,
		 (uint64_t)st->st_ino);
	return buf;
}

static int stat_parse(const char *p, size_t n, stat_entry *se)
{
	char hex[65];
	long body = unseal(p, n);
	int used = 0;

	if (body < 0)
		return -1;
	if (sscanf(p, "qbake-stat 1\n%" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNd64 " %" SCNd64
		   " %" SCNd64 " %64s\n%n",
		   &se->dev, &se->ino, &se->size, &se->mtime, &se->ctime, &se->recorded, hex, &used) != 7 ||
	    used != body)
		return -1;
	return sha256_unhex(hex, se->digest);
}

int store_hash_file(store *s, const char *path, uint8_t d[32], uint64_t *size, err *e)
{
	char spath[PATH_MAX], hex[65];
	struct stat st, st2;
	stat_entry se;
	size_t n;
	char *rec;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_errno(e, "%s: cannot open", path);
	if (fstat(fd, &st) < 0) {
		err_errno(e, "%s: cannot stat", path);
		close(fd);
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return err_set(e, "%s: not a regular file", path);
	}
	stat_path(s, &st, spath, sizeof spath);
	rec = slurp(spath, &n, &st2);
	if (rec) {
		int64_t newest = ts_ns(st.st_mtim) > ts_ns(st.st_ctim) ? ts_ns(st.st_mtim) : ts_ns(st.st_ctim);

		if (stat_parse(rec, n, &se) == 0 && se.dev == (uint64_t)st.st_dev &&
		    se.ino == (uint64_t)st.st_ino && se.size == (uint64_t)st.st_size &&
		    se.mtime == ts_ns(st.st_mtim) && se.ctime == ts_ns(st.st_ctim) &&
		    se.recorded - newest >= s->racy_ns) {
			free(rec);
			close(fd);
			memcpy(d, se.digest, 32);
			if (size)
				*size = se.size;
			/* Mark the entry used (for gc), at most daily: this costs no fsync. */
			if (now_ns() - ts_ns(st2.st_mtim) > STAT_TOUCH_NS)
				utimensat(AT_FDCWD, spath, NULL, 0);
			return 0;
		}
		free(rec);
	}
	if (digest_fd(s, fd, path, d, size, e) < 0) {
		close(fd);
		return -1;
	}
	if (fstat(fd, &st2) < 0 || st2.st_size != st.st_size || ts_ns(st2.st_mtim) != ts_ns(st.st_mtim) ||
	    ts_ns(st2.st_ctim) != ts_ns(st.st_ctim)) {
		/* Changed while being read: the digest is of no version in particular; do not keep it. */
		close(fd);
		warnf(s, "%s: changed while it was being hashed", path);
		return 0;
	}
	close(fd);
	{
		sbuf b = { 0 };
		err e2 = { 0 };

		sb_printf(&b, "qbake-stat 1\n%" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRId64 " %" PRId64
			  " %" PRId64 " %s\n",
			  (uint64_t)st.st_dev, (uint64_t)st.st_ino, (uint64_t)st.st_size, ts_ns(st.st_mtim),
			  ts_ns(st.st_ctim), now_ns(), sha256_hex(d, hex));
		sb_seal(&b);
		/* The digest is right either way; a stat cache that cannot be written only costs speed. */
		if (b.oom || put_record(s, spath, b.p, b.n, &e2) < 0)
			warnf(s, "%s: stat cache not updated: %s", spath, b.oom ? "out of memory" : e2.msg);
		free(b.p);
	}
	return 0;
}

/* ---- action cache ---- */

int store_action_add(store_action *a, const char *name, const uint8_t d[32], uint64_t size, err *e)
{
	store_output *o = realloc(a->outs, (a->nouts + 1) * sizeof *o);

	if (!o)
		return err_set(e, "%s: out of memory", name);
	a->outs = o;
	o += a->nouts;
	o->name = strdup(name);
	if (!o->name)
		return err_set(e, "%s: out of memory", name);
	memcpy(o->digest, d, 32);
	o->size = size;
	a->nouts++;
	return 0;
}

void store_action_free(store_action *a)
{
	for (size_t i = 0; i < a->nouts; i++)
		free(a->outs[i].name);
	free(a->outs);
	free(a->figures);
	free(a->log);
	memset(a, 0, sizeof *a);
}

char *store_action_encode(const store_action *a, const uint8_t key[32], size_t *n, err *e)
{
	sbuf b = { 0 };
	char hex[65];

	sb_printf(&b, "qbake-action 1\nkey %s\n", sha256_hex(key, hex));
	for (size_t i = 0; i < a->nouts; i++) {
		const char *name = a->outs[i].name;

		if (!*name || strchr(name, '\n')) {
			free(b.p);
			return err_set(e, "action %s: output name '%s' is empty or has a newline", hex, name),
			       NULL;
		}
		sb_printf(&b, "out %s %" PRIu64 " ", sha256_hex(a->outs[i].digest, hex), a->outs[i].size);
		sb_add(&b, name, strlen(name));
		sb_add(&b, "\n", 1);
	}
	if (a->figures) {
		sb_printf(&b, "figures %zu\n", strlen(a->figures));
		sb_add(&b, a->figures, strlen(a->figures));
		sb_add(&b, "\n", 1);
	}
	if (a->log) {
		sb_printf(&b, "log %zu\n", strlen(a->log));
		sb_add(&b, a->log, strlen(a->log));
		sb_add(&b, "\n", 1);
	}
	sb_seal(&b);
	if (b.oom) {
		free(b.p);
		return err_set(e, "action record: out of memory"), NULL;
	}
	*n = b.n;
	return b.p;
}

/* Reads "<len>\n<bytes>\n" at *p (within end) into a malloc'd string; returns 0 or -1. */
static int take_blob(const char **p, const char *end, char **out)
{
	char *stop;
	unsigned long long len;

	errno = 0;
	len = strtoull(*p, &stop, 10);
	if (errno || stop == *p || stop >= end || *stop != '\n' ||
	    len + 1 > (unsigned long long)(end - stop - 1) || stop[1 + len] != '\n' ||
	    memchr(stop + 1, 0, len))
		return -1;
	free(*out);
	*out = malloc(len + 1);
	if (!*out)
		return -1;
	memcpy(*out, stop + 1, len);
	(*out)[len] = 0;
	*p = stop + 2 + len;
	return 0;
}

int store_action_decode(const char *p, size_t n, const uint8_t key[32], store_action *a, err *e)
{
	const char *end, *q;
	char hex[65], want[65];
	long body = unseal(p, n);

	memset(a, 0, sizeof *a);
	sha256_hex(key, want);
	if (body < 0)
		return err_set(e, "action record %s: checksum wrong or record truncated", want);
	end = p + body;
	snprintf(hex, sizeof hex, "%s", want);
	if ((size_t)body < 84 || memcmp(p, "qbake-action 1\nkey ", 19) != 0 ||
	    memcmp(p + 19, want, 64) != 0 || p[83] != '\n')
		return err_set(e, "action record %s: wrong header or key", want);
	q = p + 84;
	while (q < end) {
		const char *nl = memchr(q, '\n', (size_t)(end - q));

		if (!nl)
			goto bad;
		if (strncmp(q, "out ", 4) == 0) {
			uint8_t d[32];
			char *stop;
			unsigned long long size;

			if (nl - q < 4 + 64 + 3)
				goto bad;
			memcpy(hex, q + 4, 64);
			hex[64] = 0;
			if (sha256_unhex(hex, d) < 0 || q[68] != ' ')
				goto bad;
			errno = 0;
			size = strtoull(q + 69, &stop, 10);
			if (errno || stop == q + 69 || *stop != ' ' || stop + 1 >= nl)
				goto bad;
			{
				size_t len = (size_t)(nl - stop - 1);
				char name[4096];

				if (len >= sizeof name || memchr(stop + 1, 0, len))
					goto bad;
				memcpy(name, stop + 1, len);
				name[len] = 0;
				if (store_action_add(a, name, d, size, e) < 0) {
					store_action_free(a);
					return -1;
				}
			}
			q = nl + 1;
		} else if (strncmp(q, "figures ", 8) == 0) {
			q += 8;
			if (take_blob(&q, end, &a->figures) < 0)
				goto bad;
		} else if (strncmp(q, "log ", 4) == 0) {
			q += 4;
			if (take_blob(&q, end, &a->log) < 0)
				goto bad;
		} else {
			goto bad;
		}
	}
	return 0;
bad:
	store_action_free(a);
	return err_set(e, "action record %s: malformed at byte %ld", want, (long)(q - p));
}

int store_ac_put_raw(store *s, const uint8_t key[32], const char *p, size_t n, err *e)
{
	char path[PATH_MAX];
	store_action a;

	if (store_action_decode(p, n, key, &a, e) < 0)
		return -1;
	store_action_free(&a);
	return put_record(s, entry_path(s, "ac", key, path, sizeof path), p, n, e);
}

int store_ac_put(store *s, const uint8_t key[32], const store_action *a, err *e)
{
	char path[PATH_MAX], hex[65];
	size_t n;
	char *p;
	int rc;

	for (size_t i = 0; i < a->nouts; i++) {
		rc = store_has(s, a->outs[i].digest, a->outs[i].size, e);
		if (rc < 0)
			return -1;
		if (rc == 0)
			return err_set(e, "action %s: output '%s' (%s) is not in the cache",
				       sha256_hex(key, hex), a->outs[i].name,
				       store_object_path(s, a->outs[i].digest, path, sizeof path));
	}
	p = store_action_encode(a, key, &n, e);
	if (!p)
		return -1;
	rc = put_record(s, entry_path(s, "ac", key, path, sizeof path), p, n, e);
	free(p);
	return rc;
}

/* Reads and validates key's record into *p (malloc'd); returns 1, 0 on a miss (a damaged
 * record is removed, with a warning), or -1. */
static int ac_read(store *s, const uint8_t key[32], char **p, size_t *n, err *e)
{
	char path[PATH_MAX];
	store_action a;
	err e2 = { 0 };

	entry_path(s, "ac", key, path, sizeof path);
	*p = slurp(path, n, NULL);
	if (!*p) {
		if (errno == ENOENT)
			return 0;
		return err_errno(e, "%s: cannot read", path);
	}
	if (store_action_decode(*p, *n, key, &a, &e2) < 0) {
		warnf(s, "%s: %s: ignored and removed", path, e2.msg);
		unlink(path);
		free(*p);
		*p = NULL;
		return 0;
	}
	store_action_free(&a);
	return 1;
}

char *store_ac_get_raw(store *s, const uint8_t key[32], size_t *n, err *e)
{
	char *p = NULL;

	ac_read(s, key, &p, n, e);
	return p;
}

int store_ac_get(store *s, const uint8_t key[32], store_action *a, err *e)
{
	char path[PATH_MAX];
	size_t n;
	char *p;
	int rc;

	memset(a, 0, sizeof *a);
	rc = ac_read(s, key, &p, &n, e);
	if (rc <= 0)
		return rc;
	rc = store_action_decode(p, n, key, a, e);
	free(p);
	if (rc < 0)
		return -1;
	for (size_t i = 0; i < a->nouts; i++) {
		rc = store_has(s, a->outs[i].digest, a->outs[i].size, e);
		if (rc <= 0) {
			if (rc == 0)
				warnf(s, "%s: output '%s' is missing from the cache: rebuilding",
				      entry_path(s, "ac", key, path, sizeof path), a->outs[i].name);
			store_action_free(a);
			return rc;
		}
	}
	/* Last use, for gc's oldest-first order; no fsync, losing it costs nothing. */
	utimensat(AT_FDCWD, entry_path(s, "ac", key, path, sizeof path), NULL, 0);
	return 1;
}

int store_lock_key(store *s, const uint8_t key[32], err *e)
{
	char path[PATH_MAX], hex[65];
	int fd;

	snprintf(path, sizeof path, "%s/locks/%s", s->dir, sha256_hex(key, hex));
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return err_errno(e, "%s: cannot create the lock", path);
	while (flock(fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			err_errno(e, "%s: cannot lock", path);
			close(fd);
			return -1;
		}
	}
	return fd;
}

void store_unlock_key(int fd)
{
	if (fd >= 0)
		close(fd);
}

/* ---- refs ---- */

int store_ref_put(store *s, const uint8_t id[32], const uint8_t (*keys)[32], size_t nkeys,
		  const uint8_t (*objs)[32], size_t nobjs, err *e)
{
	char path[PATH_MAX], hex[65];
	sbuf b = { 0 };
	int rc;

	sb_printf(&b, "qbake-ref 1\ntime %" PRId64 "\n", now_ns());
	for (size_t i = 0; i < nkeys; i++)
		sb_printf(&b, "ac %s\n", sha256_hex(keys[i], hex));
	for (size_t i = 0; i < nobjs; i++)
		sb_printf(&b, "obj %s\n", sha256_hex(objs[i], hex));
	sb_seal(&b);
	if (b.oom) {
		free(b.p);
		return err_set(e, "%s: ref record: out of memory", s->dir);
	}
	snprintf(path, sizeof path, "%s/refs/%s", s->dir, sha256_hex(id, hex));
	rc = put_record(s, path, b.p, b.n, e);
	free(b.p);
	return rc;
}

/* ---- gc and verify: an in-memory picture of the whole cache ---- */

/* One object or action record found on disk. */
typedef struct item {
	uint8_t digest[32]; /* object digest, or action key */
	uint64_t size;      /* bytes on disk */
	int64_t used;       /* newest of its mtime and of what refers to it (ns) */
	int dead;           /* removed */
	int pinned;         /* needed by a live ref (recomputed per round) */
	int isobj;          /* an object (else an action record) */
	uint8_t (*outs)[32]; /* actions: output digests, owned */
	uint64_t *outsizes;  /* actions: their sizes, owned */
	size_t nouts;
} item;

typedef struct ref {
	char name[65];
	int64_t time;
	uint8_t (*keys)[32]; /* action keys, owned */
	size_t nkeys;
	uint8_t (*objs)[32]; /* objects, owned */
	size_t nobjs;
	int dead;
} ref;

typedef struct census {
	item *objs;
	size_t nobjs;
	item *acts;
	size_t nacts;
	ref *refs;
	size_t nrefs;
} census;

static int item_cmp(const void *a, const void *b)
{
	return memcmp(((const item *)a)->digest, ((const item *)b)->digest, 32);
}

static item *find_item(item *v, size_t n, const uint8_t d[32])
{
	item key;

	if (!n)
		return NULL;
	memcpy(key.digest, d, 32);
	return bsearch(&key, v, n, sizeof *v, item_cmp);
}

static void census_free(census *c)
{
	for (size_t i = 0; i < c->nacts; i++) {
		free(c->acts[i].outs);
		free(c->acts[i].outsizes);
	}
	for (size_t i = 0; i < c->nrefs; i++) {
		free(c->refs[i].keys);
		free(c->refs[i].objs);
	}
	free(c->objs);
	free(c->acts);
	free(c->refs);
	memset(c, 0, sizeof *c);
}

static int push(void *vp, size_t *n, size_t size, const void *elem)
{
	void **v = vp;
	void *q;

	/* Grows by powers of two: reallocs only when n reaches one. */
	if ((*n & (*n - 1)) == 0) {
		q = realloc(*v, (*n ? *n * 2 : 1) * size);
		if (!q)
			return -1;
		*v = q;
	}
	memcpy((char *)*v + *n * size, elem, size);
	(*n)++;
	return 0;
}

/* Calls fn for every file in <dir>/<sub>/<hh>/ whose name is 64 hex digits starting with hh;
 * removes anything else (crash leftovers cannot be there: temps live in tmp/). */
static int walk(store *s, const char *sub, int (*fn)(store *, const char *, const uint8_t *,
						      const struct stat *, void *),
		void *ctx, err *e)
{
	char path[PATH_MAX], file[PATH_MAX];
	struct dirent *de, *fe;
	DIR *d, *fd;

	snprintf(path, sizeof path, "%s/%s", s->dir, sub);
	d = opendir(path);
	if (!d)
		return err_errno(e, "%s: cannot list", path);
	while ((de = readdir(d))) {
		if (strlen(de->d_name) != 2 || !strchr("0123456789abcdef", de->d_name[0]) ||
		    !strchr("0123456789abcdef", de->d_name[1]))
			continue;
		snprintf(path, sizeof path, "%s/%s/%s", s->dir, sub, de->d_name);
		fd = opendir(path);
		if (!fd)
			continue;
		while ((fe = readdir(fd))) {
			uint8_t dg[32];
			struct stat st;

			if (fe->d_name[0] == '.' &&
			    (!fe->d_name[1] || (fe->d_name[1] == '.' && !fe->d_name[2])))
				continue;
			if (snprintf(file, sizeof file, "%s/%s", path, fe->d_name) >= (int)sizeof file)
				continue;
			if (lstat(file, &st) < 0 || !S_ISREG(st.st_mode))
				continue;
			if (strlen(fe->d_name) != 64 || sha256_unhex(fe->d_name, dg) < 0 ||
			    memcmp(fe->d_name, de->d_name, 2) != 0) {
				warnf(s, "%s: stray file in the cache, removed", file);
				unlink(file);
				continue;
			}
			if (fn(s, file, dg, &st, ctx) < 0) {
				closedir(fd);
				closedir(d);
				return -1;
			}
		}
		closedir(fd);
	}
	closedir(d);
	return 0;
}

/* What the census callbacks share. */
typedef struct census_ctx {
	census *c;
	store_report *r;
	int verify; /* rehash objects */
	err *e;
} census_ctx;

static int census_obj(store *s, const char *path, const uint8_t *d, const struct stat *st, void *vp)
{
	census_ctx *cx = vp;
	item it = { 0 };

	if (cx->verify) {
		uint8_t got[32];
		char hex[65];
		err e2 = { 0 };
		int fd = open(path, O_RDONLY | O_CLOEXEC);

		if (fd < 0 || digest_fd(s, fd, path, got, NULL, &e2) < 0) {
			if (fd >= 0)
				close(fd);
			return err_errno(cx->e, "%s: cannot read", path);
		}
		close(fd);
		if (memcmp(got, d, 32) != 0) {
			warnf(s, "%s: content has digest %s: corrupt, removed", path, sha256_hex(got, hex));
			unlink(path);
			cx->r->corrupt++;
			cx->r->removed_objects++;
			cx->r->removed_bytes += (uint64_t)st->st_size;
			return 0;
		}
	}
	memcpy(it.digest, d, 32);
	it.isobj = 1;
	it.size = (uint64_t)st->st_size;
	it.used = ts_ns(st->st_mtim);
	cx->r->objects++;
	cx->r->object_bytes += it.size;
	if (push(&cx->c->objs, &cx->c->nobjs, sizeof it, &it) < 0)
		return err_set(cx->e, "%s: out of memory", s->dir);
	return 0;
}

static int census_act(store *s, const char *path, const uint8_t *key, const struct stat *st, void *vp)
{
	census_ctx *cx = vp;
	store_action a;
	err e2 = { 0 };
	item it = { 0 };
	size_t n;
	char *p = slurp(path, &n, NULL);

	if (!p)
		return err_errno(cx->e, "%s: cannot read", path);
	if (store_action_decode(p, n, key, &a, &e2) < 0) {
		warnf(s, "%s: %s: removed", path, e2.msg);
		free(p);
		unlink(path);
		cx->r->corrupt++;
		cx->r->removed_actions++;
		return 0;
	}
	free(p);
	cx->r->actions++;
	memcpy(it.digest, key, 32);
	it.size = (uint64_t)st->st_size;
	it.used = ts_ns(st->st_mtim);
	it.nouts = a.nouts;
	it.outs = malloc((a.nouts + 1) * 32);
	it.outsizes = malloc((a.nouts + 1) * sizeof *it.outsizes);
	if (!it.outs || !it.outsizes) {
		free(it.outs);
		free(it.outsizes);
		store_action_free(&a);
		return err_set(cx->e, "%s: out of memory", s->dir);
	}
	for (size_t i = 0; i < a.nouts; i++) {
		memcpy(it.outs[i], a.outs[i].digest, 32);
		it.outsizes[i] = a.outs[i].size;
	}
	store_action_free(&a);
	if (push(&cx->c->acts, &cx->c->nacts, sizeof it, &it) < 0) {
		free(it.outs);
		free(it.outsizes);
		return err_set(cx->e, "%s: out of memory", s->dir);
	}
	return 0;
}

static int parse_ref(const char *p, size_t n, ref *r)
{
	long body = unseal(p, n);
	const char *q, *end;
	int used = 0;

	if (body < 0 || sscanf(p, "qbake-ref 1\ntime %" SCNd64 "\n%n", &r->time, &used) != 1 || !used)
		return -1;
	end = p + body;
	for (q = p + used; q < end;) {
		const char *nl = memchr(q, '\n', (size_t)(end - q));
		uint8_t d[32];
		char hex[65];
		int isobj = strncmp(q, "obj ", 4) == 0;

		if (!nl || (!isobj && strncmp(q, "ac ", 3) != 0) || nl - q != (isobj ? 68 : 67))
			return -1;
		memcpy(hex, q + (isobj ? 4 : 3), 64);
		hex[64] = 0;
		if (sha256_unhex(hex, d) < 0)
			return -1;
		if (isobj ? push(&r->objs, &r->nobjs, 32, d) : push(&r->keys, &r->nkeys, 32, d))
			return -1;
		q = nl + 1;
	}
	return 0;
}

static int census_refs(store *s, census *c, store_report *rep, err *e)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *d;

	snprintf(path, sizeof path, "%s/refs", s->dir);
	d = opendir(path);
	if (!d)
		return err_errno(e, "%s: cannot list", path);
	while ((de = readdir(d))) {
		ref r = { 0 };
		uint8_t id[32];
		size_t n;
		char *p;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "%s/refs/%s", s->dir, de->d_name);
		p = slurp(path, &n, NULL);
		if (!p)
			continue;
		if (sha256_unhex(de->d_name, id) < 0 || parse_ref(p, n, &r) < 0) {
			warnf(s, "%s: damaged ref record, removed", path);
			unlink(path);
			rep->corrupt++;
			rep->removed_refs++;
			free(r.keys);
			free(r.objs);
			free(p);
			continue;
		}
		free(p);
		memcpy(r.name, de->d_name, 65); /* 64 hex digits and the NUL, checked above */
		if (push(&c->refs, &c->nrefs, sizeof r, &r) < 0) {
			closedir(d);
			free(r.keys);
			free(r.objs);
			return err_set(e, "%s: out of memory", s->dir);
		}
	}
	closedir(d);
	return 0;
}

/* Drops stat entries that are damaged, or (gc) unused for STAT_EXPIRE_NS. */
static void sweep_stat(store *s, int expire, store_report *r)
{
	char path[PATH_MAX];
	struct dirent *de;
	int64_t now = now_ns();
	DIR *d;

	snprintf(path, sizeof path, "%s/stat", s->dir);
	d = opendir(path);
	if (!d)
		return;
	while ((de = readdir(d))) {
		struct stat st;
		stat_entry se;
		size_t n;
		char *p;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "%s/stat/%s", s->dir, de->d_name);
		p = slurp(path, &n, &st);
		if (!p)
			continue;
		if (stat_parse(p, n, &se) < 0) {
			warnf(s, "%s: damaged stat cache entry, removed", path);
			unlink(path);
			r->corrupt++;
			r->removed_stat++;
		} else if (expire && now - ts_ns(st.st_mtim) > STAT_EXPIRE_NS) {
			unlink(path);
			r->removed_stat++;
		}
		free(p);
	}
	closedir(d);
}

/* Loads the whole cache (rehashing objects when verifying) and drops records that need a
 * missing object. */
static int take_census(store *s, census *c, int verify, store_report *r, err *e)
{
	census_ctx cx = { c, r, verify, e };
	char path[PATH_MAX];

	memset(c, 0, sizeof *c);
	r->removed_tmp += clear_dir(s, "tmp");
	clear_dir(s, "locks");
	if (walk(s, "objects", census_obj, &cx, e) < 0 || walk(s, "ac", census_act, &cx, e) < 0 ||
	    census_refs(s, c, r, e) < 0)
		return -1;
	sweep_stat(s, !verify, r);
	if (c->nobjs)
		qsort(c->objs, c->nobjs, sizeof *c->objs, item_cmp);
	if (c->nacts)
		qsort(c->acts, c->nacts, sizeof *c->acts, item_cmp);
	for (size_t i = 0; i < c->nacts; i++) {
		item *a = &c->acts[i];

		for (size_t j = 0; j < a->nouts; j++) {
			item *o = find_item(c->objs, c->nobjs, a->outs[j]);

			if (!o || o->size != a->outsizes[j]) {
				if (verify)
					warnf(s, "%s: needs object %s, which is %s: removed",
					      entry_path(s, "ac", a->digest, path, sizeof path),
					      store_object_path(s, a->outs[j], path, sizeof path),
					      o ? "the wrong size" : "missing");
				unlink(entry_path(s, "ac", a->digest, path, sizeof path));
				a->dead = 1;
				r->removed_actions++;
				break;
			}
			if (o->used < a->used)
				o->used = a->used;
		}
	}
	return 0;
}

/* Marks what the live refs need; returns how many refs are live. */
static size_t pin(census *c)
{
	size_t live = 0;

	for (size_t i = 0; i < c->nobjs; i++)
		c->objs[i].pinned = 0;
	for (size_t i = 0; i < c->nacts; i++)
		c->acts[i].pinned = 0;
	for (size_t i = 0; i < c->nrefs; i++) {
		ref *r = &c->refs[i];

		if (r->dead)
			continue;
		live++;
		for (size_t j = 0; j < r->nobjs; j++) {
			item *o = find_item(c->objs, c->nobjs, r->objs[j]);

			if (o)
				o->pinned = 1;
		}
		for (size_t j = 0; j < r->nkeys; j++) {
			item *a = find_item(c->acts, c->nacts, r->keys[j]);

			if (!a || a->dead)
				continue;
			a->pinned = 1;
			for (size_t k = 0; k < a->nouts; k++) {
				item *o = find_item(c->objs, c->nobjs, a->outs[k]);

				if (o)
					o->pinned = 1;
			}
		}
	}
	return live;
}

static int used_cmp(const void *a, const void *b)
{
	const item *x = *(item *const *)a, *y = *(item *const *)b;

	return x->used < y->used ? -1 : x->used > y->used;
}

static uint64_t live_bytes(const census *c)
{
	uint64_t t = 0;

	for (size_t i = 0; i < c->nobjs; i++)
		if (!c->objs[i].dead)
			t += c->objs[i].size;
	for (size_t i = 0; i < c->nacts; i++)
		if (!c->acts[i].dead)
			t += c->acts[i].size;
	return t;
}

/* Removes one object or record; an object takes the records that need it along. */
static void evict(store *s, census *c, item *it, int isobj, store_report *r)
{
	char path[PATH_MAX];

	it->dead = 1;
	if (!isobj) {
		unlink(entry_path(s, "ac", it->digest, path, sizeof path));
		r->removed_actions++;
		return;
	}
	unlink(store_object_path(s, it->digest, path, sizeof path));
	r->removed_objects++;
	r->removed_bytes += it->size;
	for (size_t i = 0; i < c->nacts; i++) {
		item *a = &c->acts[i];

		if (a->dead)
			continue;
		for (size_t j = 0; j < a->nouts; j++)
			if (memcmp(a->outs[j], it->digest, 32) == 0) {
				evict(s, c, a, 0, r);
				break;
			}
	}
}

/* Evicts unpinned items, least recently used first, until under max; returns -1 on OOM. */
static int evict_unpinned(store *s, census *c, uint64_t max, store_report *r)
{
	item **v = malloc((c->nobjs + c->nacts + 1) * sizeof *v);
	size_t n = 0;
	uint64_t total = live_bytes(c);

	if (!v)
		return -1;
	for (size_t i = 0; i < c->nobjs; i++)
		if (!c->objs[i].dead && !c->objs[i].pinned)
			v[n++] = &c->objs[i];
	for (size_t i = 0; i < c->nacts; i++)
		if (!c->acts[i].dead && !c->acts[i].pinned)
			v[n++] = &c->acts[i];
	if (n)
		qsort(v, n, sizeof *v, used_cmp);
	for (size_t i = 0; i < n && (max == STORE_GC_UNREFERENCED || total > max); i++) {
		if (v[i]->dead)
			continue;
		evict(s, c, v[i], v[i]->isobj, r);
		total = live_bytes(c);
	}
	free(v);
	return 0;
}

int store_gc(store *s, uint64_t max_size, store_report *r, err *e)
{
	char path[PATH_MAX];
	census c;
	int rc = -1;

	memset(r, 0, sizeof *r);
	if (lock_exclusive(s, e) < 0)
		return -1;
	if (take_census(s, &c, 0, r, e) < 0)
		goto out;
	/* A record or object is as recent as the newest build that refers to it. */
	for (size_t i = 0; i < c.nrefs; i++) {
		ref *f = &c.refs[i];

		for (size_t j = 0; j < f->nobjs; j++) {
			item *o = find_item(c.objs, c.nobjs, f->objs[j]);

			if (o && o->used < f->time)
				o->used = f->time;
		}
		for (size_t j = 0; j < f->nkeys; j++) {
			item *a = find_item(c.acts, c.nacts, f->keys[j]);

			if (a && a->used < f->time)
				a->used = f->time;
		}
	}
	for (;;) {
		size_t live = pin(&c), oldest = SIZE_MAX;

		if (evict_unpinned(s, &c, max_size, r) < 0) {
			err_set(e, "%s: out of memory", s->dir);
			goto out;
		}
		if (max_size == STORE_GC_UNREFERENCED || live_bytes(&c) <= max_size || live == 0)
			break;
		for (size_t i = 0; i < c.nrefs; i++)
			if (!c.refs[i].dead && (oldest == SIZE_MAX || c.refs[i].time < c.refs[oldest].time))
				oldest = i;
		c.refs[oldest].dead = 1;
		snprintf(path, sizeof path, "%s/refs/%s", s->dir, c.refs[oldest].name);
		unlink(path);
		r->removed_refs++;
	}
	r->kept_bytes = live_bytes(&c);
	rc = 0;
out:
	census_free(&c);
	lock_shared(s);
	return rc;
}

int store_verify(store *s, store_report *r, err *e)
{
	census c;
	int rc;

	memset(r, 0, sizeof *r);
	if (lock_exclusive(s, e) < 0)
		return -1;
	rc = take_census(s, &c, 1, r, e);
	if (rc == 0) {
		r->kept_bytes = live_bytes(&c);
		rc = (int)(r->corrupt > INT_MAX ? INT_MAX : r->corrupt);
	}
	census_free(&c);
	lock_shared(s);
	return rc;
}
