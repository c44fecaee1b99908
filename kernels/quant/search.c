/* search.c - the scale searches shared by the k-quants and the imatrix legacy quantizers */
#include <math.h>
#include <string.h>

#include "quant_impl.h"

/*
 * These reproduce llama.cpp's make_qx_quants, make_q3_quants, make_qkx2_quants,
 * make_qkx3_quants and make_qp_quants operation for operation: every sum is accumulated
 * in float in index order, products are evaluated left to right, and nothing may be
 * fused (the project builds with -ffp-contract=off). Changing an expression's shape
 * changes output bytes.
 */

/* Below this a group counts as all zeros (ggml's GROUP_MAX_EPS). */
#define GROUP_MAX_EPS 1e-15f

/*
 * The searches below run on eight groups at once, one group per vector lane (GCC vector
 * extensions: SSE/AVX code where available, plain code elsewhere). Each lane performs
 * exactly the scalar sequence of float operations of its own group, so the bytes are
 * those of the one-group-at-a-time algorithm; only independent groups share instructions.
 */
typedef float vf __attribute__((vector_size(32)));
typedef int32_t vi __attribute__((vector_size(32)));
enum { LANES = 8, MAXN = 32 };

/* On x86-64 the two search kernels are built twice, for AVX2 and for the baseline, and the
 * loader picks one at start-up (same bytes either way: lanes never mix). Vectors cross
 * function boundaries only by pointer, whose ABI does not depend on the target. */
#if defined(__x86_64__) && defined(__GNUC__)
#define QUANT_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define QUANT_CLONES
#endif
#define QUANT_INLINE static inline __attribute__((always_inline))

/* *x = a in the lanes where mask is set. */
QUANT_INLINE void vpick(vf *x, const vi *mask, const vf *a)
{
	*x = (vf)((*mask & (vi)*a) | (~*mask & (vi)*x));
}

/* nearest_int per lane (the float-add trick; |v| < 2^22). */
QUANT_INLINE void vround(vi *r, const vf *v)
{
	*r = ((vi)(*v + 12582912.0f) & 0x007fffff) - 0x00400000;
}

/* Loads group g's element i of up to LANES consecutive groups of n into lanes (0 past ngroups). */
static void transpose_in(const float *x, int ngroups, int n, vf *X)
{
	for (int i = 0; i < n; i++)
		for (int g = 0; g < LANES; g++)
			X[i][g] = g < ngroups ? x[g * n + i] : 0.0f;
}

/* Affine level for v (make_qkx3's guarded rounding): 0 when v <= 0, nmax above it. */
QUANT_INLINE void level_affine(vf *l, const vf *v, const vf *nmax)
{
	vi below = *v < *nmax, pos = *v > 0;
	vf top = *nmax;
	vi r;

	vpick(&top, &below, v);
	vround(&r, &top);
	*l = (vf)((vi)__builtin_convertvector(r, vf) & pos);
}

/* Symmetric level in [-nmax, nmax) nearest to v. */
QUANT_INLINE void level_sym(vf *l, const vf *v, int nmax)
{
	const vi lo = (vi){ 0 } - nmax, hi = (vi){ 0 } + (nmax - 1);
	vi r, m;

	vround(&r, v);

	m = r < lo;
	r = (m & lo) | (~m & r);
	m = r > hi;
	r = (m & hi) | (~m & r);
	*l = __builtin_convertvector(r, vf);
}

/* Sum over i of W * (scale * L + min - X)^2 (or |...| with use_mad), in index order. */
QUANT_INLINE void affine_error(vf *err, int n, const vf *X, const vf *W, const vf *L, const vf *scale,
			       const vf *min, bool use_mad)
{
	*err = (vf){ 0 };
	for (int i = 0; i < n; i++) {
		vf diff = *scale * L[i] + *min - X[i];

		diff = use_mad ? (vf)((vi)diff & 0x7fffffff) : diff * diff;
		*err += W[i] * diff;
	}
}

/* Eight groups of make_qkx2 (qkx3 false) or make_qkx3 (true): min, max and the weighted
 * sums, a first rounding at nmax / range, then nstep + 1 trial scales, each fitted by
 * weighted least squares; a trial that lowers the error replaces levels, scale and min
 * (and its min shifts the range the later trials use, as in ggml). */
