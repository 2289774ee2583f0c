"""Run the benchmark suites, print every figure and write ``bench-results/latest.json``."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import pkgutil
import sys
import time
import traceback
from pathlib import Path

import tests.benchmarks as package
from tests.benchmarks._figures import Figure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs (CI smoke test)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/latest.json"))
    parser.add_argument("--list", action="store_true", help="list the suites and exit")
    parser.add_argument("suites", nargs="*", help="suite names (default: all), e.g. codec host store")
    args = parser.parse_args(argv)
    names = sorted(
        m.name[len("bench_") :] for m in pkgutil.iter_modules(package.__path__) if m.name.startswith("bench_")
    )
    # the ceilings first: later suites reuse the same run's measurements for their ratios
    names.sort(key=lambda n: n != "ceilings")
    if args.list:
        print("\n".join(names))
        return 0
    unknown = [n for n in args.suites if n not in names]
    if unknown:
        parser.error(f"unknown suite(s) {', '.join(unknown)}; known: {', '.join(names)}")
    chosen = args.suites or names
    seconds: dict[str, float] = {}
    figures: list[Figure] = []
    failed: list[str] = []
    for name in chosen:
        started = time.perf_counter()
        print(f"== suite {name}{' (quick)' if args.quick else ''}", flush=True)
        try:
            module = importlib.import_module(f"tests.benchmarks.bench_{name}")
            for figure in module.run(args.quick):
                print(figure.line(), flush=True)
                figures.append(figure)
        except Exception:
            failed.append(name)
            print(f"!! suite {name} crashed:", file=sys.stderr)
            traceback.print_exc()
        seconds[name] = round(time.perf_counter() - started, 1)
        print(f"== suite {name} took {seconds[name]:.1f} s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "time": time.time(),
                "quick": args.quick,
                "failed": failed,
                "seconds": seconds,
                "machine": {
                    "cpus": os.cpu_count(),
                    "loadavg": os.getloadavg(),
                    "python": sys.version.split()[0],
                },
                "figures": [_finite(f.as_dict()) for f in figures],
            },
            indent=2,
        )
    )
    print(f"== {len(figures)} figures written to {args.out}; crashed suites: {failed or 'none'}")
    return 1 if failed else 0


def _finite(data: dict[str, object]) -> dict[str, object]:
    """NaN/inf (a figure that could not be measured) as null, so the file stays strict JSON."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in data.items()}


if __name__ == "__main__":
    raise SystemExit(main())
