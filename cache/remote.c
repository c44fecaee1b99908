/* remote.c - a shared cache over HTTP (Bazel's remote-cache protocol) with libcurl */
#include "remote.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

/* ---- configuration ---- */

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static int parse_bool(const char *v, int *out)
{
	if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes") || !strcmp(v, "on"))
		*out = 1;
	else if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no") || !strcmp(v, "off"))
		*out = 0;
	else
		return -1;
	return 0;
}

static void set_str(char **slot, const char *v)
{
	free(*slot);
	*slot = strdup(v);
}

/* One `key = "value"` (or key = value) line of the config file. Returns 0 or -1. */
static int config_line(remote_config *c, char *line, int lineno, err *e)
{
	char *p = line, *key, *val, *end;

	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == 0 || *p == '#' || *p == '\n')
		return 0;
	key = p;
	while (*p && *p != '=' && *p != ' ' && *p != '\t')
		p++;
	end = p;
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p != '=')
		return err_set(e, "%s:%d: expected key = \"value\"", c->file, lineno);
	*end = 0;
	p++;
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '"') {
		val = ++p;
		if (!(end = strchr(p, '"')))
			return err_set(e, "%s:%d: the value of %s has no closing quote", c->file, lineno, key);
		*end = 0;
	} else {
		val = p;
		end = p + strcspn(p, " \t\n#");
		*end = 0;
	}
	if (!strcmp(key, "remote_cache"))
		set_str(&c->url, val);
	else if (!strcmp(key, "remote_instance"))
		set_str(&c->instance, val);
	else if (!strcmp(key, "remote_token"))
		set_str(&c->token, val);
	else if (!strcmp(key, "remote_user"))
		set_str(&c->user, val);
	else if (!strcmp(key, "remote_password"))
		set_str(&c->password, val);
	else if (!strcmp(key, "remote_upload")) {
		if (parse_bool(val, &c->upload) < 0)
			return err_set(e, "%s:%d: remote_upload must be true or false, not \"%s\"", c->file, lineno, val);
	} else {
		return err_set(e, "%s:%d: unknown setting '%s' (known: remote_cache, remote_upload, remote_instance, "
				  "remote_token, remote_user, remote_password)", c->file, lineno, key);
	}
	return 0;
}

static int config_file(remote_config *c, err *e)
{
	const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
	char line[4096];
	int lineno = 0, rc = 0;
	FILE *f;

	if (xdg && *xdg)
		snprintf(c->file, sizeof c->file, "%s/qbake/config", xdg);
	else if (home && *home)
		snprintf(c->file, sizeof c->file, "%s/.config/qbake/config", home);
	else
		return 0;
	if (!(f = fopen(c->file, "r"))) {
		if (errno == ENOENT) {
			c->file[0] = 0;
			return 0;
		}
		return err_errno(e, "%s: cannot read", c->file);
	}
	while (rc == 0 && fgets(line, sizeof line, f))
		rc = config_line(c, line, ++lineno, e);
	fclose(f);
	return rc;
}

int remote_config_load(remote_config *c, const char *flag_url, const char *flag_upload, err *e)
{
	const char *env;

	memset(c, 0, sizeof *c);
	c->upload = 1;
	if (config_file(c, e) < 0)
		return -1;
	if ((env = getenv("QBAKE_REMOTE_CACHE")) != NULL)
		set_str(&c->url, env);
	if ((env = getenv("QBAKE_REMOTE_UPLOAD")) != NULL && parse_bool(env, &c->upload) < 0)
		return err_set(e, "QBAKE_REMOTE_UPLOAD must be true or false, not \"%s\"", env);
	if (flag_url)
		set_str(&c->url, flag_url);
	if (flag_upload && parse_bool(flag_upload, &c->upload) < 0)
		return err_set(e, "--remote-upload must be true or false, not \"%s\"", flag_upload);
	return 0;
}

void remote_config_free(remote_config *c)
{
	free(c->url);
	free(c->instance);
	free(c->token);
	free(c->user);
	free(c->password);
	memset(c, 0, sizeof *c);
}

/* ---- the client ---- */

