#!/usr/bin/env python3
"""Prints RELIABILITY.md's fault-matrix table from the tallies the FaultMatrixTests write.

Usage: python3 Scripts/fault-table.py [DIRECTORY]   (default: $MP_FAULT_REPORT_DIR or /tmp/mp-fault-matrix)

Each <object>-<fault>.json there is one row: object, fault, cases, hangs, losses, leaks,
clear errors, seconds (and problems, other than those, when any row has some). Rows are
ordered by object (as the matrix lists them) and fault (as Fault declares them); the
totals come last.
"""
import glob
import json
import os
import sys

OBJECTS = ["ChildProcess", "pipes", "Queue", "Lock", "Barrier", "SharedValue", "ProcessPool"]
FAULTS = ["childKilled", "childSegfault", "childFatalError", "childExitZero",
          "parentKilled", "parentInterrupted", "parentTerminated", "spawnFailure"]
COUNTS = ["cases", "hangs", "losses", "leaks", "problems", "clearErrors", "seconds"]


def order(row):
    obj = OBJECTS.index(row["object"]) if row["object"] in OBJECTS else len(OBJECTS)
    fault = FAULTS.index(row["fault"]) if row["fault"] in FAULTS else len(FAULTS)
    return (obj, row["object"], fault, row["fault"])


def main():
    default = os.environ.get("MP_FAULT_REPORT_DIR", "/tmp/mp-fault-matrix")
    directory = sys.argv[1] if len(sys.argv) > 1 else default
    rows = []
    for path in glob.glob(os.path.join(directory, "*.json")):
        try:
            with open(path) as handle:
                rows.append(json.load(handle))
        except (OSError, ValueError) as error:
            print(f"skipping {path}: {error}", file=sys.stderr)
    if not rows:
        print(f"no tallies in {directory}", file=sys.stderr)
        return 1
    rows.sort(key=order)
    with_problems = any(row.get("problems", 0) for row in rows)
    header = ["object", "fault", "cases", "hangs", "losses", "leaks"]
    header += ["other problems"] if with_problems else []
    header += ["clear errors", "seconds"]
    keys = ["cases", "hangs", "losses", "leaks"] + (["problems"] if with_problems else []) + ["clearErrors", "seconds"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i < 2 else "--:" for i in range(len(header))) + "|")
    totals = {key: 0 for key in COUNTS}
    for row in rows:
        for key in COUNTS:
            totals[key] += row.get(key, 0)
        cells = [row["object"], row["fault"]] + [fmt(row.get(key, 0)) for key in keys]
        print("| " + " | ".join(cells) + " |")
    print("| **total** | | " + " | ".join(f"**{fmt(totals[key])}**" for key in keys) + " |")
    return 0


def fmt(value):
    if isinstance(value, float):
        return str(int(value)) if value == int(value) else f"{value:.1f}"
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
