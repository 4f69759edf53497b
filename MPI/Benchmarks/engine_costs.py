"""Rank 0's CPU per message and per task with the MPI pool, apart from its engine's polling.

    python3 MPI/Benchmarks/engine_costs.py [--rounds N] [--ranks 4] [--json FILE]
    python3 MPI/Benchmarks/engine_costs.py --from-json FILE   # an earlier run's tables again

Builds `mpi-benchmarks` (release) and, in each round, runs 4-rank jobs of its
`mpi-engine-costs` workload (MPI/Benchmarks/Swift/EngineCosts.swift):

1. with SWIFT_MPI_ENGINE_STATS=1: rank 0's CPU per phase (idle 2 s; 2,000 applies; maps
   whose requests carry 1, 16 and 256 tasks; a 20,000-task map) split into the engine
   thread's busy rounds, its idle rounds (polling and short sleeps) and the other threads
   (the pool's tasks: encoding requests, decoding replies). The engine reads its thread's
   CPU clock once a round; what a reading costs (measured by the engine at its start) is
   taken out of every round.
2. without it: rank 0's whole CPU per phase, to check that the counting changed little.
3. the worker ranks' CPU (each rank and its local pool's processes: `perf stat -e
   task-clock`, which counts a process's descendants whoever reaps them), in
   a job that only starts and warms the pool and in jobs that add 6,000 requests of 1 task
   or 375 requests of 256: the difference per request is a worker rank's cost per request.

"Work" is what the messages cost rank 0: the other threads plus the engine's busy rounds.
The fit over requests of 1, 16 and 256 tasks, work per request = fixed + per_task x tasks,
gives the cost per message (fixed / 2: a request and its reply) and per task. The same fit
over rank 0's whole CPU in the jobs without the counters is printed as a check: it includes
the polling, and nothing the counting might add (the spread between jobs, 2x and more on the
project's VM, is larger than any difference seen between counted and uncounted jobs).
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = os.path.dirname(HERE)
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--enable-recovery"]
SIZES = [1, 16, 256]
PHASES = ["idle", "apply", "requests-of-1", "requests-of-16", "requests-of-256", "map-chunk1"]


def load():
    with open("/proc/loadavg") as file:
        return file.read().split()[0]


def run(command, timeout=300):
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        return done.stdout, done.stderr
    except subprocess.TimeoutExpired as expired:
        print(f"timed out: {' '.join(command)}", file=sys.stderr)
        return (expired.stdout or b"").decode(), (expired.stderr or b"").decode()


def phases(out):
    result = {}
    for line in out.splitlines():
        if line.startswith("{") and "mpi-engine-costs/" in line:
            report = json.loads(line)
            result[report["name"].split("/", 1)[1]] = report
    return result


def derive(report):
    """Rank 0's figures for one phase, in µs, with the clock readings taken out."""
    reading = report["reading_ns"] / 1e3
    busy = report["busy_cpu_ns"] / 1e3 - reading * report["busy_rounds"]
    idle = report["idle_cpu_ns"] / 1e3 - reading * report["idle_rounds"]
    process = report["process_cpu_s"] * 1e6 - reading * (report["busy_rounds"] + report["idle_rounds"])
    other = process - busy - idle
    return {
        "wall_ms": report["wall_s"] * 1e3, "process_us": process, "busy_us": busy, "idle_us": idle, "other_us": other,
        "work_us": other + busy, "messages": report["sends"] + report["receives"], "tasks": report["tasks"],
        "requests": report["requests"], "busy_rounds": report["busy_rounds"], "idle_rounds": report["idle_rounds"],
        "sleeps": report["sleeps"], "reading_ns": report["reading_ns"],
    }


def checked(label, out, err, expected):
    """The job's phases; says so on stderr, with the job's last stderr lines, if some are missing."""
    found = phases(out)
    missing = [name for name in expected if name not in found]
    if missing:
        tail = "\n    ".join(err.strip().splitlines()[-8:])
        print(f"{label}: no figures for {', '.join(missing)}; the job's stderr ended:\n    {tail}", file=sys.stderr)
    return found


