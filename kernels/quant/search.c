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

static int clampi(int v, int lo, int hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

/* The weight make_qx gives element i when no explicit weights are passed. */
static float qx_weight(const float *qw, const float *x, int i, int rmse_type)
{
	if (qw)
		return qw[i];
	switch (rmse_type) {
	case 1: return x[i] * x[i];
	case 2: return 1;
	case 3: return fabsf(x[i]);
	default: return sqrtf(fabsf(x[i]));
	}
}

float quant_make_qx(int n, int nmax, const float *x, int8_t *L, int rmse_type, const float *qw)
{
	float max = 0, amax = 0;

	for (int i = 0; i < n; i++) {
		float ax = fabsf(x[i]);

		if (ax > amax) {
			amax = ax;
			max = x[i];
		}
	}
	if (amax < GROUP_MAX_EPS) {
		memset(L, 0, (size_t)n);
		return 0.f;
	}
	float iscale = (float)-nmax / max;
	if (rmse_type == 0) {
		for (int i = 0; i < n; i++)
			L[i] = (int8_t)(nmax + clampi(quant_nearest_int(iscale * x[i]), -nmax, nmax - 1));
		return 1 / iscale;
	}
	bool return_early = false;
	if (rmse_type < 0) {
		rmse_type = -rmse_type;
		return_early = true;
	}
	float sumlx = 0, suml2 = 0;
	for (int i = 0; i < n; i++) {
		int l = clampi(quant_nearest_int(iscale * x[i]), -nmax, nmax - 1);
		float w = qx_weight(qw, x, i, rmse_type);

		L[i] = (int8_t)(l + nmax);
		sumlx += w * x[i] * (float)l;
		suml2 += w * (float)l * (float)l;
	}
	float scale = suml2 ? sumlx / suml2 : 0.0f;
	if (return_early)
		return suml2 > 0 ? 0.5f * (scale + 1 / iscale) : 1 / iscale;
	float best = scale * sumlx;
	for (int is = -9; is <= 9; is++) {
		if (is == 0)
			continue;
		iscale = -((float)nmax + 0.1f * (float)is) / max;
		sumlx = suml2 = 0;
		for (int i = 0; i < n; i++) {
			int l = clampi(quant_nearest_int(iscale * x[i]), -nmax, nmax - 1);
			float w = qx_weight(qw, x, i, rmse_type);

			sumlx += w * x[i] * (float)l;
			suml2 += w * (float)l * (float)l;
		}
		if (suml2 > 0 && sumlx * sumlx > best * suml2) {
			for (int i = 0; i < n; i++)
				L[i] = (int8_t)(nmax + clampi(quant_nearest_int(iscale * x[i]), -nmax, nmax - 1));
			scale = sumlx / suml2;
			best = scale * sumlx;
		}
	}
	return scale;
}

float quant_make_q3(int n, int nmax, const float *x, int8_t *L, bool do_rmse)
{
	float max = 0, amax = 0;

	for (int i = 0; i < n; i++) {
		float ax = fabsf(x[i]);

		if (ax > amax) {
			amax = ax;
			max = x[i];
		}
	}
	if (amax < GROUP_MAX_EPS) {
		memset(L, 0, (size_t)n);
		return 0.f;
	}
	float iscale = (float)-nmax / max;
	if (!do_rmse) {
		for (int i = 0; i < n; i++)
			L[i] = (int8_t)(clampi(quant_nearest_int(iscale * x[i]), -nmax, nmax - 1) + nmax);
		return 1 / iscale;
	}
	float sumlx = 0, suml2 = 0;
	for (int i = 0; i < n; i++) {
		int l = clampi(quant_nearest_int(iscale * x[i]), -nmax, nmax - 1);
		float w = x[i] * x[i];

		L[i] = (int8_t)l;
		sumlx += w * x[i] * (float)l;
		suml2 += w * (float)l * (float)l;
	}
	/* Move one element at a time to the level that best fits the scale the others imply,
	 * keeping a move only when it raises sumlx^2 / suml2 (the captured energy). */
	for (int itry = 0; itry < 5; itry++) {
		int n_changed = 0;

		for (int i = 0; i < n; i++) {
			float w = x[i] * x[i];
			float slx = sumlx - w * x[i] * (float)L[i];

			if (slx > 0) {
				float sl2 = suml2 - w * (float)L[i] * (float)L[i];
				int new_l = clampi(quant_nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);

				if (new_l != L[i]) {
					slx += w * x[i] * (float)new_l;
					sl2 += w * (float)new_l * (float)new_l;
					if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
						L[i] = (int8_t)new_l;
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
	for (int i = 0; i < n; i++)
		L[i] = (int8_t)(L[i] + nmax);
	return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* Fits scale and min of x ~ scale * Laux + min by weighted least squares; false when the
 * system is singular. */
static bool fit_affine(float sum_w, float sum_x, float sum_l, float sum_l2, float sum_xl,
		       float *scale, float *min)
{
	float D = sum_w * sum_l2 - sum_l * sum_l;

	if (!(D > 0))
		return false;
	*scale = (sum_w * sum_xl - sum_x * sum_l) / D;
	*min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
	if (*min > 0) {
		*min = 0;
		*scale = sum_xl / sum_l2;
	}
	return true;
}

static float affine_error(int n, const float *x, const float *weights, const uint8_t *L,
			  float scale, float min, bool use_mad)
{
	float err = 0;

	for (int i = 0; i < n; i++) {
		float diff = scale * (float)L[i] + min - x[i];
		float w = weights ? weights[i] : x[i] * x[i];

		diff = use_mad ? fabsf(diff) : diff * diff;
		err += w * diff;
	}
	return err;
}

/* The body both qkx searches share; qkx3 differs only in its NULL weights and the
 * degenerate test, which the callers handle. */
static float qkx_search(int n, int nmax, const float *x, const float *weights, uint8_t *L,
			float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
			bool use_mad, float min, float max, float sum_w, float sum_x)
{
	float iscale = (float)nmax / (max - min);
	float scale = 1 / iscale;

	for (int i = 0; i < n; i++)
		L[i] = (uint8_t)clampi(quant_nearest_int(iscale * (x[i] - min)), 0, nmax);
	float best = affine_error(n, x, weights, L, scale, min, use_mad);
	if (nstep < 1) {
		*the_min = -min;
		return scale;
	}
	for (int is = 0; is <= nstep; is++) {
		float sum_l = 0, sum_l2 = 0, sum_xl = 0, this_scale, this_min;

		iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
		for (int i = 0; i < n; i++) {
			/* min may have moved close to max: clamp before rounding so that no
			 * value outside nearest_int's range reaches it */
			float v = iscale * (x[i] - min);
			int l = v > 0 ? quant_nearest_int(v < (float)nmax ? v : (float)nmax) : 0;
			float w = weights ? weights[i] : x[i] * x[i];

			Laux[i] = (uint8_t)l;
			sum_l += w * (float)l;
			sum_l2 += w * (float)l * (float)l;
			sum_xl += w * (float)l * x[i];
		}
		if (!fit_affine(sum_w, sum_x, sum_l, sum_l2, sum_xl, &this_scale, &this_min))
			continue;
		float cur = affine_error(n, x, weights, Laux, this_scale, this_min, use_mad);
		if (cur < best) {
			memcpy(L, Laux, (size_t)n);
			best = cur;
			scale = this_scale;
			min = this_min;
		}
	}
	*the_min = -min;
	return scale;
}

float quant_make_qkx2(int n, int nmax, const float *x, const float *weights, uint8_t *L,
		      float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep, bool use_mad)
{
	float min = x[0], max = x[0], sum_w = weights[0], sum_x = sum_w * x[0];

	for (int i = 1; i < n; i++) {
		if (x[i] < min)
			min = x[i];
		if (x[i] > max)
			max = x[i];
		sum_w += weights[i];
		sum_x += weights[i] * x[i];
	}
	if (min > 0)
		min = 0;
	if (max == min) {
		memset(L, 0, (size_t)n);
		*the_min = -min;
		return 0.f;
	}
	return qkx_search(n, nmax, x, weights, L, the_min, Laux, rmin, rdelta, nstep, use_mad,
			  min, max, sum_w, sum_x);
}

float quant_make_qkx3(int n, int nmax, const float *x, const float *weights, uint8_t *L,
		      float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep, bool use_mad)
{
	float min = x[0], max = x[0];
	float sum_w = weights ? weights[0] : x[0] * x[0], sum_x = sum_w * x[0];

	for (int i = 1; i < n; i++) {
		float w = weights ? weights[i] : x[i] * x[i];

		if (x[i] < min)
			min = x[i];
		if (x[i] > max)
			max = x[i];
		sum_w += w;
		sum_x += w * x[i];
	}
	if (min > 0)
		min = 0;
	if (max <= min) {
		memset(L, 0, (size_t)n);
		*the_min = -min;
		return 0.f;
	}
	return qkx_search(n, nmax, x, weights, L, the_min, Laux, rmin, rdelta, nstep, use_mad,
			  min, max, sum_w, sum_x);
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
