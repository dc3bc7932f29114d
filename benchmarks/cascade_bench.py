"""Cascade benchmark through the product's own command (not run by the test suite).

For each margin mode, one ``margin-engine simulate cascade --population N --modes MODE
--max-rounds R --json`` process: wall time of the whole command (start, population, collateral,
every round, JSON and HTML), the stages it reports, the rounds it ran and why it stopped, the
peak RSS of the process, and the machine's load average before and after (the machine is
shared: other jobs' load is part of the number).

    .venv/bin/python benchmarks/cascade_bench.py [--population 100000] [--max-rounds 10]
        [--shock venue-token-90] [--modes isolated,cross,portfolio]
        [--append benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "margin_engine.cli.app"]


def run_mode(mode: str, args: argparse.Namespace, output: Path) -> dict[str, Any]:
    load_before = os.getloadavg()
    began = time.perf_counter()
    done = subprocess.run(
        [*CLI, "simulate", "cascade", "--shock", args.shock, "--population",
         str(args.population), "--modes", mode, "--max-rounds", str(args.max_rounds),
         "--data", str(args.data), "--output", str(output / mode), "--json"],
        capture_output=True, text=True, cwd=ROOT, check=False)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{mode}: exit {done.returncode}: {done.stderr.strip()}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    document = json.loads(done.stdout)
    result = document["modes"][0]
    seconds = document["seconds"]
    return {
        "mode": mode, "wall_s": wall, "population_s": seconds["population"],
        "collateral_s": seconds[f"{mode}_funding"], "setup_s": result["seconds"]["setup"],
        "rounds_s": result["seconds"]["rounds"], "cascade_s": result["seconds"]["total"],
        "rounds": len(result["rounds"]), "end": result["end"],
        "round_s": [r["seconds"] for r in result["rounds"]],
        "accounts_liquidated": result["totals"]["accounts_liquidated"],
        "liquidations_per_round": [r["liquidated_accounts"] for r in result["rounds"]],
        "peak_rss_mb": usage.ru_maxrss / 1024.0,  # the largest child so far
        "load_before": load_before, "load_after": os.getloadavg()}


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"`margin-engine simulate cascade --shock {args.shock} --population "
        f"{args.population:,} --modes MODE --max-rounds {args.max_rounds} --json` "
        f"({os.cpu_count()} CPUs):", "",
        "| mode | whole command s | population s | collateral s | cascade s (set-up + rounds) "
        "| rounds (end) | accounts liquidated | slowest round s | peak RSS MB "
        "| load 1 min before / after |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    lines.extend(
        f"| {r['mode']} | {r['wall_s']:.1f} | {r['population_s']:.2f} | "
        f"{r['collateral_s']:.2f} | {r['cascade_s']:.1f} ({r['setup_s']:.1f} + "
        f"{r['rounds_s']:.1f}) | {r['rounds']} ({r['end'].replace('_', ' ')}) | "
        f"{r['accounts_liquidated']:,.0f} | {max(r['round_s'], default=0):.2f} | "
        f"{r['peak_rss_mb']:,.0f} | {r['load_before'][0]:.2f} / {r['load_after'][0]:.2f} |"
        for r in rows)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--population", type=int, default=100_000)
    parser.add_argument("--max-rounds", type=int, default=10)
    parser.add_argument("--shock", default="venue-token-90")
    parser.add_argument("--modes", default="isolated,cross,portfolio")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--append", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = [run_mode(mode, args, Path(folder)) for mode in args.modes.split(",")]
    text = table(rows, args)
    print(text)
    print(json.dumps(rows, indent=1))
    if args.append is not None:
        with args.append.open("a") as handle:
            handle.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
