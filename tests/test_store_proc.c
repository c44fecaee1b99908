/* test_store_proc.c - several processes on one cache: concurrent adds, gc waiting, kill -9 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "store.h"

#define NSHARED 60

static char cache[512], buildlog[600];

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

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* What one builder does: for each shared node, the engine's pattern (look up; on a miss take
 * the node's lock, look again, build, record); plus objects of its own. Returns an exit code. */
static int builder(int who)
{
	char text[128];
	store s;
	err e = { 0 };

	if (store_open(&s, cache, &e) < 0) {
		fprintf(stderr, "builder %d: %s\n", who, e.msg);
		return 1;
	}
	s.warn = quiet;
	for (int i = 0; i < NSHARED; i++) {
		uint8_t key[32], d[32];
		store_action a;
		int n, fd, rc;

		n = snprintf(text, sizeof text, "node %d", i);
		sha256_buf(text, (size_t)n, key);
		if (store_ac_get(&s, key, &a, &e) == 1) {
			store_action_free(&a);
		} else {
			fd = store_lock_key(&s, key, &e);
			if (fd < 0)
				return 2;
			rc = store_ac_get(&s, key, &a, &e);
			if (rc == 0) {
				n = snprintf(text, sizeof text, "output of node %d", i);
				if (store_put_buf(&s, text, (size_t)n, d, &e) < 0 ||
				    store_action_add(&a, "out", d, (uint64_t)n, &e) < 0 ||
				    store_ac_put(&s, key, &a, &e) < 0)
					return 3;
				/* One line per real build: the lock makes it exactly one per node. */
				{
					int lf = open(buildlog, O_WRONLY | O_APPEND | O_CREAT, 0644);

					n = snprintf(text, sizeof text, "%d %d\n", who, i);
					if (lf < 0 || write(lf, text, (size_t)n) != n)
						return 4;
					close(lf);
				}
			} else if (rc < 0) {
				return 5;
			}
			store_action_free(&a);
			store_unlock_key(fd);
		}
		n = snprintf(text, sizeof text, "private object %d of builder %d", i, who);
		if (store_put_buf(&s, text, (size_t)n, key, &e) < 0)
			return 6;
	}
	store_close(&s);
	return 0;
}

static void test_two_builders(void)
{
	pid_t pids[2];
	store_report r;
	err e = { 0 };
	store s;
	char *log;
	int lines = 0;

	for (int k = 0; k < 2; k++) {
		pids[k] = fork();
		if (pids[k] == 0)
			_exit(builder(k));
	}
	for (int k = 0; k < 2; k++) {
		int st;

		waitpid(pids[k], &st, 0);
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "builder %d: status %d", k, st);
	}
	log = check_slurp(buildlog, NULL);
	for (char *p = log; p && *p; p++)
		lines += *p == '\n';
	free(log);
	CHECK(lines == NSHARED, "each shared node built once: %d builds for %d nodes", lines, NSHARED);
	CHECK(nfiles("objects") == 3 * NSHARED, "objects: %d, want %d", nfiles("objects"), 3 * NSHARED);
	CHECK(store_open(&s, cache, &e) == 0, "%s", e.msg);
	CHECK(store_verify(&s, &r, &e) == 0, "damage after concurrent builders: %llu", (unsigned long long)r.corrupt);
	CHECK(r.actions == NSHARED, "records: %llu", (unsigned long long)r.actions);
	store_close(&s);
}

