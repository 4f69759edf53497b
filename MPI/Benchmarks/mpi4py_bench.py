"""mpi4py.futures counterparts of the MPI pool's benchmarks (issue 14): the anchor.

Usage (4 ranks on one machine: rank 0 runs this script, ranks 1-3 are mpi4py.futures's
shared pool of workers):

    timeout 300 mpirun --allow-run-as-root --oversubscribe --enable-recovery -np 4 \\
        python3 -m mpi4py.futures MPI/Benchmarks/mpi4py_bench.py \\
        [--json FILE] [--size tiny|full] [--only NAME]

Prints one JSON object line on stdout per workload, as Benchmarks/Python/bench.py does:
    {"name": ..., "unit": ..., "value": ..., "samples": ..., "detail": ...}
Everything else goes to stderr. `--json FILE` also writes the list of those objects to FILE
(after each workload, so a job that ends early leaves what it measured). Unknown workload:
exit code 2.

Workloads (all on the executor's default settings, the code a Python user would write):
- mpi-start: ms from `MPIPoolExecutor()` until each of the 3 worker ranks has answered one
  task. The ranks themselves (mpirun, python3, `MPI_Init`) are started before this script
  runs, so their start-up is OUTSIDE this figure; it is the time rank 0's `main` waits for a
  pool on already-launched ranks, the same boundary as a Swift pool created in rank 0's
  `main` and timed until every worker rank has answered once. mpirun's own launch is
  reported on stderr when the launcher exports MPI_BENCH_LAUNCH_NS (see SCALING.md).
- mpi-map-chunk1: tasks/s of `executor.map(square, range(20000), chunksize=1)`.
- mpi-apply-latency: µs of `executor.submit(square, i).result()` on an idle executor,
  median of 2,000.
- mpi-map-chunk100 (only with --only; not one of the issue's four): the same map with
  chunksize=100, for the per-item cost the scale simulation needs.
- mpi-rank-killed: item 500 of a 1,000-item map SIGKILLs its worker rank. mpi4py.futures
  does not notice: the map never returns. A watchdog thread reports the hang after the
  timeout (10 s full, 3 s tiny) and ends the whole job (it must run last).
"""

import argparse
import json
import os
import signal
import statistics
import sys
import threading
import time

from mpi4py import MPI
from mpi4py.futures import MPIPoolExecutor

WORKERS = MPI.COMM_WORLD.Get_size() - 1
# mpi4py.futures polls with sleeps that double up to this bound (1 ms by default) when idle:
# it sets the latency of an idle executor, so every detail names it.
BACKOFF = os.environ.get("MPI4PY_FUTURES_BACKOFF", "default 0.001")


# --- tasks (module level: the worker ranks import this file as "__worker__") ------------

def square(x):
    return x * x


def whoami(_):
    return MPI.COMM_WORLD.Get_rank(), os.getpid()


def kill_on(x):
    if x == 500:
        os.kill(os.getpid(), signal.SIGKILL)
    return x * 2


# --- helpers ---------------------------------------------------------------------------

def result(name, unit, value, samples, detail):
    return {"name": name, "unit": unit, "value": value, "samples": samples, "detail": detail}


def log(text):
    print(f"mpi4py_bench.py: {text}", file=sys.stderr, flush=True)


def wait_all_ranks(executor):
    """Submit rounds of one task per worker until every worker rank has answered one.

    An idle pool hands one task to each idle worker, so one round normally suffices; more
    rounds are counted and reported. Returns the number of tasks and the workers' pids.
    """
    seen, tasks = {}, 0
    while len(seen) < WORKERS:
        futures = [executor.submit(whoami, i) for i in range(WORKERS)]
        tasks += len(futures)
        seen.update(f.result() for f in futures)
    return tasks, sorted(seen.values())


# --- workloads -------------------------------------------------------------------------

def bench_start(size):
    start = time.perf_counter()
    executor = MPIPoolExecutor()
    tasks, _ = wait_all_ranks(executor)
    first = (time.perf_counter() - start) * 1000
    first_ready_ns = time.time_ns()
    executor.shutdown(wait=True)
    # Later executors reuse the same shared pool of ranks; measured for the detail only.
    later = []
    for _ in range(5 if size == "full" else 1):
        start = time.perf_counter()
        with MPIPoolExecutor() as again:
            wait_all_ranks(again)
            later.append((time.perf_counter() - start) * 1000)
    launch = os.environ.get("MPI_BENCH_LAUNCH_NS")
    if launch is not None:
        # Wall clock from just before mpirun was started (the launcher's time.time_ns() or
        # `date +%s%N`) to the first pool's readiness: the whole start as a user sees it.
        launched = (first_ready_ns - int(launch)) / 1e6
        log(f"mpi-start: mpirun launch to the first pool ready: {launched:.0f} ms")
        print(json.dumps(result("mpi-start-launch", "ms", launched, 1,
                                "from just before mpirun to the first MPIPoolExecutor's readiness (python3, imports, "
                                "MPI_Init and the executor)")), flush=True)
    log(f"mpi-start: first {first:.1f} ms ({tasks} tasks), later {', '.join(f'{t:.1f}' for t in later)} ms")
    return result("mpi-start", "ms", first, 1,
                  f"First MPIPoolExecutor() (-m mpi4py.futures, {WORKERS} worker ranks already launched) until "
                  f"every worker rank answered a task ({tasks} tasks); later executors median "
                  f"{statistics.median(later):.1f} ms; backoff {BACKOFF} s")


