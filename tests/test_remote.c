/* test_remote.c - the remote cache against a real nginx on 127.0.0.1: share, fall back, refuse bad bytes */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "remote.h"
#include "sha256.h"

static const char *tmp, *bin, *src;
static char root[1024], url[128];
static int port;

/* A port nothing listens on right now (bound by the kernel, then released). */
static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof a;
	int fd = socket(AF_INET, SOCK_STREAM, 0), p = 0;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &len) == 0)
		p = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return p;
}

static int can_connect(int p)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)p) };
	int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
	if (fd >= 0)
		close(fd);
	return ok;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* Stops the nginx that serve started (its pid file); registered with atexit so a failing
 * test never leaves it running. */
static void stop_server(void)
{
	char path[1200], *text;

	snprintf(path, sizeof path, "%s/.nginx/nginx.pid", root);
	if (!(text = check_slurp(path, NULL)))
		return;
	if (atoi(text) > 1) {
		kill(atoi(text), SIGTERM);
		for (int i = 0; i < 50 && can_connect(port); i++)
			sleep_ms(100);
	}
	free(text);
	unlink(path);
}

static int start_server(void)
{
	if (check_system("'%s/examples/remote-cache/serve' --listen 127.0.0.1 --port %d --root '%s' --daemon", src,
			 port, root) != 0)
		return -1;
	for (int i = 0; i < 50; i++) {
		if (can_connect(port))
			return 0;
		sleep_ms(100);
	}
	return -1;
}

/* Runs qbake build with its own cache; stderr goes to <tmp>/<cache>.err. Returns the exit
 * status and the counts from the summary line. */
static int build(const char *cache, const char *remote_url, const char *extra, int *ran, int *fromremote)
{
	char path[1200], *text, *line;
	int cached = -1, rc;

	rc = check_system("cd '%s' && '%s' build recipe.lua -q -t 2 --cache '%s' --remote-cache '%s' -o rel-%s %s "
			  "2> '%s.err'",
			  tmp, bin, cache, remote_url, cache, extra, cache);
	*ran = *fromremote = -1;
	snprintf(path, sizeof path, "%s/%s.err", tmp, cache);
	text = check_slurp(path, NULL);
	if (text && (line = strstr(text, "step(s) run")) != NULL) {
		while (line > text && line[-1] != '\n')
			line--;
		sscanf(line, "qbake: %d step(s) run, %d cached (%d from the remote cache)", ran, &cached, fromremote);
	}
	if (rc != 0 && text)
		fprintf(stderr, "%s", text);
	free(text);
	return rc;
}

static int count_in(const char *cache, const char *needle)
{
	char path[1200], *text, *p;
	int n = 0;

	snprintf(path, sizeof path, "%s/%s.err", tmp, cache);
	if (!(text = check_slurp(path, NULL)))
		return -1;
	for (p = text; (p = strstr(p, needle)) != NULL; p++)
		n++;
	free(text);
	return n;
}

static int same_release(const char *a, const char *b)
{
	char pa[1200], pb[1200], *ta, *tb;
	int same;

	snprintf(pa, sizeof pa, "%s/rel-%s/SHA256SUMS", tmp, a);
	snprintf(pb, sizeof pb, "%s/rel-%s/SHA256SUMS", tmp, b);
	ta = check_slurp(pa, NULL);
	tb = check_slurp(pb, NULL);
	same = ta && tb && strlen(ta) > 64 && strcmp(ta, tb) == 0;
	free(ta);
	free(tb);
	return same;
}

/* The SHA-256 (hex) of NAME in release A's SHA256SUMS. */
static int release_digest(const char *name, char hex[65])
{
	char path[1200], *text, *p;

	snprintf(path, sizeof path, "%s/rel-A/SHA256SUMS", tmp);
	if (!(text = check_slurp(path, NULL)))
		return -1;
	p = strstr(text, name);
	if (!p || p - text < 66) {
		free(text);
		return -1;
	}
	while (p > text && p[-1] != '\n')
		p--;
	memcpy(hex, p, 64);
	hex[64] = 0;
	free(text);
	return 0;
}