/* gc needs the cache to itself: it waits while a build has it open. */
static void test_gc_waits(void)
{
	int ready[2], release[2], st;
	pid_t user, gc;
	char c;

	CHECK(pipe(ready) == 0 && pipe(release) == 0, "pipe");
	user = fork();
	if (user == 0) {
		store s;
		err e = { 0 };

		close(ready[0]);
		close(release[1]);
		if (store_open(&s, cache, &e) < 0)
			_exit(1);
		if (write(ready[1], "r", 1) != 1)
			_exit(2);
		if (read(release[0], &c, 1) < 0) /* returns 0 when the parent closes its end */
			_exit(3);
		store_close(&s);
		_exit(0);
	}
	close(ready[1]);
	close(release[0]);
	CHECK(read(ready[0], &c, 1) == 1, "user ready");
	gc = fork();
	if (gc == 0) {
		store_report r;
		store s;
		err e = { 0 };

		close(release[1]); /* else the user never sees EOF and never lets go */
		if (store_open(&s, cache, &e) < 0)
			_exit(1);
		_exit(store_gc(&s, 0, &r, &e) == 0 && r.kept_bytes == 0 ? 0 : 2);
	}
	sleep_ms(300);
	CHECK(waitpid(gc, &st, WNOHANG) == 0, "gc ran while another process used the cache");
	close(release[1]);
	waitpid(user, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "user status %d", st);
	waitpid(gc, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "gc status %d", st);
	CHECK(nfiles("objects") == 0 && nfiles("ac") == 0, "gc to 0 left files");
	close(ready[0]);
}

/* Writes objects, records and stat entries forever (until killed). */
static void writer_forever(int round)
{
	char *buf = malloc(1 << 20), path[700];
	store s;
	err e = { 0 };

	if (store_open(&s, cache, &e) < 0)
		_exit(1);
	s.warn = quiet;
	snprintf(path, sizeof path, "%s/input-%d", check_tmpdir(), round);
	for (unsigned k = 0;; k++) {
		size_t n = 4096 + (size_t)(rand() % (1 << 19));
		uint8_t d[32], key[32];
		store_writer w;
		store_action a = { 0 };
		FILE *f;

		for (size_t i = 0; i < n; i++)
			buf[i] = (char)(rand() >> 7);
		if (store_writer_open(&s, &w, &e) < 0)
			_exit(2);
		for (size_t off = 0; off < n; off += 4096)
			if (store_writer_write(&w, buf + off, n - off < 4096 ? n - off : 4096, &e) < 0)
				_exit(3);
		if (store_writer_commit(&w, NULL, d, NULL, &e) < 0)
			_exit(4);
		sha256_buf(&k, sizeof k, key);
		key[0] ^= (uint8_t)round;
		if (store_action_add(&a, "blob", d, n, &e) < 0 || store_ac_put(&s, key, &a, &e) < 0)
			_exit(5);
		store_action_free(&a);
		f = fopen(path, "wb");
		if (!f || fwrite(buf, 1, n / 2, f) != n / 2 || fclose(f) != 0)
			_exit(6);
		if (store_hash_file(&s, path, d, NULL, &e) < 0)
			_exit(7);
	}
}

static void test_kill9(void)
{
	unsigned seed = (unsigned)time(NULL);
	store_report r;
	err e = { 0 };
	store s;

	printf("kill -9 rounds, seed %u\n", seed);
	srand(seed);
	for (int round = 0; round < 25; round++) {
		long delay = 1 + rand() % 60;
		pid_t pid = fork();
		int st;

		if (pid == 0) {
			srand(seed + (unsigned)round);
			writer_forever(round);
		}
		sleep_ms(delay);
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
		CHECK(WIFSIGNALED(st), "round %d: writer ended by itself (status %d)", round, st);
	}
	/* Opening alone clears the dead writers' temp files; nothing under a final name is partial. */
	CHECK(store_open(&s, cache, &e) == 0, "%s", e.msg);
	CHECK(nfiles("tmp") == 0, "temp files of killed writers left: %d", nfiles("tmp"));
	CHECK(nfiles("objects") > 0, "the writers never committed anything: the test proves nothing");
	CHECK(store_verify(&s, &r, &e) == 0, "damage after kill -9: %llu (%s)", (unsigned long long)r.corrupt, e.msg);
	printf("after kill -9: %llu objects, %llu records, all sound\n", (unsigned long long)r.objects,
	       (unsigned long long)r.actions);
	store_close(&s);
}

int main(void)
{
	snprintf(cache, sizeof cache, "%s/cache", check_tmpdir());
	snprintf(buildlog, sizeof buildlog, "%s/builds.log", check_tmpdir());
	test_two_builders();
	test_gc_waits();
	test_kill9();
	return check_done();
}
