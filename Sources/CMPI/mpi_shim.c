#define _GNU_SOURCE
#include "CMPI.h"
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

/* Open MPI handles are pointers to its predefined objects; we never look
   inside them, so `void *` is enough and no mpi.h is needed to build. */
typedef void *handle_t;

static void *library;
static handle_t comm_world, type_byte, type_float, type_double, type_int64, op_sum, op_max;
#define IN_PLACE ((void *)1) /* Open MPI's MPI_IN_PLACE */

static int (*p_init)(int *, char ***);
static int (*p_initialized)(int *);
static int (*p_finalized)(int *);
static int (*p_finalize)(void);
static int (*p_comm_rank)(handle_t, int *);
static int (*p_comm_size)(handle_t, int *);
static int (*p_barrier)(handle_t);
static int (*p_abort)(handle_t, int);
static int (*p_bcast)(void *, int, handle_t, int, handle_t);
static int (*p_allreduce)(const void *, void *, int, handle_t, handle_t, handle_t);
static int (*p_library_version)(char *, int *);
static int (*p_reduce_scatter)(const void *, void *, const int *, handle_t, handle_t, handle_t);
static int (*p_allgatherv)(const void *, int, handle_t, void *, const int *, const int *, handle_t, handle_t);
/* MPI-3 shared memory: one window, on the ranks of this host */
static int (*p_comm_split_type)(handle_t, int, int, handle_t, handle_t *);
static int (*p_comm_free)(handle_t *);
static int (*p_win_allocate_shared)(ptrdiff_t, int, handle_t, handle_t, void *, handle_t *);
static int (*p_win_shared_query)(handle_t, int, ptrdiff_t *, int *, void *);
static int (*p_win_lock_all)(int, handle_t);
static int (*p_win_unlock_all)(handle_t);
static int (*p_win_sync)(handle_t);
static int (*p_win_free)(handle_t *);
static handle_t info_null, node_comm, shared_window;
#define COMM_TYPE_SHARED 0 /* Open MPI's MPI_COMM_TYPE_SHARED (first of its enum) */
#define MODE_NOCHECK 1     /* MPI_MODE_NOCHECK */

static int resolve(const char *name, void **out, char *error, size_t length) {
    *out = dlsym(library, name);
    if (*out == NULL) {
        snprintf(error, length, "libmpi has no symbol %s (idx needs Open MPI 4 or later, not MPICH)", name);
        return -1;
    }
    return 0;
}

int idx_mpi_load(char *error, size_t length) {
    if (library != NULL) return 0;
    const char *names[] = {"libmpi.so.40", "libmpi.so"};
    void *handle = NULL;
    const char *last = "";
    for (size_t i = 0; i < sizeof names / sizeof names[0] && handle == NULL; i++) {
        handle = dlopen(names[i], RTLD_NOW | RTLD_GLOBAL);
        if (handle == NULL) last = dlerror();
    }
    if (handle == NULL) {
        snprintf(error, length, "cannot load Open MPI's libmpi (%s)", last ? last : "not found");
        return -1;
    }
    library = handle;
    struct { const char *name; void **slot; } table[] = {
        {"MPI_Init", (void **)&p_init},
        {"MPI_Initialized", (void **)&p_initialized},
        {"MPI_Finalized", (void **)&p_finalized},
        {"MPI_Finalize", (void **)&p_finalize},
        {"MPI_Comm_rank", (void **)&p_comm_rank},
        {"MPI_Comm_size", (void **)&p_comm_size},
        {"MPI_Barrier", (void **)&p_barrier},
        {"MPI_Abort", (void **)&p_abort},
        {"MPI_Bcast", (void **)&p_bcast},
        {"MPI_Allreduce", (void **)&p_allreduce},
        {"MPI_Get_library_version", (void **)&p_library_version},
        {"MPI_Reduce_scatter", (void **)&p_reduce_scatter},
        {"MPI_Allgatherv", (void **)&p_allgatherv},
        {"MPI_Comm_split_type", (void **)&p_comm_split_type},
        {"MPI_Comm_free", (void **)&p_comm_free},
        {"MPI_Win_allocate_shared", (void **)&p_win_allocate_shared},
        {"MPI_Win_shared_query", (void **)&p_win_shared_query},
        {"MPI_Win_lock_all", (void **)&p_win_lock_all},
        {"MPI_Win_unlock_all", (void **)&p_win_unlock_all},
        {"MPI_Win_sync", (void **)&p_win_sync},
        {"MPI_Win_free", (void **)&p_win_free},
        {"ompi_mpi_info_null", &info_null},
        {"ompi_mpi_comm_world", &comm_world},
        {"ompi_mpi_byte", &type_byte},
        {"ompi_mpi_float", &type_float},
        {"ompi_mpi_double", &type_double},
        {"ompi_mpi_int64_t", &type_int64},
        {"ompi_mpi_op_sum", &op_sum},
        {"ompi_mpi_op_max", &op_max},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (resolve(table[i].name, table[i].slot, error, length) != 0) {
            dlclose(handle);
            library = NULL;
            return -1;
        }
    }
    return 0;
}

int idx_mpi_is_loaded(void) { return library != NULL; }

#define NEED_LIBRARY() do { if (library == NULL) return -1; } while (0)

