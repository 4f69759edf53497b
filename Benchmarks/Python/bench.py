"""Python `multiprocessing` counterparts of the swift-multiprocessing benchmarks.

Usage: python3 Benchmarks/Python/bench.py WORKLOAD [--size tiny|full]

Prints exactly one JSON object line on stdout:
    {"name": ..., "unit": ..., "value": ..., "samples": ..., "detail": ...}
Everything else goes to stderr. Unknown workload: exit code 2.

The code is plain, idiomatic multiprocessing: what a Python user would write.
Standard library only.
"""

import argparse
import array as stdarray
import json
import multiprocessing
import os
import signal
import statistics
import sys
import time

MIB = 1024 * 1024


# --- child targets (module level so the spawn start method can import them) -------

def noop():
    pass


def echo(conn):
    """Bounce every message back until the parent closes its end."""
    try:
        while True:
            conn.send(conn.recv())
    except EOFError:
        pass
    finally:
        conn.close()


def bytes_sink(conn, messages):
    """Receive `messages` byte messages, then ack; repeat until the parent closes."""
    try:
        while True:
            for _ in range(messages):
                conn.recv_bytes()
            conn.send_bytes(b"!")
    except EOFError:
        pass
    finally:
        conn.close()


def object_sink(conn, messages):
    """Receive (unpickle) `messages` objects, then ack; repeat until the parent closes."""
    try:
        while True:
            for _ in range(messages):
                conn.recv()
            conn.send(True)
    except EOFError:
        pass
    finally:
        conn.close()


# --- helpers ------------------------------------------------------------------------

def result(name, unit, value, samples, detail):
    return {"name": name, "unit": unit, "value": value, "samples": samples, "detail": detail}


def stop(process, conn):
    """Close the parent's end so the child sees EOF, then make sure it is gone."""
    conn.close()
    process.join(timeout=10)
    if process.is_alive():
        process.terminate()
        process.join()
    if process.exitcode != 0:
        print(f"bench.py: child exited with {process.exitcode}", file=sys.stderr)


def start_child(ctx, target, *args):
    """A child running target(child_conn, *args) on one end of a duplex Pipe."""
    parent_conn, child_conn = ctx.Pipe()
    process = ctx.Process(target=target, args=(child_conn, *args))
    process.start()
    child_conn.close()  # the child has its own copy; ours would keep EOF from arriving
    return process, parent_conn


# --- workloads ----------------------------------------------------------------------

def start_join(method, warmup, runs):
    ctx = multiprocessing.get_context(method)
    times = []
    for i in range(warmup + runs):
        t0 = time.perf_counter_ns()
        p = ctx.Process(target=noop)
        p.start()
        p.join()
        t1 = time.perf_counter_ns()
        if i >= warmup:
            times.append(t1 - t0)
    return statistics.median(times) / 1e6, runs


def bench_spawn_start_join(size):
    warmup, runs = (2, 20) if size == "full" else (1, 3)
    ms, n = start_join("spawn", warmup, runs)
    return result("spawn-start-join", "ms", ms, n,
                  "Median time to start and join a no-op Process with the spawn context.")


def bench_fork_start_join(size):
    warmup, runs = (2, 100) if size == "full" else (1, 5)
    ms, n = start_join("fork", warmup, runs)
    return result("fork-start-join", "ms", ms, n,
                  "Median time to start and join a no-op Process with the fork context.")


def bench_pingpong(size):
    warmup, runs = (1_000, 20_000) if size == "full" else (100, 1_000)
    ctx = multiprocessing.get_context("spawn")
    process, conn = start_child(ctx, echo)
    times = [0] * runs
    try:
        for i in range(warmup):
            conn.send(i)
            conn.recv()
        for i in range(runs):
            t0 = time.perf_counter_ns()
            conn.send(i)
            conn.recv()
            t1 = time.perf_counter_ns()
            times[i] = t1 - t0
    finally:
        stop(process, conn)
    return result("pingpong", "us", statistics.median(times) / 1e3, runs,
                  "Median round trip of a small int via Connection.send/recv over a duplex Pipe, echoed by a child.")


def bench_bytes_throughput(size):
    messages, runs = (1024, 3) if size == "full" else (32, 1)
    payload = bytes(MIB)
    total = messages * len(payload)
    ctx = multiprocessing.get_context("spawn")
    process, conn = start_child(ctx, bytes_sink, messages)
    rates = []
    try:
        for _ in range(runs):
            t0 = time.perf_counter_ns()
            for _ in range(messages):
                conn.send_bytes(payload)
            conn.recv_bytes()  # ack: the child has received everything
            t1 = time.perf_counter_ns()
            rates.append(total / ((t1 - t0) / 1e9) / 1e6)
    finally:
        stop(process, conn)
    return result("bytes-throughput", "MB/s", statistics.median(rates), runs,
                  "One-way 1 MiB messages via Connection.send_bytes/recv_bytes over a Pipe until the child acks; MB = 1e6 bytes.")