static void test_config(void)
{
	char dir[1200], path[1300];
	remote_config c;
	FILE *f;
	err e = { 0 };

	snprintf(dir, sizeof dir, "%s/cfg/qbake", tmp);
	check_system("mkdir -p '%s'", dir);
	snprintf(path, sizeof path, "%s/config", dir);
	f = fopen(path, "w");
	fputs("# team cache\nremote_cache = \"http://127.0.0.1:1/from-file\"\nremote_upload = false\n"
	      "remote_instance = \"team\"\nremote_token = \"s3cret\"\n",
	      f);
	fclose(f);
	snprintf(dir, sizeof dir, "%s/cfg", tmp);
	setenv("XDG_CONFIG_HOME", dir, 1);
	unsetenv("QBAKE_REMOTE_CACHE");
	unsetenv("QBAKE_REMOTE_UPLOAD");
	CHECK(remote_config_load(&c, NULL, NULL, &e) == 0, "%s", e.msg);
	CHECK(c.url && !strcmp(c.url, "http://127.0.0.1:1/from-file"), "config url %s", c.url);
	CHECK(c.upload == 0 && c.instance && !strcmp(c.instance, "team") && c.token && !strcmp(c.token, "s3cret"),
	      "config fields");
	remote_config_free(&c);
	setenv("QBAKE_REMOTE_CACHE", "http://127.0.0.1:2/from-env", 1);
	CHECK(remote_config_load(&c, NULL, "true", &e) == 0, "%s", e.msg);
	CHECK(c.url && !strcmp(c.url, "http://127.0.0.1:2/from-env") && c.upload == 1, "env beats the file");
	remote_config_free(&c);
	CHECK(remote_config_load(&c, "http://127.0.0.1:3/flag", NULL, &e) == 0, "%s", e.msg);
	CHECK(c.url && !strcmp(c.url, "http://127.0.0.1:3/flag"), "flag beats env");
	remote_config_free(&c);
	unsetenv("QBAKE_REMOTE_CACHE");
	CHECK(remote_config_load(&c, NULL, "maybe", &e) < 0 && strstr(e.msg, "maybe"), "bad --remote-upload: %s",
	      e.msg);
	remote_config_free(&c);
	f = fopen(path, "a");
	fputs("remote_cahce = \"x\"\n", f);
	fclose(f);
	err_clear(&e);
	CHECK(remote_config_load(&c, NULL, NULL, &e) < 0 && strstr(e.msg, "config:6") && strstr(e.msg, "remote_cahce"),
	      "a misspelt key names file and line: %s", e.msg);
	remote_config_free(&c);
	unsetenv("XDG_CONFIG_HOME");
	snprintf(dir, sizeof dir, "%s/nocfg", tmp);
	setenv("XDG_CONFIG_HOME", dir, 1);
}

