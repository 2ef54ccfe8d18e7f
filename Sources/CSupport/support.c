#define _GNU_SOURCE
#include "CSupport.h"
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/prctl.h>
#include <signal.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

void idx_flush_denormals(void) {
#if defined(__x86_64__) || defined(__i386__)
    /* FTZ (bit 15) and DAZ (bit 6). */
    _mm_setcsr(_mm_getcsr() | 0x8040);
#endif
}

int idx_rename_exchange(const char *from, const char *to) {
#ifdef SYS_renameat2
    return (int)syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, 2 /* RENAME_EXCHANGE */);
#else
    return -1;
#endif
}

int idx_isatty(int fd) { return isatty(fd); }

int idx_die_with_parent(int expected_parent) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return -1;
    return getppid() != expected_parent ? 1 : 0;
}

/* ---- int8 dot products for the vector scan ---- */

static void dots_portable(const int8_t *codes, size_t n, size_t d, const int8_t *q, int32_t *out) {
    for (size_t i = 0; i < n; i++) {
        const int8_t *row = codes + i * d;
        int32_t acc = 0;
        for (size_t j = 0; j < d; j++) acc += (int32_t)q[j] * (int32_t)row[j];
        out[i] = acc;
    }
}

#if defined(__x86_64__)
#include <immintrin.h>

/* Sign-extend 32 (or 16) codes to int16 and multiply-add pairs into int32 lanes (vpmaddwd):
   |code·q| ≤ 127², two of them fit int32 with room to spare for any d. */
__attribute__((target("avx512f,avx512bw")))
static void dots_avx512(const int8_t *codes, size_t n, size_t d, const int8_t *q, int32_t *out) {
    size_t blocks = d / 32, tail = blocks * 32;
    __m512i qw[64];
    size_t nq = blocks < 64 ? blocks : 64;
    for (size_t b = 0; b < nq; b++) qw[b] = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(q + 32 * b)));
    for (size_t i = 0; i < n; i++) {
        const int8_t *row = codes + i * d;
        __m512i acc = _mm512_setzero_si512();
        for (size_t b = 0; b < blocks; b++) {
            __m512i x = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(row + 32 * b)));
            __m512i y = b < 64 ? qw[b] : _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(q + 32 * b)));
            acc = _mm512_add_epi32(acc, _mm512_madd_epi16(x, y));
        }
        int32_t s = _mm512_reduce_add_epi32(acc);
        for (size_t j = tail; j < d; j++) s += (int32_t)q[j] * (int32_t)row[j];
        out[i] = s;
    }
}

/* AVX-512 VNNI: vpdpbusd multiplies unsigned by signed bytes, four into each int32 lane, so the
   codes are biased to unsigned (c ^ 0x80 = c + 128) and 128·Σq taken off at the end: exact for
   every int8 code, and for d up to 66,000 (255·127·d stays in int32). Sixteen rows at a time
   share one transposing reduction of their accumulators instead of a reduction each. */
__attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline))
static inline __m512i row_vnni(const int8_t *row, const int8_t *q, size_t blocks, __mmask64 tail, __m512i flip) {
    __m512i acc = _mm512_setzero_si512();
    for (size_t b = 0; b < blocks; b++)
        acc = _mm512_dpbusd_epi32(acc, _mm512_xor_si512(_mm512_loadu_si512(row + 64 * b), flip), _mm512_loadu_si512(q + 64 * b));
    if (tail) {
        /* Masked-off bytes load as 0: their q is 0, so the biased code (128) adds nothing. */
        __m512i x = _mm512_xor_si512(_mm512_maskz_loadu_epi8(tail, row + 64 * blocks), flip);
        acc = _mm512_dpbusd_epi32(acc, x, _mm512_maskz_loadu_epi8(tail, q + 64 * blocks));
    }
    return acc;
}

/* Adds pairs of neighbouring int32s of a and b: per 128-bit lane, (a0+a2, b0+b2, a1+a3, b1+b3). */
__attribute__((target("avx512f")))
static inline __m512i fold32(__m512i a, __m512i b) {
    return _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
}