def bench_double_array(size):
    messages, runs = (20, 3) if size == "full" else (2, 1)
    count = 1_000_000
    floats = [i * 0.5 for i in range(count)]
    payload_bytes = messages * 8 * count
    ctx = multiprocessing.get_context("spawn")
    process, conn = start_child(ctx, object_sink, messages)
    rates = []
    try:
        for _ in range(runs):
            t0 = time.perf_counter_ns()
            for _ in range(messages):
                conn.send(floats)
            conn.recv()  # ack: the child has unpickled every list
            t1 = time.perf_counter_ns()
            rates.append(payload_bytes / ((t1 - t0) / 1e9) / 1e6)
    finally:
        stop(process, conn)
    return result("double-array", "MB/s", statistics.median(rates), runs,
                  "Lists of 1,000,000 floats via Connection.send/recv (pickle) to a child that decodes each; payload 8 bytes per float, MB = 1e6 bytes.")


def count_up(value, times):
    for _ in range(times):
        with value.get_lock():
            value.value += 1


def bench_counter_locked(size):
    """2 processes x n locked increments of a Value, from the first start to the last join."""
    times = 200_000 if size == "full" else 2_000
    ctx = multiprocessing.get_context("fork")
    value = ctx.Value("q", 0)
    start = time.perf_counter()
    processes = [ctx.Process(target=count_up, args=(value, times)) for _ in range(2)]
    for p in processes:
        p.start()
    for p in processes:
        p.join()
    elapsed = time.perf_counter() - start
    assert value.value == 2 * times, value.value
    return result("counter-locked", "M/s", 2 * times / elapsed / 1e6, 1, "2 processes, Value('q') with its lock")


def sum_part(array, lo, hi, results, index):
    results[index] = sum(array[lo:hi])


