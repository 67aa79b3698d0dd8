"""A trial's state writer: states reach the disk in order, whole, and a failed write is raised in the trial."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from alphatune.search.trial import StateWriter


def test_states_are_written_in_order_and_the_last_one_stays(tmp_path: Path) -> None:
    writer = StateWriter()
    try:
        for epoch in range(1, 6):
            writer.submit({"epoch": epoch, "weights": torch.full((1000,), float(epoch))}, tmp_path / "state.pt")
        writer.flush()
    finally:
        writer.close()
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state["epoch"] == 5 and bool((state["weights"] == 5.0).all())
    assert [path.name for path in tmp_path.iterdir()] == ["state.pt"]  # no temporary file left behind


def test_a_failed_write_is_raised_in_the_trial_at_the_next_flush(tmp_path: Path) -> None:
    writer = StateWriter()
    try:
        (tmp_path / "taken").mkdir()
        writer.submit({"epoch": 1}, tmp_path / "taken")  # a directory stands where the state goes
        with pytest.raises(IsADirectoryError):
            writer.flush()
        writer.submit({"epoch": 2}, tmp_path / "state.pt")  # the error was raised once; writing goes on
        writer.flush()
    finally:
        writer.close()
    assert torch.load(tmp_path / "state.pt", weights_only=True) == {"epoch": 2}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["state.pt", "taken"]  # no temporary file left
