"""Command-line options of ``flashmarkov bench <op>``: the common ones here, each op adds its own."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .registry import OPS, Op, load_op

DTYPES = ("float32", "bfloat16", "float16")
MODES = ("fwd", "fwdbwd")


def csv(choices: Sequence[str] | None = None) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: a comma-separated list, each item one of ``choices`` when given."""

    def parse(text: str) -> tuple[str, ...]:
        items = tuple(item.strip() for item in text.split(",") if item.strip())
        bad = [item for item in items if choices is not None and item not in choices]
        if not items or bad:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected a comma-separated list of {', '.join(choices or ['names'])}"
            )
        return items

    return parse


def shapes(text: str) -> tuple[tuple[int, ...], ...]:
    """An argparse type: comma-separated shapes such as ``2x256x65536,8x1536x4096``."""
    try:
        parsed = tuple(tuple(int(n) for n in shape.split("x")) for shape in text.split(","))
    except ValueError:
        parsed = ()
    if not parsed or any(n < 1 for shape in parsed for n in shape):
        raise argparse.ArgumentTypeError(f"{text!r}: expected shapes like 2x256x65536,8x1536x4096 (positive sizes)")
    return parsed


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= 1")
    return value


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Time flashmarkov and every installed peer in one process; write JSON records, "
        "a Markdown table and a plot.",
    )
    commands = parser.add_subparsers(dest="op", required=True, metavar="OP")
    for name in OPS:
        op = load_op(name)
        sub = commands.add_parser(name, help=f"benchmark {name}")
        sub.add_argument("--shapes", type=shapes, help="shapes to run instead of the default cases")
        sub.add_argument("--dtypes", type=csv(DTYPES), default="float32,bfloat16", help="default: %(default)s")
        sub.add_argument("--modes", type=csv(MODES), default=",".join(MODES), help="default: %(default)s")
        sub.add_argument("--impls", type=csv(), help="keep implementations whose name contains one of these")
        sub.add_argument("--quick", action="store_true", help="one small shape, no sweep")
        sub.add_argument("--sweep", action="store_true", help="add the plotting sweep")
        sub.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="default: %(default)s")
        sub.add_argument("--warmup", type=int, default=25, help="do_bench warm-up, ms (default: %(default)s)")
        sub.add_argument("--rep", type=int, default=100, help="do_bench repetition time, ms (default: %(default)s)")
        sub.add_argument(
            "--repeats",
            type=positive_int,
            default=1,
            help="time each (case, implementation) this many times, each with its own warm-up, and record the "
            "median of them (and every one in repeat_ms): a transient that slows one timing no longer "
            "decides the row (default: %(default)s)",
        )
        sub.add_argument("--device", help="default: cuda when available, else cpu")
        sub.add_argument(
            "--slow-peer",
            type=float,
            default=0.0,
            help="skip a peer for the rest of the run once it takes more than this many times the case's "
            "floor (0: never; a GPU run's time limit is spent on such peers otherwise)",
        )
        sub.add_argument(
            "--isolate-timeout",
            type=float,
            default=300.0,
            help="seconds a risky peer may take on one case in its child process (default: %(default)s)",
        )
        op.add_arguments(sub)
    return parser


def parse_args(argv: Sequence[str], prog: str = "flashmarkov bench") -> tuple[Op, argparse.Namespace]:
    """The op and its options; ``args.argv`` keeps ``argv`` for child processes."""
    args = build_parser(prog).parse_args(list(argv))
    args.argv = list(argv)
    args.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return load_op(args.op), args
