// mp-floor: the raw-syscall floor for the swift-multiprocessing benchmarks.
//
// Each workload does the least a process-based runtime could possibly do for the
// same job (posix_spawn/fork + waitpid, read/write on an AF_UNIX socketpair, atomic adds
// on one shared word), so the Swift and Python figures can be read against what the kernel
// and the hardware themselves cost.
//
// Built by the benchmark harness (Benchmarks/Harness/Floor.swift) with the system C compiler,
// `cc -O2`, into .build/mp-floor-cc, so that it loads nothing but libc; by hand:
// `cc -O2 -o mp-floor Benchmarks/Floor/floor.c`.
//
// Usage: mp-floor WORKLOAD [--size tiny|full]
// Prints exactly one JSON object line on stdout; everything else goes to stderr.
// Unknown workload or bad arguments: exit code 2.

#define _GNU_SOURCE

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

// argv[1] of the re-executed floor binary in `spawn-start-join`: exit at once.
#define CHILD_EXIT_ARG "--floor-child-exit"

#define MIB (1024 * 1024)

enum size { SIZE_TINY, SIZE_FULL };

// The child currently running, if any, so every failure path can reap it.
static pid_t live_child = -1;

static void reap_live_child(void) {
    if (live_child <= 0) return;
    kill(live_child, SIGKILL);
    while (waitpid(live_child, NULL, 0) < 0 && errno == EINTR) {}
    live_child = -1;
}

__attribute__((noreturn, format(printf, 1, 2)))
static void fail(const char *fmt, ...) {
    int saved = errno;
    va_list ap;
    va_start(ap, fmt);
    fputs("mp-floor: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (saved != 0) fprintf(stderr, ": %s", strerror(saved));
    fputc('\n', stderr);
    reap_live_child();
    exit(1);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) fail("clock_gettime");
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static double median_u64(uint64_t *v, size_t n) {
    qsort(v, n, sizeof *v, cmp_u64);
    if (n % 2 == 1) return (double)v[n / 2];
    return ((double)v[n / 2 - 1] + (double)v[n / 2]) / 2.0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median_double(double *v, size_t n) {
    qsort(v, n, sizeof *v, cmp_double);
    if (n % 2 == 1) return v[n / 2];
    return (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

// Reads exactly `len` bytes, retrying on EINTR and short reads.
// Returns 0 on success, -1 on EOF before `len` bytes (errno = 0), -1 on error.
static int read_full(int fd, void *buf, size_t len) {
    char *p = buf;
    while (len > 0) {
        ssize_t r = read(fd, p, len);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) {
            errno = 0;
            return -1;
        }
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

// Writes exactly `len` bytes, retrying on EINTR and short writes.
static int write_full(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

// Waits for `pid`, retrying on EINTR; fails unless it exited with status 0.
static void wait_ok(pid_t pid) {
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) fail("waitpid");
    }
    if (pid == live_child) live_child = -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        errno = 0;
        fail("child %d did not exit cleanly (status 0x%x)", (int)pid, status);
    }
}

static void print_result(const char *name, const char *unit, double value,
                         int samples, const char *detail) {
    printf("{\"name\": \"%s\", \"unit\": \"%s\", \"value\": %.6g, \"samples\": %d, "
           "\"detail\": \"%s\"}\n", name, unit, value, samples, detail);
    fflush(stdout);
}

// ---------------------------------------------------------------------------------
// spawn-start-join: posix_spawn(/proc/self/exe CHILD_EXIT_ARG) + waitpid.

static void bench_spawn(enum size size) {
    const int warmup = size == SIZE_FULL ? 5 : 1;
    const int runs = size == SIZE_FULL ? 200 : 10;
    char *const child_argv[] = {"/proc/self/exe", CHILD_EXIT_ARG, NULL};
    uint64_t *t = calloc((size_t)runs, sizeof *t);
    if (t == NULL) fail("calloc");
    fflush(NULL);

    for (int i = -warmup; i < runs; i++) {
        pid_t pid;
        uint64_t t0 = now_ns();
        int rc = posix_spawn(&pid, "/proc/self/exe", NULL, NULL, child_argv, environ);
        if (rc != 0) {
            errno = rc;
            fail("posix_spawn");
        }
        live_child = pid;
        wait_ok(pid);
        uint64_t t1 = now_ns();
        if (i >= 0) t[i] = t1 - t0;
    }

    double ms = median_u64(t, (size_t)runs) / 1e6;
    free(t);
    print_result("spawn-start-join", "ms", ms, runs,
                 "Median time to posix_spawn /proc/self/exe (which _exits at once) and waitpid it.");
}

// ---------------------------------------------------------------------------------
// fork-start-join: fork(); child _exit(0); parent waitpid.

static void bench_fork(enum size size) {
    const int warmup = size == SIZE_FULL ? 10 : 1;
    const int runs = size == SIZE_FULL ? 1000 : 20;
    uint64_t *t = calloc((size_t)runs, sizeof *t);
    if (t == NULL) fail("calloc");
    fflush(NULL);

    for (int i = -warmup; i < runs; i++) {
        uint64_t t0 = now_ns();
        pid_t pid = fork();
        if (pid < 0) fail("fork");
        if (pid == 0) _exit(0);
        live_child = pid;
        wait_ok(pid);
        uint64_t t1 = now_ns();
        if (i >= 0) t[i] = t1 - t0;
    }

    double ms = median_u64(t, (size_t)runs) / 1e6;
    free(t);
    print_result("fork-start-join", "ms", ms, runs,
                 "Median time to fork a child that _exits at once and waitpid it.");
}

// ---------------------------------------------------------------------------------
// Shared by the socket workloads: a socketpair and a forked child running `child_fn`
// on its end. The parent keeps only its own end.

typedef void (*child_fn)(int fd, long arg);

static int start_socket_child(child_fn fn, long arg, pid_t *out_pid) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) fail("socketpair");
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) fail("fork");
    if (pid == 0) {
        close(sv[0]);
        fn(sv[1], arg);
        _exit(0);
    }
    live_child = pid;
    close(sv[1]);
    *out_pid = pid;
    return sv[0];
}

