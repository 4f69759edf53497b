#include "CMultiprocessingSync.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

int mp_futex_wait(uint32_t *word, uint32_t expected, const struct timespec *until) {
  // FUTEX_WAIT_BITSET takes an absolute time, on CLOCK_MONOTONIC without
  // FUTEX_CLOCK_REALTIME; no FUTEX_PRIVATE_FLAG: the word is shared between processes.
  long result = syscall(SYS_futex, word, FUTEX_WAIT_BITSET, expected, until, NULL, FUTEX_BITSET_MATCH_ANY);
  return result == 0 ? 0 : errno;
}

int mp_futex_wake(uint32_t *word, int count) {
  long result = syscall(SYS_futex, word, FUTEX_WAKE, count, NULL, NULL, 0);
  return result < 0 ? 0 : (int)result;
}

uint32_t mp_atomic_load32(uint32_t *word) { return __atomic_load_n(word, __ATOMIC_SEQ_CST); }

void mp_atomic_store32(uint32_t *word, uint32_t value) { __atomic_store_n(word, value, __ATOMIC_SEQ_CST); }

uint32_t mp_atomic_add32(uint32_t *word, uint32_t delta) { return __atomic_fetch_add(word, delta, __ATOMIC_SEQ_CST); }

_Bool mp_atomic_compare_exchange32(uint32_t *word, uint32_t expected, uint32_t desired) {
  return __atomic_compare_exchange_n(word, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
