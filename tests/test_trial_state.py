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


def test_a_trial_over_folds_reports_each_fold_in_place_and_one_interrupted_in_a_fold_goes_on_there(tmp_path: Path
                                                                                                   ) -> None:
    """``train_folds`` over three folds: every report says its fold, ``epoch`` counts on over the folds, the value is
    the mean over the folds so far. Interrupted in fold 2 (the process dies after its first epoch), it goes on in
    fold 2 from its saved epoch (fold 1 only reports its last epoch again) and ends exactly where an uninterrupted
    run ends."""
    from alphatune import models
    from alphatune.search.trial import train_folds
    from alphatune.storage import Location
    from planted import planted_dataset
    folds = [planted_dataset(n_days=70, n_stocks=25, seed=seed, split=(0.6, 0.3)) for seed in (1, 2, 3)]
    hp = models.get_spec("lstm").hyperparameters({"hidden_size": 8, "num_layers": 1, "n_epochs": 3, "early_stop": 5,
                                                  "batch_size": 256, "lr": 1e-2, "seed": 3, "metric": "ic"})
    settings = dict(metric="valid_ic", threads=1, device="cpu")

    def run(where: Path, stop_at: tuple[int, int] | None = None) -> list[dict]:
        reports = []

        def report(result: dict) -> None:
            reports.append(result)
            if stop_at is not None and (result["fold"], result["fold_epoch"]) == stop_at:
                raise KeyboardInterrupt  # the worker dies right after this report

        try:
            train_folds(hp, Location.of(where), datasets=folds, report=report, **settings)
        except KeyboardInterrupt:
            pass
        return reports

    whole = run(tmp_path / "whole")
    assert [(r["fold"], r["fold_epoch"], r["epoch"]) for r in whole] == [
        (fold, epoch, (fold - 1) * 3 + epoch) for fold in (1, 2, 3) for epoch in (1, 2, 3)]
    assert [r["fold_final"] for r in whole] == [False, False, True] * 3 and whole[-1]["final"]
    kept = [r["fold_best_valid_ic"] for r in whole if r["fold_final"]]
    assert whole[-1]["best_valid_ic"] == pytest.approx(sum(kept) / 3)
    assert whole[4]["best_valid_ic"] == pytest.approx((kept[0] + whole[4]["fold_best_valid_ic"]) / 2)
    assert sorted(path.name for path in (tmp_path / "whole").iterdir()) == ["fold1", "fold2", "fold3"]

    first = run(tmp_path / "cut", stop_at=(2, 1))
    assert [(r["fold"], r["fold_epoch"]) for r in first][-1] == (2, 1)
    again = run(tmp_path / "cut")
    assert [(r["fold"], r["fold_epoch"]) for r in again] == [(1, 3), (2, 1), (2, 2), (2, 3), (3, 1), (3, 2), (3, 3)]
    for ours, theirs in zip(again[1:], whole[3:], strict=True):  # from the saved epoch on, bit for bit as if never cut
        assert (ours["valid_ic"], ours["best_valid_ic"], ours["epoch"]) == (theirs["valid_ic"], theirs["best_valid_ic"],
                                                                           theirs["epoch"])
