#ifndef C_MULTIPROCESSING_H
#define C_MULTIPROCESSING_H

#include <stddef.h>
#include <sys/types.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

/// The environment variable whose presence marks a process started by the library.
/// Its value is "<mode>:<fd>:<parent pid>", mode being "worker" or "forkserver".
#define MP_CHILD_ENV "SWIFT_MULTIPROCESSING_CHILD"

/// The marker value seen by the constructor (copied before the variable is removed from
/// the environment), or NULL in a process the library did not start.
const char *mp_child_marker(void);

/// `prctl(PR_SET_PDEATHSIG, sig)`; prctl is variadic, which Swift cannot call.
int mp_set_parent_death_signal(int sig);

/// `prctl(PR_SET_CHILD_SUBREAPER, on)`: orphaned descendants are re-parented to this
/// process instead of init (the fault-matrix runner uses it to find every process a case left).
int mp_set_child_subreaper(int on);

/// `pidfd_open(2)`, `pidfd_send_signal(2)`: glibc 2.36 declares them, but older headers do not.
int mp_pidfd_open(pid_t pid);
int mp_pidfd_send_signal(int pidfd, int sig);

/// `waitid(P_PIDFD, pidfd, ...)`. Returns 0 and fills `code` (CLD_EXITED, CLD_KILLED,
/// CLD_DUMPED, or 0 when WNOHANG found the child still running) and `status`; -1 and errno.
int mp_waitid_pidfd(int pidfd, int options, int *code, int *status);

/// `sendmsg(2)` of `len` bytes, then `len2` bytes from a second buffer (a header and a payload
/// go out in one call without being copied together), with `nfds` descriptors attached as
/// SCM_RIGHTS; MSG_NOSIGNAL is always added to `flags`. Returns the bytes sent or -1 and errno.
ssize_t mp_send_with_fds(int sock, const void *buf, size_t len, const void *buf2, size_t len2,
                         const int *fds, int nfds, int flags);

/// `recvmsg(2)` into `buf`, receiving at most `max_fds` descriptors (close-on-exec) into `fds`;
/// `*nfds` gets their count. Sets `*truncated_fds` when the kernel dropped descriptors
/// (MSG_CTRUNC). Returns the bytes read (0 at end of stream) or -1 and errno.
ssize_t mp_receive_with_fds(int sock, void *buf, size_t len, int *fds, int max_fds, int *nfds,
                            int *truncated_fds, int flags);

/// `fcntl(fd, F_GETFD/F_SETFD)` to set or clear FD_CLOEXEC (fcntl is variadic).
int mp_set_cloexec(int fd, int on);

/// `dup3(fd, target, O_CLOEXEC)`: a copy at `target` that is close-on-exec from the start
/// (declared only with _GNU_SOURCE).
int mp_dup_cloexec(int fd, int target);

/// Clone the calling process as a *sibling*: the new process's parent is the caller's parent
/// (CLONE_PARENT), so the process that asked a forkserver for a worker can reap it with a
/// pidfd like any child of its own. Only safe in a single-threaded process (the forkserver).
/// Returns 0 in the new process, its pid in the caller, -1 and errno on failure.
pid_t mp_clone_sibling(void);

/// Makes malloc keep up to `bytes` of freed memory for reuse instead of returning it to the
/// kernel (M_TRIM_THRESHOLD), and serve blocks up to that size from the heap (M_MMAP_THRESHOLD),
/// unless the environment already sets either (MALLOC_TRIM_THRESHOLD_, MALLOC_MMAP_THRESHOLD_).
void mp_keep_freed_memory(int bytes);

/// Closes every descriptor from `lowest` up (`close_range(2)`, glibc >= 2.34).
void mp_close_from(int lowest);

/// `posix_spawn_file_actions_addclosefrom_np` (glibc >= 2.34, declared only with _GNU_SOURCE).
int mp_spawn_add_close_from(posix_spawn_file_actions_t *actions, int lowest);

/// The calling thread's id (`gettid(2)`).
pid_t mp_gettid(void);

/// The main queue's wake-up descriptor (an eventfd libdispatch makes on first request).
int mp_main_queue_handle(void);

/// Serves the main queue on the calling thread forever: the main actor's jobs run here,
/// as on the main thread of an app. Uses the hooks libdispatch offers run loops on Linux
/// (the main queue's eventfd, `handle`, and the call that drains it). Never returns.
void mp_serve_main_queue(int handle) __attribute__((noreturn));

/// `memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING)`: anonymous memory with a descriptor,
/// shareable by passing the descriptor; nothing appears in /dev/shm.
int mp_memfd_create(const char *name);

/// Seals a memory file's size for good (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`; fcntl is
/// variadic): no process holding it can shrink it under another's mapping (SIGBUS there).
int mp_memfd_seal_size(int fd);

/// `pthread_mutex_clocklock(mutex, CLOCK_MONOTONIC, until)` (glibc >= 2.30, declared only with
/// _GNU_SOURCE): a timed lock measured on the monotonic clock, not the wall clock.
int mp_mutex_lock_until(pthread_mutex_t *mutex, const struct timespec *until);

/// A hint to the CPU that the caller is spinning (`pause` on x86-64, `yield` on arm64).
static inline void mp_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/// CPUs in this process's affinity mask (what it may run on), at least 1.
int mp_cpu_count(void);

/// The symbol of an errno value ("EMFILE"), or NULL for an unknown one (`strerrorname_np`,
/// glibc >= 2.32, declared only with _GNU_SOURCE).
const char *mp_errno_name(int code);

#endif