/* Per 128-bit lane, the sums of four rows' accumulators (from two fold32 results). */
__attribute__((target("avx512f")))
static inline __m512i fold64(__m512i ab, __m512i cd) {
    return _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
}

/* Adds 128-bit lanes pairwise: the result's lanes are (x0+x1, x2+x3, y0+y1, y2+y3). */
__attribute__((target("avx512f")))
static inline __m512i fold128(__m512i x, __m512i y) {
    return _mm512_add_epi32(_mm512_shuffle_i32x4(x, y, _MM_SHUFFLE(2, 0, 2, 0)), _mm512_shuffle_i32x4(x, y, _MM_SHUFFLE(3, 1, 3, 1)));
}

/* Sixteen rows' dot products with `blocks` full 64-byte blocks (a constant where it is called,
   so the loops unroll and the sixteen accumulators stay in registers). */
__attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline))
static inline __m512i rows16_vnni(int blocks, const int8_t *rows, size_t d, const int8_t *q, __mmask64 tail, __m512i flip) {
    __m512i a[16];
    for (int r = 0; r < 16; r++) a[r] = row_vnni(rows + r * d, q, (size_t)blocks, tail, flip);
    __m512i f[8], g[4];
    for (int r = 0; r < 8; r++) f[r] = fold32(a[2 * r], a[2 * r + 1]);
    for (int r = 0; r < 4; r++) g[r] = fold64(f[2 * r], f[2 * r + 1]);
    /* g[r] lane L: rows 4r..4r+3 summed over lane L; two cross-lane folds give rows 0..15 in order. */
    return fold128(fold128(g[0], g[1]), fold128(g[2], g[3]));
}

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void dots_vnni(const int8_t *codes, size_t n, size_t d, const int8_t *q, int32_t *out) {
    size_t blocks = d / 64, t = d % 64;
    __mmask64 tail = t ? (((__mmask64)1 << t) - 1) : 0;
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    int32_t qsum = 0;
    for (size_t j = 0; j < d; j++) qsum += q[j];
    const __m512i bias = _mm512_set1_epi32(128 * qsum);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const int8_t *rows = codes + i * d;
        __m512i sums;
        /* Common widths (64-256 dimensions, no partial block) get code of their own. */
        switch (t ? 0 : blocks) {
        case 1: sums = rows16_vnni(1, rows, d, q, 0, flip); break;
        case 2: sums = rows16_vnni(2, rows, d, q, 0, flip); break;
        case 3: sums = rows16_vnni(3, rows, d, q, 0, flip); break;
        case 4: sums = rows16_vnni(4, rows, d, q, 0, flip); break;
        default: sums = rows16_vnni((int)blocks, rows, d, q, tail, flip); break;
        }
        _mm512_storeu_si512(out + i, _mm512_sub_epi32(sums, bias));
    }
    for (; i < n; i++) out[i] = _mm512_reduce_add_epi32(row_vnni(codes + i * d, q, blocks, tail, flip)) - 128 * qsum;
}

/* Four rows' int32 sums, one lane each: the lanes of a, b, c and d added up. */
__attribute__((target("avx2"), always_inline))
static inline __m128i sum4_avx2(__m256i a, __m256i b, __m256i c, __m256i d) {
    __m256i abcd = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
    return _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1));
}

/* 32 codes times 32 query bytes, summed in pairs of pairs into eight int32 lanes: |code| as
   unsigned bytes times q with the code's sign (vpmaddubsw), so each pair is at most
   2 · 128 · 127 < 2^15 and never saturates (q = -128 would: the scan's q is within ±127). */
__attribute__((target("avx2"), always_inline))
static inline __m256i dot32_avx2(const int8_t *codes, __m256i qv, __m256i ones) {
    __m256i x = _mm256_loadu_si256((const __m256i *)codes);
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(x), _mm256_sign_epi8(qv, x)), ones);
}

