"""Fixtures of the diffmax tests: small blocks so short rows and sequences exercise the
streaming and multi-tile paths."""

from __future__ import annotations

import pytest


@pytest.fixture
def small_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Row kernels with blocks of 16 entries: rows longer than 16 take the streaming path."""
    from flashmarkov.diffmax import rows

    monkeypatch.setattr(rows, "pick_config", lambda n, itemsize: rows.RowConfig(16, 1))


@pytest.fixture
def small_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Attention tiles of 16 x 16."""
    from flashmarkov.diffmax import attention

    monkeypatch.setattr(attention, "pick_config", lambda d, itemsize: attention.AttnConfig(16, 16, 1))

