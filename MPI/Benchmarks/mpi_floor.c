/*
 * The raw MPI floor (issue 14): what plain C on Open MPI costs, with no library on top.
 * The scale simulation (MPI/Simulation/scale.py) takes its per-message costs from here.
 *
 *   mpicc -O2 -Wall -Wextra -o /tmp/mpi_floor MPI/Benchmarks/mpi_floor.c
 *   timeout 300 mpirun --allow-run-as-root --oversubscribe --enable-recovery -np 4 \
 *       /tmp/mpi_floor [--size tiny|full]
 *
 * Prints one JSON object line per figure on stdout, as Benchmarks/Python/bench.py does:
 *   {"name": ..., "unit": ..., "value": ..., "samples": ..., "detail": ...}
 * Progress goes to stderr.
 *
 * Figures:
 * - floor-pingpong-{8b,1kib,64kib,1mib}: median round trip rank 0 -> rank 1 -> rank 0 (us).
 * - floor-dispatch-k{1,2,8}: rank 0 sends N 16-byte tasks to ranks 1..3 (chunk size 1), k
 *   outstanding per rank, and refills a rank as each reply comes back (tasks/s).
 * - floor-isend-cpu, floor-recv-cpu: rank 0's CPU time per MPI_Isend (+ its completion) of a
 *   16-byte message, and per MPI_Recv of one that has been sent (us); floor-test-cpu: one
 *   MPI_Test on a receive that has not completed (the poll a heartbeat deadline needs).
 *
 * Ranks with nothing to do in a phase wait in a nonblocking barrier polled with a 200 us
 * sleep, not in MPI_Barrier: Open MPI's blocking calls spin, and on this 2-core machine two
 * spinning bystanders would take the CPUs the measured ranks need.
 */
#define _GNU_SOURCE
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { TAG_TASK = 1, TAG_REPLY = 2, TAG_STOP = 3, TAG_PING = 4, TAG_STREAM = 5 };
enum { SMALL = 16 };

static int rank, ranks;

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static double cpu_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int compare_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *values, int count) {
    qsort(values, count, sizeof *values, compare_double);
    return count % 2 ? values[count / 2] : (values[count / 2 - 1] + values[count / 2]) / 2;
}

static void emit(const char *name, const char *unit, double value, long samples, const char *detail) {
    if (rank != 0) return;
    printf("{\"name\": \"%s\", \"unit\": \"%s\", \"value\": %.4f, \"samples\": %ld, \"detail\": \"%s\"}\n",
           name, unit, value, samples, detail);
    fflush(stdout);
    fprintf(stderr, "mpi_floor: %s %.3f %s\n", name, value, unit);
}

/* Every rank enters; returns when all have, without spinning (see the header). */
static void quiet_barrier(void) {
    MPI_Request request;
    int done = 0;
    MPI_Ibarrier(MPI_COMM_WORLD, &request);
    struct timespec pause = {0, 200000};
    for (;;) {
        MPI_Test(&request, &done, MPI_STATUS_IGNORE);
        if (done) return;
        nanosleep(&pause, NULL);
    }
}

