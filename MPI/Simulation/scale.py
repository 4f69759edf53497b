"""Rank 0 dispatching a map to many MPI ranks: a discrete-event simulation (issue 14).

Usage: python3 MPI/Simulation/scale.py [--json FILE] [--quick] [--jitter F] [--seed N]

About 46-70 s on the project's VM; --quick (5 rounds per worker, not 20) is a smoke test only:
the trees of section 4 need the 20 rounds to pass their start-up.

Standard library only, deterministic (no randomness unless --jitter, and then seeded). The
tables go to stdout; `--json FILE` writes every figure as well. MPI/SCALING.md explains the
model and the inputs, and shows the tables.

The model. Rank 0 is one CPU serving its work in arrival order (a FIFO server): each reply it
receives costs it `recv + m * item` microseconds (a message of m tasks' results), and each
chunk it sends `send + m * item`. A message takes `latency` microseconds one way, whatever
the ranks. A worker rank runs the chunks it holds one after the other: `worker + m *
worker_item` microseconds of its own per chunk (its receive, send, decoding and encoding, and
the hop to its local worker process), then m tasks of T each; its reply leaves when the chunk
ends. Rank 0 keeps up to `window` chunks
outstanding per worker: it fills every window at the start (round-robin) and refills a
worker's window as each of its replies is received. A worker is "busy" while it runs tasks
(its own per-chunk overhead does not count), measured over the middle 60% of the run, past
the start-up fill and before the last chunks drain.

A tree: rank 0 sends groups of G tasks to f sub-dispatchers (up to 2 groups outstanding
each), each serving P/f workers as rank 0 serves them in the flat case, and sending the
results of G tasks back up in one message. Every dispatcher has the per-message and
per-item costs of rank 0.
"""

import argparse
import dataclasses
import heapq
import json
import math
import random
import sys
from collections import deque


@dataclasses.dataclass(frozen=True)
class Costs:
    """Per-message CPU costs of a dispatcher and a worker, in microseconds."""

    name: str
    send: float  # a dispatcher's cost to send one message (any size that fits eagerly)
    recv: float  # ... and to receive one
    item: float  # a dispatcher's cost per task in a message, each way (encode or decode)
    worker: float  # a worker rank's own cost per chunk (receive, reply, local hop)
    source: str
    worker_item: float = 0.0  # ... and per task in the chunk, beyond the task's own time

    def worker_cost(self, m):
        """A worker rank's own time for a chunk of m tasks, besides running them."""
        return self.worker + m * self.worker_item

    def pair(self, m):
        """Dispatcher CPU for one chunk of m tasks, out and back."""
        return self.send + self.recv + 2 * m * self.item


# Measured on this machine (MPI/SCALING.md has the commands, times and raw figures).
SCENARIOS = {
    "mpi-floor": Costs(
        "mpi-floor", send=0.20, recv=0.30, item=0.0, worker=0.5,
        source="mpi_floor.c: MPI_Isend 0.14-0.27 us, MPI_Recv 0.29-0.30 us of rank 0's CPU (16 B, "
               "Open MPI 4.1.4 shared memory); a worker's reply + receive taken as the same 0.5 us"),
    "mpipool": Costs(
        "mpipool", send=46.0, recv=46.0, item=1.755, worker=321.0, worker_item=1.7,
        source="MPI/Benchmarks/engine_costs.py at commit 5e43705 (after the reply fix b9148d6: a reply's "
               "outputs as one array), 5 rounds (15:05-15:10 UTC, 2026-12-06): rank 0's CPU per request "
               "(request + reply) fitted over requests of 1, 16 and 256 tasks, less the engine's polling: "
               "91.9 us fixed (median; 77-107), 3.51 us per task (median; 2.1-4.2), split evenly between "
               "the send and the receive, and between a task's way out and back (the same fit over rank "
               "0's whole CPU in the jobs without the counters: 98.5 us and 2.12 us, within the jobs' "
               "spread); a worker rank's CPU (the rank and its local pool) 321 us per request of 1 task "
               "(median of 6; 269-370), 1.7 us per further task (median; 1.5-2.2): an upper bound, with "
               "its engine's polling and on oversubscribed cores. Before (8d15bd6): 80.9 us, 7.43 us, "
               "333 us, 3.6 us"),
    "mpi4py": Costs(
        "mpi4py", send=22.5, recv=22.5, item=0.15, worker=45.0,
        source="mpi4py_bench.py: rank 0 CPU 45.6 us per task at chunksize 1, 0.74 us at chunksize "
               "100 (so ~45 us a message pair, ~0.3 us a task out and back); worker taken as 45 us "
               "a chunk"),
}