int idx_mpi_init(void) { NEED_LIBRARY(); return p_init(NULL, NULL); }
int idx_mpi_initialized(int *flag) { *flag = 0; NEED_LIBRARY(); return p_initialized(flag); }
int idx_mpi_finalized(int *flag) { *flag = 0; NEED_LIBRARY(); return p_finalized(flag); }
int idx_mpi_finalize(void) {
    NEED_LIBRARY();
    idx_mpi_shared_free();
    return p_finalize();
}
int idx_mpi_rank(int *rank) { NEED_LIBRARY(); return p_comm_rank(comm_world, rank); }
int idx_mpi_size(int *size) { NEED_LIBRARY(); return p_comm_size(comm_world, size); }
int idx_mpi_barrier(void) { NEED_LIBRARY(); return p_barrier(comm_world); }
int idx_mpi_abort(int code) { NEED_LIBRARY(); return p_abort(comm_world, code); }

int idx_mpi_library_version(char *buffer, size_t length) {
    if (length > 0) buffer[0] = 0;
    NEED_LIBRARY();
    char version[8192]; /* >= MPI_MAX_LIBRARY_VERSION_STRING (256 in Open MPI) */
    int used = 0;
    int rc = p_library_version(version, &used);
    if (rc == 0 && length > 0) snprintf(buffer, length, "%s", version);
    return rc;
}

/* MPI counts are `int`: walk big buffers in chunks of at most 2^28 elements. */
static const int64_t chunk = (int64_t)1 << 28;

static int bcast(char *buffer, int64_t count, size_t element, handle_t type, int root) {
    NEED_LIBRARY();
    for (int64_t start = 0; start < count; start += chunk) {
        int64_t n = count - start < chunk ? count - start : chunk;
        int rc = p_bcast(buffer + (size_t)start * element, (int)n, type, root, comm_world);
        if (rc != 0) return rc;
    }
    return 0;
}

static int allreduce(char *buffer, int64_t count, size_t element, handle_t type, handle_t op) {
    NEED_LIBRARY();
    for (int64_t start = 0; start < count; start += chunk) {
        int64_t n = count - start < chunk ? count - start : chunk;
        int rc = p_allreduce(IN_PLACE, buffer + (size_t)start * element, (int)n, type, op, comm_world);
        if (rc != 0) return rc;
    }
    return 0;
}

int idx_mpi_bcast_bytes(void *buffer, int64_t count, int root) {
    return bcast(buffer, count, 1, type_byte, root);
}
int idx_mpi_bcast_floats(float *buffer, int64_t count, int root) {
    return bcast((char *)buffer, count, sizeof(float), type_float, root);
}
int idx_mpi_allreduce_sum_floats(float *buffer, int64_t count) {
    return allreduce((char *)buffer, count, sizeof(float), type_float, op_sum);
}
int idx_mpi_allreduce_sum_doubles(double *buffer, int64_t count) {
    return allreduce((char *)buffer, count, sizeof(double), type_double, op_sum);
}
int idx_mpi_allreduce_sum_int64(int64_t *buffer, int64_t count) {
    return allreduce((char *)buffer, count, sizeof(int64_t), type_int64, op_sum);
}
int idx_mpi_allreduce_max_doubles(double *buffer, int64_t count) {
    return allreduce((char *)buffer, count, sizeof(double), type_double, op_max);
}

int idx_mpi_reduce_scatter_sum_floats(const float *send, float *recv, const int *counts) {
    NEED_LIBRARY();
    return p_reduce_scatter(send, recv, counts, type_float, op_sum, comm_world);
}
int idx_mpi_allgatherv_floats(float *buffer, const int *counts, const int *displs) {
    NEED_LIBRARY();
    /* with MPI_IN_PLACE the send count and type are ignored */
    return p_allgatherv(IN_PLACE, 0, type_float, buffer, counts, displs, type_float, comm_world);
}

int idx_mpi_shared_window(size_t bytes, void **base) {
    *base = NULL;
    NEED_LIBRARY();
    if (shared_window != NULL) return -3;
    int rc, node_size = 0, world_size = 0, node_rank = 0;
    if (node_comm == NULL && (rc = p_comm_split_type(comm_world, COMM_TYPE_SHARED, 0, info_null, &node_comm)) != 0) return rc;
    if ((rc = p_comm_size(node_comm, &node_size)) != 0 || (rc = p_comm_size(comm_world, &world_size)) != 0) return rc;
    if (node_size != world_size) return -2;
    if ((rc = p_comm_rank(node_comm, &node_rank)) != 0) return rc;
    /* rank 0 holds the whole buffer, so it is one contiguous block at one base */
    void *mine = NULL;
    if ((rc = p_win_allocate_shared(node_rank == 0 ? (ptrdiff_t)bytes : 0, 1, info_null, node_comm, &mine, &shared_window)) != 0) return rc;
    ptrdiff_t size = 0;
    int unit = 0;
    if ((rc = p_win_shared_query(shared_window, 0, &size, &unit, base)) != 0) return rc;
    /* one passive epoch for the window's life, so MPI_Win_sync may order the loads and stores */
    return p_win_lock_all(MODE_NOCHECK, shared_window);
}

int idx_mpi_shared_sync(void) {
    NEED_LIBRARY();
    if (shared_window == NULL) return -3;
    int rc;
    if ((rc = p_win_sync(shared_window)) != 0) return rc;
    if ((rc = p_barrier(node_comm)) != 0) return rc;
    return p_win_sync(shared_window);
}

int idx_mpi_shared_free(void) {
    NEED_LIBRARY();
    int rc = 0;
    if (shared_window != NULL) {
        p_win_unlock_all(shared_window);
        rc = p_win_free(&shared_window);
        shared_window = NULL;
    }
    /* also when no window was made (ranks on several hosts): the split communicator exists */
    if (node_comm != NULL) { p_comm_free(&node_comm); node_comm = NULL; }
    return rc;
}