// Child side of pingpong: echo 8-byte messages until EOF.
static void echo_child(int fd, long arg) {
    (void)arg;
    char msg[8];
    for (;;) {
        if (read_full(fd, msg, sizeof msg) != 0) {
            if (errno == 0) _exit(0);  // parent closed its end: done
            _exit(3);
        }
        if (write_full(fd, msg, sizeof msg) != 0) _exit(4);
    }
}

static void bench_pingpong(enum size size) {
    const int warmup = size == SIZE_FULL ? 1000 : 100;
    const int runs = size == SIZE_FULL ? 20000 : 1000;
    uint64_t *t = calloc((size_t)runs, sizeof *t);
    if (t == NULL) fail("calloc");

    pid_t pid;
    int fd = start_socket_child(echo_child, 0, &pid);
    // 8 bytes on the wire: 7 characters and the NUL (a full 8-character string drops the NUL,
    // which clang -Wextra warns about).
    char out[8] = "1234567", in[8];

    for (int i = -warmup; i < runs; i++) {
        uint64_t t0 = now_ns();
        if (write_full(fd, out, sizeof out) != 0) fail("write");
        if (read_full(fd, in, sizeof in) != 0) fail("read");
        uint64_t t1 = now_ns();
        if (i >= 0) t[i] = t1 - t0;
    }
    close(fd);
    wait_ok(pid);

    double us = median_u64(t, (size_t)runs) / 1e3;
    free(t);
    print_result("pingpong", "us", us, runs,
                 "Median round trip of an 8-byte message echoed by a forked child over an AF_UNIX socketpair (read/write).");
}

// ---------------------------------------------------------------------------------
// bytes-throughput: 1 MiB writes, the child reads the whole total into a reused
// 1 MiB buffer and acks with one byte; repeated for each run on the same child.

static long bytes_messages(enum size size) { return size == SIZE_FULL ? 1024 : 32; }
static int bytes_runs(enum size size) { return size == SIZE_FULL ? 3 : 1; }

static void sink_child(int fd, long total) {
    char *buf = malloc(MIB);
    if (buf == NULL) _exit(5);
    for (;;) {
        long remaining = total;
        int first = 1;
        while (remaining > 0) {
            size_t want = remaining < MIB ? (size_t)remaining : MIB;
            ssize_t r = read(fd, buf, want);
            if (r < 0) {
                if (errno == EINTR) continue;
                _exit(3);
            }
            if (r == 0) {
                free(buf);
                _exit(first ? 0 : 3);  // EOF between runs: done; mid-run: error
            }
            first = 0;
            remaining -= r;
        }
        char ack = '!';
        if (write_full(fd, &ack, 1) != 0) _exit(4);
    }
}

static void bench_bytes(enum size size) {
    const long messages = bytes_messages(size);
    const int runs = bytes_runs(size);
    const long total = messages * MIB;
    char *buf = malloc(MIB);
    if (buf == NULL) fail("malloc");
    memset(buf, 0xA5, MIB);
    double rates[8];

    pid_t pid;
    int fd = start_socket_child(sink_child, total, &pid);

    for (int r = 0; r < runs; r++) {
        uint64_t t0 = now_ns();
        for (long m = 0; m < messages; m++) {
            if (write_full(fd, buf, MIB) != 0) fail("write");
        }
        char ack;
        if (read_full(fd, &ack, 1) != 0) fail("read ack");
        uint64_t t1 = now_ns();
        rates[r] = (double)total / ((double)(t1 - t0) / 1e9) / 1e6;
    }
    close(fd);
    wait_ok(pid);
    free(buf);

    print_result("bytes-throughput", "MB/s", median_double(rates, (size_t)runs), runs,
                 "One-way 1 MiB writes to a forked child over an AF_UNIX socketpair until it has read the total and acked; MB = 1e6 bytes.");
}