/* Four rows at a time: the query's block is loaded once for the four, and their sums reduced
   together (one horizontal reduction a row cost as much as a row's products at d = 128). */
__attribute__((target("avx2")))
static void dots_avx2(const int8_t *codes, size_t n, size_t d, const int8_t *q, int32_t *out) {
    size_t blocks = d / 32, tail = blocks * 32;
    const __m256i ones = _mm256_set1_epi16(1);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const int8_t *row = codes + i * d;
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
        for (size_t b = 0; b < blocks; b++) {
            __m256i qv = _mm256_loadu_si256((const __m256i *)(q + 32 * b));
            a0 = _mm256_add_epi32(a0, dot32_avx2(row + 32 * b, qv, ones));
            a1 = _mm256_add_epi32(a1, dot32_avx2(row + d + 32 * b, qv, ones));
            a2 = _mm256_add_epi32(a2, dot32_avx2(row + 2 * d + 32 * b, qv, ones));
            a3 = _mm256_add_epi32(a3, dot32_avx2(row + 3 * d + 32 * b, qv, ones));
        }
        _mm_storeu_si128((__m128i *)(out + i), sum4_avx2(a0, a1, a2, a3));
        for (size_t r = 0; r < 4; r++)
            for (size_t j = tail; j < d; j++) out[i + r] += (int32_t)q[j] * (int32_t)row[r * d + j];
    }
    for (; i < n; i++) {
        const int8_t *row = codes + i * d;
        __m256i a = _mm256_setzero_si256(), z = a;
        for (size_t b = 0; b < blocks; b++) a = _mm256_add_epi32(a, dot32_avx2(row + 32 * b, _mm256_loadu_si256((const __m256i *)(q + 32 * b)), ones));
        int32_t s = _mm_cvtsi128_si32(sum4_avx2(a, z, z, z));
        for (size_t j = tail; j < d; j++) s += (int32_t)q[j] * (int32_t)row[j];
        out[i] = s;
    }
}
#endif

typedef void (*dots_fn)(const int8_t *, size_t, size_t, const int8_t *, int32_t *);

static dots_fn pick_dots(const char **name) {
#if defined(__x86_64__)
    /* IDX_INT8_DOTS=avx512bw|avx2|portable forces a lesser path (the tests compare them) */
    const char *force = getenv("IDX_INT8_DOTS");
    int allowVNNI = !force || strcmp(force, "avx512vnni") == 0;
    int allow512 = allowVNNI || strcmp(force, "avx512bw") == 0, allow256 = allow512 || strcmp(force, "avx2") == 0;
    __builtin_cpu_init();
    if (allowVNNI && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512f")) {
        *name = "avx512vnni";
        return dots_vnni;
    }
    if (allow512 && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512f")) { *name = "avx512bw"; return dots_avx512; }
    if (allow256 && __builtin_cpu_supports("avx2")) { *name = "avx2"; return dots_avx2; }
#endif
    *name = "portable";
    return dots_portable;
}

static dots_fn chosen_dots;
static const char *chosen_name;
static pthread_once_t dots_once = PTHREAD_ONCE_INIT;
static void init_dots(void) { chosen_dots = pick_dots(&chosen_name); }

void idx_int8_dots(const int8_t *codes, size_t n, size_t d, const int8_t *q, int32_t *out) {
    pthread_once(&dots_once, init_dots);
    chosen_dots(codes, n, d, q, out);
}

const char *idx_int8_dots_path(void) {
    pthread_once(&dots_once, init_dots);
    return chosen_name;
}

/* ---- a scan's scores: the int8 dot products turned into cosines (and hybrid scores) ---- */

/* No contraction into FMA here: the scores must be the bits Swift's
   norm * (qc + scale * qScale * dot) gives, whichever path computes them. */
#pragma clang fp contract(off)

static size_t scores_portable(size_t n, const int32_t *dots, float qScale, const float *norms, const float *scales,
                              const uint8_t *cids, const float *qc, const float *lexical, float w, float threshold,
                              float *out, uint32_t *above) {
    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        float s = norms[i] * (qc[cids[i]] + scales[i] * qScale * (float)dots[i]);
        if (lexical) s = (1 - w) * s + w * lexical[i];
        out[i] = s;
        if (s > threshold) above[count++] = (uint32_t)i;
    }
    return count;
}

