#define _GNU_SOURCE
#include "CMultiprocessing.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <spawn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

/// Defined in Swift (`@_cdecl`): runs the child's work and never returns.
extern void mp_swift_child_main(const char *marker);

static char mp_marker_copy[256];
static const char *mp_marker = NULL;

const char *mp_child_marker(void) { return mp_marker; }

/// Runs before `main` in every process that links the library. A process the library
/// started carries the marker; it becomes a worker (or the forkserver) here and never
/// reaches `main`, which is why programs need no `if __name__ == "__main__"` guard.
__attribute__((constructor)) static void mp_catch_child(void) {
  const char *value = getenv(MP_CHILD_ENV);
  if (value == NULL) return;
  strncpy(mp_marker_copy, value, sizeof(mp_marker_copy) - 1);
  mp_marker = mp_marker_copy;
  // The marker is for this process only: programs it starts must run their own `main`.
  unsetenv(MP_CHILD_ENV);
  mp_swift_child_main(mp_marker);
  _exit(70);  // not reached: the Swift side exits itself.
}

int mp_set_parent_death_signal(int sig) { return prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0); }

int mp_set_child_subreaper(int on) { return prctl(PR_SET_CHILD_SUBREAPER, on, 0, 0, 0); }

int mp_pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

int mp_pidfd_send_signal(int pidfd, int sig) {
  return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

int mp_waitid_pidfd(int pidfd, int options, int *code, int *status) {
  siginfo_t info;
  memset(&info, 0, sizeof(info));
  if (waitid((idtype_t)P_PIDFD, (id_t)pidfd, &info, options) != 0) return -1;
  *code = info.si_pid == 0 ? 0 : info.si_code;
  *status = info.si_status;
  return 0;
}

ssize_t mp_send_with_fds(int sock, const void *buf, size_t len, const void *buf2, size_t len2,
                         const int *fds, int nfds, int flags) {
  if (nfds == 0 && (buf2 == NULL || len2 == 0)) {
    // The common case: one buffer, no descriptors. send(2) skips building a msghdr.
    return send(sock, buf, len, flags | MSG_NOSIGNAL);
  }
  struct iovec iov[2] = {{.iov_base = (void *)buf, .iov_len = len}, {.iov_base = (void *)buf2, .iov_len = len2}};
  struct msghdr msg;
  memset(&msg, 0, sizeof(msg));
  msg.msg_iov = iov;
  msg.msg_iovlen = (buf2 != NULL && len2 > 0) ? 2 : 1;
  union {
    char buf[CMSG_SPACE(sizeof(int) * 253)];
    struct cmsghdr align;
  } control;
  if (nfds > 0) {
    if (nfds > 253) {
      errno = EINVAL;
      return -1;
    }
    memset(&control, 0, sizeof(control));
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
    memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * (size_t)nfds);
  }
  return sendmsg(sock, &msg, flags | MSG_NOSIGNAL);
}

ssize_t mp_receive_with_fds(int sock, void *buf, size_t len, int *fds, int max_fds, int *nfds,
                            int *truncated_fds, int flags) {
  struct iovec iov = {.iov_base = buf, .iov_len = len};
  struct msghdr msg;
  memset(&msg, 0, sizeof(msg));
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  union {
    char buf[CMSG_SPACE(sizeof(int) * 253)];
    struct cmsghdr align;
  } control;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof(control.buf);
  *nfds = 0;
  *truncated_fds = 0;
  ssize_t n = recvmsg(sock, &msg, flags | MSG_CMSG_CLOEXEC);
  if (n < 0) return n;
  if (msg.msg_flags & MSG_CTRUNC) *truncated_fds = 1;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    int *received = (int *)CMSG_DATA(c);
    for (int i = 0; i < count; i++) {
      if (*nfds < max_fds) {
        fds[(*nfds)++] = received[i];
      } else {
        close(received[i]);  // no room: never leak what the peer sent
        *truncated_fds = 1;
      }
    }
  }
  return n;
}

