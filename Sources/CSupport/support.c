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
    /* IDX_INT8_DOTS=avx2|portable forces a lesser path (the tests compare them) */
    const char *force = getenv("IDX_INT8_DOTS");
    int allow512 = !force || strcmp(force, "avx512bw") == 0, allow256 = allow512 || strcmp(force, "avx2") == 0;
    __builtin_cpu_init();
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