#if defined(__x86_64__)
__attribute__((target("avx512f")))
static size_t scores_avx512(size_t n, const int32_t *dots, float qScale, const float *norms, const float *scales,
                            const uint8_t *cids, const float *qc, const float *lexical, float w, float threshold,
                            float *out, uint32_t *above) {
    const __m512 qs = _mm512_set1_ps(qScale), keep = _mm512_set1_ps(1 - w), share = _mm512_set1_ps(w);
    const __m512 bar = _mm512_set1_ps(threshold);
    const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    size_t i = 0, count = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(cids + i)));
        __m512 centroid = _mm512_i32gather_ps(c, qc, 4);
        __m512 x = _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(scales + i), qs), _mm512_cvtepi32_ps(_mm512_loadu_si512(dots + i)));
        __m512 s = _mm512_mul_ps(_mm512_loadu_ps(norms + i), _mm512_add_ps(centroid, x));
        if (lexical) s = _mm512_add_ps(_mm512_mul_ps(keep, s), _mm512_mul_ps(share, _mm512_loadu_ps(lexical + i)));
        _mm512_storeu_ps(out + i, s);
        __mmask16 high = _mm512_cmp_ps_mask(s, bar, _CMP_GT_OQ);
        if (high) {
            _mm512_mask_compressstoreu_epi32(above + count, high, _mm512_add_epi32(lanes, _mm512_set1_epi32((int)i)));
            count += (size_t)__builtin_popcount(high);
        }
    }
    size_t rest = scores_portable(n - i, dots + i, qScale, norms + i, scales + i, cids + i, qc, lexical ? lexical + i : NULL, w,
                                  threshold, out + i, above + count);
    for (size_t r = 0; r < rest; r++) above[count + r] += (uint32_t)i;
    return count + rest;
}

/* As scores_avx512, eight rows at a time; the rows above the threshold listed from a mask. */
__attribute__((target("avx2")))
static size_t scores_avx2(size_t n, const int32_t *dots, float qScale, const float *norms, const float *scales,
                          const uint8_t *cids, const float *qc, const float *lexical, float w, float threshold,
                          float *out, uint32_t *above) {
    const __m256 qs = _mm256_set1_ps(qScale), keep = _mm256_set1_ps(1 - w), share = _mm256_set1_ps(w);
    const __m256 bar = _mm256_set1_ps(threshold);
    size_t i = 0, count = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(cids + i)));
        __m256 centroid = _mm256_i32gather_ps(qc, c, 4);
        __m256 x = _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(scales + i), qs),
                                 _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(dots + i))));
        __m256 s = _mm256_mul_ps(_mm256_loadu_ps(norms + i), _mm256_add_ps(centroid, x));
        if (lexical) s = _mm256_add_ps(_mm256_mul_ps(keep, s), _mm256_mul_ps(share, _mm256_loadu_ps(lexical + i)));
        _mm256_storeu_ps(out + i, s);
        unsigned high = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(s, bar, _CMP_GT_OQ));
        for (; high; high &= high - 1) above[count++] = (uint32_t)(i + (size_t)__builtin_ctz(high));
    }
    size_t rest = scores_portable(n - i, dots + i, qScale, norms + i, scales + i, cids + i, qc, lexical ? lexical + i : NULL, w,
                                  threshold, out + i, above + count);
    for (size_t r = 0; r < rest; r++) above[count + r] += (uint32_t)i;
    return count + rest;
}
#endif

/* One row's elements from `from` on: (centroid + scale · code) · norm, the bits Swift's
   expression gives (the SIMD paths' tails, and the whole row on the portable one). */