def worker_cpu(err):
    """Seconds of CPU of every worker rank and its descendants (perf stat's CSV lines)."""
    return sum(float(ms) for ms in re.findall(r"^([0-9.]+),msec,task-clock", err, re.MULTILINE)) / 1e3


def fit(points):
    """Least squares of y = a + b x."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    b = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return my - b * mx, b


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--from-json", metavar="FILE", help="print the tables of an earlier run's --json; run nothing")
    args = parser.parse_args()
    if args.from_json:
        with open(args.from_json) as file:
            report(json.load(file)["rounds"], args)
        return

    subprocess.run(["swift", "build", "-c", "release", "--product", "mpi-benchmarks"], cwd=PACKAGE, check=True,
                   stdout=subprocess.DEVNULL)
    binary = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=PACKAGE, check=True,
                            capture_output=True, text=True).stdout.strip() + "/mpi-benchmarks"
    job = MPIRUN + ["-np", str(args.ranks)]
    workload = [binary, "--only", "mpi-engine-costs"]
    timed = ["bash", "-c", 'if [ "${OMPI_COMM_WORLD_RANK:-0}" = 0 ]; then exec "$0" "$@"; fi; '
             'exec perf stat -x, -e task-clock -o /dev/stderr "$0" "$@"']

    rounds = []
    for number in range(1, args.rounds + 1):
        entry = {"started": time.strftime("%H:%M:%S", time.gmtime()), "load": load()}
        out, err = run(job + ["-x", "SWIFT_MPI_ENGINE_STATS=1"] + workload)
        entry["counted"] = checked(f"round {number}, counted", out, err, PHASES)
        out, err = run(job + workload)
        entry["uncounted"] = checked(f"round {number}, uncounted", out, err, PHASES)
        entry["workers"] = {}
        for name, selected in [("start", ""), ("requests-of-1", "requests-of-1"),
                               ("requests-of-256", "requests-of-256")]:
            out, err = run(job + ["-x", f"MPI_ENGINE_COSTS_PHASES={selected}"] + timed + workload)
            entry["workers"][name] = {"cpu_s": worker_cpu(err),
                                      "phases": checked(f"round {number}, workers' {name}", out, err,
                                                        [selected] if selected else [])}
        entry["load_end"] = load()
        rounds.append(entry)
        print(f"round {number}: {entry['started']} UTC, load {entry['load']} -> {entry['load_end']}", file=sys.stderr)
    report(rounds, args)


def report(rounds, args):
    """Prints the tables (and writes --json) for the rounds run."""

    names = PHASES
    print("Rank 0, per phase (SWIFT_MPI_ENGINE_STATS=1; clock readings taken out); one row per round")
    print("| phase | round | wall ms | tasks | requests | messages | rank 0 CPU ms | engine busy ms | engine idle ms "
          "| other threads ms | work µs/message | work µs/task | polling µs per ms | CPU µs/task uncounted |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    summary = {"fits": [], "polling": {}, "worker": []}
    for index, entry in enumerate(rounds, 1):
        for name in names:
            if name not in entry["counted"]:
                continue
            d = derive(entry["counted"][name])
            plain = entry["uncounted"].get(name)
            plain_cpu = (f"{plain['process_cpu_s'] * 1e6 / plain['tasks']:.2f}"
                         if plain and plain["tasks"] else "-")
            per_message = f"{d['work_us'] / d['messages']:.2f}" if d["messages"] else "-"
            per_task = f"{d['work_us'] / d['tasks']:.2f}" if d["tasks"] else "-"
            print(f"| {name} | {index} | {d['wall_ms']:.0f} | {d['tasks']} | {d['requests']} | {d['messages']} "
                  f"| {d['process_us'] / 1e3:.1f} | {d['busy_us'] / 1e3:.1f} | {d['idle_us'] / 1e3:.1f} "
                  f"| {d['other_us'] / 1e3:.1f} | {per_message} | {per_task} "
                  f"| {d['idle_us'] / d['wall_ms']:.1f} | {plain_cpu} |")
            summary["polling"].setdefault(name, []).append(d["idle_us"] / d["wall_ms"])
        points = []
        for size in SIZES:
            name = f"requests-of-{size}"
            if name in entry["counted"]:
                d = derive(entry["counted"][name])
                points.append((size, d["work_us"] / d["requests"]))
        if len(points) >= 2:
            fixed, per_task = fit(points)
            summary["fits"].append({"round": index, "points": points, "fixed_us": fixed, "per_task_us": per_task})
        # The same fit over rank 0's whole CPU in the job without the counters: polling included
        # (an upper bound), but nothing the counting itself adds.
        points = [(size, entry["uncounted"][f"requests-of-{size}"]["process_cpu_s"] * 1e6
                   / entry["uncounted"][f"requests-of-{size}"]["requests"])
                  for size in SIZES if f"requests-of-{size}" in entry["uncounted"]]
        if len(points) >= 2:
            fixed, per_task = fit(points)
            summary.setdefault("fits_uncounted", []).append(
                {"round": index, "points": points, "fixed_us": fixed, "per_task_us": per_task})
        start = entry["workers"]["start"]["cpu_s"]
        for name, requests in [("requests-of-1", None), ("requests-of-256", None)]:
            run_entry = entry["workers"][name]
            report = run_entry["phases"].get(name)
            if report and start:
                extra = run_entry["cpu_s"] - start
                summary["worker"].append({"round": index, "phase": name, "requests": report["requests"],
                                          "tasks": report["tasks"], "extra_cpu_s": extra,
                                          "per_request_us": extra * 1e6 / report["requests"],
                                          "per_task_us": extra * 1e6 / report["tasks"]})
    print()
    print("Rank 0's work per request (request + reply) against tasks per request, least squares over 1, 16, 256")
    print("| round | points (tasks: µs per request) | fixed per request µs | per message µs | per task µs |")
    print("|---|---|---|---|---|")
    for f in summary["fits"]:
        points = ", ".join(f"{x}: {y:.1f}" for x, y in f["points"])
        print(f"| {f['round']} | {points} | {f['fixed_us']:.1f} | {f['fixed_us'] / 2:.1f} | {f['per_task_us']:.2f} |")
    print()
    print("The same over rank 0's whole CPU per request in the jobs without the counters (polling included)")
    print("| round | points (tasks: µs per request) | fixed per request µs | per message µs | per task µs |")
    print("|---|---|---|---|---|")
    for f in summary.get("fits_uncounted", []):
        points = ", ".join(f"{x}: {y:.1f}" for x, y in f["points"])
        print(f"| {f['round']} | {points} | {f['fixed_us']:.1f} | {f['fixed_us'] / 2:.1f} | {f['per_task_us']:.2f} |")
    print()
    print("Worker ranks (all 3 and their local pools' processes): CPU beyond a job that only starts the pool")
    print("| round | phase | requests | tasks | extra CPU s | µs per request | µs per task |")
    print("|---|---|---|---|---|---|---|")
    for w in summary["worker"]:
        print(f"| {w['round']} | {w['phase']} | {w['requests']} | {w['tasks']} | {w['extra_cpu_s']:.2f} "
              f"| {w['per_request_us']:.1f} | {w['per_task_us']:.2f} |")
    # A worker rank's cost per further task in a request: the difference between a request of
    # 256 and one of 1, over the 255 more tasks, round by round.
    for index in sorted({w["round"] for w in summary["worker"]}):
        by_phase = {w["phase"]: w for w in summary["worker"] if w["round"] == index}
        if "requests-of-1" in by_phase and "requests-of-256" in by_phase:
            further = (by_phase["requests-of-256"]["per_request_us"]
                       - by_phase["requests-of-1"]["per_request_us"]) / 255
            summary.setdefault("worker_per_further_task_us", []).append(further)
            print(f"round {index}: a worker rank's CPU per further task in a request {further:.2f} µs")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"summary": summary, "rounds": rounds}, file, indent=2)


if __name__ == "__main__":
    main()
