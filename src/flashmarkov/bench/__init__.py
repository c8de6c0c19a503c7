"""``flashmarkov bench``: flashmarkov and every installed peer timed in one process.

``python -m flashmarkov.bench scan [options]`` (or ``flashmarkov bench scan``) checks each
implementation against the float64 reference, times it with ``triton.testing.do_bench``, and
writes ``<out>/scan.json`` (records), ``scan.md`` (tables) and ``scan.png`` (plot), results as
fractions of the copy-bandwidth floor and as ratios to the best peer of the same run. Records
carry the commit of the checkout (``git rev-parse --short HEAD``), or ``FLASHMARKOV_COMMIT`` when
set, for a copy of the tree without ``.git``.

Layout: ``registry`` (ops, cases, implementations), ``timing`` (the one timing path and the
measured machine), ``options`` (command line), ``records`` (JSON), ``report`` (tables, plot),
``isolate`` (risky peers in a child process first), ``runner`` (the loop), and one module per op
(``scan``).
"""

from __future__ import annotations

from .runner import main

__all__ = ["main"]