static inline void decode_row_portable(size_t from, size_t d, const int8_t *c, const float *centroid, float scale, float norm,
                                       float *o) {
    for (size_t j = from; j < d; j++) o[j] = (centroid[j] + scale * (float)c[j]) * norm;
}

/* Rows of a segment decoded to floats for the exact re-rank, element by element. */
static void decode_portable(size_t n, size_t d, const uint32_t *rows, const int8_t *codes, const float *scales,
                            const float *norms, const uint8_t *cids, const float *centroids, float *out) {
    for (size_t i = 0; i < n; i++) {
        size_t r = rows[i];
        decode_row_portable(0, d, codes + r * d, centroids + (size_t)cids[r] * d, scales[r], norms[r], out + i * d);
    }
}

#if defined(__x86_64__)
/* The rows are scattered over the codes: fetch row i + 1 while row i decodes. */
static inline void prefetch_next_row(size_t i, size_t n, size_t d, const uint32_t *rows, const int8_t *codes) {
    if (i + 1 < n)
        for (size_t l = 0; l < d; l += 64) _mm_prefetch((const char *)(codes + (size_t)rows[i + 1] * d + l), _MM_HINT_T0);
}

__attribute__((target("avx512f")))
static void decode_avx512(size_t n, size_t d, const uint32_t *rows, const int8_t *codes, const float *scales,
                          const float *norms, const uint8_t *cids, const float *centroids, float *out) {
    size_t whole = d / 16 * 16;
    for (size_t i = 0; i < n; i++) {
        prefetch_next_row(i, n, d, rows, codes);
        size_t r = rows[i];
        const int8_t *c = codes + r * d;
        const float *centroid = centroids + (size_t)cids[r] * d;
        const __m512 s = _mm512_set1_ps(scales[r]), norm = _mm512_set1_ps(norms[r]);
        float *o = out + i * d;
        for (size_t j = 0; j < whole; j += 16) {
            __m512 x = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(c + j))));
            _mm512_storeu_ps(o + j, _mm512_mul_ps(_mm512_add_ps(_mm512_loadu_ps(centroid + j), _mm512_mul_ps(s, x)), norm));
        }
        decode_row_portable(whole, d, c, centroid, scales[r], norms[r], o);
    }
}

__attribute__((target("avx2")))
static void decode_avx2(size_t n, size_t d, const uint32_t *rows, const int8_t *codes, const float *scales,
                        const float *norms, const uint8_t *cids, const float *centroids, float *out) {
    size_t whole = d / 8 * 8;
    for (size_t i = 0; i < n; i++) {
        prefetch_next_row(i, n, d, rows, codes);
        size_t r = rows[i];
        const int8_t *c = codes + r * d;
        const float *centroid = centroids + (size_t)cids[r] * d;
        const __m256 s = _mm256_set1_ps(scales[r]), norm = _mm256_set1_ps(norms[r]);
        float *o = out + i * d;
        for (size_t j = 0; j < whole; j += 8) {
            __m256 x = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(c + j))));
            _mm256_storeu_ps(o + j, _mm256_mul_ps(_mm256_add_ps(_mm256_loadu_ps(centroid + j), _mm256_mul_ps(s, x)), norm));
        }
        decode_row_portable(whole, d, c, centroid, scales[r], norms[r], o);
    }
}
#endif

typedef void (*decode_fn)(size_t, size_t, const uint32_t *, const int8_t *, const float *, const float *,
                          const uint8_t *, const float *, float *);
/* The best path at or below `path` (2: AVX-512F, 1: AVX2, 0: portable) the CPU has. */
static decode_fn decode_path(int path, int *taken) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (path >= 2 && __builtin_cpu_supports("avx512f")) { *taken = 2; return decode_avx512; }
    if (path >= 1 && __builtin_cpu_supports("avx2")) { *taken = 1; return decode_avx2; }
#endif
    (void)path;
    *taken = 0;
    return decode_portable;
}