/* curl_global_init is not thread-safe: run it once, before any transfer. */
static void global_init(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

int remote_open(remote *r, const remote_config *c, err *e)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	const char *url = c->url, *at, *scheme_end;
	size_t n;

	memset(r, 0, sizeof *r);
	if (!url || (strncmp(url, "http://", 7) && strncmp(url, "https://", 8)))
		return err_set(e, "remote cache '%s': the URL must start with http:// or https://", url ? url : "");
	pthread_once(&once, global_init);
	n = strlen(url);
	while (n > 0 && url[n - 1] == '/')
		n--;
	if (c->instance && *c->instance) {
		if (asprintf(&r->base, "%.*s/%s", (int)n, url, c->instance) < 0)
			r->base = NULL;
	} else {
		r->base = strndup(url, n);
	}
	if (!r->base)
		return err_set(e, "out of memory");
	/* A URL may carry user:password@: never show it. */
	scheme_end = strstr(r->base, "://") + 3;
	at = strchr(scheme_end, '@');
	if (at && at < scheme_end + strcspn(scheme_end, "/")) {
		if (asprintf(&r->shown, "%.*s%s", (int)(scheme_end - r->base), r->base, at + 1) < 0)
			r->shown = NULL;
	} else {
		r->shown = strdup(r->base);
	}
	r->bearer = dup_or_null(c->token && *c->token ? c->token : NULL);
	r->user = dup_or_null(c->user && *c->user ? c->user : NULL);
	r->password = dup_or_null(c->password);
	r->upload = c->upload;
	r->connect_ms = 2000;
	r->tries = 3;
	pthread_mutex_init(&r->mu, NULL);
	if (!r->shown) {
		remote_close(r);
		return err_set(e, "out of memory");
	}
	return 0;
}

void remote_close(remote *r)
{
	if (r->base)
		pthread_mutex_destroy(&r->mu);
	free(r->base);
	free(r->shown);
	free(r->bearer);
	free(r->user);
	free(r->password);
	free(r->bad);
	memset(r, 0, sizeof *r);
}