# One-way latency of a small message, microseconds.
NETWORKS = {
    "shm": (0.4, "measured here: half the 8-byte MPI ping-pong (0.79 us, 2 ranks; 1.37 us, 4 ranks)"),
    "infiniband": (1.5, "assumption: 1-5 us for InfiniBand (Aspen Systems' HPC glossary, 'Latency'); "
                        "1.9 us half round trip for Open MPI over 40 Gb usNIC (Cisco blog 'MPI over "
                        "40Gb Ethernet')"),
    "ethernet": (50.0, "assumption: 40-300 us for Gigabit Ethernet TCP (Aspen Systems' HPC glossary); "
                       "the TCP stack's own CPU per message is not added to rank 0's costs"),
}


class Server:
    """One rank's CPU, serving jobs in the order they arrive."""

    def __init__(self):
        self.free_at = 0.0
        self.busy = 0.0

    def run(self, at, cost):
        """A job that may start at `at` and costs `cost`: returns when it ends."""
        self.free_at = max(at, self.free_at) + cost
        self.busy += cost
        return self.free_at


class Workers:
    """P worker ranks, each running the chunks it receives in order."""

    def __init__(self, count, task_us, costs, jitter, seed):
        self.free_at = [0.0] * count
        self.intervals = []  # (start, end) of the task time of each chunk
        self.task_us, self.costs = task_us, costs
        self.random = random.Random(seed) if jitter else None
        self.jitter = jitter

    def run(self, worker, arrive, tasks):
        """A chunk of `tasks` reaching `worker` at `arrive`: returns when its reply leaves."""
        start = max(arrive, self.free_at[worker]) + self.costs.worker_cost(tasks)
        if self.random is None:
            duration = tasks * self.task_us
        else:
            duration = sum(self.task_us * (1 + self.jitter * (2 * self.random.random() - 1)) for _ in range(tasks))
        self.free_at[worker] = start + duration
        self.intervals.append((start, start + duration))
        return start + duration

    def busy_fraction(self, begin, end):
        """Share of the workers' time in [begin, end] spent running tasks."""
        if end <= begin:
            return 0.0
        covered = sum(max(0.0, min(b, end) - max(a, begin)) for a, b in self.intervals)
        return covered / (len(self.free_at) * (end - begin))


def flat(ranks, task_us, chunk, window, costs, latency, rounds=20, jitter=0.0, seed=1):
    """Rank 0 serving `ranks` workers directly. Returns the run's figures."""
    total = ranks * chunk * rounds
    root, workers = Server(), Workers(ranks, task_us, costs, jitter, seed)
    remaining, sequence, events = total, 0, []

    def send(at, worker):
        nonlocal remaining, sequence
        tasks = min(chunk, remaining)
        remaining -= tasks
        leaves = root.run(at, costs.send + tasks * costs.item)
        done = workers.run(worker, leaves + latency, tasks)
        sequence += 1
        heapq.heappush(events, (done + latency, sequence, worker, tasks))

    for _ in range(window):
        for worker in range(ranks):
            if remaining:
                send(0.0, worker)
    while events:
        at, _, worker, tasks = heapq.heappop(events)
        root.run(at, costs.recv + tasks * costs.item)
        if remaining:
            send(at, worker)
    makespan = root.free_at
    return {
        "ranks": ranks, "task_us": task_us, "chunk": chunk, "window": window, "tasks": total,
        "makespan_us": makespan, "tasks_per_s": total / makespan * 1e6,
        "busy": workers.busy_fraction(0.2 * makespan, 0.8 * makespan),
        "rank0_busy": root.busy / makespan,
    }


