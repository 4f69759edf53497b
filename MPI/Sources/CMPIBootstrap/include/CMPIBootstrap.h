#ifndef SWIFT_MULTIPROCESSING_CMPI_BOOTSTRAP_H
#define SWIFT_MULTIPROCESSING_CMPI_BOOTSTRAP_H

/// This process's rank as the launcher set it in the environment (OMPI_COMM_WORLD_RANK,
/// else PMIX_RANK, else PMI_RANK), read once before `main`; -1 when no launcher started it
/// (or when it is a child process of the library, which is no rank).
int mpi_bootstrap_rank(void);

/// The number of ranks the launcher announced (OMPI_COMM_WORLD_SIZE, else PMI_SIZE), or -1.
int mpi_bootstrap_world_size(void);

#endif