static void warn(remote *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void warn(remote *r, const char *fmt, ...)
{
	char msg[1200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (r->warn)
		r->warn(r->warn_ctx, msg);
	else
		fprintf(stderr, "qbake: warning: %s\n", msg);
}

static int is_down(remote *r)
{
	int d;

	pthread_mutex_lock(&r->mu);
	d = r->down;
	pthread_mutex_unlock(&r->mu);
	return d;
}

/* Marks the remote down; only the first call warns, so a build says it once. */
static void set_down(remote *r, const char *why)
{
	int first;

	pthread_mutex_lock(&r->mu);
	first = !r->down;
	r->down = 1;
	pthread_mutex_unlock(&r->mu);
	if (first)
		warn(r, "remote cache %s: %s; building locally without it for the rest of this run", r->shown, why);
}

static void count(remote *r, uint64_t *field, uint64_t n)
{
	pthread_mutex_lock(&r->mu);
	*field += n;
	pthread_mutex_unlock(&r->mu);
}

/* One HTTP request with its body going to memory, to a store_writer, or coming from a file. */
typedef struct xfer {
	const char *method;  /* "GET", "HEAD" or "PUT" */
	char url[1024];
	/* GET into memory (mem set): the body, cut off (error) beyond max bytes */
	int mem;
	char *buf;
	size_t len, cap, max;
	/* GET into the store: bytes stream through w; got counts what it holds */
	store_writer *w;
	store *s;
	uint64_t got;
	int resumed;         /* this try asked for a Range starting at got */
	int checked;         /* the status of this try was looked at by the first body chunk */
	int body_ok;         /* this try's body is the object (200, or 206 on a resume) */
	err *we;             /* where a local write error goes */
	int werr;            /* a local write failed: do not retry */
	/* PUT from a file (fd) or from memory (src, pos) */
	int fd;
	const char *src;
	size_t pos;
	uint64_t size;
	/* results */
	CURL *h;
	long code;
	curl_off_t length;   /* Content-Length of a HEAD answer, or -1 */
} xfer;

static size_t on_body(char *p, size_t sz, size_t nm, void *arg)
{
	xfer *x = arg;
	size_t n = sz * nm;

	if (!x->checked) {
		curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->code);
		x->checked = 1;
		x->body_ok = x->code == 200 || (x->code == 206 && x->resumed);
		if (x->w && x->code == 200 && x->got > 0) {
			/* The server ignored the Range: start the object again. */
			store_writer_abort(x->w);
			x->got = 0;
			if (store_writer_open(x->s, x->w, x->we) < 0) {
				x->werr = 1;
				return 0;
			}
		}
	}
	if (!x->body_ok)
		return n; /* an error page: read and drop */
	if (x->mem) {
		if (x->len + n > x->max)
			return 0;
		if (x->len + n + 1 > x->cap) {
			size_t cap = (x->len + n + 1) * 2;
			char *grown = realloc(x->buf, cap);

			if (!grown)
				return 0;
			x->buf = grown;
			x->cap = cap;
		}
		memcpy(x->buf + x->len, p, n);
		x->len += n;
		return n;
	}
	if (x->w) {
		if (store_writer_write(x->w, p, n, x->we) < 0) {
			x->werr = 1;
			return 0;
		}
		x->got += n;
	}
	return n;
}

static size_t on_read_mem(char *p, size_t sz, size_t nm, void *arg);

static size_t on_read(char *p, size_t sz, size_t nm, void *arg)
{
	xfer *x = arg;
	ssize_t k;

	do
		k = read(x->fd, p, sz * nm);
	while (k < 0 && errno == EINTR);
	return k < 0 ? CURL_READFUNC_ABORT : (size_t)k;
}

static void setup(remote *r, xfer *x)
{
	CURL *h = x->h;

	curl_easy_setopt(h, CURLOPT_URL, x->url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, r->connect_ms);
	/* A stalled server: less than 1 KiB/s for 15 s ends the transfer (then retried). */
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 15L);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "qbake");
	curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 512L * 1024);
	if (r->bearer) {
		curl_easy_setopt(h, CURLOPT_HTTPAUTH, CURLAUTH_BEARER);
		curl_easy_setopt(h, CURLOPT_XOAUTH2_BEARER, r->bearer);
	} else if (r->user) {
		curl_easy_setopt(h, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
		curl_easy_setopt(h, CURLOPT_USERNAME, r->user);
		curl_easy_setopt(h, CURLOPT_PASSWORD, r->password ? r->password : "");
	}
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
	if (!strcmp(x->method, "HEAD")) {
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else if (!strcmp(x->method, "PUT")) {
		curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, x->src ? on_read_mem : on_read);
		curl_easy_setopt(h, CURLOPT_READDATA, x);
		curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)x->size);
		curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE, 2L * 1024 * 1024);
	} else if (x->w && x->got > 0) {
		curl_easy_setopt(h, CURLOPT_RESUME_FROM_LARGE, (curl_off_t)x->got);
		x->resumed = 1;
	}
}

/* Runs x, retrying with backoff (0.25 s, 1 s) on a connection error or a 5xx. Returns the
 * HTTP status, or -1: a local write error (e set), or the remote is not answering (marked
 * down, warned once, e set). */
static long perform(remote *r, xfer *x, err *e)
{
	char why[CURL_ERROR_SIZE + 1100] = "";

	for (int i = 0; i < r->tries; i++) {
		char ebuf[CURL_ERROR_SIZE] = "";
		CURLcode rc;

		if (is_down(r))
			return err_set(e, "remote cache %s is down", r->shown);
		if (i > 0) {
			struct timespec ts = { 0, 250000000L };

			for (int k = 1; k < i; k++)
				ts.tv_nsec *= 4;
			ts.tv_sec = ts.tv_nsec / 1000000000L;
			ts.tv_nsec %= 1000000000L;
			nanosleep(&ts, NULL);
		}
		if (!(x->h = curl_easy_init()))
			return err_set(e, "libcurl: cannot start a transfer");
		x->len = x->pos = 0;
		x->checked = x->body_ok = x->resumed = 0;
		x->code = 0;
		x->length = -1;
		if (x->fd >= 0 && lseek(x->fd, 0, SEEK_SET) < 0) {
			curl_easy_cleanup(x->h);
			return err_errno(e, "%s: cannot rewind the upload", x->url);
		}
		setup(r, x);
		curl_easy_setopt(x->h, CURLOPT_ERRORBUFFER, ebuf);
		rc = curl_easy_perform(x->h);
		curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->code);
		curl_easy_getinfo(x->h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &x->length);
		curl_easy_cleanup(x->h);
		x->h = NULL;
		if (x->werr)
			return -1;
		if (rc == CURLE_OK && x->code < 500)
			return x->code;
		if (rc == CURLE_WRITE_ERROR && x->mem)
			return err_set(e, "%s: the answer is larger than %zu bytes", x->url, x->max);
		if (rc != CURLE_OK)
			snprintf(why, sizeof why, "%s", ebuf[0] ? ebuf : curl_easy_strerror(rc));
		else
			snprintf(why, sizeof why, "%s %s answered HTTP %ld", x->method, x->url, x->code);
	}
	set_down(r, why);
	return err_set(e, "remote cache %s: %s", r->shown, why);
}

