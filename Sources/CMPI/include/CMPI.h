#ifndef IDX_CMPI_H
#define IDX_CMPI_H
/* A small C shim over Open MPI, resolved at run time with dlopen/dlsym so the
   idx binary starts (and `--procs 1` trains) on machines without libmpi.
   MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, MPI_IN_PLACE are C macros over data
   symbols (ompi_mpi_comm_world, ...) that do not import into Swift; this shim
   looks those symbols up and hides them behind plain functions.
   Every function returns 0 on success, an MPI error code otherwise, and -1
   when libmpi was not loaded. Collective calls over 64-bit counts are split
   into chunks that fit MPI's `int` count. */
#include <stddef.h>
#include <stdint.h>

/* Loads libmpi (libmpi.so.40, then libmpi.so) with RTLD_GLOBAL, as Open MPI's
   plugins need its symbols. On failure writes a reason into `error`. */
int idx_mpi_load(char *error, size_t error_length);
int idx_mpi_is_loaded(void);

int idx_mpi_init(void);
int idx_mpi_initialized(int *flag);
int idx_mpi_finalized(int *flag);
int idx_mpi_finalize(void);
int idx_mpi_rank(int *rank);
int idx_mpi_size(int *size);
int idx_mpi_barrier(void);
/* Ends every rank of MPI_COMM_WORLD with `code`; does not return on success. */
int idx_mpi_abort(int code);
/* Library version string (MPI_Get_library_version), empty when not loaded. */
int idx_mpi_library_version(char *buffer, size_t length);

int idx_mpi_bcast_bytes(void *buffer, int64_t count, int root);
int idx_mpi_bcast_floats(float *buffer, int64_t count, int root);
/* In-place sums over all ranks (MPI_IN_PLACE). */
int idx_mpi_allreduce_sum_floats(float *buffer, int64_t count);
int idx_mpi_allreduce_sum_doubles(double *buffer, int64_t count);
int idx_mpi_allreduce_sum_int64(int64_t *buffer, int64_t count);
int idx_mpi_allreduce_max_doubles(double *buffer, int64_t count);
/* Sharded update: the sum of `send` over all ranks, of which this rank receives its part
   (counts[rank] floats, parts in rank order) in `recv` (MPI_Reduce_scatter); then every
   rank's part of `buffer` (at displs[r], counts[r] floats) copied to all (MPI_Allgatherv,
   in place). counts/displs hold one int per rank. */
int idx_mpi_reduce_scatter_sum_floats(const float *send, float *recv, const int *counts);
int idx_mpi_allgatherv_floats(float *buffer, const int *counts, const int *displs);

/* Memory shared by the ranks of one host (MPI-3: MPI_Win_allocate_shared over the
   MPI_COMM_TYPE_SHARED split of MPI_COMM_WORLD), so same-host ranks exchange gradients and
   weights with plain loads and stores instead of messages. `bytes` are allocated once, by
   rank 0, and every rank gets their address in `base`. Returns -2 when the ranks are not all
   on this host (keep message passing), -3 when a window already exists. */
int idx_mpi_shared_window(size_t bytes, void **base);
/* Makes every rank's stores to the window visible to all, and waits for all ranks
   (MPI_Win_sync, barrier on the host's ranks, MPI_Win_sync). */
int idx_mpi_shared_sync(void);
/* Frees the window (idx_mpi_finalize calls it); the memory must no longer be used. */
int idx_mpi_shared_free(void);

#endif
