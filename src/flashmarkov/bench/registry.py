"""The benchmark registry: ops, their cases, and the implementations measured on each case.

An op module (``flashmarkov.bench.scan``, later attention, diffmax, diffusion) exposes one
``OP: Op``; ``OPS`` maps the op's command-line name to that module. The runner asks the op for its
cases and implementations, makes inputs, computes the reference once per case, and checks, times
and records every implementation the same way.
"""

from __future__ import annotations

import importlib
from argparse import ArgumentParser, Namespace
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .timing import Environment

Tensor = torch.Tensor
Outputs = tuple[Tensor, ...]

OPS: dict[str, str] = {
    "scan": "flashmarkov.bench.scan",
    "attention": "flashmarkov.bench.attention",
    "diffmax": "flashmarkov.bench.diffmax",
    "diffusion": "flashmarkov.bench.diffusion",
}
"""Command-line name of each op -> the module that defines its ``OP``."""

OURS = "flashmarkov"
"""Implementations whose name starts with this are flashmarkov's; every other one is a peer."""


class Skip(Exception):
    """An implementation does not apply to a case (not installed, layout, length, device): the
    runner prints the reason and writes no record."""


@dataclass(frozen=True)
class Case:
    """One benchmark case of an op.

    ``shape`` is the shape of the tensors as laid out in memory, ``layout`` names that layout,
    ``mode`` is ``"fwd"`` or ``"fwdbwd"``, ``dtype`` a torch dtype name, ``x`` the abscissa of
    the plots (the scan's length T), ``sweep`` marks cases of the plotting sweep.
    """

    op: str
    layout: str
    mode: str
    dtype: str
    shape: tuple[int, ...]
    x: int
    sweep: bool = False

    @property
    def name(self) -> str:
        return f"{self.layout} {self.mode} {'x'.join(map(str, self.shape))}"

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


def _same(outputs: Outputs) -> Outputs:
    return outputs


@dataclass(frozen=True)
class Prepared:
    """An implementation bound to one input set.

    ``fn`` is the timed work and returns its outputs; ``canonical`` (untimed) maps them to the
    outputs the op's reference returns, e.g. a gradient with respect to log-gates back to gates.
    """

    fn: Callable[[], Outputs]
    canonical: Callable[[Outputs], Outputs] = _same


@dataclass(frozen=True)
class Impl:
    """An implementation of an op.

    ``prepare(case, inputs)`` imports what it needs and returns a ``Prepared``, or raises ``Skip``
    (an ``ImportError`` counts as a skip too). ``dist`` is the distribution whose version is
    recorded. ``isolate`` runs it once per case in a child process before it runs in the benchmark
    process, for peers known to crash (an illegal memory access poisons the CUDA context).
    """

    name: str
    dist: str
    prepare: Callable[[Case, Any], Prepared]
    isolate: bool = False

    @property
    def is_ours(self) -> bool:
        return self.name.startswith(OURS)


@dataclass(frozen=True)
class Op:
    """What the runner needs from an op module.

    add_arguments: adds the op's own options to its sub-command.
    cases: the cases selected by the parsed options, in a deterministic order.
    impls: every known implementation (the runner filters them by ``--impls``).
    make_inputs: one random input set for a case on a device from a seed.
    reference: the float64 outputs of an input set (forward outputs, then gradients).
    bytes_moved: bytes one call reads and writes at least (decides input rotation).
    floor_ms: the physical floor of a case on the measured machine.
    tolerance: the largest relative error accepted before an output counts as wrong.
    floor: what ``floor_ms`` measures, as the report names it.
    """

    name: str
    x_label: str
    add_arguments: Callable[[ArgumentParser], None]
    cases: Callable[[Namespace], list[Case]]
    impls: Callable[[Namespace], tuple[Impl, ...]]
    make_inputs: Callable[[Case, torch.device, int], Any]
    reference: Callable[[Case, Any], Outputs]
    bytes_moved: Callable[[Case], int]
    floor_ms: Callable[[Case, Environment], float]
    tolerance: Callable[[Case], float]
    floor: str = "copy-bandwidth floor"


def load_op(name: str) -> Op:
    """The ``OP`` of a registered op, importing its module."""
    return importlib.import_module(OPS[name]).OP
