"""``flashmarkov demo | check | bench | embed``: run the operators on built-in data, sweep their
correctness on the present device, benchmark them against their peers, or compute the diffusion
coordinates of a data file."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from . import __version__, _runtime
from ._demo import median_ms, rel_err
from .scan import linear_scan, linear_scan_bwd_ref, linear_scan_ref

TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@dataclass
class Row:
    """One line of a result table."""

    op: str
    case: str
    device: str
    ms: float
    rel_err: float
    tol: float

    @property
    def ok(self) -> bool:
        return self.rel_err <= self.tol


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is present")
    return torch.device(name)


def _print_table(title: str, rows: Sequence[Row]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        for r in rows:
            print(f"  {r.op:6s} {r.case:42s} {r.device:5s} {r.ms:9.3f} ms  rel.err {r.rel_err:.2e} "
                  f"(tol {r.tol:.0e})  {'ok' if r.ok else 'FAIL'}")
        return
    table = Table(title=title)
    for col in ("op", "case", "device", "ms", "rel. error vs float64", "tolerance", ""):
        table.add_column(col, justify="right" if col in ("ms", "rel. error vs float64", "tolerance") else "left")
    for r in rows:
        table.add_row(r.op, r.case, r.device, f"{r.ms:.3f}", f"{r.rel_err:.2e}", f"{r.tol:.0e}",
                      "[green]ok[/green]" if r.ok else "[red]FAIL[/red]")
    console = Console()
    if not console.is_terminal:  # piped output: do not wrap the case column at 80 characters
        console = Console(width=160)
    console.print(table)


def _scan_demo(device: torch.device) -> list[Row]:
    """Exponential moving averages of noisy random walks, the recurrence behind linear
    attention and state-space models: y[t] = decay * y[t-1] + (1 - decay) * x[t]."""
    gen = torch.Generator().manual_seed(0)
    rows = []
    for B, D, T, dtype in ((4, 256, 8192, torch.float32), (4, 256, 8192, torch.bfloat16)):
        if device.type == "cpu" and dtype == torch.bfloat16:
            continue
        walk = torch.randn(B, D, T, generator=gen).cumsum(-1) + torch.randn(B, D, T, generator=gen)
        decay = torch.rand(B, D, 1, generator=gen) * 0.1 + 0.9
        gates = decay.expand(B, D, T).contiguous().to(device, dtype)
        tokens = ((1 - decay) * walk).to(device, dtype)
        ms = median_ms(lambda: linear_scan(gates, tokens), device)
        ref = linear_scan_ref(gates.double(), tokens.double())
        err = rel_err(linear_scan(gates, tokens), ref)
        rows.append(Row("scan", f"EMA (B,D,T)=({B},{D},{T}) {str(dtype)[6:]}", device.type, ms, err, TOLERANCE[dtype]))
    return rows


def _attention_demo(device: torch.device) -> list[Row]:
    """Causal GQA attention forward and backward against the float64 reference."""
    from .attention.demo import demo_rows

    return [Row("attn", case, device.type, ms, err, tol) for case, ms, err, tol in demo_rows(device)]


def _scan_check(device: torch.device, quick: bool) -> list[Row]:
    """Forward and backward of every feature against the float64 reference."""
    gen = torch.Generator().manual_seed(1)
    dtypes = [torch.float32, torch.float64] + ([torch.float16, torch.bfloat16] if device.type == "cuda" else [])
    lengths = (1, 7, 100, 4097) if quick else (1, 7, 100, 1000, 4097, 65537)
    rows = []
    for T in lengths:
        for layout, (shape, dim) in {"bdt": ((2, 5, T), -1), "btd": ((2, T, 5), 1)}.items():
            for dtype in dtypes:
                for reverse, varlen in ((False, False), (True, False), (False, True)):
                    offsets = [0, T // 3, T // 3, T] if varlen else None
                    rows.append(_check_one(shape, dim, dtype, device, reverse, offsets, gen, layout))
    return rows


def _check_one(shape, dim, dtype, device, reverse, offsets, gen, layout) -> Row:
    g = (0.6 + 0.4 * torch.rand(shape, generator=gen, dtype=torch.float64))
    g = torch.where(torch.rand(shape, generator=gen) < 0.2, -g, g).to(device, dtype)
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(device, dtype)
    cu = None if offsets is None else torch.tensor(offsets, dtype=torch.int32, device=device)
    other = [s for i, s in enumerate(shape) if i != dim % len(shape)]
    state = torch.randn(([len(offsets) - 1] if offsets else []) + other, generator=gen, dtype=torch.float64).to(device, dtype)
    gi, xi, hi = (t.clone().requires_grad_() for t in (g, x, state))
    start = time.perf_counter()
    y, final = linear_scan(gi, xi, dim=dim, reverse=reverse, initial_state=hi, return_final_state=True, cu_seqlens=cu)
    dy, dfinal = torch.randn_like(y), torch.randn_like(final)
    torch.autograd.backward([y, final], [dy, dfinal])
    if device.type == "cuda":
        torch.cuda.synchronize()
    ms = (time.perf_counter() - start) * 1e3
    y_ref, final_ref = linear_scan_ref(g.double(), x.double(), dim=dim, reverse=reverse, initial_state=state.double(),
                                       return_final_state=True, cu_seqlens=cu)
    grads_ref = linear_scan_bwd_ref(g.double(), y_ref, dy.double(), dim=dim, reverse=reverse, initial_state=state.double(),
                                    dfinal=dfinal.double(), cu_seqlens=cu)
    errs = [rel_err(a, b) for a, b in zip((y, final, gi.grad, xi.grad, hi.grad), (y_ref, final_ref, *grads_ref))]
    feature = "reverse" if reverse else ("varlen" if offsets else "forward")
    case = f"{layout} {tuple(shape)} {str(dtype)[6:]} {feature} fwd+bwd"
    return Row("scan", case, device.type, ms, max(errs), TOLERANCE[dtype])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flashmarkov", description=__doc__)
    parser.add_argument("--version", action="version", version=f"flashmarkov {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run each operator on built-in data and compare with its reference")
    demo.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    check = sub.add_parser("check", help="correctness sweep of every operator on the present device")
    check.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    check.add_argument("--quick", action="store_true", help="fewer lengths")
    sub.add_parser("bench", help="benchmark against peers (see `flashmarkov bench --help`)", add_help=False)
    sub.add_parser("embed", help="diffusion coordinates of a .npy/.csv file or a built-in data set "
                   "(see `flashmarkov embed --help`)", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        from .bench import main as bench_main

        return bench_main(rest)
    if args.command == "embed":
        from .diffusion.cli import embed_main

        return embed_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    device = _device(args.device)
    print(f"flashmarkov {__version__} on {_runtime.device_summary() if device.type == 'cuda' else 'cpu (PyTorch reference)'}")
    if args.command == "demo":
        from .diffmax.demo import demo_diffmax
        from .diffusion.cli import demo_diffusion

        rows = _scan_demo(device) + _attention_demo(device)
        _print_table("flashmarkov demo", rows)
        print(demo_diffmax(device))
        print(demo_diffusion(device))
    else:
        rows = _scan_check(device, args.quick)
        _print_table(f"flashmarkov check: {sum(r.ok for r in rows)}/{len(rows)} pass", rows)
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