static void url_of(remote *r, xfer *x, const char *kind, const uint8_t d[32])
{
	char hex[65];

	snprintf(x->url, sizeof x->url, "%s/%s/%s", r->base, kind, sha256_hex(d, hex));
}

static void xfer_init(xfer *x, const char *method)
{
	memset(x, 0, sizeof *x);
	x->method = method;
	x->fd = -1;
}

/* GETs a record into memory; returns 1 (x->buf, x->len set), 0 on 404, -1 otherwise. */
static int get_record(remote *r, const uint8_t key[32], xfer *x, err *e)
{
	long code;

	xfer_init(x, "GET");
	url_of(r, x, "ac", key);
	x->mem = 1;
	x->max = 64u << 20;
	code = perform(r, x, e);
	if (code < 0)
		return -1;
	if (code == 404)
		return 0;
	if (code != 200)
		return err_set(e, "GET %s answered HTTP %ld", x->url, code);
	return 1;
}

static int is_bad(remote *r, const uint8_t d[32])
{
	int bad = 0;

	pthread_mutex_lock(&r->mu);
	for (size_t i = 0; i < r->nbad && !bad; i++)
		bad = memcmp(r->bad[i], d, 32) == 0;
	pthread_mutex_unlock(&r->mu);
	return bad;
}

static void note_bad(remote *r, const uint8_t d[32])
{
	pthread_mutex_lock(&r->mu);
	r->corrupt++;
	{
		void *grown = realloc(r->bad, (r->nbad + 1) * 32);

		if (grown) {
			r->bad = grown;
			memcpy(r->bad[r->nbad++], d, 32);
		}
	}
	pthread_mutex_unlock(&r->mu);
}

int remote_get_object(remote *r, store *s, const uint8_t d[32], err *e)
{
	store_writer w;
	uint8_t got[32];
	char hex[65];
	xfer x;
	long code;

	xfer_init(&x, "GET");
	url_of(r, &x, "cas", d);
	if (store_writer_open(s, &w, e) < 0)
		return -1;
	x.w = &w;
	x.s = s;
	x.we = e;
	code = perform(r, &x, e);
	if (code < 0 || (code != 200 && code != 206)) {
		store_writer_abort(&w);
		if (code < 0)
			return -1;
		return code == 404 ? 0 : err_set(e, "GET %s answered HTTP %ld", x.url, code);
	}
	count(r, &r->bytes_down, x.got);
	if (store_writer_commit(&w, d, got, NULL, e) < 0) {
		note_bad(r, d);
		err_clear(e);
		return err_set(e, "remote cache %s: cas/%s: the server sent %llu bytes that do not hash to that "
				  "digest: refused", r->shown, sha256_hex(d, hex), (unsigned long long)x.got);
	}
	return 1;
}

int remote_fetch(remote *r, store *s, const uint8_t key[32], store_action *a)
{
	store_action rec = { 0 };
	char hex[65];
	err e = { 0 };
	xfer x;
	int rc, hit = 0, warned = 0;

	if (is_down(r))
		return 0;
	rc = get_record(r, key, &x, &e);
	if (rc <= 0)
		goto done;
	if (store_action_decode(x.buf, x.len, key, &rec, &e) < 0) {
		pthread_mutex_lock(&r->mu);
		r->corrupt++;
		pthread_mutex_unlock(&r->mu);
		warn(r, "remote cache %s: ac/%s: a damaged action record (%s): ignored, building locally", r->shown,
		     sha256_hex(key, hex), e.msg);
		warned = 1;
		goto done;
	}
	for (size_t i = 0; i < rec.nouts; i++) {
		const store_output *o = &rec.outs[i];
		int has = store_has(s, o->digest, o->size, &e);

		if (has < 0) {
			rc = -1;
			goto done;
		}
		if (has)
			continue;
		rc = remote_get_object(r, s, o->digest, &e);
		if (rc == 0) {
			char ohex[65];

			warn(r, "remote cache %s: ac/%s names cas/%s, which it does not have: building locally",
			     r->shown, sha256_hex(key, hex), sha256_hex(o->digest, ohex));
			warned = 1;
		}
		if (rc <= 0)
			goto done;
	}
	if (store_ac_put_raw(s, key, x.buf, x.len, &e) < 0) {
		rc = -1;
		goto done;
	}
	hit = store_ac_get(s, key, a, &e) > 0;
	if (hit)
		count(r, &r->fetched, 1);
done:
	if (rc < 0 && !hit && !warned && !is_down(r))
		warn(r, "%s; building locally", e.msg);
	store_action_free(&rec);
	free(x.buf);
	return hit;
}