def bench_map_chunk1(size, chunksize=1):
    count, maps = (20_000, 3) if size == "full" else (500, 1)
    name = f"mpi-map-chunk{chunksize}"
    samples, cpu = [], []
    with MPIPoolExecutor() as executor:
        list(executor.map(square, range(min(count, 1000)), chunksize=chunksize))  # warm-up
        for _ in range(maps):
            start, cpu_start = time.perf_counter(), time.process_time()
            outputs = list(executor.map(square, range(count), chunksize=chunksize))
            elapsed = time.perf_counter() - start
            # Rank 0's CPU (all its threads: main and the executor's manager) per task.
            cpu.append((time.process_time() - cpu_start) / count * 1e6)
            assert len(outputs) == count and outputs[-1] == (count - 1) ** 2
            samples.append(count / elapsed)
    log(f"{name}: {', '.join(f'{s:.0f}' for s in samples)} tasks/s")
    return result(name, "tasks/s", statistics.median(samples), maps,
                  f"MPIPoolExecutor().map(square, range({count}), chunksize={chunksize}) on {WORKERS} worker ranks, "
                  f"started executor; median of {maps}; rank 0 CPU {statistics.median(cpu):.2f} us per task; "
                  f"backoff {BACKOFF} s")


def bench_apply_latency(size):
    warmup, runs = (100, 2_000) if size == "full" else (10, 100)
    times = []
    with MPIPoolExecutor() as executor:
        for i in range(warmup):
            executor.submit(square, i).result()
        for i in range(runs):
            t0 = time.perf_counter_ns()
            assert executor.submit(square, i).result() == i * i
            times.append(time.perf_counter_ns() - t0)
    times.sort()
    log(f"mpi-apply-latency: p10 {times[runs // 10] / 1e3:.1f} us, median {statistics.median(times) / 1e3:.1f} us, "
        f"p90 {times[runs * 9 // 10] / 1e3:.1f} us")
    return result("mpi-apply-latency", "us", statistics.median(times) / 1e3, runs,
                  f"MPIPoolExecutor().submit(square, i).result() on an idle executor ({WORKERS} worker ranks), "
                  f"median; backoff {BACKOFF} s")


def end_job(pids):
    """End a job that has lost a rank: on this machine, kill the worker ranks still alive and
    leave without MPI_Finalize (it would wait for the dead rank); mpirun exits when every rank
    has. MPI_Abort does not do it: with --enable-recovery and a rank dead, Open MPI 4.1.4's
    mpirun stayed up."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # the rank that item 500 killed
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def bench_rank_killed(size, emit):
    """Reports the outcome itself and ends the job, whatever happens: a rank is dead."""
    limit = 10.0 if size == "full" else 3.0
    executor = MPIPoolExecutor()
    _, pids = wait_all_ranks(executor)
    what = "MPIPoolExecutor().map(kill_on, range(1000), chunksize=1), item 500 SIGKILLs its worker rank: "
    start = time.perf_counter()
    done = threading.Event()

    def watchdog():
        # The map below never returns when a rank dies; this thread reports it and ends the job.
        if done.wait(limit):
            return
        outcome = f"hung: no result after {limit} s (a worker rank SIGKILLed mid-map; job ended by killing the ranks)"
        log(f"mpi-rank-killed: {outcome}")
        emit(result("mpi-rank-killed", "s", limit, 1, what + outcome))
        end_job(pids)

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        list(executor.map(kill_on, range(1000), chunksize=1))
        outcome = f"returned after {time.perf_counter() - start:.3f} s"
    except Exception as error:  # noqa: BLE001 - any error is the outcome to report
        outcome = f"raised {type(error).__name__} after {time.perf_counter() - start:.3f} s: {error}"
    done.set()
    log(f"mpi-rank-killed: {outcome}")
    emit(result("mpi-rank-killed", "s", time.perf_counter() - start, 1, what + outcome))
    end_job(pids)


WORKLOADS = ["mpi-start", "mpi-map-chunk1", "mpi-apply-latency", "mpi-rank-killed"]
# Not one of the four: the per-item cost of mpi4py.futures once chunks amortise the
# per-message one, for the scale simulation (run with --only).
EXTRA = ["mpi-map-chunk100"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--size", choices=["tiny", "full"], default="full")
    parser.add_argument("--only", choices=WORKLOADS + EXTRA)
    args = parser.parse_args()  # exits 2 with a message on stderr for an unknown workload
    if WORKERS < 1:
        log("needs at least 2 ranks: run under mpirun -np 4 python3 -m mpi4py.futures")
        sys.exit(2)
    reports = []

    def emit(report):
        reports.append(report)
        print(json.dumps(report), flush=True)
        if args.json:
            with open(args.json + ".tmp", "w") as file:
                json.dump(reports, file, indent=2)
            os.replace(args.json + ".tmp", args.json)

    # mpi-start first (the first executor of the job), mpi-rank-killed last (it ends the job).
    for name in [args.only] if args.only else WORKLOADS:
        if name == "mpi-start":
            emit(bench_start(args.size))
        elif name == "mpi-map-chunk1":
            emit(bench_map_chunk1(args.size))
        elif name == "mpi-map-chunk100":
            emit(bench_map_chunk1(args.size, chunksize=100))
        elif name == "mpi-apply-latency":
            emit(bench_apply_latency(args.size))
        else:
            bench_rank_killed(args.size, emit)  # emits, then ends the job


if __name__ == "__main__":
    main()
