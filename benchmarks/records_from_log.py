"""Rebuild scan benchmark records from a ``flashmarkov bench scan`` log.

The 2026-11-22 H200 run hit its time limit before the harness wrote its JSON (the harness now
writes after every case). Its logs are kept in benchmarks/results/; this turns their lines into
the harness's own records (same fields, floors from the logged copy bandwidth, ratios to the best
peer per case) and writes scan.json, scan.md and scan.png like the harness does.

    python benchmarks/records_from_log.py --commit a8f3cef --date 2026-11-22 LOG [LOG ...]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from flashmarkov.bench.records import copy_record, rank, result_record, write_json
from flashmarkov.bench.registry import Case
from flashmarkov.bench.report import markdown, plot
from flashmarkov.bench.scan import STREAMS
from flashmarkov.bench.timing import Environment

HEADER = re.compile(r"^(?P<gpu>.+?) · torch (?P<torch>\S+) · triton (?P<triton>\S+) · copy (?P<gbps>[\d.]+) GB/s · (?P<timer>.+)$")
RESULT = re.compile(r"^(?P<layout>bdt|btd) (?P<mode>fwd|fwdbwd) (?P<shape>[\dx]+) (?P<dtype>\w+) (?P<impl>\S+)\s+"
                    r"(?P<ms>[\d.]+) ms\s+[\d.]+ of floor\s+rel err (?P<err>\S+)$")
WRONG = re.compile(r"^WRONG\s+(?P<layout>bdt|btd) (?P<mode>fwd|fwdbwd) (?P<shape>[\dx]+) (?P<dtype>\w+) (?P<impl>\S+): "
                   r"relative error (?P<err>\S+) > .*$")
DIST = {"flashmarkov": "flashmarkov", "accelerated-scan": "accelerated-scan", "fpscan": "fpscan", "fla": "fla-core", "torch": "torch"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("logs", nargs="+", type=Path)
    ap.add_argument("--commit", required=True)
    ap.add_argument("--date", required=True)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    env, records, cases = None, [], {}
    for log in args.logs:
        for line in log.read_text().splitlines():
            if (m := HEADER.match(line)) and env is None:
                copy_bytes = 2**30
                gbps = float(m["gbps"])
                env = Environment(torch.device("cuda"), m["gpu"], m["torch"], m["triton"], args.commit, args.date,
                                  m["timer"], 0, copy_bytes, 2 * copy_bytes / (gbps * 1e6))
                records.append(copy_record(env, "scan"))
            m = RESULT.match(line) or WRONG.match(line)
            if m is None or env is None:
                continue
            shape = tuple(int(v) for v in m["shape"].split("x"))
            case = Case("scan", m["layout"], m["mode"], m["dtype"], shape, shape[-1] if m["layout"] == "bdt" else shape[1])
            numel = shape[0] * shape[1] * shape[2]
            floor_ms = STREAMS[case.mode] * numel * torch.empty(0, dtype=case.torch_dtype).element_size() / (env.copy_gbps * 1e6)
            dist = DIST[m["impl"].split(".")[0].split("+")[0]]
            if "ms" in m.groupdict():
                rec = result_record(env, case, m["impl"], dist, floor_ms, "ok", median_ms=float(m["ms"]), rel_err=float(m["err"]))
            else:
                rec = result_record(env, case, m["impl"], dist, floor_ms, "wrong", rel_err=float(m["err"]), reason="relative error above the tolerance")
            rec["source"] = f"parsed from {log.name}"
            cases.setdefault((case.name, case.dtype), []).append(rec)
    for case_records in cases.values():
        rank(case_records)
        records += case_records
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(records, args.out / "scan.json")
    (args.out / "scan.md").write_text(markdown(records, "scan"))
    plot(records, args.out / "scan.png", "T")
    print(f"{len(records)} records -> {args.out}/scan.json, scan.md, scan.png")


if __name__ == "__main__":
    main()
