/* cachecmd.c - the `qbake cache` and `qbake gc` commands */
#include "cachecmd.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "store.h"

const char cachecmd_cache_help[] =
	"usage: qbake cache verify [--cache DIR]\n"
	"\n"
	"Rehashes every object in the cache and checks every action record, stat cache entry and\n"
	"build ref. Each damaged entry is reported (on stderr) and removed, as is each action\n"
	"record whose objects are gone, so the next build recomputes it instead of using it.\n"
	"Waits while another qbake process uses the cache.\n"
	"\n"
	"options:\n"
	"  --cache DIR   the cache directory (default: $QBAKE_CACHE, else $XDG_CACHE_HOME/qbake,\n"
	"                else ~/.cache/qbake)\n"
	"\n"
	"exit codes: 0 the cache is sound, 1 damaged entries were found (and removed) or the\n"
	"cache could not be read, 2 usage error.\n";

const char cachecmd_gc_help[] =
	"usage: qbake gc [--max-size SIZE] [--cache DIR]\n"
	"\n"
	"Removes from the cache what no recent build references. Without --max-size, every object\n"
	"and action record that no build's ref (the record each `qbake build` leaves of what it\n"
	"used) needs is removed. With --max-size, unreferenced entries go least recently used first\n"
	"until the cache is under SIZE; if it is still over, the refs of the oldest builds are\n"
	"dropped one by one, with what only they needed. Also removes stale temporary files and\n"
	"stat cache entries unused for 30 days. Waits while another qbake process uses the cache.\n"
	"\n"
	"options:\n"
	"  --max-size SIZE  keep the cache under SIZE bytes; K, M, G, T suffixes are powers of\n"
	"                   1024 (500M, 10G, 1.5T); 0 empties the cache\n"
	"  --cache DIR      the cache directory (default: $QBAKE_CACHE, else\n"
	"                   $XDG_CACHE_HOME/qbake, else ~/.cache/qbake)\n"
	"\n"
	"exit codes: 0 done, 1 the cache could not be read or changed, 2 usage error.\n";

int cachecmd_parse_size(const char *s, uint64_t *out, err *e)
{
	static const char units[] = "KMGT";
	char *end;
	double v, mul = 1;

	errno = 0;
	v = strtod(s, &end);
	if (end == s || errno || !(v >= 0) || s[0] == '-' || s[0] == '+')
		return err_set(e, "size '%s': expected a number of bytes such as 500M or 10G", s);
	if (*end) {
		const char *u = strchr(units, *end >= 'a' ? *end - 32 : *end);

		if (!u || !*u)
			return err_set(e, "size '%s': unknown unit '%s' (use K, M, G or T)", s, end);
		mul = pow(1024, (double)(u - units + 1));
		end++;
		if (strcasecmp(end, "b") == 0 || strcasecmp(end, "ib") == 0)
			end += strlen(end);
	} else if (v != floor(v)) {
		return err_set(e, "size '%s': a byte count must be a whole number", s);
	}
	if (*end)
		return err_set(e, "size '%s': unexpected '%s' after the unit", s, end);
	v *= mul;
	if (v >= 18446744073709549568.0)
		return err_set(e, "size '%s': too large", s);
	*out = (uint64_t)v;
	return 0;
}

static double mib(uint64_t b)
{
	return (double)b / (1024.0 * 1024.0);
}

/* Parses the options both commands share; returns 0, or 2 after printing a usage error. */
static int parse_opts(int argc, char **argv, int first, const char **cache, const char **max)
{
	for (int i = first; i < argc; i++) {
		const char *a = argv[i];
		const char **slot = NULL;
		size_t k = 0;

		if (strncmp(a, "--cache", 7) == 0 && (a[7] == 0 || a[7] == '='))
			slot = cache, k = 7;
		else if (max && strncmp(a, "--max-size", 10) == 0 && (a[10] == 0 || a[10] == '='))
			slot = max, k = 10;
		if (!slot) {
			fprintf(stderr, "qbake: %s: unknown argument '%s' (see qbake help %s)\n", argv[0], a,
				argv[0]);
			return 2;
		}
		if (a[k] == '=') {
			*slot = a + k + 1;
		} else if (i + 1 < argc) {
			*slot = argv[++i];
		} else {
			fprintf(stderr, "qbake: %s: %s needs a value\n", argv[0], a);
			return 2;
		}
	}
	return 0;
}

int cachecmd_cache_main(int argc, char **argv)
{
	const char *dir = NULL;
	store_report r;
	err e = { 0 };
	store s;
	int rc;

	if (argc < 2 || strcmp(argv[1], "verify") != 0) {
		fprintf(stderr, "qbake: cache: expected a subcommand: verify (see qbake help cache)\n");
		return 2;
	}
	if (parse_opts(argc, argv, 2, &dir, NULL))
		return 2;
	if (store_open(&s, dir, &e) < 0) {
		fprintf(stderr, "qbake: %s\n", e.msg);
		return 1;
	}
	rc = store_verify(&s, &r, &e);
	if (rc < 0) {
		fprintf(stderr, "qbake: %s\n", e.msg);
		store_close(&s);
		return 1;
	}
	printf("verified %s: %llu objects (%.1f MiB), %llu action records\n", s.dir,
	       (unsigned long long)r.objects, mib(r.object_bytes), (unsigned long long)r.actions);
	if (rc > 0)
		printf("%d damaged entries removed (%llu objects, %llu action records, %llu refs, "
		       "%llu stat entries)\n", rc, (unsigned long long)r.removed_objects,
		       (unsigned long long)r.removed_actions, (unsigned long long)r.removed_refs,
		       (unsigned long long)r.removed_stat);
	else
		printf("no damaged entries\n");
	store_close(&s);
	return rc > 0 ? 1 : 0;
}

int cachecmd_gc_main(int argc, char **argv)
{
	const char *dir = NULL, *max = NULL;
	uint64_t limit = STORE_GC_UNREFERENCED;
	store_report r;
	err e = { 0 };
	store s;

	if (parse_opts(argc, argv, 1, &dir, &max))
		return 2;
	if (max && cachecmd_parse_size(max, &limit, &e) < 0) {
		fprintf(stderr, "qbake: gc: --max-size: %s\n", e.msg);
		return 2;
	}
	if (store_open(&s, dir, &e) < 0) {
		fprintf(stderr, "qbake: %s\n", e.msg);
		return 1;
	}
	if (store_gc(&s, limit, &r, &e) < 0) {
		fprintf(stderr, "qbake: %s\n", e.msg);
		store_close(&s);
		return 1;
	}
	printf("gc %s: removed %llu objects (%.1f MiB), %llu action records, %llu build refs; "
	       "%.1f MiB kept\n", s.dir, (unsigned long long)r.removed_objects, mib(r.removed_bytes),
	       (unsigned long long)r.removed_actions, (unsigned long long)r.removed_refs,
	       mib(r.kept_bytes));
	store_close(&s);
	return 0;
}