def array_sum(processes, size):
    count = 50_000_000 if size == "full" else 500_000
    ctx = multiprocessing.get_context("fork")
    array = ctx.Array("d", count, lock=False)
    # Filled through its buffer (0.0 ... 999.0 repeated): a Python loop would take longer
    # than the measurement. Not timed.
    block = stdarray.array("d", [float(i) for i in range(1000)]).tobytes()
    memoryview(array).cast("B")[:] = block * (count // 1000)
    expected = 499500.0 * (count // 1000)
    samples = []
    for _ in range(1):
        results = ctx.Array("d", processes, lock=False)
        start = time.perf_counter()
        workers = [
            ctx.Process(target=sum_part,
                        args=(array, count * k // processes, count * (k + 1) // processes, results, k))
            for k in range(processes)
        ]
        for p in workers:
            p.start()
        for p in workers:
            p.join()
        elapsed = time.perf_counter() - start
        assert sum(results) == expected, (sum(results), expected)
        samples.append(count * 8 / elapsed / 1e6)
    return samples


def bench_array_sum(size):
    samples = array_sum(2, size)
    return result("array-sum", "MB/s", statistics.median(samples), len(samples), "2 processes, Array('d')")


def bench_array_sum_one(size):
    samples = array_sum(1, size)
    return result("array-sum-one", "MB/s", statistics.median(samples), len(samples), "1 process, Array('d')")


def put_numbers(queue, count):
    for i in range(count):
        queue.put(i)


def put_kibs(queue, count):
    payload = bytes(1024)
    for _ in range(count):
        queue.put(payload)


def drain(target, count, check):
    """One producer child puts `count` items on a Queue while the parent gets them; seconds
    from the start of the child to the last item got (the join follows)."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    start = time.perf_counter()
    process = ctx.Process(target=target, args=(queue, count))
    process.start()
    for i in range(count):
        item = queue.get()
        assert check(i, item), i
    elapsed = time.perf_counter() - start
    process.join()
    return elapsed


def bench_queue_small(size):
    count = 200_000 if size == "full" else 2_000
    elapsed = drain(put_numbers, count, lambda i, item: i == item)
    return result("queue-small", "msg/s", count / elapsed, 1, "ints from a child through a Queue to the parent")


def bench_queue_1kib(size):
    count = 50_000 if size == "full" else 500
    elapsed = drain(put_kibs, count, lambda i, item: len(item) == 1024)
    return result("queue-1kib", "MB/s", count * 1024 / elapsed / 1e6, 1,
                  "1 KiB bytes items from a child through a Queue to the parent; MB = 1e6 bytes")


def square(x):
    return x * x


def pool_start(ctx):
    """Milliseconds from Pool(2) until map(square, [0, 1], chunksize=1) has both answers."""
    start = time.perf_counter()
    pool = ctx.Pool(2)
    outputs = pool.map(square, [0, 1], chunksize=1)
    elapsed = (time.perf_counter() - start) * 1000
    pool.close()
    pool.join()
    assert outputs == [0, 1]
    return elapsed


def bench_pool_start_first(size):
    """This interpreter's first Pool (multiprocessing already imported); one sample."""
    ms = pool_start(multiprocessing.get_context("fork"))
    return result("pool-start-first", "ms", ms, 1,
                  "The process's first Pool(2) (fork), until map of 2 items, chunksize 1, has returned")


def bench_pool_start_later(size):
    ctx = multiprocessing.get_context("fork")
    pool_start(ctx)
    samples = [pool_start(ctx) for _ in range(10 if size == "full" else 2)]
    return result("pool-start-later", "ms", statistics.median(samples), len(samples),
                  "A later Pool(2) (fork), until map of 2 items, chunksize 1, has returned; median")


def pool_map(name, count, chunksize, size):
    maps = 3 if size == "full" else 1
    inputs = range(count)
    samples = []
    with multiprocessing.Pool(2) as pool:
        pool.map(square, inputs, chunksize=chunksize)
        for _ in range(maps):
            start = time.perf_counter()
            outputs = pool.map(square, inputs, chunksize=chunksize)
            elapsed = time.perf_counter() - start
            assert len(outputs) == count and outputs[-1] == (count - 1) ** 2
            samples.append(count / elapsed)
    return result(name, "items/s", statistics.median(samples), maps,
                  f"Pool(2).map(square, range({count}), chunksize={chunksize}) on a started pool")


def bench_map_auto_1m(size):
    return pool_map("map-auto-1m", 1_000_000 if size == "full" else 10_000, None, size)


def bench_map_chunk1(size):
    return pool_map("map-chunk1", 20_000 if size == "full" else 500, 1, size)


def bench_apply_latency(size):
    warmup, runs = (100, 2_000) if size == "full" else (10, 100)
    times = []
    with multiprocessing.Pool(1) as pool:
        for i in range(warmup):
            pool.apply(square, (i,))
        for i in range(runs):
            t0 = time.perf_counter_ns()
            assert pool.apply(square, (i,)) == i * i
            times.append(time.perf_counter_ns() - t0)
    return result("apply-latency", "us", statistics.median(times) / 1e3, runs,
                  "Pool(1).apply(square, (i,)) on an idle pool, median")


def count_primes(bounds):
    # Part k holds the numbers n with n // 2 % parts == k: one even and one odd number in every
    # 2 * parts, so the parts cost the same (a stride of 16 alone would give 8 parts of even
    # numbers only, each rejected at once, and 8 that hold all the work).
    part, parts, limit = bounds
    count = 0
    for candidate in (n for pair in range(part, (limit + 1) // 2, parts) for n in (2 * pair, 2 * pair + 1)):
        if candidate < 2 or candidate >= limit:
            continue
        divisor = 2
        prime = True
        while divisor * divisor <= candidate:
            if candidate % divisor == 0:
                prime = False
                break
            divisor += 1
        if prime:
            count += 1
    return count


def bench_cpu_speedup(size):
    limit = 300_000 if size == "full" else 20_000
    # 16 interleaved parts of equal cost (see count_primes). Contiguous ranges cost more the
    # higher they lie (trial division), and the last, dearest range then bounds any pool that
    # hands out parts in order at about 1.92x on 2 workers.
    parts = [(k, 16, limit) for k in range(16)]
    # Each the best of 3 passes, as the Swift side measures it.
    passes = 3 if size == "full" else 1
    # The serial time: the mean over the CPUs of the best pass pinned to each (the VM's CPUs
    # differ in speed), and serial and pooled passes alternate (the host's speed drifts); see
    # cpuSpeedup in PoolWorkloads.swift.
    allowed = os.sched_getaffinity(0)
    cpus = sorted(allowed)
    serial_by_cpu, pool_times = {cpu: [] for cpu in cpus}, []
    with multiprocessing.Pool(2) as pool:
        pool.map(square, [0, 1], chunksize=1)
        for _ in range(passes):
            for cpu in cpus:
                os.sched_setaffinity(0, {cpu})
                start = time.perf_counter()
                serial = sum(count_primes(part) for part in parts)
                serial_by_cpu[cpu].append(time.perf_counter() - start)
            os.sched_setaffinity(0, allowed)
            start = time.perf_counter()
            pooled = sum(pool.map(count_primes, parts, chunksize=1))
            pool_times.append(time.perf_counter() - start)
            assert pooled == serial
    serial_times = [min(serial_by_cpu[cpu]) for cpu in cpus]
    milliseconds = lambda times: ", ".join(f"{t * 1000:.1f}" for t in times)
    serial_text = "; ".join(f"CPU {cpu} {milliseconds(serial_by_cpu[cpu])}" for cpu in cpus)
    print(f"bench.py cpu-speedup: serial {serial_text} ms, Pool(2) {milliseconds(pool_times)} ms",
          file=sys.stderr)
    return result("cpu-speedup", "x", sum(serial_times) / len(serial_times) / min(pool_times), 1,
                  f"count_primes over 16 interleaved parts below {limit}: mean over the CPUs of the best serial time "
                  f"pinned to each / best Pool(2).map time, of {passes} alternating passes")


def kill_on(x):
    if x == 500:
        os.kill(os.getpid(), signal.SIGKILL)
    return x * 2


def bench_crash_mid_map(size):
    limit = 10.0 if size == "full" else 3.0
    pool = multiprocessing.Pool(2)
    start = time.perf_counter()
    pending = pool.map_async(kill_on, range(1000))
    try:
        pending.get(timeout=limit)
        outcome = f"returned after {time.perf_counter() - start:.3f} s"
        value = time.perf_counter() - start
    except multiprocessing.TimeoutError:
        outcome = f"hung: no result after {limit} s (the item's task died with its worker)"
        value = limit
    finally:
        pool.terminate()
        pool.join()
    print(f"bench.py crash-mid-map: {outcome}", file=sys.stderr)
    return result("crash-mid-map", "s", value, 1, "Pool(2).map_async over 1000 items, item 500 SIGKILLs its worker: " + outcome)


def sleep_forever(_):
    time.sleep(3600)


def bench_task_timeout(size):
    pool = multiprocessing.Pool(1)
    worker = pool._pool[0]
    start = time.perf_counter()
    try:
        pool.apply_async(sleep_forever, (0,)).get(timeout=0.5)
    except multiprocessing.TimeoutError:
        pass
    elapsed = time.perf_counter() - start
    time.sleep(0.1)
    running = worker.is_alive()
    pool.terminate()
    pool.join()
    detail = "AsyncResult.get(timeout=0.5) raised; the worker " + ("keeps running the task" if running else "is gone")
    print(f"bench.py task-timeout: {detail}", file=sys.stderr)
    return result("task-timeout", "s", elapsed, 1, detail)


def bench_task_cancel(size):
    pool = multiprocessing.Pool(1)
    worker = pool._pool[0]
    pool.apply_async(sleep_forever, (0,))
    time.sleep(0.1)
    start = time.perf_counter()
    pool.terminate()  # AsyncResult has no cancel: stopping the task stops the whole pool
    while worker.is_alive():
        time.sleep(0.0001)
    elapsed = (time.perf_counter() - start) * 1000
    pool.join()
    return result("task-cancel", "ms", elapsed, 1,
                  "No way to cancel one running task: Pool.terminate() until its worker is dead")


WORKLOADS = {
    "pool-start-first": bench_pool_start_first,
    "pool-start-later": bench_pool_start_later,
    "map-auto-1m": bench_map_auto_1m,
    "map-chunk1": bench_map_chunk1,
    "apply-latency": bench_apply_latency,
    "cpu-speedup": bench_cpu_speedup,
    "crash-mid-map": bench_crash_mid_map,
    "task-timeout": bench_task_timeout,
    "task-cancel": bench_task_cancel,
    "queue-small": bench_queue_small,
    "queue-1kib": bench_queue_1kib,
    "counter-locked": bench_counter_locked,
    "array-sum": bench_array_sum,
    "array-sum-one": bench_array_sum_one,
    "spawn-start-join": bench_spawn_start_join,
    "fork-start-join": bench_fork_start_join,
    "pingpong": bench_pingpong,
    "bytes-throughput": bench_bytes_throughput,
    "double-array": bench_double_array,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--size", choices=["tiny", "full"], default="full")
    args = parser.parse_args()  # exits 2 with a message on stderr for an unknown workload
    report = WORKLOADS[args.workload](args.size)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