QUANT_CLONES
static void qkx8(int ngroups, int n, int nmax, const float *x, const float *w, uint8_t *L,
		 float *scales, float *the_min, float rmin, float rdelta, int nstep, bool use_mad, bool qkx3)
{
	vf X[MAXN] = { 0 }, W[MAXN] = { 0 }, Lb[MAXN], La[MAXN], best, cur;
	const vf zero = { 0 }, fmax = zero + (float)nmax;
	vi m;

	transpose_in(x, ngroups, n, X);
	transpose_in(w, ngroups, n, W);
	vf min = X[0], max = X[0], sum_w = W[0], sum_x = sum_w * X[0];
	for (int i = 1; i < n; i++) {
		m = X[i] < min;
		vpick(&min, &m, &X[i]);
		m = X[i] > max;
		vpick(&max, &m, &X[i]);
		sum_w += W[i];
		sum_x += W[i] * X[i];
	}
	m = min > 0;
	vpick(&min, &m, &zero);
	/* degenerate lanes get zero levels and scale; their arithmetic below is discarded */
	const vi flat = qkx3 ? (max <= min) : (max == min);
	const vf min0 = min;
	vf iscale = fmax / (max - min);
	vf scale = 1 / iscale;
	for (int i = 0; i < n; i++) {
		vf v = iscale * (X[i] - min);

		level_affine(&Lb[i], &v, &fmax);
	}
	affine_error(&best, n, X, W, Lb, &scale, &min, use_mad);
	for (int is = 0; nstep >= 1 && is <= nstep; is++) {
		vf sum_l = zero, sum_l2 = zero, sum_xl = zero;

		iscale = (rmin + rdelta * (float)is + fmax) / (max - min);
		for (int i = 0; i < n; i++) {
			vf v = iscale * (X[i] - min);

			level_affine(&La[i], &v, &fmax);
			sum_l += W[i] * La[i];
			sum_l2 += W[i] * La[i] * La[i];
			sum_xl += W[i] * La[i] * X[i];
		}
		vf D = sum_w * sum_l2 - sum_l * sum_l;
		vf this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
		vf this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
		vf only_scale = sum_xl / sum_l2;
		m = this_min > 0;
		vpick(&this_min, &m, &zero);
		vpick(&this_scale, &m, &only_scale);
		affine_error(&cur, n, X, W, La, &this_scale, &this_min, use_mad);
		m = (D > 0) & (cur < best);
		for (int i = 0; i < n; i++)
			vpick(&Lb[i], &m, &La[i]);
		vpick(&best, &m, &cur);
		vpick(&scale, &m, &this_scale);
		vpick(&min, &m, &this_min);
	}
	for (int g = 0; g < ngroups; g++) {
		the_min[g] = flat[g] ? -min0[g] : -min[g];
		scales[g] = flat[g] ? 0.f : scale[g];
		for (int i = 0; i < n; i++)
			L[g * n + i] = flat[g] ? 0 : (uint8_t)Lb[i][g];
	}
}

void quant_make_qkx(int ngroups, int n, int nmax, const float *x, const float *weights, uint8_t *L,
		    float *scales, float *the_min, float rmin, float rdelta, int nstep, bool use_mad, bool qkx3)
{
	for (int g = 0; g < ngroups; g += LANES) {
		int m = ngroups - g < LANES ? ngroups - g : LANES;

		qkx8(m, n, nmax, x + g * n, weights + g * n, L + g * n, scales + g, the_min + g, rmin,
		     rdelta, nstep, use_mad, qkx3);
	}
}

/* Eight groups of make_qx_quants with rmse_type 1: levels at -nmax / (signed absmax), then
 * 18 nearby scales, keeping one when it captures more weighted energy sumlx^2 / suml2. */