static void pingpong(int bytes, int warmup, int runs, const char *name) {
    char *buffer = calloc(1, bytes);
    double *times = calloc(runs, sizeof *times);
    quiet_barrier();
    if (rank == 0) {
        for (int i = 0; i < warmup + runs; i++) {
            double t0 = now_us();
            MPI_Send(buffer, bytes, MPI_BYTE, 1, TAG_PING, MPI_COMM_WORLD);
            MPI_Recv(buffer, bytes, MPI_BYTE, 1, TAG_PING, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            if (i >= warmup) times[i - warmup] = now_us() - t0;
        }
        char detail[160];
        snprintf(detail, sizeof detail,
                 "MPI_Send + MPI_Recv round trip of %d bytes, rank 0 to rank 1 and back, median of %d", bytes, runs);
        emit(name, "us", median(times, runs), runs, detail);
    } else if (rank == 1) {
        for (int i = 0; i < warmup + runs; i++) {
            MPI_Recv(buffer, bytes, MPI_BYTE, 0, TAG_PING, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            MPI_Send(buffer, bytes, MPI_BYTE, 0, TAG_PING, MPI_COMM_WORLD);
        }
    }
    quiet_barrier();
    free(times);
    free(buffer);
}

/* A worker: answer each 16-byte task with a 16-byte reply until told to stop. */
static void serve(void) {
    uint64_t task[2], reply[2];
    MPI_Status status;
    for (;;) {
        MPI_Recv(task, SMALL, MPI_BYTE, 0, MPI_ANY_TAG, MPI_COMM_WORLD, &status);
        if (status.MPI_TAG == TAG_STOP) return;
        reply[0] = task[0];
        reply[1] = task[1] * task[1]; /* the trivial task: square */
        MPI_Send(reply, SMALL, MPI_BYTE, 0, TAG_REPLY, MPI_COMM_WORLD);
    }
}

static void dispatch(long count, int window, int rounds, const char *name) {
    double *rates = calloc(rounds, sizeof *rates);
    double cpu_per_task = 0;
    for (int round = 0; round < rounds; round++) {
        quiet_barrier();
        if (rank == 0) {
            uint64_t task[2] = {0, 0}, reply[2];
            long sent = 0, received = 0;
            MPI_Status status;
            double t0 = now_us(), c0 = cpu_us();
            /* Fill every worker's window, round-robin. */
            for (int slot = 0; slot < window; slot++)
                for (int worker = 1; worker < ranks && sent < count; worker++) {
                    task[0] = task[1] = (uint64_t)sent++;
                    MPI_Send(task, SMALL, MPI_BYTE, worker, TAG_TASK, MPI_COMM_WORLD);
                }
            /* Each reply frees a slot of its worker: refill it. */
            while (received < count) {
                MPI_Recv(reply, SMALL, MPI_BYTE, MPI_ANY_SOURCE, TAG_REPLY, MPI_COMM_WORLD, &status);
                if (reply[1] != reply[0] * reply[0]) {
                    fprintf(stderr, "mpi_floor: wrong reply for task %lu\n", (unsigned long)reply[0]);
                    MPI_Abort(MPI_COMM_WORLD, 1);
                }
                received++;
                if (sent < count) {
                    task[0] = task[1] = (uint64_t)sent++;
                    MPI_Send(task, SMALL, MPI_BYTE, status.MPI_SOURCE, TAG_TASK, MPI_COMM_WORLD);
                }
            }
            rates[round] = count / ((now_us() - t0) / 1e6);
            cpu_per_task += (cpu_us() - c0) / count / rounds;
            for (int worker = 1; worker < ranks; worker++)
                MPI_Send(task, SMALL, MPI_BYTE, worker, TAG_STOP, MPI_COMM_WORLD);
            fprintf(stderr, "mpi_floor: %s round %d: %.0f tasks/s\n", name, round + 1, rates[round]);
        } else {
            serve();
        }
    }
    char detail[240];
    snprintf(detail, sizeof detail,
             "rank 0 sends %ld 16-byte tasks (chunk size 1) to %d worker ranks, %d outstanding per rank, refilling "
             "a rank as its reply arrives; median of %d; rank 0 CPU %.2f us per task",
             count, ranks - 1, window, rounds, cpu_per_task);
    if (rank == 0) emit(name, "tasks/s", median(rates, rounds), rounds, detail);
    free(rates);
}

/* Spin on the clock (no MPI call, so no progress is made) for `us` microseconds. */
static void spin(double us) {
    double until = now_us() + us;
    while (now_us() < until) {
    }
}

/*
 * Rank 0's CPU per MPI_Isend (with its completion), per MPI_Recv, and per MPI_Test, in
 * batches of BATCH messages, the regime of a dispatcher with a few messages in flight per
 * rank. (A flood of thousands of MPI_Isend at once costs ~3.5 us a message here: the
 * shared-memory FIFO fills and later sends queue inside Open MPI. No dispatcher needs that.)
 */
enum { BATCH = 8 };

static void message_cost(int batches) {
    uint64_t buffers[BATCH][2], flag = 0;
    MPI_Request requests[BATCH];
    long count = (long)batches * BATCH;
    memset(buffers, 0, sizeof buffers);

    /* Sends: rank 1 posts a batch's receives, says so, and rank 0 sends into them. */
    quiet_barrier();
    if (rank == 0) {
        double cpu = 0, wall = 0;
        for (int b = 0; b < batches; b++) {
            MPI_Recv(&flag, 1, MPI_BYTE, 1, TAG_PING, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            double c0 = cpu_us(), t0 = now_us();
            for (int i = 0; i < BATCH; i++)
                MPI_Isend(buffers[i], SMALL, MPI_BYTE, 1, TAG_STREAM, MPI_COMM_WORLD, &requests[i]);
            MPI_Waitall(BATCH, requests, MPI_STATUSES_IGNORE);
            cpu += cpu_us() - c0;
            wall += now_us() - t0;
        }
        char detail[240];
        snprintf(detail, sizeof detail,
                 "rank 0 CPU time per MPI_Isend of 16 bytes to rank 1 (receives pre-posted), in batches of %d "
                 "each ended by MPI_Waitall, %ld messages; wall %.3f us",
                 BATCH, count, wall / count);
        emit("floor-isend-cpu", "us", cpu / count, count, detail);
    } else if (rank == 1) {
        for (int b = 0; b < batches; b++) {
            for (int i = 0; i < BATCH; i++)
                MPI_Irecv(buffers[i], SMALL, MPI_BYTE, 0, TAG_STREAM, MPI_COMM_WORLD, &requests[i]);
            MPI_Send(&flag, 1, MPI_BYTE, 0, TAG_PING, MPI_COMM_WORLD);
            MPI_Waitall(BATCH, requests, MPI_STATUSES_IGNORE);
        }
    }

    /* Receives: rank 1 sends a batch; rank 0 lets it arrive (100 us, no MPI call), then
     * receives it: polling the FIFO, matching and copying, with nothing to wait for. */
    quiet_barrier();
    if (rank == 0) {
        double cpu = 0, wall = 0;
        for (int b = 0; b < batches; b++) {
            MPI_Send(&flag, 1, MPI_BYTE, 1, TAG_PING, MPI_COMM_WORLD);
            spin(100);
            double c0 = cpu_us(), t0 = now_us();
            for (int i = 0; i < BATCH; i++)
                MPI_Recv(buffers[i], SMALL, MPI_BYTE, 1, TAG_STREAM, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            cpu += cpu_us() - c0;
            wall += now_us() - t0;
        }
        char detail[240];
        snprintf(detail, sizeof detail,
                 "rank 0 CPU time per MPI_Recv of a 16-byte message already sent by rank 1, in batches of %d, "
                 "%ld messages; wall %.3f us",
                 BATCH, count, wall / count);
        emit("floor-recv-cpu", "us", cpu / count, count, detail);
    } else if (rank == 1) {
        for (int b = 0; b < batches; b++) {
            MPI_Recv(&flag, 1, MPI_BYTE, 0, TAG_PING, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            for (int i = 0; i < BATCH; i++)
                MPI_Isend(buffers[i], SMALL, MPI_BYTE, 0, TAG_STREAM, MPI_COMM_WORLD, &requests[i]);
            MPI_Waitall(BATCH, requests, MPI_STATUSES_IGNORE);
        }
    }

    /* A poll of a receive nothing matches yet: what checking on a rank costs. */
    quiet_barrier();
    if (rank == 0) {
        MPI_Request pending;
        int done = 0;
        MPI_Irecv(buffers[0], SMALL, MPI_BYTE, 1, TAG_STREAM, MPI_COMM_WORLD, &pending);
        double c0 = cpu_us();
        for (long i = 0; i < count; i++) MPI_Test(&pending, &done, MPI_STATUS_IGNORE);
        double cpu = (cpu_us() - c0) / count;
        MPI_Send(&flag, 1, MPI_BYTE, 1, TAG_PING, MPI_COMM_WORLD); /* rank 1 answers now */
        MPI_Wait(&pending, MPI_STATUS_IGNORE);
        emit("floor-test-cpu", "us", cpu, count,
             "rank 0 CPU time per MPI_Test of a posted MPI_Irecv that has not completed");
    } else if (rank == 1) {
        MPI_Recv(&flag, 1, MPI_BYTE, 0, TAG_PING, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        MPI_Send(buffers[0], SMALL, MPI_BYTE, 0, TAG_STREAM, MPI_COMM_WORLD);
    }
    quiet_barrier();
}

int main(int argc, char **argv) {
    int full = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--size") == 0 && i + 1 < argc) {
            full = strcmp(argv[++i], "tiny") != 0;
        } else {
            fprintf(stderr, "usage: mpi_floor [--size tiny|full]\n");
            return 2;
        }
    }
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    if (ranks < 2) {
        if (rank == 0) fprintf(stderr, "mpi_floor: needs at least 2 ranks (mpirun -np 4)\n");
        MPI_Finalize();
        return 2;
    }
    int scale = full ? 1 : 20;
    pingpong(8, 1000, 20000 / scale, "floor-pingpong-8b");
    pingpong(1024, 1000, 20000 / scale, "floor-pingpong-1kib");
    pingpong(65536, 100, 5000 / scale, "floor-pingpong-64kib");
    pingpong(1 << 20, 20, 1000 / scale, "floor-pingpong-1mib");
    int rounds = full ? 3 : 1;
    dispatch(200000 / scale, 1, rounds, "floor-dispatch-k1");
    dispatch(200000 / scale, 2, rounds, "floor-dispatch-k2");
    dispatch(200000 / scale, 8, rounds, "floor-dispatch-k8");
    message_cost(4000 / scale);
    MPI_Finalize();
    return 0;
}