static decode_fn chosen_decode;
static pthread_once_t decode_once = PTHREAD_ONCE_INIT;
static void init_decode(void) { int taken; chosen_decode = decode_path(2, &taken); }

int idx_decode_rows_with(int path, size_t n, size_t d, const uint32_t *rows, const int8_t *codes, const float *scales,
                         const float *norms, const uint8_t *cids, const float *centroids, float *out) {
    int taken;
    decode_path(path, &taken)(n, d, rows, codes, scales, norms, cids, centroids, out);
    return taken;
}

void idx_decode_rows(size_t n, size_t d, const uint32_t *rows, const int8_t *codes, const float *scales,
                     const float *norms, const uint8_t *cids, const float *centroids, float *out) {
    pthread_once(&decode_once, init_decode);
    chosen_decode(n, d, rows, codes, scales, norms, cids, centroids, out);
}

#pragma clang fp contract(on)

typedef size_t (*scores_fn)(size_t, const int32_t *, float, const float *, const float *, const uint8_t *, const float *,
                            const float *, float, float, float *, uint32_t *);
/* The best path at or below `path` (2: AVX-512F, 1: AVX2, 0: portable) the CPU has. */
static scores_fn scores_path(int path, int *taken) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (path >= 2 && __builtin_cpu_supports("avx512f")) { *taken = 2; return scores_avx512; }
    if (path >= 1 && __builtin_cpu_supports("avx2")) { *taken = 1; return scores_avx2; }
#endif
    (void)path;
    *taken = 0;
    return scores_portable;
}

static scores_fn chosen_scores;
static pthread_once_t scores_once = PTHREAD_ONCE_INIT;
static void init_scores(void) { int taken; chosen_scores = scores_path(2, &taken); }

size_t idx_scan_scores(size_t n, const int32_t *dots, float qScale, const float *norms, const float *scales,
                       const uint8_t *cids, const float *qc, const float *lexical, float w, float threshold,
                       float *out, uint32_t *above) {
    pthread_once(&scores_once, init_scores);
    return chosen_scores(n, dots, qScale, norms, scales, cids, qc, lexical, w, threshold, out, above);
}

size_t idx_scan_scores_with(int path, size_t n, const int32_t *dots, float qScale, const float *norms, const float *scales,
                            const uint8_t *cids, const float *qc, const float *lexical, float w, float threshold,
                            float *out, uint32_t *above, int *taken) {
    return scores_path(path, taken)(n, dots, qScale, norms, scales, cids, qc, lexical, w, threshold, out, above);
}

/* ---- the entries of a float array above a threshold ---- */

size_t idx_list_above(size_t n, const float *x, float threshold, uint32_t *out) {
    size_t count = 0;
    /* Every index written, the count advanced by the comparison: no branch on the data. */
    for (size_t i = 0; i < n; i++) { out[count] = (uint32_t)i; count += x[i] > threshold; }
    return count;
}

/* ---- C += A · Bt for a few rows of A (a query's tokens through a linear layer) ---- */

/* OpenBLAS packs the whole weight matrix on every call: for a query of eight tokens that
   copy is most of the work. Here the weight comes pre-transposed (Bt, k × n), so each row of
   C is a sum of Bt's rows scaled by A's entries, read straight from Bt. Per output, the sum
   runs over p in order (with FMA on the SIMD paths). */
static void rows_portable(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *bt, size_t ldb, float *c, size_t ldc) {
    for (size_t i = 0; i < m; i++)
        for (size_t p = 0; p < k; p++) {
            float x = a[i * lda + p];
            const float *b = bt + p * ldb;
            float *out = c + i * ldc;
            for (size_t j = 0; j < n; j++) out[j] += x * b[j];
        }
}

#if defined(__x86_64__)
/* Up to eight rows of C by 32 columns (16 accumulators), masked at the right edge; `mr` is a
   constant where it is called, so each row count gets code of its own. Bt is read once per
   eight rows. */