// ---------------------------------------------------------------------------------
// counter-atomic: 2 forked processes x N `__atomic_fetch_add` (one `lock xadd` each) on one
// 8-byte word of a MAP_SHARED|MAP_ANONYMOUS page, timed from the first fork to the last
// waitpid: the same work and span as the Swift workload (`SharedValue<Int>.add` in two
// children, start to join), less everything but the processes and the cache line that the
// two CPUs pass back and forth.

static long counter_times(enum size size) { return size == SIZE_FULL ? 200000 : 2000; }

static void bench_counter_atomic(enum size size) {
    const long times = counter_times(size);
    enum { PROCESSES = 2, RUNS = 3 };
    double rates[RUNS];
    long *word = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (word == MAP_FAILED) fail("mmap");
    fflush(NULL);

    for (int r = 0; r < RUNS; r++) {
        __atomic_store_n(word, 0, __ATOMIC_SEQ_CST);
        pid_t pids[PROCESSES];
        uint64_t t0 = now_ns();
        for (int p = 0; p < PROCESSES; p++) {
            pids[p] = fork();
            if (pids[p] < 0) fail("fork");
            if (pids[p] == 0) {
                for (long i = 0; i < times; i++) __atomic_fetch_add(word, 1, __ATOMIC_SEQ_CST);
                _exit(0);
            }
            live_child = pids[p];
        }
        for (int p = 0; p < PROCESSES; p++) wait_ok(pids[p]);
        uint64_t t1 = now_ns();
        long total = __atomic_load_n(word, __ATOMIC_SEQ_CST);
        if (total != PROCESSES * times) {
            errno = 0;
            fail("counter-atomic counted %ld, not %ld", total, PROCESSES * times);
        }
        rates[r] = (double)(PROCESSES * times) / ((double)(t1 - t0) / 1e9) / 1e6;
    }
    munmap(word, 4096);

    print_result("counter-atomic", "M/s", median_double(rates, RUNS), RUNS,
                 "2 forked processes x N __atomic_fetch_add on one shared word, first fork to last waitpid; median of 3 runs.");
}

// ---------------------------------------------------------------------------------
// cpu-speedup: the same prime count by trial division over 16 interleaved parts, serial in
// this process, then split 8 + 8 between 2 forked processes that only compute (no messages,
// no pool), timed from the first fork to the last waitpid; each the best of 3 passes, serial
// and parallel passes alternating, as the Swift workload measures it. The ratio is the most that 2 processes get from this machine's 2
// CPUs for this work: a VM's CPUs may share their host with other guests.

// Part k: the numbers n with n / 2 % parts == k (one even and one odd in every 2 x parts), as
// CountPrimes in PoolWorkloads.swift.
static long count_primes_part(long part, long parts, long limit) {
    long count = 0;
    for (long candidate = 2 * part; candidate < limit; candidate += (candidate & 1) ? 2 * parts - 1 : 1) {
        if (candidate < 2) continue;
        int prime = 1;
        for (long divisor = 2; divisor * divisor <= candidate; divisor++) {
            if (candidate % divisor == 0) {
                prime = 0;
                break;
            }
        }
        count += prime;
    }
    return count;
}

