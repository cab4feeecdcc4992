"""Run every performance benchmark and summarise its targets.

Each script runs in its own process (so one's memory and thread settings
cannot affect the next) with the same mode and output folder. The summary
lists every target with its measured value and writes ``summary.json`` and
``summary.md`` next to the per-script JSON files. The exit status is 1 when
a script fails or writes no JSON, never because a target is missed.

    python benchmarks/perf/run_all.py --quick      # under 10 minutes on 2 cores
    python benchmarks/perf/run_all.py --tiny --in-process   # the smoke run of the tests
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import common

HERE = Path(__file__).resolve().parent
SCRIPTS = {
    "search": "bench_search.py",
    "graphs": "bench_graphs.py",
    "refiners": "bench_refiners.py",
    "step": "bench_step.py",
    "eval": "bench_eval.py",
    "scaling": "bench_scaling.py",
}


def add_options(parser) -> None:
    parser.add_argument(
        "--only", nargs="+", choices=sorted(SCRIPTS), help="Run only these benchmarks (default: all of them)."
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="Run the scripts in this process instead of one process each: saves the imports, for smoke runs.",
    )


def script_arguments(args) -> list[str]:
    arguments = ["--out", str(args.out), "--flickr8k", str(args.flickr8k)]
    return arguments + ([f"--{args.mode}"] if args.mode != "full" else [])


def run_script(name: str, args) -> dict:
    """Run one benchmark script; return its status, wall time and targets."""
    arguments = script_arguments(args)
    print(f"== {name}: {SCRIPTS[name]} {' '.join(arguments)}", flush=True)
    result_path = args.out / f"{name}.json"
    result_path.unlink(missing_ok=True)
    started = time.perf_counter()
    if args.in_process:
        returncode = run_in_process(name, arguments)
    else:
        environment = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        environment.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        command = [sys.executable, str(HERE / SCRIPTS[name]), *arguments]
        returncode = subprocess.run(command, env=environment, check=False).returncode
    seconds = time.perf_counter() - started
    if returncode != 0 or not result_path.exists():
        return {"benchmark": name, "ok": False, "seconds": seconds, "returncode": returncode, "targets": []}
    payload = json.loads(result_path.read_text(encoding="utf-8"))
    return {"benchmark": name, "ok": True, "seconds": seconds, "targets": payload["targets"]}


def run_in_process(name: str, arguments: list[str]) -> int:
    """Import a script and call its ``main``; return 0, or 1 after printing the error it raised."""
    module = importlib.import_module(Path(SCRIPTS[name]).stem)
    try:
        module.main(arguments)
    except Exception:  # a failing benchmark is reported and the others still run
        traceback.print_exc()
        return 1
    return 0


def markdown_summary(results: list[dict]) -> str:
    """Format the targets of all benchmarks as a Markdown table."""
    lines = ["| benchmark | target | measured | limit | met |", "|---|---|---|---|---|"]
    for result in results:
        if not result["ok"]:
            lines.append(f"| {result['benchmark']} | script failed (exit {result['returncode']}) | | | |")
        for item in result["targets"]:
            met = {True: "yes", False: "**no**", None: "-"}[item["met"]]
            lines.append(f"| {result['benchmark']} | {item['target']} | {item['value']} | {item['limit']} | {met} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(__doc__.splitlines()[0], argv, extra=add_options)
    names = args.only or list(SCRIPTS)
    started = time.perf_counter()
    results = [run_script(name, args) for name in names]
    total = time.perf_counter() - started
    summary = {
        "mode": args.mode,
        "total_seconds": total,
        "machine": common.machine_info(),
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    table = markdown_summary(results)
    (args.out / "summary.md").write_text(table + "\n", encoding="utf-8")
    print()
    print(table)
    print(f"\n{len(names)} benchmark(s) in {total:.0f}s; results in {args.out}")
    failed = [result["benchmark"] for result in results if not result["ok"]]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
