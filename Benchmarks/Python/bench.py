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


def bench_pool_map_small(size):
    """Pool(2).map of 100,000 ints through a trivial function, automatic chunks, on a
    started pool (one map first to warm it); the median over the maps."""
    count = 100_000 if size == "full" else 1_000
    maps = 5 if size == "full" else 1
    inputs = range(count)
    samples = []
    with multiprocessing.Pool(2) as pool:
        pool.map(square, inputs)
        for _ in range(maps):
            start = time.perf_counter()
            outputs = pool.map(square, inputs)
            elapsed = time.perf_counter() - start
            assert len(outputs) == count and outputs[-1] == (count - 1) ** 2
            samples.append(count / elapsed)
    return result("pool-map-small", "items/s", statistics.median(samples), maps,
                  "Pool(2).map(square, range(n)), automatic chunks, pool already started")


WORKLOADS = {
    "pool-map-small": bench_pool_map_small,
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
