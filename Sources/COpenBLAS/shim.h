#ifndef IDX_COPENBLAS_SHIM_H
#define IDX_COPENBLAS_SHIM_H
#include <cblas.h>

/* Debian ships no lapacke.h with OpenBLAS; the Fortran LAPACK routines are
   inside libopenblas. Prototypes for the ones idx calls (column-major,
   every argument by pointer, as Fortran passes them). */
void ssyevd_(const char *jobz, const char *uplo, const int *n, float *a, const int *lda,
             float *w, float *work, const int *lwork, int *iwork, const int *liwork, int *info);
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda,
             double *w, double *work, const int *lwork, int *iwork, const int *liwork, int *info);
void sgesdd_(const char *jobz, const int *m, const int *n, float *a, const int *lda,
             float *s, float *u, const int *ldu, float *vt, const int *ldvt,
             float *work, const int *lwork, int *iwork, int *info);
#endif
