"""The run's records in memory (``search.ledger.RunRecords``): read from the file once, appended through, and
brought up to the file by reading only what was appended since."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alphatune.search.ledger import LEDGER, LedgerError, RunRecords, read_confirmation, read_ledger


def test_the_records_are_served_from_memory_and_only_new_lines_are_read(tmp_path: Path) -> None:
    """A thousand trials appended through the records; then a line appended by another process. The next read
    folds in that line alone: the bytes before it are not read again (here they are overwritten in place with
    damage, which a reader that parsed the file again would refuse)."""
    records = RunRecords.of(tmp_path)
    for number in range(1000):
        records.created(f"t{number}", number, {"lr": 0.01}, None)
        records.result(f"t{number}", {"epoch": 1, "valid_ic": 0.01, "best_valid_ic": 0.01, "final": True})
        records.ended(f"t{number}", "TERMINATED")
    assert [trial.status for trial in read_ledger(tmp_path)] == ["TERMINATED"] * 1000
    path = tmp_path / LEDGER
    size = path.stat().st_size
    with path.open("r+b") as file:  # damage every byte but the last line's, in place (same size)
        file.write(b"x" * (size - 200))
    with path.open("a") as file:
        file.write(json.dumps({"event": "trial", "trial": "late", "optuna_trial": 1000, "config": {}}) + "\n")
    trials = read_ledger(tmp_path)
    assert len(trials) == 1001 and trials[-1].trial_id == "late" and trials[-1].optuna_trial == 1000
    RunRecords.forget(tmp_path)
    with pytest.raises(LedgerError, match=rf"{LEDGER}:1: not a ledger record"):  # read afresh, the damage shows
        read_ledger(tmp_path)


def test_a_ledger_rewritten_in_place_or_replaced_is_read_again(tmp_path: Path) -> None:
    records = RunRecords.of(tmp_path)
    records.created("a", 0, {}, None)
    records.confirmation({"seeds": [1], "candidates": [], "top": 1})
    records.confirmed_run("a-seed1", trial="a", seed=1, valid_ic=0.02)
    assert read_confirmation(tmp_path)[1]["a-seed1"]["valid_ic"] == 0.02
    path = tmp_path / LEDGER
    path.write_text('{"event": "trial", "trial": "b", "optuna_trial": 0, "config": {}}\n' * 2)  # longer, rewritten
    assert [trial.trial_id for trial in read_ledger(tmp_path)] == ["b"]
    assert read_confirmation(tmp_path) == (None, {})
    path.unlink()
    assert read_ledger(tmp_path) is None


def test_a_torn_tail_is_read_once_it_is_ended_and_a_line_being_written_waits(tmp_path: Path) -> None:
    """Another process's line caught half-written is not a record yet: once ended it is read whole."""
    path = tmp_path / LEDGER
    line = json.dumps({"event": "trial", "trial": "a", "optuna_trial": 0, "config": {"lr": 0.1}})
    path.write_text(line[:20])
    assert read_ledger(tmp_path) == []
    with path.open("a") as file:
        file.write(line[20:] + "\n")
    [trial] = read_ledger(tmp_path)
    assert trial.config == {"lr": 0.1}
    records = RunRecords.of(tmp_path)
    path.write_text(path.read_text() + line.replace('"a"', '"b"')[:30])  # a torn tail left by a kill
    records.ended("a", "TERMINATED")  # ends the fragment with a newline first: it swallows nothing
    assert [(trial.trial_id, trial.status) for trial in read_ledger(tmp_path)] == [("a", "TERMINATED")]
    RunRecords.forget(tmp_path)
    assert [(trial.trial_id, trial.status) for trial in read_ledger(tmp_path)] == [("a", "TERMINATED")]


def test_what_is_derived_from_a_trial_is_made_again_only_after_a_record_of_it(tmp_path: Path) -> None:
    records = RunRecords.of(tmp_path)
    records.created("a", 0, {}, None)
    records.created("b", 1, {}, None)
    made = []

    def make(trial):
        made.append(trial.trial_id)
        return len(trial.results)

    assert [records.derived("n", trial, make) for trial in records.trials()] == [0, 0]
    records.result("a", {"epoch": 1})
    assert [records.derived("n", trial, make) for trial in records.trials()] == [1, 0]
    assert made == ["a", "b", "a"]