def tree(ranks, fanout, task_us, chunk, window, costs, latency, group=None, rounds=20, jitter=0.0, seed=1):
    """Rank 0 -> `fanout` sub-dispatchers -> ranks/fanout workers each (ranks counts workers)."""
    per_sub = ranks // fanout
    ranks = per_sub * fanout
    group = group or chunk * window * per_sub  # one full window of the sub's workers
    total = ranks * chunk * rounds
    root, subs = Server(), [Server() for _ in range(fanout)]
    workers = Workers(ranks, task_us, costs, jitter, seed)
    remaining, sequence, events = total, 0, []
    outstanding = [0] * fanout  # tasks rank 0 has sent a sub and not had back
    stock = [0] * fanout  # tasks a sub holds, not yet sent to a worker
    received = [0] * fanout  # tasks a sub has received in all
    finished = [0] * fanout  # ... and whose results it has
    unreported = [0] * fanout  # results a sub holds, not yet sent up
    waiting = [deque() for _ in range(fanout)]  # a sub's workers with a free slot

    def push(at, kind, *args):
        nonlocal sequence
        sequence += 1
        heapq.heappush(events, (at, sequence, kind, args))

    def send_group(at, sub):
        nonlocal remaining
        tasks = min(group, remaining)
        remaining -= tasks
        outstanding[sub] += tasks
        push(root.run(at, costs.send + tasks * costs.item) + latency, "group", sub, tasks)

    def send_chunk(at, sub, worker):
        tasks = min(chunk, stock[sub])
        stock[sub] -= tasks
        leaves = subs[sub].run(at, costs.send + tasks * costs.item)
        push(workers.run(worker, leaves + latency, tasks) + latency, "reply", sub, worker, tasks)

    def report(at, sub):
        tasks = unreported[sub]
        unreported[sub] = 0
        push(subs[sub].run(at, costs.send + tasks * costs.item) + latency, "results", sub, tasks)

    for _ in range(2):
        for sub in range(fanout):
            if remaining:
                send_group(0.0, sub)
    for sub in range(fanout):
        for _ in range(window):
            waiting[sub].extend(range(sub * per_sub, (sub + 1) * per_sub))
    while events:
        at, _, kind, args = heapq.heappop(events)
        if kind == "group":
            sub, tasks = args
            subs[sub].run(at, costs.recv + tasks * costs.item)
            stock[sub] += tasks
            received[sub] += tasks
            while stock[sub] and waiting[sub]:
                send_chunk(at, sub, waiting[sub].popleft())
        elif kind == "reply":
            sub, worker, tasks = args
            subs[sub].run(at, costs.recv + tasks * costs.item)
            finished[sub] += tasks
            unreported[sub] += tasks
            if stock[sub]:
                send_chunk(at, sub, worker)
            else:
                waiting[sub].append(worker)
            if unreported[sub] >= group or finished[sub] == received[sub]:
                report(at, sub)
        else:  # results reach rank 0
            sub, tasks = args
            root.run(at, costs.recv + tasks * costs.item)
            outstanding[sub] -= tasks
            while remaining and outstanding[sub] + group <= 2 * group:
                send_group(at, sub)
    makespan = root.free_at
    return {
        "ranks": ranks, "fanout": fanout, "group": group, "task_us": task_us, "chunk": chunk,
        "window": window, "tasks": total, "makespan_us": makespan, "tasks_per_s": total / makespan * 1e6,
        "busy": workers.busy_fraction(0.2 * makespan, 0.8 * makespan),
        "rank0_busy": root.busy / makespan, "sub_busy": max(s.busy for s in subs) / makespan,
    }


# --- closed forms, to check the simulation against -----------------------------------

def capacity(costs, chunk):
    """Tasks/s rank 0 can dispatch and collect, CPU-bound: chunk / its cost per chunk."""
    return chunk / costs.pair(chunk) * 1e6


def busy_bound(ranks, task_us, chunk, window, costs, latency):
    """Upper bound on the workers' busy share: the least of what rank 0 can feed, and (with
    one chunk outstanding) what the round trip leaves, and the worker's own overhead."""
    work = chunk * task_us
    cycle = work + costs.worker_cost(chunk)
    if window == 1:
        cycle += 2 * latency + costs.pair(chunk)
    fed = capacity(costs, chunk) / (ranks / cycle * chunk * 1e6)
    return min(1.0, fed) * work / cycle


def alone_busy(task_us, chunk, window, costs, latency):
    """The workers' busy share when rank 0 is never the limit: their own overhead (and, with
    one chunk outstanding, the round trip) is all that keeps them from their tasks."""
    work = chunk * task_us
    return work / (work + costs.worker_cost(chunk) + (2 * latency + costs.pair(chunk) if window == 1 else 0))


def bottleneck_ranks(task_us, chunk, window, costs, latency):
    """Rank count above which rank 0's CPU holds the workers below 95% of the busy share they
    would have with rank 0 free (closed form): demand is ranks * chunk / cycle tasks/us."""
    work = chunk * task_us
    cycle = work + costs.worker_cost(chunk) + (2 * latency + costs.pair(chunk) if window == 1 else 0)
    return capacity(costs, chunk) / 1e6 * cycle / chunk / 0.95


# --- the report ----------------------------------------------------------------------

CHUNKS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
RANK_STEPS = [10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]
TASKS_US = [1_000, 10_000, 100_000]


def table(title, header, rows, out):
    print(f"\n{title}", file=out)
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths)) + " |", file=out)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|", file=out)
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |", file=out)