QUANT_CLONES
static void qx8(int ngroups, int n, int nmax, const float *x, const float *qw, int8_t *L, float *scales)
{
	vf X[MAXN] = { 0 }, W[MAXN] = { 0 }, Lb[MAXN], La[MAXN];
	const vf zero = { 0 };
	vf amax = zero, max = zero, sumlx = zero, suml2 = zero;
	vi m;

	transpose_in(x, ngroups, n, X);
	if (qw)
		transpose_in(qw, ngroups, n, W);
	else
		for (int i = 0; i < n; i++)
			W[i] = X[i] * X[i];
	for (int i = 0; i < n; i++) {
		vf ax = (vf)((vi)X[i] & 0x7fffffff);

		m = ax > amax;
		vpick(&amax, &m, &ax);
		vpick(&max, &m, &X[i]);
	}
	const vi tiny = amax < GROUP_MAX_EPS;
	vf iscale = (float)-nmax / max;
	for (int i = 0; i < n; i++) {
		vf v = iscale * X[i];

		level_sym(&Lb[i], &v, nmax);
		sumlx += W[i] * X[i] * Lb[i];
		suml2 += W[i] * Lb[i] * Lb[i];
	}
	vf scale = sumlx / suml2, best;
	m = suml2 == 0;
	vpick(&scale, &m, &zero);
	best = scale * sumlx;
	for (int is = -9; is <= 9; is++) {
		if (is == 0)
			continue;
		iscale = -((float)nmax + 0.1f * (float)is) / max;
		sumlx = suml2 = zero;
		for (int i = 0; i < n; i++) {
			vf v = iscale * X[i];

			level_sym(&La[i], &v, nmax);
			sumlx += W[i] * X[i] * La[i];
			suml2 += W[i] * La[i] * La[i];
		}
		m = (suml2 > 0) & (sumlx * sumlx > best * suml2);
		vf this_scale = sumlx / suml2, this_best;
		this_best = this_scale * sumlx;
		for (int i = 0; i < n; i++)
			vpick(&Lb[i], &m, &La[i]);
		vpick(&scale, &m, &this_scale);
		vpick(&best, &m, &this_best);
	}
	for (int g = 0; g < ngroups; g++) {
		scales[g] = tiny[g] ? 0.f : scale[g];
		for (int i = 0; i < n; i++)
			L[g * n + i] = tiny[g] ? 0 : (int8_t)((int)Lb[i][g] + nmax);
	}
}