__attribute__((target("avx512f"), always_inline))
static inline void rows_block_avx512(int mr, size_t k, const float *a, size_t lda, const float *bt, size_t ldb, float *c, size_t ldc,
                                     __mmask16 m0, __mmask16 m1) {
    __m512 acc[8][2];
    for (int r = 0; r < mr; r++) {
        acc[r][0] = _mm512_maskz_loadu_ps(m0, c + r * ldc);
        acc[r][1] = _mm512_maskz_loadu_ps(m1, c + r * ldc + 16);
    }
    for (size_t p = 0; p < k; p++) {
        __m512 b0 = _mm512_maskz_loadu_ps(m0, bt + p * ldb), b1 = _mm512_maskz_loadu_ps(m1, bt + p * ldb + 16);
        for (int r = 0; r < mr; r++) {
            __m512 x = _mm512_set1_ps(a[r * lda + p]);
            acc[r][0] = _mm512_fmadd_ps(x, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(x, b1, acc[r][1]);
        }
    }
    for (int r = 0; r < mr; r++) {
        _mm512_mask_storeu_ps(c + r * ldc, m0, acc[r][0]);
        _mm512_mask_storeu_ps(c + r * ldc + 16, m1, acc[r][1]);
    }
}

__attribute__((target("avx512f")))
static void rows_avx512(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *bt, size_t ldb, float *c, size_t ldc) {
    for (size_t j = 0; j < n; j += 32) {
        size_t lanes = n - j;
        __mmask16 m0 = lanes >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << lanes) - 1);
        __mmask16 m1 = lanes >= 32 ? (__mmask16)0xFFFF : lanes <= 16 ? 0 : (__mmask16)((1u << (lanes - 16)) - 1);
        for (size_t i = 0; i < m; i += 8) {
            const float *ai = a + i * lda, *bj = bt + j;
            float *cij = c + i * ldc + j;
            switch (m - i < 8 ? m - i : 8) {
            case 1: rows_block_avx512(1, k, ai, lda, bj, ldb, cij, ldc, m0, m1); break;
            case 2: rows_block_avx512(2, k, ai, lda, bj, ldb, cij, ldc, m0, m1); break;
            case 3: rows_block_avx512(3, k, ai, lda, bj, ldb, cij, ldc, m0, m1); break;
            case 4: rows_block_avx512(4, k, ai, lda, bj, ldb, cij, ldc, m0, m1); break;
            case 5: rows_block_avx512(5, k, ai, lda, bj, ldb, cij, ldc, m0, m1); break;
            case 6: rows_block_avx512(6, k, ai, lda, bj, ldb, cij, ldc, m0, m1); break;
            case 7: rows_block_avx512(7, k, ai, lda, bj, ldb, cij, ldc, m0, m1); break;
            default: rows_block_avx512(8, k, ai, lda, bj, ldb, cij, ldc, m0, m1); break;
            }
        }
    }
}

/* `mr` rows of C by `nv` · 8 columns (mr · nv accumulators, at most 12 of AVX2's 16 registers);
   `mr` and `nv` are constants where it is called, so each shape gets code of its own. `full`:
   every column inside C, read with plain loads (a masked load costs more on some CPUs); else
   the columns past C's edge are masked off by `masks`. */
__attribute__((target("avx2,fma"), always_inline))
static inline void rows_block_avx2(int mr, int nv, int full, size_t k, const float *a, size_t lda, const float *bt, size_t ldb,
                                   float *c, size_t ldc, const __m256i *masks) {
    __m256 acc[4][8];
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nv; v++)
            acc[r][v] = full ? _mm256_loadu_ps(c + r * ldc + 8 * v) : _mm256_maskload_ps(c + r * ldc + 8 * v, masks[v]);
    for (size_t p = 0; p < k; p++) {
        __m256 b[8];
        for (int v = 0; v < nv; v++)
            b[v] = full ? _mm256_loadu_ps(bt + p * ldb + 8 * v) : _mm256_maskload_ps(bt + p * ldb + 8 * v, masks[v]);
        for (int r = 0; r < mr; r++) {
            __m256 x = _mm256_set1_ps(a[r * lda + p]);
            for (int v = 0; v < nv; v++) acc[r][v] = _mm256_fmadd_ps(x, b[v], acc[r][v]);
        }
    }
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nv; v++) {
            if (full) _mm256_storeu_ps(c + r * ldc + 8 * v, acc[r][v]);
            else _mm256_maskstore_ps(c + r * ldc + 8 * v, masks[v], acc[r][v]);
        }
}