def rate(value):
    return f"{value / 1e6:.2f} M" if value >= 1e6 else f"{value / 1e3:.1f} k"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--quick", action="store_true", help="fewer rounds per worker (5, not 20)")
    parser.add_argument("--jitter", type=float, default=0.0,
                        help="task times uniform in T*(1 +- F) instead of exactly T (seeded)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if not 0 <= args.jitter < 1:
        parser.error("--jitter must be in [0, 1)")
    rounds = 5 if args.quick else 20
    common = {"jitter": args.jitter, "seed": args.seed}
    out, report = sys.stdout, {"inputs": {}, "rounds": rounds, "jitter": args.jitter, "seed": args.seed}

    report["inputs"]["scenarios"] = {k: dataclasses.asdict(v) for k, v in SCENARIOS.items()}
    report["inputs"]["networks_us"] = {k: {"latency": v[0], "source": v[1]} for k, v in NETWORKS.items()}
    table("Inputs: rank 0's CPU per message and per task (us), one-way latency (us)",
          ["scenario", "send", "recv", "per task each way", "worker per chunk", "worker per task"],
          [[c.name, c.send, c.recv, c.item, c.worker, c.worker_item] for c in SCENARIOS.values()], out)
    print("networks: " + ", ".join(f"{k} {v[0]} us" for k, v in NETWORKS.items()), file=out)

    # 1. What rank 0 can dispatch: tasks that take no time, 1,000 ranks, a deep window.
    rows, report["dispatch"] = [], []
    for costs in SCENARIOS.values():
        for chunk in (1, 10, 100):
            sim = flat(1000, 0.0, chunk, 8, costs, NETWORKS["shm"][0], rounds=max(2, rounds // 4), **common)
            bound = capacity(costs, chunk)
            rows.append([costs.name, chunk, rate(sim["tasks_per_s"]), rate(bound),
                         f"{sim['rank0_busy']:.0%}"])
            report["dispatch"].append({"scenario": costs.name, "chunk": chunk, "simulated": sim["tasks_per_s"],
                                       "closed_form": bound, "rank0_busy": sim["rank0_busy"]})
    table("1. Tasks/s rank 0 can dispatch (1,000 ranks, tasks of 0 s, window 8, shm latency)",
          ["scenario", "chunk", "simulated tasks/s", "closed form", "rank 0 busy"], rows, out)

    # 2. The chunk size that keeps 1,000 ranks >= 95% busy.
    rows, report["chunk_for_95"] = [], []
    for costs in SCENARIOS.values():
        for network, (latency, _) in NETWORKS.items():
            for task_us in TASKS_US:
                cells = []
                for window in (1, 2):
                    found = None
                    for chunk in CHUNKS:
                        sim = flat(1000, task_us, chunk, window, costs, latency, rounds=rounds, **common)
                        if sim["busy"] >= 0.95:
                            found = (chunk, sim)
                            break
                    entry = {"scenario": costs.name, "network": network, "task_us": task_us, "window": window,
                             "chunk": found[0] if found else None,
                             "busy": found[1]["busy"] if found else None,
                             "closed_form_busy": busy_bound(1000, task_us, found[0], window, costs, latency)
                             if found else None}
                    report["chunk_for_95"].append(entry)
                    cells.append(f"{found[0]} ({found[1]['busy']:.1%} / {entry['closed_form_busy']:.1%})"
                                 if found else f"> {CHUNKS[-1]}")
                rows.append([costs.name, network, f"{task_us / 1000:g} ms", *cells])
    table("2. Smallest chunk keeping 1,000 ranks >= 95% busy (simulated busy share / closed-form bound)",
          ["scenario", "network", "task T", "window 1", "window 2"], rows, out)

    # 3. Where rank 0 becomes the bottleneck: the rank count at which the busy share drops
    # below 95% of what the workers reach with rank 0 free (their own overhead aside).
    rows, report["bottleneck"] = [], []
    latency = NETWORKS["infiniband"][0]
    for costs in SCENARIOS.values():
        for task_us in TASKS_US:
            for chunk in (1, 10, 100):
                alone = alone_busy(task_us, chunk, 2, costs, latency)

                def busy(ranks):
                    return flat(ranks, task_us, chunk, 2, costs, latency, rounds=rounds, **common)["busy"] / alone

                last_ok, first_bad = None, None
                for ranks in RANK_STEPS:
                    if busy(ranks) >= 0.95:
                        last_ok = ranks
                    else:
                        first_bad = ranks
                        break
                # Narrow a bracket down to within 10%.
                while last_ok is not None and first_bad is not None and first_bad > 1.1 * last_ok:
                    middle = round(math.sqrt(last_ok * first_bad))
                    if busy(middle) >= 0.95:
                        last_ok = middle
                    else:
                        first_bad = middle
                formula = bottleneck_ranks(task_us, chunk, 2, costs, latency)
                if first_bad is None:
                    seen = f"> {RANK_STEPS[-1]}"
                elif last_ok is None:
                    seen = f"< {first_bad}"
                else:
                    seen = f"{last_ok}-{first_bad}"
                rows.append([costs.name, f"{task_us / 1000:g} ms", chunk, f"{alone:.1%}", seen, f"{formula:,.0f}"])
                report["bottleneck"].append({"scenario": costs.name, "task_us": task_us, "chunk": chunk,
                                             "alone_busy": alone, "last_ok": last_ok, "first_below_95": first_bad,
                                             "closed_form": formula})
    table("3. Rank count where rank 0 becomes the bottleneck (busy < 95% of the workers' own bound; window 2, "
          "InfiniBand latency)",
          ["scenario", "task T", "chunk", "workers' own bound", "simulated (last >= 95%, first below)",
           "closed form"], rows, out)

    # 3b. The curve itself: the MPI pool, tasks of 10 ms, from 10 to 10,000 ranks.
    rows, report["ranks_curve"] = [], []
    latency = NETWORKS["infiniband"][0]
    for ranks in RANK_STEPS:
        row = [ranks]
        for chunk in (1, 10, 100):
            sim = flat(ranks, 10_000.0, chunk, 2, SCENARIOS["mpipool"], latency, rounds=rounds, **common)
            row += [rate(sim["tasks_per_s"]), f"{sim['busy']:.1%}", f"{sim['rank0_busy']:.0%}"]
            report["ranks_curve"].append({"scenario": "mpipool", "ranks": ranks, "chunk": chunk,
                                          "tasks_per_s": sim["tasks_per_s"], "busy": sim["busy"],
                                          "rank0_busy": sim["rank0_busy"]})
        rows.append(row)
    table("3b. The MPI pool's scenario, tasks of 10 ms, window 2, InfiniBand latency: 10 to 10,000 ranks "
          f"(ideal: ranks x 100 tasks/s)",
          ["ranks", "chunk 1: tasks/s", "busy", "rank 0 busy", "chunk 10: tasks/s", "busy", "rank 0 busy",
           "chunk 100: tasks/s", "busy", "rank 0 busy"],
          rows, out)

    # 4. A tree of dispatchers: 10,000 ranks, tasks of 1 ms, chunk 1.
    rows, report["tree"] = [], []
    for name in ("mpipool", "mpi4py"):
        costs = SCENARIOS[name]
        for network in ("infiniband", "ethernet"):
            latency = NETWORKS[network][0]
            for fanout in (None, 10, 100):
                if fanout is None:
                    sim = flat(10000, 1000.0, 1, 2, costs, latency, rounds=rounds, **common)
                    idle = flat(1, 1000.0, 1, 1, costs, latency, rounds=1)
                    sim["sub_busy"] = None
                else:
                    sim = tree(10000, fanout, 1000.0, 1, 2, costs, latency, rounds=rounds, **common)
                    idle = tree(1, 1, 1000.0, 1, 1, costs, latency, group=1, rounds=1)
                # One task alone, rank 0 to a worker and back, beyond its 1 ms.
                overhead = idle["makespan_us"] - 1000.0
                rows.append([name, network, "flat" if fanout is None else f"f = {fanout}",
                             rate(sim["tasks_per_s"]), f"{sim['busy']:.1%}", f"{sim['rank0_busy']:.0%}",
                             "-" if sim["sub_busy"] is None else f"{sim['sub_busy']:.0%}", f"{overhead:.1f}"])
                report["tree"].append({"scenario": name, "network": network, "fanout": fanout,
                                       "tasks_per_s": sim["tasks_per_s"], "busy": sim["busy"],
                                       "rank0_busy": sim["rank0_busy"], "sub_busy": sim["sub_busy"],
                                       "group": sim.get("group"), "idle_task_overhead_us": overhead})
    table("4. 10,000 ranks, tasks of 1 ms, chunk 1, window 2: flat, or rank 0 -> f sub-dispatchers -> workers",
          ["scenario", "network", "layout", "tasks/s", "workers busy", "rank 0 busy", "busiest sub",
           "one task alone: time beyond T (us)"], rows, out)
    print("\nThe ideal for 10,000 ranks at 1 ms: 10.00 M tasks/s.", file=out)

    if args.json:
        with open(args.json, "w") as file:
            json.dump(report, file, indent=2)


if __name__ == "__main__":
    main()
