"""JSON records: one per measured (case, implementation), plus the run's copy bandwidth.

Every record has the keys of design.md, ``op, case, shape, dtype, impl, median_ms, metric, value,
gpu, torch, triton, commit, date``, and these:

- ``timer``: how ``median_ms`` was taken (the CPU fallback says it is not a benchmark);
- ``impl_version``: the implementation's distribution version (importlib.metadata), or null.

Result records (``metric`` "fraction_of_floor", ``value`` floor_ms / median_ms) also have
``layout, mode, x, sweep, floor_ms, status, rel_err, reason, ratio_to_best_peer``. ``status`` is
"ok" (timed), "wrong" (relative error above the tolerance: not timed, ``median_ms`` and ``value``
null) or "failed" (raised or crashed: ``reason`` says how). ``ratio_to_best_peer`` is the best peer
time / this time in the same run (> 1: faster than every peer), null without a timed peer. With
``--repeats N`` (N > 1) a timed record also has ``repeat_ms``: the N timings, of which
``median_ms`` is the median.
The copy record has ``impl`` "torch.copy_", ``metric`` "copy_GBps" and ``case`` "copy".
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

from .registry import OURS, Case
from .timing import Environment

Record = dict[str, Any]
FRACTION = "fraction_of_floor"
COPY = "copy_GBps"


def version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _record(env: Environment, op: str, case: str, shape: list[int], dtype: str, impl: str, **fields: Any) -> Record:
    return {
        "op": op,
        "case": case,
        "shape": shape,
        "dtype": dtype,
        "impl": impl,
        "median_ms": fields.pop("median_ms"),
        "metric": fields.pop("metric"),
        "value": fields.pop("value"),
        "gpu": env.gpu,
        "torch": env.torch,
        "triton": env.triton,
        "commit": env.commit,
        "date": env.date,
        "timer": env.timer,
        **fields,
    }


def copy_record(env: Environment, op: str) -> Record:
    return _record(
        env,
        op,
        "copy",
        [env.copy_bytes],
        "uint8",
        "torch.copy_",
        median_ms=env.copy_ms,
        metric=COPY,
        value=env.copy_gbps,
        impl_version=env.torch,
    )


def result_record(
    env: Environment,
    case: Case,
    impl: str,
    dist: str,
    floor_ms: float,
    status: str,
    *,
    median_ms: float | None = None,
    rel_err: float | None = None,
    reason: str = "",
    repeat_ms: list[float] | None = None,
) -> Record:
    return _record(
        env,
        case.op,
        case.name,
        list(case.shape),
        case.dtype,
        impl,
        median_ms=median_ms,
        metric=FRACTION,
        value=floor_ms / median_ms if median_ms else None,
        impl_version=version(dist),
        layout=case.layout,
        mode=case.mode,
        x=case.x,
        sweep=case.sweep,
        floor_ms=floor_ms,
        status=status,
        rel_err=rel_err,
        reason=reason,
        ratio_to_best_peer=None,
        **({"repeat_ms": repeat_ms} if repeat_ms else {}),
    )


def rank(case_records: list[Record]) -> None:
    """Fill ``ratio_to_best_peer`` of the timed records of one case."""
    timed = [r for r in case_records if r["status"] == "ok"]
    peers = [r["median_ms"] for r in timed if not r["impl"].startswith(OURS)]
    if peers:
        for r in timed:
            r["ratio_to_best_peer"] = min(peers) / r["median_ms"]


def write_json(records: list[Record], path: Path) -> None:
    path.write_text(json.dumps(records, indent=1, allow_nan=False) + "\n")