int remote_probe(remote *r, const uint8_t key[32], store_action *a)
{
	err e = { 0 };
	xfer x;
	int rc;

	if (is_down(r))
		return 0;
	rc = get_record(r, key, &x, &e);
	if (rc > 0)
		rc = store_action_decode(x.buf, x.len, key, a, &e) == 0;
	free(x.buf);
	return rc > 0;
}

int remote_put_file(remote *r, const char *path, const uint8_t d[32], err *e)
{
	struct stat st;
	xfer x;
	long code;

	xfer_init(&x, "PUT");
	url_of(r, &x, "cas", d);
	if ((x.fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return err_errno(e, "%s: cannot open", path);
	if (fstat(x.fd, &st) < 0) {
		close(x.fd);
		return err_errno(e, "%s: cannot stat", path);
	}
	x.size = (uint64_t)st.st_size;
	code = perform(r, &x, e);
	close(x.fd);
	if (code < 0)
		return -1;
	if (code < 200 || code > 299)
		return err_set(e, "PUT %s answered HTTP %ld", x.url, code);
	count(r, &r->bytes_up, x.size);
	return 0;
}

static size_t on_read_mem(char *p, size_t sz, size_t nm, void *arg)
{
	xfer *x = arg;
	size_t n = sz * nm, left = x->size - x->pos;

	if (n > left)
		n = left;
	memcpy(p, x->src + x->pos, n);
	x->pos += n;
	return n;
}

/* PUTs an action record (small: read from memory). Returns 0 or -1. */
static int put_record(remote *r, const uint8_t key[32], const char *p, size_t n, err *e)
{
	xfer x;
	long code;

	xfer_init(&x, "PUT");
	url_of(r, &x, "ac", key);
	x.src = p;
	x.size = n;
	code = perform(r, &x, e);
	if (code < 0)
		return -1;
	if (code < 200 || code > 299)
		return err_set(e, "PUT %s answered HTTP %ld", x.url, code);
	count(r, &r->bytes_up, n);
	return 0;
}

int remote_upload(remote *r, store *s, const uint8_t key[32])
{
	store_action a = { 0 };
	char *rec = NULL, path[PATH_MAX];
	size_t n = 0;
	err e = { 0 };
	int done = 0;

	if (!r->upload || is_down(r))
		return 0;
	if (store_ac_get(s, key, &a, &e) <= 0 || !(rec = store_ac_get_raw(s, key, &n, &e)))
		goto out;
	/* Objects first: a record on the server must never name an object it lacks. */
	for (size_t i = 0; i < a.nouts; i++) {
		const store_output *o = &a.outs[i];
		xfer x;
		long code;

		if (!is_bad(r, o->digest)) {
			xfer_init(&x, "HEAD");
			url_of(r, &x, "cas", o->digest);
			code = perform(r, &x, &e);
			if (code < 0)
				goto out;
			if (code == 200 && x.length == (curl_off_t)o->size)
				continue;
		}
		store_object_path(s, o->digest, path, sizeof path);
		if (remote_put_file(r, path, o->digest, &e) < 0)
			goto out;
	}
	if (put_record(r, key, rec, n, &e) < 0)
		goto out;
	count(r, &r->uploaded, 1);
	done = 1;
out:
	if (!done && e.set && !is_down(r))
		warn(r, "remote cache %s: upload failed: %s", r->shown, e.msg);
	store_action_free(&a);
	free(rec);
	return done;
}
