"""Issue 14's benchmarks, the MPI pool beside mpi4py.futures in the same run.

    python3 MPI/Benchmarks/compare.py [--rounds N] [--size tiny|full] [--json FILE] [--ranks 4]

Builds MPI/'s `mpi-benchmarks` in release, then in each round runs, as separate 4-rank jobs,
the Swift side (MPI/Benchmarks/Swift) and mpi4py_bench.py, back to back, so that the load of
the moment reaches both; the table gives each side's median over the rounds and the median
of the per-round ratios (Swift / mpi4py). Each job ends with mpi-rank-killed, which kills a
worker rank (mpi4py.futures hangs: its figure is the watchdog's timeout).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = os.path.dirname(HERE)
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--enable-recovery", "-x", "MPI_BENCH_LAUNCH_NS"]
TARGETS = {
    "mpi-map-chunk1": ("higher", ">= 10x mpi4py.futures"),
    "mpi-apply-latency": ("lower", "<= 0.5x mpi4py.futures"),
    "mpi-start": ("lower", "<= 0.5x mpi4py.futures (the first pool, timed in rank 0's main)"),
    "mpi-start-launch": ("lower", "(the same pool, timed from just before mpirun)"),
    "mpi-rank-killed": ("lower", "ours ends with the rank named within 5 s; mpi4py.futures hangs"),
}


def run_job(command, timeout):
    """The JSON lines a job printed (mpirun's own status does not say how rank 0 ended)."""
    environment = dict(os.environ, MPI_BENCH_LAUNCH_NS=str(time.time_ns()))
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment)
        out = completed.stdout
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout.decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
    reports = {}
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("{"):
            report = json.loads(line)
            reports[report["name"]] = report
    return reports


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", choices=["tiny", "full"], default="full")
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()

    subprocess.run(["swift", "build", "-c", "release", "--product", "mpi-benchmarks"], cwd=PACKAGE, check=True,
                   stdout=subprocess.DEVNULL)
    binary = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=PACKAGE, check=True,
                            capture_output=True, text=True).stdout.strip() + "/mpi-benchmarks"
    swift = MPIRUN + ["-np", str(args.ranks), binary, "--size", args.size]
    python = MPIRUN + ["-np", str(args.ranks), sys.executable, "-m", "mpi4py.futures",
                       os.path.join(HERE, "mpi4py_bench.py"), "--size", args.size]

    rounds = []
    for number in range(1, args.rounds + 1):
        ours = run_job(swift, 300)
        theirs = run_job(python, 300)
        rounds.append({"swift": ours, "python": theirs})
        for name in TARGETS:
            a, b = ours.get(name, {}).get("value"), theirs.get(name, {}).get("value")
            ratio = f"{a / b:.3f}x" if a is not None and b else "-"
            print(f"round {number}/{args.rounds} {name}: Swift {a}, mpi4py {b} ({ratio})", file=sys.stderr, flush=True)

    print("| workload | unit | Swift (MPIPool) | mpi4py.futures | Swift/mpi4py | target |")
    print("|---|---|---|---|---|---|")
    summary = {}
    for name, (_, target) in TARGETS.items():
        ours = [r["swift"][name]["value"] for r in rounds if name in r["swift"]]
        theirs = [r["python"][name]["value"] for r in rounds if name in r["python"]]
        ratios = [r["swift"][name]["value"] / r["python"][name]["value"] for r in rounds
                  if name in r["swift"] and name in r["python"] and r["python"][name]["value"]]
        unit = next((r["swift"][name]["unit"] for r in rounds if name in r["swift"]), "")
        med = lambda values: statistics.median(values) if values else None
        fmt = lambda value: "-" if value is None else (f"{value:.4g}" if value < 1e5 else f"{value:.0f}")
        print(f"| {name} | {unit} | {fmt(med(ours))} | {fmt(med(theirs))} | "
              f"{'-' if not ratios else f'{med(ratios):.3f}x'} | {target} |")
        summary[name] = {"swift": med(ours), "python": med(theirs), "ratio": med(ratios), "unit": unit,
                         "target": target}
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"summary": summary, "rounds": rounds}, file, indent=2)


if __name__ == "__main__":
    main()
