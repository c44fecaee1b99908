/* test_store.c - the cache: objects, action records, stat cache, materialise, errors */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cachecmd.h"
#include "check.h"
#include "hashkey.h"
#include "store.h"

static char cache[512];

static void quiet(void *ctx, const char *msg)
{
	(void)ctx;
	(void)msg;
}

static int nfiles(const char *sub)
{
	char cmd[1024];
	FILE *p;
	int n = -1;

	snprintf(cmd, sizeof cmd, "find '%s/%s' -type f | wc -l", cache, sub);
	p = popen(cmd, "r");
	if (p) {
		if (fscanf(p, "%d", &n) != 1)
			n = -1;
		pclose(p);
	}
	return n;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "wb");

	if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
		perror(path);
		exit(1);
	}
}

static void flip_byte(const char *path, long off)
{
	unsigned char c;
	int fd;

	chmod(path, 0644); /* objects are read-only; root ignores that, others do not */
	fd = open(path, O_RDWR);
	if (fd < 0 || pread(fd, &c, 1, off) != 1) {
		perror(path);
		exit(1);
	}
	c ^= 0x20;
	if (pwrite(fd, &c, 1, off) != 1)
		exit(1);
	close(fd);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static void test_objects(store *s)
{
	uint8_t d[32], d2[32], want[32];
	char path[1024], buf[64];
	store_writer w;
	uint64_t size = 0;
	err e = { 0 };
	int fd;

	/* Round trip: the name is the SHA-256 of the bytes. */
	sha256_buf("hello, cache", 12, want);
	CHECK(store_put_buf(s, "hello, cache", 12, d, &e) == 0, "%s", e.msg);
	CHECK(memcmp(d, want, 32) == 0, "object named by its digest");
	CHECK(store_has(s, d, 12, &e) == 1, "present");
	fd = store_open_object(s, d, 12, &e);
	CHECK(fd >= 0, "%s", e.msg);
	if (fd >= 0) {
		CHECK(read(fd, buf, sizeof buf) == 12 && memcmp(buf, "hello, cache", 12) == 0, "content");
		close(fd);
	}
	store_object_path(s, d, path, sizeof path);
	{
		char hex[65];
		struct stat st;

		sha256_hex(d, hex);
		CHECK(strstr(path, "/objects/") && strstr(path, hex), "path %s", path);
		CHECK(stat(path, &st) == 0 && (st.st_mode & 0222) == 0, "objects are read-only");
	}

	/* Dedup: the same bytes by another route are the same single object. */
	CHECK(store_writer_open(s, &w, &e) == 0, "%s", e.msg);
	CHECK(store_writer_write(&w, "hello, ", 7, &e) == 0, "%s", e.msg);
	CHECK(store_writer_write(&w, "cache", 5, &e) == 0, "%s", e.msg);
	CHECK(store_writer_commit(&w, want, d2, &size, &e) == 0, "%s", e.msg);
	CHECK(memcmp(d2, want, 32) == 0 && size == 12, "streamed digest and size");
	snprintf(path, sizeof path, "%s/in.txt", check_tmpdir());
	write_file(path, "hello, cache");
	CHECK(store_put_file(s, path, 0, d2, &size, &e) == 0, "%s", e.msg);
	CHECK(memcmp(d2, want, 32) == 0 && size == 12, "file digest");
	CHECK(nfiles("objects") == 1, "one object after three adds of the same bytes: %d", nfiles("objects"));
	CHECK(nfiles("tmp") == 0, "no temp left: %d", nfiles("tmp"));

	/* A download whose bytes do not match the expected digest never enters the store. */
	CHECK(store_writer_open(s, &w, &e) == 0, "%s", e.msg);
	CHECK(store_writer_write(&w, "evil", 4, &e) == 0, "%s", e.msg);
	CHECK(store_writer_commit(&w, want, d2, NULL, &e) < 0, "wrong bytes accepted");
	CHECK(strstr(e.msg, "refused") != NULL, "message: %s", e.msg);
	err_clear(&e);
	sha256_buf("evil", 4, d2);
	CHECK(store_has(s, d2, UINT64_MAX, &e) == 0, "refused object stored");
	CHECK(nfiles("objects") == 1 && nfiles("tmp") == 0, "nothing left by the refusal");

	/* Wrong size on read: corrupt, removed, a miss. */
	CHECK(store_put_buf(s, "size check", 10, d2, &e) == 0, "%s", e.msg);
	CHECK(store_has(s, d2, 11, &e) == 0, "wrong size read as present");
	CHECK(store_has(s, d2, UINT64_MAX, &e) == 0, "wrong-size object not removed");

	/* Linking a file in: the object is the same inode, and nothing is copied. */
	{
		struct stat a, b;

		snprintf(path, sizeof path, "%s/linked.bin", check_tmpdir());
		write_file(path, "an output file produced by an action");
		CHECK(store_put_file(s, path, STORE_PUT_LINK, d2, &size, &e) == 0, "%s", e.msg);
		{
			char obj[1024];

			store_object_path(s, d2, obj, sizeof obj);
			CHECK(stat(path, &a) == 0 && stat(obj, &b) == 0 && a.st_ino == b.st_ino,
			      "linked, same inode");
		}
		sha256_buf("an output file produced by an action", 36, want);
		CHECK(memcmp(d2, want, 32) == 0 && size == 36, "linked digest");
	}
}

static void test_materialize(store *s)
{
	const char *dir = check_tmpdir();
	char obj[1024], dest[1024];
	struct stat so, sd;
	uint8_t d[32];
	err e = { 0 };
	char *text;

	CHECK(store_put_buf(s, "release file", 12, d, &e) == 0, "%s", e.msg);
	store_object_path(s, d, obj, sizeof obj);
	stat(obj, &so);

	snprintf(dest, sizeof dest, "%s/rel-link.gguf", dir);
	CHECK(store_materialize(s, d, 12, dest, 0, &e) == 0, "%s", e.msg);
	CHECK(stat(dest, &sd) == 0 && sd.st_ino == so.st_ino, "hardlinked (same inode)");
	CHECK(store_materialize(s, d, 12, dest, 0, &e) == 0, "again: %s", e.msg);

	snprintf(dest, sizeof dest, "%s/rel-copy.gguf", dir);
	write_file(dest, "old content that must be replaced atomically");
	CHECK(store_materialize(s, d, 12, dest, STORE_MAT_COPY, &e) == 0, "%s", e.msg);
	CHECK(stat(dest, &sd) == 0 && sd.st_ino != so.st_ino && sd.st_size == 12, "copied");
	text = check_slurp(dest, NULL);
	CHECK(text && strcmp(text, "release file") == 0, "copy content");
	free(text);

	/* Another filesystem (tmpfs): link fails with EXDEV, the copy fallback takes over. */
	{
		char shm[256];

		snprintf(shm, sizeof shm, "/dev/shm/qbake-test-%ld", (long)getpid());
		if (mkdir(shm, 0700) == 0) {
			snprintf(dest, sizeof dest, "%s/rel.gguf", shm);
			CHECK(store_materialize(s, d, 12, dest, 0, &e) == 0, "%s", e.msg);
			CHECK(stat(dest, &sd) == 0 && sd.st_size == 12 &&
			      (sd.st_dev != so.st_dev || sd.st_ino != so.st_ino), "cross-fs copy");
			check_system("rm -rf '%s'", shm);
		} else {
			printf("note: /dev/shm not usable, cross-filesystem fallback not exercised\n");
		}
	}

	/* A corrupt object is never copied out: error, no destination file. */
	flip_byte(obj, 3);
	snprintf(dest, sizeof dest, "%s/rel-bad.gguf", dir);
	CHECK(store_materialize(s, d, 12, dest, STORE_MAT_COPY, &e) < 0, "corrupt object copied");
	CHECK(strstr(e.msg, "corrupt") != NULL, "message: %s", e.msg);
	CHECK(stat(dest, &sd) < 0, "partial destination left");
	CHECK(stat(obj, &sd) < 0, "corrupt object kept");
	err_clear(&e);
	CHECK(store_materialize(s, d, 12, dest, 0, &e) < 0 && strstr(e.msg, "missing"), "missing: %s", e.msg);
	CHECK(check_system("test -z \"$(ls -A '%s' | grep qbake-tmp)\"", dir) == 0, "temp beside dest");
}

static void test_actions(store *s)
{
	uint8_t key[32], key2[32], d1[32], d2[32];
	store_action a = { 0 }, b;
	char path[1024], hex[65];
	err e = { 0 };
	uint64_t warn0;

	sha256_buf("node key 1", 10, key);
	sha256_buf("node key 2", 10, key2);
	CHECK(store_put_buf(s, "output one", 10, d1, &e) == 0, "%s", e.msg);
	CHECK(store_put_buf(s, "output two!", 11, d2, &e) == 0, "%s", e.msg);
	CHECK(store_action_add(&a, "model-Q4_K_M.gguf", d1, 10, &e) == 0, "%s", e.msg);
	CHECK(store_action_add(&a, "name with spaces.txt", d2, 11, &e) == 0, "%s", e.msg);
	a.figures = strdup("{\"ppl\": 12.5,\n \"kld\": 0.01}");
	a.log = strdup("line 1\nline 2\n");
	CHECK(store_ac_get(s, key, &b, &e) == 0, "miss before put");
	CHECK(store_ac_put(s, key, &a, &e) == 0, "%s", e.msg);
	CHECK(store_ac_get(s, key, &b, &e) == 1, "hit: %s", e.msg);
	CHECK(b.nouts == 2 && strcmp(b.outs[0].name, "model-Q4_K_M.gguf") == 0 &&
	      strcmp(b.outs[1].name, "name with spaces.txt") == 0 && b.outs[1].size == 11 &&
	      memcmp(b.outs[0].digest, d1, 32) == 0 && memcmp(b.outs[1].digest, d2, 32) == 0,
	      "outputs round trip");
	CHECK(b.figures && strcmp(b.figures, a.figures) == 0, "figures");
	CHECK(b.log && strcmp(b.log, a.log) == 0, "log");
	store_action_free(&b);

	/* A record for another key is refused (the key is inside the record). */
	{
		size_t n;
		char *raw = store_ac_get_raw(s, key, &n, &e);

		CHECK(raw != NULL, "raw");
		CHECK(store_ac_put_raw(s, key2, raw, n, &e) < 0, "record under the wrong key accepted");
		err_clear(&e);
		/* Every truncation of a valid record is refused, never a crash. */
		for (size_t k = 0; raw && k < n; k++) {
			char *cut = malloc(k + 1);

			memcpy(cut, raw, k);
			cut[k] = 0;
			CHECK(store_action_decode(cut, k, key, &b, &e) < 0, "truncated to %zu accepted", k);
			err_clear(&e);
			free(cut);
		}
		free(raw);
	}

	/* A flipped byte in the record: a miss with a warning, the record removed. */
	snprintf(path, sizeof path, "%s/ac/%.2s/%s", cache, sha256_hex(key, hex), hex);
	flip_byte(path, 40);
	warn0 = s->nwarnings;
	CHECK(store_ac_get(s, key, &b, &e) == 0, "corrupt record read as a hit");
	CHECK(!e.set, "a corrupt record is a miss, not an error: %s", e.msg);
	CHECK(s->nwarnings == warn0 + 1, "one warning");
	CHECK(access(path, F_OK) < 0, "corrupt record removed");

	/* Garbage: a miss. */
	CHECK(store_ac_put(s, key, &a, &e) == 0, "%s", e.msg);
	write_file(path, "not a record at all");
	CHECK(store_ac_get(s, key, &b, &e) == 0 && !e.set, "garbage record");

	/* An output gone from the store: a miss. */
	CHECK(store_ac_put(s, key, &a, &e) == 0, "%s", e.msg);
	store_object_path(s, d2, path, sizeof path);
	unlink(path);
	CHECK(store_ac_get(s, key, &b, &e) == 0 && !e.set, "record with a missing object is a hit");
	/* And one cannot record an action whose output is not stored. */
	CHECK(store_ac_put(s, key, &a, &e) < 0 && strstr(e.msg, "not in the cache"), "%s", e.msg);
	err_clear(&e);

	/* An output name with a newline would break the format: refused. */
	store_action_free(&a);
	CHECK(store_action_add(&a, "bad\nname", d1, 10, &e) == 0, "%s", e.msg);
	CHECK(store_ac_put(s, key, &a, &e) < 0, "newline in a name accepted");
	err_clear(&e);
	store_action_free(&a);
}

static void test_stat_cache(store *s)
{
	uint8_t d[32], d2[32], want[32];
	char path[1024];
	struct timespec old[2];
	struct stat st;
	err e = { 0 };
	uint64_t n0, size = 0;

	snprintf(path, sizeof path, "%s/input.txt", check_tmpdir());
	write_file(path, "calibration text, version A");
	sha256_buf("calibration text, version A", 27, want);
	s->racy_ns = 300000000LL; /* 300 ms instead of 2 s, to keep the test short */
	n0 = s->nhashed;

	/* Just written: too recent to trust, so it is hashed every time... */
	CHECK(store_hash_file(s, path, d, &size, &e) == 0, "%s", e.msg);
	CHECK(memcmp(d, want, 32) == 0 && size == 27, "digest");
	CHECK(store_hash_file(s, path, d, NULL, &e) == 0, "%s", e.msg);
	CHECK(s->nhashed == n0 + 2, "racy entry trusted: %llu hashes", (unsigned long long)(s->nhashed - n0));
	/* ...until an entry is recorded long enough after the file's last change. */
	sleep_ms(400);
	CHECK(store_hash_file(s, path, d, NULL, &e) == 0, "%s", e.msg);
	CHECK(s->nhashed == n0 + 3, "rehash after the window");
	CHECK(store_hash_file(s, path, d, &size, &e) == 0, "%s", e.msg);
	CHECK(store_hash_file(s, path, d2, NULL, &e) == 0, "%s", e.msg);
	CHECK(s->nhashed == n0 + 3, "unchanged file rehashed: %llu", (unsigned long long)(s->nhashed - n0));
	CHECK(memcmp(d, want, 32) == 0 && memcmp(d2, want, 32) == 0 && size == 27, "cached digest");

	/* Another store object on the same cache (another process) reads the same entry. */
	{
		store s2;

		CHECK(store_open(&s2, cache, &e) == 0, "%s", e.msg);
		s2.racy_ns = s->racy_ns;
		CHECK(store_hash_file(&s2, path, d2, NULL, &e) == 0 && s2.nhashed == 0 &&
		      memcmp(d2, want, 32) == 0, "persisted stat cache");
		store_close(&s2);
	}

	/* Touched, same content: rehashed, same digest. */
	CHECK(utimensat(AT_FDCWD, path, NULL, 0) == 0, "touch");
	CHECK(store_hash_file(s, path, d, NULL, &e) == 0, "%s", e.msg);
	CHECK(s->nhashed == n0 + 4 && memcmp(d, want, 32) == 0, "touched file");

	/* Changed content, same size, mtime forced back: the ctime gives it away. */
	sleep_ms(400);
	CHECK(store_hash_file(s, path, d, NULL, &e) == 0, "%s", e.msg);
	CHECK(store_hash_file(s, path, d, NULL, &e) == 0 && s->nhashed == n0 + 5, "settled");
	stat(path, &st);
	old[0] = st.st_atim;
	old[1] = st.st_mtim;
	write_file(path, "calibration text, version B");
	CHECK(utimensat(AT_FDCWD, path, old, 0) == 0, "utimensat");
	stat(path, &st);
	CHECK(st.st_mtim.tv_sec == old[1].tv_sec && st.st_mtim.tv_nsec == old[1].tv_nsec &&
	      st.st_size == 27, "same size and mtime");
	CHECK(store_hash_file(s, path, d, NULL, &e) == 0, "%s", e.msg);
	sha256_buf("calibration text, version B", 27, want);
	CHECK(memcmp(d, want, 32) == 0, "content change with the same size and mtime missed");

	/* A damaged stat entry is ignored (rehash), never trusted. */
	CHECK(check_system("for f in '%s'/stat/*; do chmod u+w \"$f\"; printf garbage > \"$f\"; done",
			   cache) == 0, "damage stat entries");
	n0 = s->nhashed;
	CHECK(store_hash_file(s, path, d, NULL, &e) == 0 && s->nhashed == n0 + 1 &&
	      memcmp(d, want, 32) == 0, "damaged stat entry");

	CHECK(store_hash_file(s, "/nonexistent/input", d, NULL, &e) < 0 &&
	      strstr(e.msg, "/nonexistent/input"), "missing input: %s", e.msg);
	err_clear(&e);
	s->racy_ns = 2000000000LL;
}

static void test_verify(store *s)
{
	uint8_t d[32], key[32];
	char path[1024];
	store_action a = { 0 };
	store_report r;
	err e = { 0 };

	CHECK(store_put_buf(s, "verify me, I am fine", 20, d, &e) == 0, "%s", e.msg);
	CHECK(store_verify(s, &r, &e) == 0, "clean cache reported damaged: %s", e.msg);
	CHECK(store_put_buf(s, "a byte of me will flip", 22, d, &e) == 0, "%s", e.msg);
	sha256_buf("verify key", 10, key);
	store_action_add(&a, "x", d, 22, &e);
	CHECK(store_ac_put(s, key, &a, &e) == 0, "%s", e.msg);
	store_action_free(&a);
	store_object_path(s, d, path, sizeof path);
	flip_byte(path, 7);
	CHECK(store_verify(s, &r, &e) == 1, "one damaged object: %llu", (unsigned long long)r.corrupt);
	CHECK(r.removed_objects == 1 && r.removed_actions == 1, "object and its record removed");
	CHECK(access(path, F_OK) < 0, "corrupt object kept");
	CHECK(store_ac_get(s, key, &a, &e) == 0, "record of a corrupt object still a hit");
	CHECK(store_verify(s, &r, &e) == 0, "second verify clean");
}

/* Read-only cache folder: as root, drop to nobody in a child to make permissions bite. */
static void test_readonly(void)
{
	char ro[512], sub[600];
	int st;
	pid_t pid;

	snprintf(ro, sizeof ro, "%s/ro", check_tmpdir());
	mkdir(ro, 0755);
	chmod(check_tmpdir(), 0755);
	chmod(ro, 0555);
	snprintf(sub, sizeof sub, "%s/cache", ro);
	pid = fork();
	if (pid == 0) {
		store s;
		err e = { 0 };

		if (geteuid() == 0 && setuid(65534) < 0)
			_exit(3);
		if (store_open(&s, sub, &e) == 0)
			_exit(1);
		if (!strstr(e.msg, sub) || !strstr(e.msg, "ermission denied")) {
			fprintf(stderr, "message: %s\n", e.msg);
			_exit(2);
		}
		/* The message the CLI would print */
		printf("read-only cache: %s\n", e.msg);
		fflush(stdout);
		_exit(0);
	}
	waitpid(pid, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "read-only cache: child status %d", st);

	/* An existing cache whose folder became read-only. */
	chmod(ro, 0755);
	{
		store s;
		err e = { 0 };

		CHECK(store_open(&s, sub, &e) == 0, "%s", e.msg);
		store_close(&s);
		chmod(sub, 0555);
		check_system("chmod 0444 '%s/lock'", sub);
	}
	pid = fork();
	if (pid == 0) {
		store s;
		err e = { 0 };

		if (geteuid() == 0 && setuid(65534) < 0)
			_exit(3);
		if (store_open(&s, sub, &e) == 0)
			_exit(1);
		printf("read-only cache: %s\n", e.msg);
		fflush(stdout);
		_exit(strstr(e.msg, sub) && strstr(e.msg, "read-only") ? 0 : 2);
	}
	waitpid(pid, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "existing read-only cache: child status %d", st);
	chmod(sub, 0755);
}

/* A full disk, simulated with RLIMIT_FSIZE (EFBIG instead of ENOSPC, same path): a clear
 * error, and no object or temp file left. */
static void test_full_disk(void)
{
	int st;
	pid_t pid = fork();

	if (pid == 0) {
		struct rlimit rl = { 100000, 100000 };
		char *big = calloc(1, 300000);
		uint8_t d[32];
		store s;
		err e = { 0 };

		signal(SIGXFSZ, SIG_IGN);
		if (store_open(&s, cache, &e) < 0)
			_exit(2);
		setrlimit(RLIMIT_FSIZE, &rl);
		if (store_put_buf(&s, big, 300000, d, &e) == 0)
			_exit(1);
		printf("full disk: %s\n", e.msg);
		fflush(stdout);
		if (!strstr(e.msg, "write failed") || !strstr(e.msg, cache))
			_exit(3);
		_exit(0);
	}
	waitpid(pid, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "full disk: child status %d", st);
	CHECK(nfiles("tmp") == 0, "temp left after a failed write");
	{
		uint8_t d[32];
		char *big = calloc(1, 300000);
		store s;
		err e = { 0 };

		sha256_buf(big, 300000, d);
		free(big);
		CHECK(store_open(&s, cache, &e) == 0, "%s", e.msg);
		CHECK(store_has(&s, d, UINT64_MAX, &e) == 0, "partial object visible");
		store_close(&s);
	}
}

static void test_dirs_and_sizes(void)
{
	char buf[1024], dir[600];
	uint64_t v = 0;
	err e = { 0 };
	store s;

	setenv("QBAKE_CACHE", "/x/qc", 1);
	CHECK(store_default_dir(buf, sizeof buf, &e) == 0 && strcmp(buf, "/x/qc") == 0, "%s", buf);
	unsetenv("QBAKE_CACHE");
	setenv("XDG_CACHE_HOME", "/x/xdg", 1);
	CHECK(store_default_dir(buf, sizeof buf, &e) == 0 && strcmp(buf, "/x/xdg/qbake") == 0, "%s", buf);
	unsetenv("XDG_CACHE_HOME");
	setenv("HOME", "/x/home", 1);
	CHECK(store_default_dir(buf, sizeof buf, &e) == 0 && strcmp(buf, "/x/home/.cache/qbake") == 0,
	      "%s", buf);

	/* A folder with other things in it is not taken over. */
	snprintf(dir, sizeof dir, "%s/notacache", check_tmpdir());
	mkdir(dir, 0755);
	snprintf(buf, sizeof buf, "%s/precious.txt", dir);
	write_file(buf, "mine");
	CHECK(store_open(&s, dir, &e) < 0 && strstr(e.msg, "not a qbake cache"), "%s", e.msg);
	err_clear(&e);

	/* A relative cache folder is made absolute, so a later chdir does not move it. */
	{
		char cwd[1024];

		CHECK(getcwd(cwd, sizeof cwd) && chdir(check_tmpdir()) == 0, "chdir");
		CHECK(store_open(&s, "rel/cache", &e) == 0, "%s", e.msg);
		CHECK(s.dir && s.dir[0] == '/' && strstr(s.dir, "/rel/cache"), "dir %s", s.dir);
		store_close(&s);
		CHECK(chdir(cwd) == 0, "chdir back");
	}

	CHECK(cachecmd_parse_size("10G", &v, &e) == 0 && v == 10737418240ull, "10G");
	CHECK(cachecmd_parse_size("500M", &v, &e) == 0 && v == 524288000ull, "500M");
	CHECK(cachecmd_parse_size("1.5k", &v, &e) == 0 && v == 1536, "1.5k");
	CHECK(cachecmd_parse_size("2GiB", &v, &e) == 0 && v == 2147483648ull, "2GiB");
	CHECK(cachecmd_parse_size("0", &v, &e) == 0 && v == 0, "0");
	CHECK(cachecmd_parse_size("123", &v, &e) == 0 && v == 123, "123");
	CHECK(cachecmd_parse_size("10Q", &v, &e) < 0, "10Q");
	err_clear(&e);
	CHECK(cachecmd_parse_size("-1G", &v, &e) < 0, "-1G");
	err_clear(&e);
	CHECK(cachecmd_parse_size("G", &v, &e) < 0, "G");
	err_clear(&e);
	CHECK(cachecmd_parse_size("1.5", &v, &e) < 0, "1.5 bytes");
	err_clear(&e);
}

/* The key encoding, against a hand-built byte string. */
static void test_hkey(void)
{
	uint8_t k1[32], k2[32], want[32];
	unsigned char buf[64];
	size_t n = 0;
	hkey h;
	err e = { 0 };

	hkey_begin(&h, "d", &e);
	hkey_str(&h, "ab");
	hkey_end(&h, k1);
	buf[n++] = 'K';
	buf[n++] = 1;
	memset(buf + n, 0, 7), n += 7;
	buf[n++] = 'd';
	buf[n++] = 's';
	buf[n++] = 2;
	memset(buf + n, 0, 7), n += 7;
	buf[n++] = 'a';
	buf[n++] = 'b';
	sha256_buf(buf, n, want);
	CHECK(memcmp(k1, want, 32) == 0, "encoding of (\"ab\") in domain d");

	hkey_begin(&h, "d", &e);
	hkey_str(&h, "ab");
	hkey_str(&h, "c");
	hkey_end(&h, k1);
	hkey_begin(&h, "d", &e);
	hkey_str(&h, "a");
	hkey_str(&h, "bc");
	hkey_end(&h, k2);
	CHECK(memcmp(k1, k2, 32) != 0, "(ab,c) == (a,bc)");

	hkey_begin(&h, "d", &e);
	hkey_str(&h, "1");
	hkey_end(&h, k1);
	hkey_begin(&h, "d", &e);
	hkey_u64(&h, 1);
	hkey_end(&h, k2);
	CHECK(memcmp(k1, k2, 32) != 0, "string 1 == integer 1");

	hkey_begin(&h, "d", &e);
	hkey_f64(&h, -0.0);
	hkey_end(&h, k1);
	hkey_begin(&h, "d", &e);
	hkey_f64(&h, 0.0);
	hkey_end(&h, k2);
	CHECK(memcmp(k1, k2, 32) == 0, "-0 != 0");
}

int main(void)
{
	store s;
	err e = { 0 };

	snprintf(cache, sizeof cache, "%s/cache", check_tmpdir());
	CHECK(store_open(&s, cache, &e) == 0, "%s", e.msg);
	if (e.set)
		return check_done();
	s.warn = quiet;
	test_objects(&s);
	test_materialize(&s);
	test_actions(&s);
	test_stat_cache(&s);
	test_verify(&s);
	store_close(&s);
	test_readonly();
	test_full_disk();
	test_dirs_and_sizes();
	test_hkey();
	return check_done();
}
