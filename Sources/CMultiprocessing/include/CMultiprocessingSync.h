#ifndef C_MULTIPROCESSING_SYNC_H
#define C_MULTIPROCESSING_SYNC_H

#include <stdint.h>
#include <time.h>

/// Shared (not FUTEX_PRIVATE_FLAG) futex calls on a 32-bit word in shared memory, and the
/// sequentially consistent atomics on such words that Swift cannot express at an arbitrary
/// address. Every process mapping the word sees the same futex.

/// Sleeps while `*word == expected`, at most until the absolute CLOCK_MONOTONIC time
/// `until` (NULL: no limit). Returns 0 when woken (or spuriously), else the errno:
/// EAGAIN (the word had changed), ETIMEDOUT, EINTR.
int mp_futex_wait(uint32_t *word, uint32_t expected, const struct timespec *until);

/// Wakes up to `count` sleepers on `word`; returns how many were woken.
int mp_futex_wake(uint32_t *word, int count);

uint32_t mp_atomic_load32(uint32_t *word);
void mp_atomic_store32(uint32_t *word, uint32_t value);
/// Adds `delta` and returns the value before.
uint32_t mp_atomic_add32(uint32_t *word, uint32_t delta);

/// Stores `desired` if the word holds `expected`; returns whether it did.
_Bool mp_atomic_compare_exchange32(uint32_t *word, uint32_t expected, uint32_t desired);

#endif
