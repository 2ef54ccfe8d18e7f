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
__attribute__((target("avx512f,avx512bw,avx512vnni")))
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
        __m512i a[16];
        for (int r = 0; r < 16; r++) a[r] = row_vnni(codes + (i + r) * d, q, blocks, tail, flip);
        __m512i f[8], g[4];
        for (int r = 0; r < 8; r++) f[r] = fold32(a[2 * r], a[2 * r + 1]);
        for (int r = 0; r < 4; r++) g[r] = fold64(f[2 * r], f[2 * r + 1]);
        /* g[r] lane L: rows 4r..4r+3 summed over lane L; two cross-lane folds give rows 0..15 in order. */
        __m512i sums = fold128(fold128(g[0], g[1]), fold128(g[2], g[3]));
        _mm512_storeu_si512(out + i, _mm512_sub_epi32(sums, bias));
    }
    for (; i < n; i++) out[i] = _mm512_reduce_add_epi32(row_vnni(codes + i * d, q, blocks, tail, flip)) - 128 * qsum;
}

__attribute__((target("avx2")))
static void dots_avx2(const int8_t *codes, size_t n, size_t d, const int8_t *q, int32_t *out) {
    size_t blocks = d / 16, tail = blocks * 16;
    for (size_t i = 0; i < n; i++) {
        const int8_t *row = codes + i * d;
        __m256i acc = _mm256_setzero_si256();
        for (size_t b = 0; b < blocks; b++) {
            __m256i x = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(row + 16 * b)));
            __m256i y = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(q + 16 * b)));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(x, y));
        }
        __m128i h = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
        h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
        h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));
        int32_t s = _mm_cvtsi128_si32(h);
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

void idx_blas_stop_workers(void) {
    int (*shutdown)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "blas_thread_shutdown_");
    if (shutdown != NULL) shutdown();
}