int main(void)
{
	char path[1300], hex[65], dead[128], *text;
	int ran, fromremote;
	uint8_t d[32], got[32];
	size_t len;
	FILE *f;

	bin = getenv("QBAKE_BIN");
	src = getenv("QBAKE_SOURCE");
	if (!bin || !src) {
		fprintf(stderr, "SKIP: QBAKE_BIN / QBAKE_SOURCE not set (run through ctest)\n");
		return 77;
	}
	if (access("/usr/sbin/nginx", X_OK) != 0 && check_system("command -v nginx >/dev/null") != 0) {
		const char *ci = getenv("CI");

		if (ci && !strcmp(ci, "true")) {
			fprintf(stderr, "FAIL: nginx is not installed and CI=true (.ci/deps installs it)\n");
			return 1;
		}
		fprintf(stderr, "SKIP: nginx not installed (apt-get install nginx, or run .ci/deps as root)\n");
		return 77;
	}
	tmp = check_tmpdir();
	test_config();

	snprintf(root, sizeof root, "%s/server", tmp);
	port = free_port();
	CHECK(port > 0, "no free port");
	snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
	atexit(stop_server);
	if (start_server() < 0) {
		CHECK(0, "nginx did not start on 127.0.0.1:%d (see %s/.nginx/error.log)", port, root);
		stop_server();
		return check_done();
	}
	snprintf(path, sizeof path, "%s/recipe.lua", tmp);
	f = fopen(path, "w");
	fprintf(f, "release \"tiny\" {\n  model = hf { path = \"%s/examples/pydoc-tiny\" },\n  baseline = \"f16\",\n"
		   "  tiers = { \"Q8_0\", \"Q4_K_M\" },\n}\n", src);
	fclose(f);

	/* Machine A builds and uploads. */
	CHECK(build("A", url, "", &ran, &fromremote) == 0, "build A");
	CHECK(ran == 3 && fromremote == 0, "A ran %d, %d from the remote", ran, fromremote);
	CHECK(check_system("test $(ls '%s/ac' | wc -l) -eq 3", root) == 0, "3 action records uploaded");

	/* Machine B, empty cache, same remote: nothing recomputed, same bytes. */
	CHECK(build("B", url, "", &ran, &fromremote) == 0, "build B");
	CHECK(ran == 0 && fromremote == 3, "B ran %d, %d from the remote (want 0, 3)", ran, fromremote);
	CHECK(same_release("A", "B"), "release B differs from A");
	CHECK(count_in("B", "warning") == 0, "B warned");

	/* plan on an empty cache says every step comes from the remote. */
	CHECK(check_system("cd '%s' && '%s' plan recipe.lua --cache P --remote-cache '%s' > plan.txt", tmp, bin, url) == 0,
	      "plan");
	snprintf(path, sizeof path, "%s/plan.txt", tmp);
	text = check_slurp(path, NULL);
	CHECK(text && strstr(text, "0 of 3 step(s) would run") && strstr(text, "remote  quantize Q4_K_M"),
	      "plan: %s", text ? text : "(none)");
	free(text);

	/* A read-only client builds nothing new to upload, and a dead port is one warning. */
	snprintf(dead, sizeof dead, "http://127.0.0.1:%d", free_port());
	CHECK(build("D", dead, "", &ran, &fromremote) == 0, "build with a dead remote must succeed");
	CHECK(ran == 3 && fromremote == 0, "D ran %d", ran);
	CHECK(count_in("D", "warning: remote cache") == 1, "D: want exactly one warning, got %d",
	      count_in("D", "warning: remote cache"));
	CHECK(same_release("A", "D"), "release D differs");

	/* The server stops: the next build falls back to local with one warning. */
	stop_server();
	CHECK(!can_connect(port), "nginx still up");
	CHECK(build("E", url, "", &ran, &fromremote) == 0, "build with the server stopped must succeed");
	CHECK(ran == 3 && count_in("E", "warning: remote cache") == 1, "E ran %d, %d warnings", ran,
	      count_in("E", "warning: remote cache"));
	CHECK(same_release("A", "E"), "release E differs");
	CHECK(start_server() == 0, "nginx restart");

	/* The server returns wrong bytes for the Q4_K_M file: refused, rebuilt, and put right. */
	CHECK(release_digest("tiny-Q4_K_M.gguf", hex) == 0, "Q4_K_M digest in SHA256SUMS");
	snprintf(path, sizeof path, "%s/cas/%s", root, hex);
	text = check_slurp(path, &len);
	CHECK(text && len > 100, "the object is on the server");
	if (text) {
		text[len / 2] ^= 0x5a;
		f = fopen(path, "w");
		fwrite(text, 1, len, f);
		fclose(f);
		free(text);
	}
	CHECK(build("F", url, "", &ran, &fromremote) == 0, "build against a corrupt object must succeed");
	CHECK(ran == 1 && fromremote == 2, "F ran %d, %d from remote (want 1, 2)", ran, fromremote);
	CHECK(count_in("F", "do not hash") == 1, "F: the corrupt object is reported once");
	CHECK(same_release("A", "F"), "release F differs");
	sha256_unhex(hex, d);
	CHECK(sha256_file(path, got, NULL) == 0 && memcmp(d, got, 32) == 0, "the corrupt object was re-uploaded");
	CHECK(build("G", url, "", &ran, &fromremote) == 0 && ran == 0 && fromremote == 3, "G ran %d", ran);

	/* --remote-upload=false: nothing is written to the server. */
	snprintf(path, sizeof path, "%s/recipe.lua", tmp);
	f = fopen(path, "w");
	fprintf(f, "release \"tiny\" {\n  model = hf { path = \"%s/examples/pydoc-tiny\" },\n  baseline = \"f16\",\n"
		   "  tiers = { \"Q5_K_M\" },\n}\n", src);
	fclose(f);
	CHECK(build("H", url, "--remote-upload=false", &ran, &fromremote) == 0 && ran == 1 && fromremote == 1,
	      "H ran %d, %d from remote", ran, fromremote);
	CHECK(check_system("test $(ls '%s/ac' | wc -l) -eq 3", root) == 0, "read-only client uploaded");
	stop_server(); /* before check_done removes the folder holding its pid file */
	return check_done();
}
