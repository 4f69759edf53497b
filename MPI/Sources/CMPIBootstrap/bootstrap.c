#include "CMPIBootstrap.h"

#include <stdlib.h>
#include <unistd.h>

/// Defined in Swift (`@_cdecl`): serves rank 0 until told to stop, then finalizes MPI and
/// exits. Never returns.
extern void mpi_swift_rank_main(int rank);

/// Defined in Swift (`@_cdecl`): at rank 0's exit, tells the worker ranks to stop and
/// finalizes MPI (starting it first if the program never did).
extern void mpi_swift_rank_zero_exit(void);

static int bootstrap_rank = -1;
static int bootstrap_world_size = -1;

/// The environment variable's value as a non-negative number, or -1.
static int read_number(const char *name) {
  const char *value = getenv(name);
  if (value == NULL || *value == '\0') return -1;
  char *end = NULL;
  long number = strtol(value, &end, 10);
  if (end == NULL || *end != '\0' || number < 0 || number > 0x7fffffff) return -1;
  return (int)number;
}

int mpi_bootstrap_rank(void) { return bootstrap_rank; }

int mpi_bootstrap_world_size(void) { return bootstrap_world_size; }


/// Runs before `main` in every process that links MultiprocessingMPI. A rank above 0 becomes
/// a worker rank here and never reaches `main`: rank 0 alone runs the program, as the root
/// library's children never reach it either.
///
/// It lives in this file because Swift calls `mpi_bootstrap_rank` from it: a linker that
/// drops object files nobody references would drop the constructor with it.
__attribute__((constructor)) static void mpi_bootstrap_catch_rank(void) {
  // A process the root library started (a worker, the fork server) inherits the launcher's
  // environment from its rank, and must run as the library's child, not as a rank. The
  // root's own constructor handles it (whichever runs first: the root's never returns).
  if (getenv("SWIFT_MULTIPROCESSING_CHILD") != NULL) return;
  int rank = read_number("OMPI_COMM_WORLD_RANK");
  if (rank < 0) rank = read_number("PMIX_RANK");
  if (rank < 0) rank = read_number("PMI_RANK");
  if (rank < 0) return;
  bootstrap_rank = rank;
  bootstrap_world_size = read_number("OMPI_COMM_WORLD_SIZE");
  if (bootstrap_world_size < 0) bootstrap_world_size = read_number("PMI_SIZE");
  if (rank == 0) {
    // Registered before `main`, so it runs after every handler the program registers.
    atexit(mpi_swift_rank_zero_exit);
    return;  // rank 0 runs `main`
  }
  mpi_swift_rank_main(rank);
  _exit(70);  // not reached: the Swift side exits itself.
}
