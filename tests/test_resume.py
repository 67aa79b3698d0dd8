"""Crash safety without a cluster: a driver killed between Optuna's tell and Tune's snapshot, ASHA's rungs after
a resume, one writer per run directory, run files that must not run code, disk faults, names."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from alphatune import models
from alphatune import spaces
from planted import TINY_SPACE
from alphatune.cli import main as alphatune_main
from alphatune.search.ledger import LEDGER, read_ledger
from alphatune.search.objective import objective
from alphatune.search.options import OptionError, SearchOptions
from alphatune.search.rundir import (Manifest, RunDirError, acquire_writer, check_writable, dump_yaml, release_writer,
                           write_manifest)
from alphatune.search.scheduler import ResumableASHA
from alphatune.search.searcher import CONTINUES, OPTUNA_TRIAL, StudySearch, make_sampler

ROOT = Path(__file__).resolve().parent.parent


def search_main(argv: list[str]) -> int:
    """``alphatune search ARGV`` in this process."""
    return alphatune_main(["search", *argv])


def tiny_space() -> spaces.Space:
    return spaces.loads(TINY_SPACE.replace("lr: {type: categorical, choices: [1.0e-2, 1.0e-7]}",
                                           "lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}"))


def searcher(run_dir: Path, samples: int = 3) -> StudySearch:
    return StudySearch(tiny_space(), objective("valid_ic"), run_dir, make_sampler("random", 0, samples), samples)


def result(epoch: int, best: float, final: bool) -> dict:
    return {"epoch": epoch, "valid_ic": best, "best_valid_ic": best, "final": final, "training_iteration": epoch}


def test_a_driver_killed_between_optunas_tell_and_tunes_snapshot_resumes(tmp_path: Path) -> None:
    """Tune's snapshot (its searcher state) lags the study: the snapshot knows t1 and t2 running; then t1 is told
    COMPLETE and t3 is handed out, and the driver dies. Resumed from the snapshot, Tune runs t1 again (it reports
    its last epoch again) and creates a new trial for the missing sample."""
    first = searcher(tmp_path)
    first.suggest("t1"), first.suggest("t2")
    snapshot = tmp_path / "searcher-state.pkl"
    first.save(str(snapshot))  # Tune's experiment snapshot
    first.on_trial_result("t1", result(1, 0.10, False))
    first.on_trial_complete("t1", result(2, 0.20, True))
    orphan = first.suggest("t3")  # handed out, never recorded by Tune

    resumed = pickle.loads(pickle.dumps(first))  # what Tune unpickles from tuner.pkl ...
    resumed.restore(str(snapshot))                # ... and the searcher state of its last snapshot
    resumed.on_trial_result("t1", result(2, 0.20, True))  # t1 runs again: its saved final epoch, reported again
    resumed.on_trial_complete("t1", result(2, 0.20, True))  # no "Cannot tell a COMPLETE trial"
    resumed.on_trial_complete("t2", result(3, 0.30, True))
    taken_over = resumed.suggest("t4")  # the new trial for the third sample takes over t3's Optuna trial
    assert taken_over[OPTUNA_TRIAL] == orphan[OPTUNA_TRIAL] and taken_over[CONTINUES] == "t3"
    assert {key: taken_over[key] for key in ("lr", "hidden_size")} == {key: orphan[key] for key in ("lr", "hidden_size")}
    resumed.on_trial_complete("t4", result(1, 0.05, False))
    assert resumed.suggest("t5") == Searcher.FINISHED  # three samples drawn: no fourth

    study = optuna.load_study(study_name="lstm", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    trials = sorted(study.get_trials(), key=lambda trial: trial.number)
    assert [trial.state.name for trial in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert trials[0].value == 0.20 and trials[0].intermediate_values == {1: 0.10, 2: 0.20}
    assert trials[2].user_attrs["ray_trial_id"] == "t4" and trials[2].user_attrs["continues"] == "t3"


def test_a_one_sample_search_runs_its_one_trial(tmp_path: Path) -> None:
    one = searcher(tmp_path, samples=1)  # the enqueued default waits in the study: it is not a drawn sample yet
    assert one.suggest("a")[OPTUNA_TRIAL] == 0
    assert one.suggest("b") == Searcher.FINISHED


def test_a_search_started_again_keeps_its_study_and_reuses_what_ran(tmp_path: Path) -> None:
    """A search that died before Tune saved anything is started again over the same study: the default is not
    enqueued twice, and the trials left RUNNING are taken over first."""
    first = searcher(tmp_path)
    default = first.suggest("a")
    first.suggest("b")
    again = searcher(tmp_path)
    assert again.suggest("c")[OPTUNA_TRIAL] == default[OPTUNA_TRIAL]
    assert again.suggest("d")[CONTINUES] == "b"
    assert again.suggest("e")[OPTUNA_TRIAL] == 2
    assert again.suggest("f") == Searcher.FINISHED


def write_ledger(run_dir: Path, rows: list[dict]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LEDGER).write_text("".join(json.dumps(row) + "\n" for row in rows))


def asha(run_dir: Path) -> ResumableASHA:
    return ResumableASHA(run_dir, time_attr="epoch", metric="best_valid_ic", mode="max", max_t=4, grace_period=1,
                         reduction_factor=2)


def test_asha_judges_a_resumed_trial_against_every_result_recorded_before_the_interruption(tmp_path: Path) -> None:
    rows = [{"event": "start", "trial": "a", "config": {}},
            {"event": "result", "trial": "a", "epoch": 1, "best_valid_ic": 0.0072},
            {"event": "result", "trial": "a", "epoch": 2, "best_valid_ic": 0.0100}]
    write_ledger(tmp_path / "resumed", rows)
    late = SimpleNamespace(trial_id="b", config={})
    verdicts = {}
    for name in ("resumed", "fresh"):
        scheduler = pickle.loads(pickle.dumps(asha(tmp_path / name)))  # as Tune restores it from tuner.pkl
        scheduler.on_trial_add(None, late)
        verdicts[name] = scheduler.on_trial_result(None, late, {"epoch": 1, "best_valid_ic": -0.0066})
    assert verdicts == {"resumed": TrialScheduler.STOP, "fresh": TrialScheduler.CONTINUE}


def test_a_trial_taking_over_an_interrupted_one_takes_its_rungs_and_epochs(tmp_path: Path) -> None:
    rows = [{"event": "start", "trial": "x", "config": {"lr": 0.01}, "optuna_trial": 4},
            {"event": "result", "trial": "x", "epoch": 1, "best_valid_ic": 0.5},
            {"event": "start", "trial": "y", "config": {"lr": 0.01}, "optuna_trial": 4, "continues": "x"},
            {"event": "result", "trial": "y", "epoch": 1, "best_valid_ic": 0.5},
            {"event": "result", "trial": "y", "epoch": 2, "best_valid_ic": 0.6, "final": True},
            {"event": "end", "trial": "y", "status": "TERMINATED"}]
    write_ledger(tmp_path, rows[:2])
    scheduler = asha(tmp_path)
    scheduler.on_trial_add(None, SimpleNamespace(trial_id="y", config={CONTINUES: "x"}))
    assert [recorded for _, recorded in scheduler._brackets[0]._rungs][-1] == {"y": 0.5}
    write_ledger(tmp_path, rows)
    [trial] = read_ledger(tmp_path)
    assert trial.trial_id == "y" and sorted(trial.epochs()) == [1, 2] and trial.status == "TERMINATED"


def test_a_second_writer_is_refused_naming_the_holder_and_a_killed_one_leaves_no_lock(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from alphatune.search.rundir import acquire_writer; "
                               f"acquire_writer({str(run_dir)!r}); print('held', flush=True); time.sleep(120)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirError, match=rf"{run_dir} is being written by pid {holder.pid} on .* since .*; "
                                              r"wait for it to end or stop it"):
            acquire_writer(run_dir)
    finally:
        holder.kill()
        holder.wait()
    acquire_writer(run_dir)  # the kernel released the dead holder's lock
    acquire_writer(run_dir)  # and taking it again in the same process is a no-op
    release_writer(run_dir)


def test_a_second_search_on_a_run_directory_being_written_is_refused_in_one_line(tmp_path: Path,
                                                                                capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "runs" / "busy" / "lstm"
    write_manifest(run_dir, Manifest("lstm", SearchOptions(name="busy"), spaces.load("lstm"), {"source": "embedded"}))
    holder = subprocess.Popen([sys.executable, "-c", "import time; from alphatune.search.rundir import acquire_writer; "
                               f"acquire_writer({str(run_dir)!r}); print('held', flush=True); time.sleep(120)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert search_main(["run", "--storage-path", str(tmp_path / "runs"), "--name", "busy"]) == 2
        assert search_main(["export", str(run_dir)]) == 2
    finally:
        holder.kill()
        holder.wait()
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(f"is being written by pid {holder.pid}" in line for line in errors), errors


def test_export_never_runs_code_from_a_crafted_experiment_state(tmp_path: Path) -> None:
    """A run directory of an earlier version (no ledger) is read from Tune's JSON files only: a pickled payload
    in its experiment state is never loaded."""
    run_dir = tmp_path / "runs" / "old" / "lstm"
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Touch(str(marker))).hex()
    trial_dir = run_dir / "tune" / "trial_abc"
    (trial_dir / "checkpoint_000001").mkdir(parents=True)
    net = models.build("lstm", hidden_size=8, num_layers=1)
    torch.save({"model": "lstm", "hyperparameters": {"hidden_size": 8, "num_layers": 1}, "state_dict": net.state_dict()},
               trial_dir / "checkpoint_000001" / "model.pt")
    (trial_dir / "params.json").write_text(json.dumps({"lr": 0.01, "hidden_size": 8}))
    (trial_dir / "result.json").write_text(json.dumps({"epoch": 2, "valid_ic": 0.3, "best_valid_ic": 0.3,
                                                       "best_valid_loss": 0.9, "best_epoch": 2, "final": True,
                                                       "score": -0.9, "best_score": -0.9}) + "\n")
    state = {"trial_id": "abc", "status": "TERMINATED", "config": {"_type": "CLOUDPICKLE_FALLBACK", "value": payload},
             "stub": {"_type": "CLOUDPICKLE_FALLBACK", "value": payload}}
    (run_dir / "tune" / "experiment_state-2026-01-01_00-00-00.json").write_text(
        json.dumps({"trial_data": [[json.dumps(state), "{}"]], "runner_data": {"x": {"_type": "CLOUDPICKLE_FALLBACK",
                                                                                      "value": payload}}}))
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    old_options = {**SearchOptions(models=["lstm"], metric="valid_ic", max_epochs=3).to_dict(),
                   "segments": {"train": None, "valid": None, "test": None}}
    for key in ("train", "valid", "test"):
        old_options.pop(key)
    dump_yaml({
        "model": "lstm", "space_file": str(space), "space": {**spaces.loads(TINY_SPACE).to_dict(),
                                                             "fixed": {"num_layers": 1, "batch_size": 256,
                                                                       "early_stop": 5, "seed": 1, "metric": "loss"}},
        "data": {"source": "embedded", "market": "csi300", "benchmark": "SH000300",
                 "segments": {"train": ["2018-10-01", "2018-12-31"], "valid": ["2019-01-01", "2019-02-28"],
                              "test": ["2019-03-01", "2019-11-28"]}},
        "options": {**old_options, "metric": "score"}}, run_dir / "search.yaml")
    assert search_main(["export", str(run_dir)]) == 0
    assert not marker.exists()
    best = (run_dir / "best.yaml").read_text()
    assert "trial_id: abc" in best and "metric: valid_loss" in best  # an old `score` run kept epochs by its loss


class _Touch:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def test_an_unwritable_storage_path_is_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert search_main(["run", "--storage-path", str(blocker / "runs"), "--name", "x"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()  # before any data (no progress line) or Ray
    assert line == (f"error: --storage-path {blocker / 'runs' / 'x'}: cannot write there (Not a directory: "
                    f"{blocker})")
    assert sorted(tmp_path.iterdir()) == [blocker]
    if os.geteuid() != 0:  # root writes anywhere: the permission case needs an ordinary user
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        with pytest.raises(RunDirError, match="Permission denied"):
            check_writable(locked / "runs", "--storage-path")


@pytest.mark.parametrize("name", ["a\nb", " ", "../runs/x", "..", "a/b", " x"])
def test_a_name_that_is_not_one_plain_directory_is_refused(name: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    assert search_main(["run", "--storage-path", str(tmp_path), "--name", name]) == 2
    assert search_main(["run", "--resume", "--storage-path", str(tmp_path), "--name", name]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("error: --name must be a plain directory name") for line in errors)
    assert not list(tmp_path.iterdir())
    with pytest.raises(OptionError):
        SearchOptions(name=name).validate()


def test_a_checkpoint_that_is_not_one_is_a_value_error(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"\x80\x04not a pickle at all")
    with pytest.raises(ValueError, match="model.pt: not a checkpoint of ours"):
        models.load_checkpoint(tmp_path / "model.pt")


def test_the_slot_plan_says_how_trials_fill_cpus_and_gpus_and_whether_mps_runs(monkeypatch, tmp_path) -> None:
    """A 7-CPU, 1-GPU node with --gpus-per-trial 0.25 --cpus-per-trial 2: the CPUs fit 3 trials, the GPU 4, so
    one GPU slot would stay idle: the search says so, and how to fix it."""
    import ray
    from alphatune.search.cluster import slot_plan
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 7.0, "GPU": 1.0})
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(tmp_path))
    slots, lines = slot_plan(2.0, 0.25, None)
    assert slots == 3
    assert lines[0] == "3 trial slots: CPUs fit 3 (7 / 2 per trial), GPUs fit 4 (1 / 0.25 per trial)"
    assert lines[1] == ("warning: the CPUs fit 3 trials but the GPUs 4: 1 GPU slot(s) stay idle; give "
                        "--cpus-per-trial 1.75 or less to use them all")
    assert lines[2].startswith("trials share each GPU 4 at a time without CUDA MPS")
    (tmp_path / "control").write_text("")
    slots, lines = slot_plan(1.0, 0.25, None)
    assert slots == 4 and len(lines) == 2
    assert lines[1] == f"trials share each GPU 4 at a time through CUDA MPS (control pipe {tmp_path / 'control'})"
    assert slot_plan(1.0, 0.0, 2) == (2, ["2 trial slots (--max-concurrent): CPUs fit 7 (7 / 1 per trial)"])