void quant_make_qx(int ngroups, int n, int nmax, const float *x, const float *qw, int8_t *L, float *scales)
{
	for (int g = 0; g < ngroups; g += LANES) {
		int m = ngroups - g < LANES ? ngroups - g : LANES;

		qx8(m, n, nmax, x + g * n, qw ? qw + g * n : NULL, L + g * n, scales + g);
	}
}
float quant_make_qp(int n, int nmax, const float *x, uint8_t *L, const float *quant_weights)
{
	float max = 0;

	for (int i = 0; i < n; i++)
		max = max > x[i] ? max : x[i];
	if (max < GROUP_MAX_EPS) {
		memset(L, 0, (size_t)n);
		return 0.f;
	}
	float iscale = (float)nmax / max;
	for (int i = 0; i < n; i++)
		L[i] = (uint8_t)quant_nearest_int(iscale * x[i]);
	float scale = 1 / iscale;
	float best_mse = 0;
	for (int i = 0; i < n; i++) {
		float diff = x[i] - scale * (float)L[i];

		best_mse += quant_weights[i] * diff * diff;
	}
	for (int is = -4; is <= 4; is++) {
		if (is == 0)
			continue;
		float iscale_is = (0.1f * (float)is + (float)nmax) / max;
		float scale_is = 1 / iscale_is;
		float mse = 0;

		for (int i = 0; i < n; i++) {
			int l = quant_nearest_int(iscale_is * x[i]);
			float diff = x[i] - scale_is * (float)(l < nmax ? l : nmax);

			mse += quant_weights[i] * diff * diff;
		}
		if (mse < best_mse) {
			best_mse = mse;
			iscale = iscale_is;
		}
	}
	float sumlx = 0, suml2 = 0;
	for (int i = 0; i < n; i++) {
		int l = quant_nearest_int(iscale * x[i]);
		float w = quant_weights[i];

		l = l < nmax ? l : nmax;
		L[i] = (uint8_t)l;
		sumlx += w * x[i] * (float)l;
		suml2 += w * (float)l * (float)l;
	}
	for (int itry = 0; itry < 5; itry++) {
		int n_changed = 0;

		for (int i = 0; i < n; i++) {
			float w = quant_weights[i];
			float slx = sumlx - w * x[i] * (float)L[i];
			float sl2 = suml2 - w * (float)L[i] * (float)L[i];

			if (slx > 0 && sl2 > 0) {
				int new_l = quant_nearest_int(x[i] * sl2 / slx);

				new_l = new_l < nmax ? new_l : nmax;
				if (new_l != L[i]) {
					slx += w * x[i] * (float)new_l;
					sl2 += w * (float)new_l * (float)new_l;
					if (slx * slx * suml2 > sumlx * sumlx * sl2) {
						L[i] = (uint8_t)new_l;
						sumlx = slx;
						suml2 = sl2;
						n_changed++;
					}
				}
			}
		}
		if (!n_changed)
			break;
	}
	return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* Eight groups of make_q3_quants with do_rmse: levels at -nmax / (signed absmax), then up
 * to five passes moving single elements to the level the rest of the group implies,
 * keeping a move when it raises sumlx^2 / suml2. A lane whose pass changed nothing would
 * change nothing in later passes either, so running the passes while any lane still
 * changes gives each lane exactly its own scalar sequence. */
QUANT_CLONES
static void q3_8(int ngroups, int n, int nmax, const float *x, int8_t *L, float *scales)
{
	vf X[MAXN] = { 0 }, W[MAXN], Lc[MAXN];
	const vf zero = { 0 };
	vf amax = zero, max = zero, sumlx = zero, suml2 = zero;
	vi m;

	transpose_in(x, ngroups, n, X);
	for (int i = 0; i < n; i++) {
		vf ax = (vf)((vi)X[i] & 0x7fffffff);

		m = ax > amax;
		vpick(&amax, &m, &ax);
		vpick(&max, &m, &X[i]);
		W[i] = X[i] * X[i];
	}
	const vi tiny = amax < GROUP_MAX_EPS;
	vf iscale = (float)-nmax / max;
	for (int i = 0; i < n; i++) {
		vf v = iscale * X[i];

		level_sym(&Lc[i], &v, nmax);
		sumlx += W[i] * X[i] * Lc[i];
		suml2 += W[i] * Lc[i] * Lc[i];
	}
	for (int itry = 0; itry < 5; itry++) {
		vi changed = { 0 };

		for (int i = 0; i < n; i++) {
			vf slx = sumlx - W[i] * X[i] * Lc[i];
			vf sl2 = suml2 - W[i] * Lc[i] * Lc[i];
			vf v = X[i] * sl2 / slx, new_l;

			level_sym(&new_l, &v, nmax);
			slx += W[i] * X[i] * new_l;
			sl2 += W[i] * new_l * new_l;
			m = (sumlx - W[i] * X[i] * Lc[i] > 0) & (new_l != Lc[i]) & (sl2 > 0) &
			    (slx * slx * suml2 > sumlx * sumlx * sl2);
			vpick(&Lc[i], &m, &new_l);
			vpick(&sumlx, &m, &slx);
			vpick(&suml2, &m, &sl2);
			changed |= m;
		}
		bool any = false;
		for (int g = 0; g < LANES; g++)
			any |= changed[g] != 0;
		if (!any)
			break;
	}
	vf scale = sumlx / suml2;
	m = suml2 > 0;
	scale = (vf)((vi)scale & m);
	for (int g = 0; g < ngroups; g++) {
		scales[g] = tiny[g] ? 0.f : scale[g];
		for (int i = 0; i < n; i++)
			L[g * n + i] = tiny[g] ? 0 : (int8_t)((int)Lc[i][g] + nmax);
	}
}

void quant_make_q3(int ngroups, int n, int nmax, const float *x, int8_t *L, float *scales)
{
	for (int g = 0; g < ngroups; g += LANES) {
		int m = ngroups - g < LANES ? ngroups - g : LANES;

		q3_8(m, n, nmax, x + g * n, L + g * n, scales + g);
	}
}
