"""Run a risky implementation once per case in a child process before the benchmark process does.

An illegal memory access in a peer's kernel poisons the CUDA context of the process it happens in,
and a segfault or a hang ends it. The parent sends the child the run's command line, an
implementation and case indices; the child prepares and runs each case once and reports one
verdict line per case. A case whose child dies or goes silent for ``timeout_s`` gets a "failed"
verdict and a fresh child continues with the cases after it. Only cases the child ran cleanly
run in the benchmark process.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

import torch

from .options import parse_args
from .registry import Skip

MARK = "@@flashmarkov.bench.isolate "


@dataclass(frozen=True)
class Verdict:
    """``status`` is "ok", "skip" (does not apply: no record) or "failed" (crash, error, hang)."""

    status: str
    reason: str = ""


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def probe(argv: Sequence[str], impl: str, indices: Sequence[int], timeout_s: float) -> dict[int, Verdict]:
    """Verdicts of ``impl`` on the cases ``indices`` of the run ``argv``, from child processes."""
    verdicts: dict[int, Verdict] = {}
    pending = list(indices)
    while pending:
        child = subprocess.Popen(
            [sys.executable, "-c", "from flashmarkov.bench.isolate import child; child()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(json.dumps({"argv": list(argv), "impl": impl, "cases": pending}))
        child.stdin.close()
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_pump, args=(child.stdout, lines), daemon=True).start()
        tail: deque[str] = deque(maxlen=3)
        while pending:
            try:
                line = lines.get(timeout=timeout_s)
            except queue.Empty:
                child.kill()
                verdicts[pending.pop(0)] = Verdict("failed", f"no answer within {timeout_s:.0f} s")
                break
            if line is None:
                output = f": {' | '.join(tail)}" if tail else ""
                verdicts[pending.pop(0)] = Verdict("failed", f"child process exited with {child.wait()}{output}")
                break
            if not line.startswith(MARK):
                tail.append(line.strip())
                continue
            answer = json.loads(line[len(MARK) :])
            pending.remove(answer["case"])
            verdicts[answer["case"]] = Verdict(answer["status"], answer["reason"])
            if answer["status"] == "failed":
                break
        _finish(child, timeout_s)
    return verdicts


def _finish(child: subprocess.Popen[str], timeout_s: float) -> None:
    try:
        child.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def child() -> None:
    """Child side: run each requested case once; exit after the first failure."""
    request = json.load(sys.stdin)
    op, args = parse_args(request["argv"])
    cases = op.cases(args)
    impl = next(impl for impl in op.impls(args) if impl.name == request["impl"])
    for index in request["cases"]:
        case, verdict = cases[index], Verdict("ok")
        try:
            impl.prepare(case, op.make_inputs(case, args.device, 0)).fn()
            if args.device.type == "cuda":
                torch.cuda.synchronize(args.device)
        except (Skip, ImportError) as error:
            verdict = Verdict("skip", str(error))
        except Exception as error:
            verdict = Verdict("failed", f"{type(error).__name__}: {error}")
        answer = {"case": index, "status": verdict.status, "reason": verdict.reason}
        print(MARK + json.dumps(answer), flush=True)
        if verdict.status == "failed":
            raise SystemExit(1)
