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

/* 1 when the file descriptor is a terminal. */
int idx_isatty(int fd);

#endif
