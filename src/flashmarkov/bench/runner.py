"""Run one op's benchmark: for each case, check every implementation once against the float64
reference, time the ones that are right, and write ``<out>/<op>.json``, ``.md`` and ``.png``.

Per case and implementation, in the benchmark process: prepare on each input set (several when a
call's bytes fit in L2, rotated call after call), run once and compare with the reference
(relative error ‖out − ref‖ / ‖ref‖ in float64, worst over outputs and gradients), then time.
Implementations marked ``isolate`` run after the others, and only on cases their child-process
probe ran cleanly. If the CUDA context is lost, the run stops and writes what it measured.
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .isolate import Verdict, probe
from .options import parse_args
from .records import Record, copy_record, rank, result_record, write_json
from .registry import Case, Impl, Op, Outputs, Skip
from .report import markdown, plot, print_summary
from .timing import Environment, input_sets, measure_environment, median_ms


def _say(line: str) -> None:
    print(line, flush=True)


def _rel_err(outputs: Outputs, reference: Outputs) -> float:
    """Largest ‖out − ref‖ / ‖ref‖ over the outputs, in float64; inf when an output is not finite."""
    errors = []
    for out, ref in zip(outputs, reference, strict=True):
        out = out.detach().to(torch.float64)
        if out.shape != ref.shape or not torch.isfinite(out).all():
            return math.inf
        errors.append(((out - ref).norm() / ref.norm()).item())
    return max(errors)


def _cuda_alive(device: torch.device) -> bool:
    if device.type != "cuda":
        return True
    try:
        torch.cuda.synchronize(device)
    except RuntimeError:
        return False
    return True


def _measure(
    op: Op,
    case: Case,
    impl: Impl,
    sets: Sequence[Any],
    reference: Callable[[], Outputs],
    verdict: Verdict | None,
    env: Environment,
    args: argparse.Namespace,
) -> Record | Skip:
    """The record of ``impl`` on ``case``, or the ``Skip`` saying why it does not apply."""
    label = f"{case.name} {case.dtype} {impl.name}"
    floor = op.floor_ms(case, env)

    def result(status: str, **fields: Any) -> Record:
        return result_record(env, case, impl.name, impl.dist, floor, status, **fields)

    if verdict is not None and verdict.status == "skip":
        return Skip(verdict.reason)
    if verdict is not None and verdict.status == "failed":
        _say(f"FAILED {label} (child process): {verdict.reason}")
        return result("failed", reason=verdict.reason)
    try:
        prepared = [impl.prepare(case, inputs) for inputs in sets]
        error = _rel_err(prepared[0].canonical(prepared[0].fn()), reference())
        if not error <= op.tolerance(case):
            finite = math.isfinite(error)
            reason = f"relative error {error:.2e} > {op.tolerance(case):.0e}" if finite else "non-finite output"
            _say(f"WRONG  {label}: {reason}")
            return result("wrong", rel_err=error if finite else None, reason=reason)
        repeat_ms = [median_ms([p.fn for p in prepared], env.device, args.warmup, args.rep) for _ in range(args.repeats)]
        ms = statistics.median(repeat_ms)
    except (Skip, ImportError) as skipped:
        return Skip(str(skipped))
    except Exception as failure:
        reason = f"{type(failure).__name__}: {failure}"
        _say(f"FAILED {label}: {reason}")
        return result("failed", reason=reason)
    _say(f"{label:<66} {ms:9.4f} ms  {floor / ms:5.2f} of floor  rel err {error:.1e}")
    return result("ok", median_ms=ms, rel_err=error, repeat_ms=repeat_ms if args.repeats > 1 else None)


def _too_slow(impl: Impl, record: Record, limit: float) -> bool:
    """Whether a peer's (not flashmarkov's) measured record took more than ``limit`` times its floor."""
    if limit <= 0 or impl.is_ours or record.get("status") != "ok":
        return False
    return record["median_ms"] > limit * record["floor_ms"]


def run(op: Op, args: argparse.Namespace) -> int:
    """Benchmark ``op`` as ``args`` select; 0 when every case ran, 1 when the CUDA context was lost."""
    cases = op.cases(args)
    args.out.mkdir(parents=True, exist_ok=True)
    env = measure_environment(args.device, args.warmup, args.rep)
    _say(f"{env.gpu} · torch {env.torch} · triton {env.triton} · copy {env.copy_gbps:.0f} GB/s · {env.timer}")
    records = [copy_record(env, op.name)]
    impls = [i for i in op.impls(args) if args.impls is None or any(s in i.name for s in args.impls)]
    impls.sort(key=lambda impl: impl.isolate)
    verdicts = {i.name: probe(args.argv, i.name, range(len(cases)), args.isolate_timeout) for i in impls if i.isolate}
    alive, skips = True, set()
    slow: dict[str, Skip] = {}  # peers past --slow-peer, with the case that put them there
    for index, case in enumerate(cases):
        count = input_sets(op.bytes_moved(case), env)
        sets = [op.make_inputs(case, env.device, seed) for seed in range(count)]
        reference = functools.cache(functools.partial(op.reference, case, sets[0]))
        case_records = []
        for impl in impls:
            record = slow.get(impl.name)
            if record is None:
                record = _measure(op, case, impl, sets, reference, verdicts.get(impl.name, {}).get(index), env, args)
            if isinstance(record, dict) and _too_slow(impl, record, args.slow_peer):
                slow[impl.name] = Skip(f"took {record['median_ms'] / record['floor_ms']:.0f}x the floor at {case.name} "
                                       f"{case.dtype} (--slow-peer {args.slow_peer:g})")
            if isinstance(record, Skip):
                if (impl.name, str(record)) not in skips:
                    skips.add((impl.name, str(record)))
                    _say(f"skip   {impl.name}: {record} (first at {case.name} {case.dtype})")
                continue
            case_records.append(record)
            if record["status"] == "failed" and not _cuda_alive(env.device):
                alive = False
                break
        rank(case_records)
        records += case_records
        # after every case, so a run stopped by a time limit keeps what it measured
        write_json(records, args.out / f"{op.name}.json")
        if not alive:
            _say(f"the CUDA context was lost during {case.name} {case.dtype}: stopping, writing what was measured")
            break
    _write(op, records, args)
    return 0 if alive else 1


def _write(op: Op, records: list[Record], args: argparse.Namespace) -> None:
    """JSON, Markdown and plot under ``args.out``, then the summary, last on stdout."""
    args.out.mkdir(parents=True, exist_ok=True)
    paths = [args.out / f"{op.name}.{suffix}" for suffix in ("json", "md", "png")]
    write_json(records, paths[0])
    paths[1].write_text(markdown(records, op.name))
    try:
        plot(records, paths[2], op.x_label)
    except ImportError:
        _say("matplotlib is not installed: no plot")
        paths.pop()
    _say("wrote " + ", ".join(map(str, paths)))
    print_summary(records)


def main(argv: Sequence[str] | None = None) -> int:
    """``flashmarkov bench <op> [options]`` (``python -m flashmarkov.bench``); ``--help`` lists them."""
    op, args = parse_args(sys.argv[1:] if argv is None else argv)
    return run(op, args)
