#ifndef SWIFT_MULTIPROCESSING_CMPI_SHIM_H
#define SWIFT_MULTIPROCESSING_CMPI_SHIM_H

// Open MPI's handles and constants are macros over the addresses of global objects
// (`#define MPI_COMM_WORLD OMPI_PREDEFINED_GLOBAL(MPI_Comm, ompi_mpi_comm_world)`), which
// Swift cannot import: each is returned by a function here.
#include <mpi.h>

static inline MPI_Comm cmpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype cmpi_byte(void) { return MPI_BYTE; }
static inline MPI_Errhandler cmpi_errors_return(void) { return MPI_ERRORS_RETURN; }
static inline MPI_Request cmpi_request_null(void) { return MPI_REQUEST_NULL; }
static inline MPI_Message cmpi_message_null(void) { return MPI_MESSAGE_NULL; }
static inline MPI_Status *cmpi_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline int cmpi_any_source(void) { return MPI_ANY_SOURCE; }
static inline int cmpi_any_tag(void) { return MPI_ANY_TAG; }
static inline int cmpi_success(void) { return MPI_SUCCESS; }
static inline int cmpi_max_error_string(void) { return MPI_MAX_ERROR_STRING; }
static inline int cmpi_thread_single(void) { return MPI_THREAD_SINGLE; }
static inline int cmpi_thread_funneled(void) { return MPI_THREAD_FUNNELED; }
static inline int cmpi_thread_serialized(void) { return MPI_THREAD_SERIALIZED; }
static inline int cmpi_thread_multiple(void) { return MPI_THREAD_MULTIPLE; }
static inline int cmpi_tag_ub_key(void) { return MPI_TAG_UB; }

/// The source and tag of a status (its fields' names are MPI's, not Open MPI's).
static inline int cmpi_status_source(const MPI_Status *status) { return status->MPI_SOURCE; }
static inline int cmpi_status_tag(const MPI_Status *status) { return status->MPI_TAG; }

/// The largest tag this MPI accepts (at least 32767 by the standard).
static inline int cmpi_tag_upper_bound(void) {
    int *value = NULL;
    int found = 0;
    if (MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &value, &found) != MPI_SUCCESS || !found || value == NULL) {
        return 32767;
    }
    return *value;
}

#endif
