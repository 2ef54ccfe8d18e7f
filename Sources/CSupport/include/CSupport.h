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
   multiply), else portable C; every path gives the same integers. IDX_INT8_DOTS=avx512bw,
   =avx2 or =portable in the environment forces a lesser path. */
void idx_int8_dots(const int8_t *codes, size_t n, size_t d, const int8_t *q, int32_t *out);
/* Which path idx_int8_dots takes: "avx512vnni", "avx512bw", "avx2" or "portable". */
const char *idx_int8_dots_path(void);

#endif