/* `mr` rows of C, every column, in blocks of `nv` · 8 columns (the last one masked). */
__attribute__((target("avx2,fma"), always_inline))
static inline void rows_strip_avx2(int mr, int nv, size_t n, size_t k, const float *a, size_t lda, const float *bt, size_t ldb,
                                   float *c, size_t ldc) {
    size_t width = 8 * (size_t)nv, j = 0;
    for (; j + width <= n; j += width) rows_block_avx2(mr, nv, 1, k, a, lda, bt + j, ldb, c + j, ldc, NULL);
    if (j < n) {
        __m256i masks[8];
        for (int v = 0; v < nv; v++) {
            int32_t lanes[8];
            for (int l = 0; l < 8; l++) lanes[l] = j + 8 * (size_t)v + (size_t)l < n ? -1 : 0;
            masks[v] = _mm256_loadu_si256((const __m256i *)lanes);
        }
        rows_block_avx2(mr, nv, 0, k, a, lda, bt + j, ldb, c + j, ldc, masks);
    }
}

/* Four rows at a time by 16 columns; the one to three rows left over by 32 or 64 columns, so
   that they too keep eight or more independent sums in flight (one row by 16 columns would
   wait on its two chains of FMAs). */
__attribute__((target("avx2,fma")))
static void rows_avx2(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *bt, size_t ldb, float *c, size_t ldc) {
    size_t i = 0;
    for (; i + 4 <= m; i += 4) rows_strip_avx2(4, 2, n, k, a + i * lda, lda, bt, ldb, c + i * ldc, ldc);
    switch (m - i) {
    case 3: rows_strip_avx2(3, 4, n, k, a + i * lda, lda, bt, ldb, c + i * ldc, ldc); break;
    case 2: rows_strip_avx2(2, 4, n, k, a + i * lda, lda, bt, ldb, c + i * ldc, ldc); break;
    case 1: rows_strip_avx2(1, 8, n, k, a + i * lda, lda, bt, ldb, c + i * ldc, ldc); break;
    default: break;
    }
}
#endif

typedef void (*rows_fn)(size_t, size_t, size_t, const float *, size_t, const float *, size_t, float *, size_t);

static rows_fn rows_path(int path, int *taken) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (path >= 2 && __builtin_cpu_supports("avx512f")) { *taken = 2; return rows_avx512; }
    if (path >= 1 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) { *taken = 1; return rows_avx2; }
#endif
    (void)path;
    *taken = 0;
    return rows_portable;
}

static rows_fn chosen_rows;
static pthread_once_t rows_once = PTHREAD_ONCE_INIT;
static void init_rows(void) { int taken; chosen_rows = rows_path(2, &taken); }

void idx_sgemm_rows(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *bt, size_t ldb, float *c, size_t ldc) {
    pthread_once(&rows_once, init_rows);
    chosen_rows(m, n, k, a, lda, bt, ldb, c, ldc);
}

int idx_sgemm_rows_with(int path, size_t m, size_t n, size_t k, const float *a, size_t lda, const float *bt, size_t ldb, float *c, size_t ldc) {
    int taken;
    rows_path(path, &taken)(m, n, k, a, lda, bt, ldb, c, ldc);
    return taken;
}

void idx_blas_stop_workers(void) {
    int (*shutdown)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "blas_thread_shutdown_");
    if (shutdown != NULL) shutdown();
}