static void bench_cpu_speedup(enum size size) {
    enum { PARTS = 16, PROCESSES = 2, PASSES = 3 };
    const long limit = size == SIZE_FULL ? 3000000 : 100000;
    const int passes = size == SIZE_FULL ? PASSES : 1;
    double best_serial = 0, best_parallel = 0;
    long serial_total = 0;
    long *totals = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (totals == MAP_FAILED) fail("mmap");
    fflush(NULL);

    // The serial time: the mean over the CPUs of the best pass pinned to each (the VM's CPUs
    // differ in speed), and serial and parallel passes alternate (the host's speed drifts); see
    // cpuSpeedup in PoolWorkloads.swift.
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) fail("sched_getaffinity");
    double best_by_cpu[CPU_SETSIZE] = {0};
    for (int r = 0; r < passes; r++) {
        for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
            if (!CPU_ISSET(cpu, &allowed)) continue;
            cpu_set_t only;
            CPU_ZERO(&only);
            CPU_SET(cpu, &only);
            if (sched_setaffinity(0, sizeof only, &only) != 0) fail("sched_setaffinity");
            uint64_t t0 = now_ns();
            long total = 0;
            for (long part = 0; part < PARTS; part++) total += count_primes_part(part, PARTS, limit);
            double elapsed = (double)(now_ns() - t0) / 1e9;
            if (r == 0 || elapsed < best_by_cpu[cpu]) best_by_cpu[cpu] = elapsed;
            serial_total = total;
        }
        if (sched_setaffinity(0, sizeof allowed, &allowed) != 0) fail("sched_setaffinity");

        pid_t pids[PROCESSES];
        uint64_t t0 = now_ns();
        for (int p = 0; p < PROCESSES; p++) {
            pids[p] = fork();
            if (pids[p] < 0) fail("fork");
            if (pids[p] == 0) {
                long count = 0;
                for (long part = p; part < PARTS; part += PROCESSES) count += count_primes_part(part, PARTS, limit);
                totals[p] = count;
                _exit(0);
            }
            live_child = pids[p];
        }
        for (int p = 0; p < PROCESSES; p++) wait_ok(pids[p]);
        double elapsed = (double)(now_ns() - t0) / 1e9;
        if (r == 0 || elapsed < best_parallel) best_parallel = elapsed;
        if (totals[0] + totals[1] != serial_total) {
            errno = 0;
            fail("cpu-speedup counted %ld primes in 2 processes, %ld serially", totals[0] + totals[1], serial_total);
        }
    }
    int cpus = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &allowed)) continue;
        best_serial += best_by_cpu[cpu];
        cpus++;
    }
    best_serial /= cpus;
    munmap(totals, 4096);

    print_result("cpu-speedup", "x", best_serial / best_parallel, passes,
                 "prime count over 16 interleaved parts: mean over the CPUs of the best serial time pinned to each / best time of 2 forked processes "
                 "computing 8 parts each (first fork to last waitpid), of 3 alternating passes.");
}

// ---------------------------------------------------------------------------------

static void bench_double_array(enum size size) {
    (void)size;
    printf("{\"name\": \"double-array\", \"unit\": \"MB/s\", \"value\": null, \"samples\": 0, "
           "\"detail\": \"No raw-syscall floor: encoding typed values has no C counterpart here.\"}\n");
    fflush(stdout);
}

static void usage(void) {
    fputs("usage: mp-floor WORKLOAD [--size tiny|full]\n"
          "workloads: spawn-start-join fork-start-join pingpong bytes-throughput double-array\n"
          "           counter-atomic cpu-speedup\n",
          stderr);
}

int main(int argc, char **argv) {
    // The re-executed child of spawn-start-join: nothing but exit.
    if (argc >= 2 && strcmp(argv[1], CHILD_EXIT_ARG) == 0) _exit(0);

    const char *workload = NULL;
    const char *size_arg = "full";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--size") == 0) {
            if (i + 1 >= argc) {
                fputs("mp-floor: --size needs a value (tiny|full)\n", stderr);
                return 2;
            }
            size_arg = argv[++i];
        } else if (strncmp(argv[i], "--size=", 7) == 0) {
            size_arg = argv[i] + 7;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage();
            return 0;
        } else if (argv[i][0] == '-' || workload != NULL) {
            fprintf(stderr, "mp-floor: unexpected argument '%s'\n", argv[i]);
            usage();
            return 2;
        } else {
            workload = argv[i];
        }
    }
    if (workload == NULL) {
        usage();
        return 2;
    }

    enum size size;
    if (strcmp(size_arg, "full") == 0) {
        size = SIZE_FULL;
    } else if (strcmp(size_arg, "tiny") == 0) {
        size = SIZE_TINY;
    } else {
        fprintf(stderr, "mp-floor: unknown size '%s' (expected tiny or full)\n", size_arg);
        return 2;
    }

    if (strcmp(workload, "spawn-start-join") == 0) {
        bench_spawn(size);
    } else if (strcmp(workload, "fork-start-join") == 0) {
        bench_fork(size);
    } else if (strcmp(workload, "pingpong") == 0) {
        signal(SIGPIPE, SIG_IGN);  // a dead child must surface as EPIPE, not kill us before waitpid
        bench_pingpong(size);
    } else if (strcmp(workload, "bytes-throughput") == 0) {
        signal(SIGPIPE, SIG_IGN);
        bench_bytes(size);
    } else if (strcmp(workload, "counter-atomic") == 0) {
        bench_counter_atomic(size);
    } else if (strcmp(workload, "cpu-speedup") == 0) {
        bench_cpu_speedup(size);
    } else if (strcmp(workload, "double-array") == 0) {
        bench_double_array(size);
    } else {
        fprintf(stderr, "mp-floor: unknown workload '%s'\n", workload);
        usage();
        return 2;
    }
    return 0;
}
