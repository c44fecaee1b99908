/* afile.c - atomic output files */
#include "afile.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void afile_free(afile *f)
{
	if (f->hashing)
		sha256_free(&f->sha);
	free(f->path);
	free(f->tmp);
	f->path = f->tmp = NULL;
	f->fd = -1;
	f->hashing = 0;
}

int afile_open(afile *f, const char *path, int hash, int private_mode, err *e)
{
	size_t len = strlen(path);

	memset(f, 0, sizeof *f);
	f->fd = -1;
	f->path = strdup(path);
	f->tmp = malloc(len + 32);
	if (!f->path || !f->tmp) {
		afile_free(f);
		return err_set(e, "%s: out of memory", path);
	}
	/* The temp file lives in the target's folder so rename() is atomic. */
	{
		const char *slash = strrchr(path, '/');
		int dirlen = slash ? (int)(slash - path) : 1;
		const char *dir = slash ? path : ".";

		if (slash == path)
			dirlen = 1; /* "/name": the root folder */
		snprintf(f->tmp, len + 32, "%.*s/.qbake-tmp.XXXXXX", dirlen, dir);
	}
	f->fd = mkostemp(f->tmp, O_CLOEXEC);
	if (f->fd < 0) {
		err_errno(e, "%s: cannot create a temporary file beside it", path);
		afile_free(f);
		return -1;
	}
	fchmod(f->fd, private_mode ? 0600 : 0644);
	if (hash) {
		if (sha256_init(&f->sha) < 0) {
			afile_abort(f);
			return err_set(e, "%s: out of memory", path);
		}
		f->hashing = 1;
	}
	return 0;
}

int afile_write(afile *f, const void *p, size_t n, err *e)
{
	const char *c = p;

	if (f->hashing)
		sha256_update(&f->sha, p, n);
	while (n) {
		ssize_t w = write(f->fd, c, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return err_errno(e, "%s: write failed at byte %llu", f->path,
					 (unsigned long long)f->size);
		}
		c += w;
		n -= (size_t)w;
		f->size += (uint64_t)w;
	}
	return 0;
}

int afile_zeros(afile *f, size_t n, err *e)
{
	static const char zero[4096];

	while (n) {
		size_t k = n < sizeof zero ? n : sizeof zero;

		if (afile_write(f, zero, k, e) < 0)
			return -1;
		n -= k;
	}
	return 0;
}

static void sync_dir(const char *path)
{
	char *copy = strdup(path);
	int fd;

	if (!copy)
		return;
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	free(copy);
}

int afile_commit(afile *f, uint8_t digest[32], err *e)
{
	if (fsync(f->fd) < 0) {
		err_errno(e, "%s: fsync failed", f->path);
		afile_abort(f);
		return -1;
	}
	if (close(f->fd) < 0) {
		f->fd = -1;
		err_errno(e, "%s: close failed", f->path);
		afile_abort(f);
		return -1;
	}
	f->fd = -1;
	if (rename(f->tmp, f->path) < 0) {
		err_errno(e, "%s: cannot rename the finished file into place", f->path);
		afile_abort(f);
		return -1;
	}
	sync_dir(f->path);
	if (f->hashing && digest)
		sha256_final(&f->sha, digest);
	afile_free(f);
	return 0;
}

void afile_abort(afile *f)
{
	if (f->fd >= 0)
		close(f->fd);
	if (f->tmp)
		unlink(f->tmp);
	afile_free(f);
}

int afile_put(const char *path, const void *p, size_t n, err *e)
{
	afile f;

	if (afile_open(&f, path, 0, 0, e) < 0)
		return -1;
	if (afile_write(&f, p, n, e) < 0) {
		afile_abort(&f);
		return -1;
	}
	return afile_commit(&f, NULL, e);
}
