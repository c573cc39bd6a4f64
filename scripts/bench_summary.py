"""Prints criterion results as a table, each figure beside its group's baseline from the same run."""
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1])
rows = {}
for bench in root.glob("**/new/benchmark.json"):
    meta = json.loads(bench.read_text())
    est = json.loads((bench.parent / "estimates.json").read_text())
    group, _, name = meta["full_id"].partition("/")
    rows.setdefault(group, []).append((name, est["median"]["point_estimate"]))


def fmt(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


print("\n| group | benchmark | median | vs baseline |")
print("|---|---|---:|---:|")
for group in sorted(rows):
    items = sorted(rows[group], key=lambda r: (not r[0].startswith("baseline"), r[0]))
    seal = next((t for n, t in items if n.startswith("baseline") and ("seal" in n or "unwrap" in n)), None)
    if seal is None:  # groups that pair each operation with its own baseline (e.g. S3 put, get)
        seal = next((t for n, t in items if n.startswith("baseline")), None)
    opn = next((t for n, t in items if n.startswith("baseline") and "open" in n), seal)
    for name, t in items:
        base = opn if ("decrypt" in name and opn) else seal
        ratio = "" if name.startswith("baseline") or base is None else f"{t / base:.2f}×"
        print(f"| {group} | {name} | {fmt(t)} | {ratio} |")
