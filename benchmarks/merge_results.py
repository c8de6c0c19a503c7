"""Merge the harness's JSON records of several device runs of one op (e.g. one run per layout,
or runs cut by a time limit) into benchmarks/results/<op>.json, .md and .png.

    python benchmarks/merge_results.py scan RUN1/scan.json RUN2/scan.json [--out benchmarks/results]

Records keep their own provenance (commit, date); the Markdown header names the first run's.
A later file's record replaces an earlier one of the same case, shape, dtype and implementation.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

from flashmarkov.bench.records import write_json
from flashmarkov.bench.registry import OPS
from flashmarkov.bench.report import markdown, plot


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("op", choices=sorted(OPS))
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    merged: dict[tuple, dict] = {}
    for f in args.files:
        for r in json.loads(f.read_text()):
            key = (r["case"], tuple(r["shape"]), r["dtype"], r["impl"], r["metric"] == "copy_GBps")
            if r["metric"] == "copy_GBps" and key in merged:
                continue  # the first run's copy bandwidth stays the provenance line
            merged[key] = r
    records = list(merged.values())
    op = importlib.import_module(OPS[args.op]).OP
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(records, args.out / f"{args.op}.json")
    (args.out / f"{args.op}.md").write_text(markdown(records, args.op))
    plot(records, args.out / f"{args.op}.png", op.x_label)
    print(f"{len(records)} records -> {args.out}/{args.op}.json, .md, .png")


if __name__ == "__main__":
    main()