int mp_set_cloexec(int fd, int on) {
  int flags = fcntl(fd, F_GETFD);
  if (flags < 0) return -1;
  flags = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
  return fcntl(fd, F_SETFD, flags);
}

int mp_dup_cloexec(int fd, int target) { return dup3(fd, target, O_CLOEXEC); }

pid_t mp_clone_sibling(void) {
  // glibc's fork() would re-register the robust-futex list in the child; a raw clone does
  // not, so do it here: process-shared robust mutexes must be released if this worker dies.
  void *head = NULL;
  size_t head_len = 0;
  long have_robust = syscall(SYS_get_robust_list, 0, &head, &head_len);
  // glibc keeps the thread id in its thread block, and its mutexes (robust, PI, error-
  // checking) record owners with it. fork() has the kernel write the child's id there
  // (CLONE_CHILD_SETTID); so does this clone. The address is the one glibc gave the
  // kernel for this thread at start (set_tid_address), which PR_GET_TID_ADDRESS returns.
  static int *tid_address = NULL;
  static int tid_address_known = 0;
  if (!tid_address_known) {
    if (prctl(PR_GET_TID_ADDRESS, &tid_address, 0, 0, 0) != 0) tid_address = NULL;
    tid_address_known = 1;
  }
  unsigned long flags = CLONE_PARENT | SIGCHLD | (tid_address != NULL ? CLONE_CHILD_SETTID : 0);
#if defined(__x86_64__)
  long pid = syscall(SYS_clone, flags, 0, NULL, tid_address, 0);  // flags, stack, ptid, ctid, tls
#else
  long pid = syscall(SYS_clone, flags, 0, NULL, 0, tid_address);  // flags, stack, ptid, tls, ctid
#endif
  if (pid == 0 && have_robust == 0 && head != NULL) {
    syscall(SYS_set_robust_list, head, head_len);
  }
  return (pid_t)pid;
}

int mp_mutex_lock_until(pthread_mutex_t *mutex, const struct timespec *until) {
  return pthread_mutex_clocklock(mutex, CLOCK_MONOTONIC, until);
}

int mp_memfd_create(const char *name) { return memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING); }

int mp_memfd_seal_size(int fd) { return fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL); }

int mp_cpu_count(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int count = CPU_COUNT(&set);
    if (count > 0) return count;
  }
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  return online > 0 ? (int)online : 1;
}

void mp_close_from(int lowest) { close_range((unsigned int)lowest, ~0U, 0); }

int mp_spawn_add_close_from(posix_spawn_file_actions_t *actions, int lowest) {
  return posix_spawn_file_actions_addclosefrom_np(actions, lowest);
}

pid_t mp_gettid(void) { return (pid_t)syscall(SYS_gettid); }

void mp_keep_freed_memory(int bytes) {
  if (getenv("MALLOC_TRIM_THRESHOLD_") != NULL || getenv("MALLOC_MMAP_THRESHOLD_") != NULL) return;
  mallopt(M_MMAP_THRESHOLD, bytes);
  mallopt(M_TRIM_THRESHOLD, bytes);
}

// libdispatch's interface for run loops (what Foundation's RunLoop uses on Linux): the main
// queue's wake-up descriptor (an eventfd), and the call that runs the jobs queued on it.
extern int _dispatch_get_main_queue_handle_4CF(void);
extern void _dispatch_main_queue_callback_4CF(void *message);

int mp_main_queue_handle(void) { return _dispatch_get_main_queue_handle_4CF(); }

void mp_serve_main_queue(int handle) {
  for (;;) {
    struct pollfd entry = {.fd = handle, .events = POLLIN, .revents = 0};
    if (poll(&entry, 1, -1) < 0) continue;  // EINTR: a handled signal; look again
    uint64_t count;
    ssize_t ignored = read(handle, &count, sizeof(count));  // reset the eventfd first:
    (void)ignored;  // a job queued while draining pokes it again, so none is missed
    _dispatch_main_queue_callback_4CF(NULL);
  }
}

const char *mp_errno_name(int code) { return strerrorname_np(code); }
