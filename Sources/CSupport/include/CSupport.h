#ifndef IDX_CSUPPORT_H
#define IDX_CSUPPORT_H

/* Sets flush-to-zero and denormals-are-zero for the calling thread (x86 MXCSR).
   Adam's moments for rare embedding rows decay into subnormals, which are
   many times slower on x86. No-op elsewhere. */
void idx_flush_denormals(void);

/* Atomically exchanges two paths (Linux renameat2 RENAME_EXCHANGE): used to
   publish a finished directory over an existing one with no moment in which
   neither exists. Returns 0, or -1 with errno set. */
int idx_rename_exchange(const char *from, const char *to);

/* Asks the kernel to SIGKILL this process when its parent dies (PR_SET_PDEATHSIG). Returns 0,
   1 when the parent is already gone (getppid() is no longer `expected_parent`: the caller
   should exit), or -1 when the request failed. */
int idx_die_with_parent(int expected_parent);

/* 1 when the file descriptor is a terminal. */
int idx_isatty(int fd);

/* Ends OpenBLAS's worker threads when its build has them (looked up at run time:
   blas_thread_shutdown_ is an export of OpenBLAS's pthreads server, not public API).
   Call after openblas_set_num_threads(1): the workers otherwise spin in sched_yield for
   ~0.1 s after the library starts, a whole core for a command that lasts 40 ms. */
void idx_blas_stop_workers(void);

#include <stddef.h>
#include <stdint.h>

/* out[i] = q · codes[i] (int8 × int8 summed in int32) for the n rows of d int8 codes at
   `codes` (row-major). Runs AVX-512 VNNI, AVX-512BW or AVX2 code when the CPU has it (checked
   once at run time: Swift builds for the x86-64 baseline, whose 128-bit SSE2 has no widening
   multiply), else portable C; every path gives the same integers for q within ±127 (the scan's
   quantization; the AVX2 path's byte products need it). IDX_INT8_DOTS=avx512bw,
   =avx2 or =portable in the environment forces a lesser path. */
void idx_int8_dots(const int8_t *codes, size_t n, size_t d, const int8_t *q, int32_t *out);
/* Which path idx_int8_dots takes: "avx512vnni", "avx512bw", "avx2" or "portable". */
const char *idx_int8_dots_path(void);

/* A scan's scores for n rows from their int8 dot products with the query:
   out[i] = norms[i] * (qc[cids[i]] + scales[i] * qScale * dots[i]), then, with `lexical`
   (else NULL), (1 - w) * out[i] + w * lexical[i]; evaluated in that order without fused
   multiply-adds, so every path (AVX-512F or AVX2 when the CPU has it, else portable C) gives the bits
   the same expression gives in Swift. The rows whose score is above `threshold` are listed
   in `above` (n entries of room), in order; returns how many. */
size_t idx_scan_scores(size_t n, const int32_t *dots, float qScale, const float *norms, const float *scales,
                       const uint8_t *cids, const float *qc, const float *lexical, float w, float threshold,
                       float *out, uint32_t *above);
/* The same through a given path (2: AVX-512F, 1: AVX2, 0: portable), or the best below it the
   CPU has; `taken` is set to the path taken. For tests. */
size_t idx_scan_scores_with(int path, size_t n, const int32_t *dots, float qScale, const float *norms, const float *scales,
                            const uint8_t *cids, const float *qc, const float *lexical, float w, float threshold,
                            float *out, uint32_t *above, int *taken);

/* Rows `rows[0..<n]` of a segment's int8 codes decoded into `out` (n × d floats, row after row):
   (centroids[cids[r]] + scales[r] · code) · norms[r], element by element, no fused multiply-add.
   The _with form takes a path (2: AVX-512F, 1: AVX2, 0: portable) and returns the one it took. */
void idx_decode_rows(size_t n, size_t d, const uint32_t *rows, const int8_t *codes, const float *scales,
                     const float *norms, const uint8_t *cids, const float *centroids, float *out);
int idx_decode_rows_with(int path, size_t n, size_t d, const uint32_t *rows, const int8_t *codes, const float *scales,
                         const float *norms, const uint8_t *cids, const float *centroids, float *out);

/* The indices i < n with x[i] > threshold, in order, into `out` (n entries of room); returns
   how many. Without a branch on the values: a loop that tests each would mispredict wherever
   about half pass. */
size_t idx_list_above(size_t n, const float *x, float threshold, uint32_t *out);

/* C (m × n, row stride ldc) += A (m × k, stride lda) · Bt (k × n, stride ldb), all row-major
   float: a linear layer over a few rows with its weight stored transposed. For small m (a
   query's tokens), where a BLAS sgemm spends its time packing the weight. AVX-512F or
   AVX2+FMA code when the CPU has it (checked once), else portable C. */
void idx_sgemm_rows(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *bt, size_t ldb, float *c, size_t ldc);
/* The same through a given path (2: AVX-512F, 1: AVX2+FMA, 0: portable), or the best below it
   the CPU has; returns the path taken. For tests. */
int idx_sgemm_rows_with(int path, size_t m, size_t n, size_t k, const float *a, size_t lda, const float *bt, size_t ldb, float *c, size_t ldc);

#endif
