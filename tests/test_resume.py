"""Crash safety without a cluster: a driver killed between Optuna's tell and Tune's snapshot, ASHA's rungs after
a resume, one writer per run directory, run files that must not run code, disk faults, names."""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher

from alphatune import models
from alphatune import spaces
from planted import TINY_SPACE
from alphatune.cli import main as alphatune_main
from alphatune.search.ledger import LEDGER, read_ledger
from alphatune.search.objective import objective
from alphatune.search.options import SAMPLERS, OptionError, SearchOptions
from alphatune.search.rundir import (Manifest, RunDirError, acquire_writer, check_writable, dump_yaml, release_writer,
                           write_manifest)
from alphatune.search.ledger import RunRecords
from alphatune.search.resume import reconcile
from alphatune.search.scheduler import CONTINUES, SuccessiveHalving
from alphatune.search.searcher import OPTUNA_TRIAL, StudySearcher
from alphatune.search.study import SearchStudy, make_sampler

ROOT = Path(__file__).resolve().parent.parent


def search_main(argv: list[str]) -> int:
    """``alphatune search ARGV`` in this process."""
    return alphatune_main(["search", *argv])


def tiny_space(seed_open: bool = False) -> spaces.Space:
    text = TINY_SPACE.replace("lr: {type: categorical, choices: [1.0e-2, 1.0e-7]}",
                              "lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}")
    return spaces.loads(text.replace(", seed: 1}", "}") if seed_open else text)


GOAL = objective("valid_ic")


def searcher(run_dir: Path, samples: int = 3, seed_open: bool = True) -> StudySearcher:
    """A searcher over the run's records, as ``search.tuning.search_model`` builds one (after ``reconcile``)."""
    space = tiny_space(seed_open)
    study = SearchStudy.in_run(run_dir, space, GOAL, make_sampler("random", 0, samples))
    ledger = RunRecords.of(run_dir)
    plan = reconcile(run_dir, study, ledger)
    return StudySearcher(study, ledger, run_dir, samples, 7, plan.continuations)


def result(epoch: int, best: float, final: bool) -> dict:
    return {"epoch": epoch, "valid_ic": best, "best_valid_ic": best, "final": final, "training_iteration": epoch}


def study_of(run_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="lstm", storage=f"sqlite:///{run_dir / 'optuna.db'}")


def test_a_driver_killed_between_the_ledger_and_optuna_resumes_with_one_truth(tmp_path: Path) -> None:
    """The searcher writes the ledger first, then tells Optuna; a kill in between leaves the ledger ahead. t1 ended
    in the ledger (its last epoch and end written, the study not told), t2 was training: resumed, t1 is told as the
    ledger says and never runs again, t2 is taken over by a new Tune trial (same Optuna trial, values and seed),
    and only the third sample is new."""
    first = searcher(tmp_path)
    first.suggest("t1")
    t2 = first.suggest("t2")
    first.on_trial_result("t1", result(1, 0.10, False))
    first.on_trial_result("t2", result(1, 0.05, False))
    first.ledger.result("t1", result(2, 0.20, True))  # what the kill interrupted: the ledger written ...
    first.ledger.ended("t1", "TERMINATED")              # ... Optuna never told
    first.ledger.close()

    resumed = searcher(tmp_path)
    trials = sorted(study_of(tmp_path).get_trials(), key=lambda trial: trial.number)
    assert trials[0].state.name == "COMPLETE" and trials[0].value == 0.20
    assert trials[0].intermediate_values == {1: 0.10, 2: 0.20}
    taken_over = resumed.suggest("t4")
    assert taken_over[OPTUNA_TRIAL] == t2[OPTUNA_TRIAL] and taken_over[CONTINUES] == "t2"
    assert {key: taken_over[key] for key in ("lr", "hidden_size", "seed")} == {
        key: t2[key] for key in ("lr", "hidden_size", "seed")}
    fresh = resumed.suggest("t5")
    assert fresh[OPTUNA_TRIAL] == 2 and CONTINUES not in fresh
    assert resumed.suggest("t6") == Searcher.FINISHED  # three samples: t1 is not run again
    resumed.on_trial_result("t4", result(1, 0.05, False))  # t2's saved epoch, reported again: recorded once
    resumed.on_trial_complete("t4", result(2, 0.07, True))
    resumed.on_trial_complete("t5", result(1, -0.01, False))  # ASHA stopped it
    assert [trial.state.name for trial in sorted(study_of(tmp_path).get_trials(), key=lambda t: t.number)] == [
        "COMPLETE", "COMPLETE", "PRUNED"]
    ledger = {trial.trial_id: trial for trial in read_ledger(tmp_path)}
    assert set(ledger) == {"t1", "t4", "t5"} and ledger["t4"].continues == "t2"
    assert [row["epoch"] for row in ledger["t4"].results] == [1, 2]  # t2's epoch 1, then its own


def test_a_trial_the_study_ended_gets_its_end_in_the_ledger_and_is_never_run_again(tmp_path: Path) -> None:
    """The other order (a ledger of an earlier version, or its line lost on a full disk): the study has the trial
    PRUNED, the ledger has its epoch and no end. Resumed, the ledger gets the end from the study."""
    first = searcher(tmp_path, samples=2)
    first.suggest("t1")
    first.on_trial_result("t1", result(1, 0.10, False))
    first.study.tell(0, "pruned", None)
    first.ledger.close()
    resumed = searcher(tmp_path, samples=2)
    [trial] = read_ledger(tmp_path)
    assert trial.status == "TERMINATED" and len(trial.results) == 1
    assert resumed.suggest("t2")[OPTUNA_TRIAL] == 1 and resumed.suggest("t3") == Searcher.FINISHED


def test_a_one_sample_search_runs_its_one_trial(tmp_path: Path) -> None:
    one = searcher(tmp_path, samples=1)  # the enqueued default waits in the study: it is not a drawn sample yet
    assert one.suggest("a")[OPTUNA_TRIAL] == 0
    assert one.suggest("b") == Searcher.FINISHED


def test_a_search_started_again_before_anything_ended_takes_its_trials_over(tmp_path: Path) -> None:
    """A search that died before any trial ended is started again over the same records: the default is not
    enqueued twice, and the trials left running are taken over first, each continuing its own Tune trial."""
    first = searcher(tmp_path)
    default, second = first.suggest("a"), first.suggest("b")
    first.ledger.close()
    again = searcher(tmp_path)
    assert [again.suggest(name)[CONTINUES] for name in ("c", "d")] == ["a", "b"]
    assert again.suggest("e")[OPTUNA_TRIAL] == 2
    assert again.suggest("f") == Searcher.FINISHED
    assert study_of(tmp_path).trials[0].params == {"lr": default["lr"], "hidden_size": default["hidden_size"]}
    assert second[OPTUNA_TRIAL] == 1


def write_ledger(run_dir: Path, rows: list[dict]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LEDGER).write_text("".join(json.dumps(row) + "\n" for row in rows))


def asha(max_t: int = 4, grace: int = 1, factor: float = 2.0) -> SuccessiveHalving:
    return SuccessiveHalving(GOAL, max_t=max_t, grace=grace, reduction_factor=factor)


@pytest.mark.parametrize("max_t, grace, factor", [(4, 1, 2.0), (6, 1, 2.0), (9, 2, 3.0), (20, 1, 4.0)])
def test_our_asha_decides_as_rays_ashascheduler_decides(max_t: int, grace: int, factor: float) -> None:
    """It is ASHA still: fed the same stream of results (random trials, epochs and values, NaN included), it stops
    and continues exactly when Ray Tune's ASHAScheduler (one bracket) does."""
    rng = random.Random(max_t * 100 + grace)
    ours = asha(max_t, grace, factor)
    rays = ASHAScheduler(time_attr="epoch", metric="best_valid_ic", mode="max", max_t=max_t, grace_period=grace,
                         reduction_factor=factor, brackets=1)
    epochs: dict[str, int] = {}
    for step in range(400):
        trial = SimpleNamespace(trial_id=f"t{rng.randrange(30)}", config={})
        if trial.trial_id not in epochs:
            epochs[trial.trial_id] = 0
            ours.on_trial_add(None, trial)
            rays.on_trial_add(None, trial)
        epochs[trial.trial_id] += 1
        value = float("nan") if rng.random() < 0.03 else rng.gauss(0, 1)
        report = {"epoch": epochs[trial.trial_id], "best_valid_ic": value}
        assert ours.on_trial_result(None, trial, report) == rays.on_trial_result(None, trial, report), step


def test_asha_judges_a_resumed_trial_against_every_result_recorded_before_the_interruption() -> None:
    earlier = {"a": [{"epoch": 1, "best_valid_ic": 0.0072}, {"epoch": 2, "best_valid_ic": 0.0100}]}
    late = SimpleNamespace(trial_id="b", config={})
    verdicts = {}
    for name in ("resumed", "fresh"):
        scheduler = asha()
        if name == "resumed":
            scheduler.replay(earlier)
        scheduler.on_trial_add(None, late)
        verdicts[name] = scheduler.on_trial_result(None, late, {"epoch": 1, "best_valid_ic": -0.0066})
    assert verdicts == {"resumed": TrialScheduler.STOP, "fresh": TrialScheduler.CONTINUE}


def test_a_trial_taking_over_an_interrupted_one_takes_its_rungs_and_epochs(tmp_path: Path) -> None:
    rows = [{"event": "trial", "trial": "x", "config": {"lr": 0.01}, "optuna_trial": 4},
            {"event": "result", "trial": "x", "epoch": 1, "best_valid_ic": 0.5},
            {"event": "trial", "trial": "y", "config": {"lr": 0.01}, "optuna_trial": 4, "continues": "x"},
            {"event": "result", "trial": "y", "epoch": 1, "best_valid_ic": 0.5},
            {"event": "result", "trial": "y", "epoch": 2, "best_valid_ic": 0.6, "final": True},
            {"event": "end", "trial": "y", "status": "TERMINATED"}]
    scheduler = asha()
    scheduler.replay({"x": rows[1:2]})
    scheduler.on_trial_add(None, SimpleNamespace(trial_id="y", config={CONTINUES: "x"}))
    assert [recorded for _, recorded in scheduler.rungs][-1] == {"y": 0.5}
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
        assert search_main(["resume", str(run_dir)]) == 2
        assert search_main(["run", "--resume", "--storage-path", str(tmp_path / "runs"), "--name", "busy"]) == 2
        errors = capsys.readouterr().err.strip().splitlines()
        assert len(errors) == 3 and all(f"is being written by pid {holder.pid}" in line for line in errors), errors
        # export reads the run's records and takes no lock (this run has none yet: that is what it says)
        assert search_main(["export", str(run_dir)]) == 2
        assert capsys.readouterr().err.strip() == f"error: {run_dir}: no record of any trial yet ({run_dir / LEDGER} does not exist)"
    finally:
        holder.kill()
        holder.wait()


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


def agreement(run_dir: Path, metric: str = "valid_ic") -> list[tuple[int, str, int, float]]:
    """Every asked Optuna trial as the study says it ended, and the same as the run's ledger says (what summaries
    and exports read): ``(number, state, epochs, value)`` from each; the two lists must be equal."""
    from alphatune.search.results import read_trials
    from alphatune.search.rundir import read_manifest
    names = {"finished": "COMPLETE", "pruned": "PRUNED", "failed": "FAIL", "running": "RUNNING"}
    records = {record.optuna_trial: record for record in read_trials(run_dir, read_manifest(run_dir))}
    from_study, from_ledger = [], []
    for trial in sorted(study_of(run_dir).get_trials(), key=lambda t: t.number):
        if trial.state.name == "WAITING":
            continue
        steps = trial.intermediate_values
        value = trial.value if trial.state.name == "COMPLETE" else (steps[max(steps)] if steps else math.nan)
        from_study.append((trial.number, trial.state.name, max(steps, default=0), round(value, 9)))
        record = records[trial.number]
        from_ledger.append((trial.number, names[record.outcome], record.epochs, round(record.best(metric), 9)))
    return from_study, from_ledger


def test_a_trial_asha_stopped_before_the_kill_is_never_run_again_whatever_tune_saved(tmp_path: Path) -> None:
    """The kill a few seconds after an ASHA stop: the trial is ended in the ledger and PRUNED in the study, while
    Tune's last snapshot (written before the stop) still lists it RUNNING. Resume reads only the run's records: the
    trial is not run again, and the summary and the study agree on every trial's state, epochs and value."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_manifest(run_dir, Manifest("lstm", SearchOptions(models=["lstm"], samples=3, max_epochs=3, name="run"),
                                     tiny_space(seed_open=True), {"source": "embedded"}))
    first = searcher(run_dir)
    first.suggest("a"), first.suggest("b")
    first.on_trial_result("a", result(1, 0.30, False))
    first.on_trial_result("b", result(1, 0.01, False))
    first.on_trial_complete("b", result(1, 0.01, False))  # ASHA stopped it after its first epoch
    first.on_trial_result("a", result(2, 0.35, False))    # a goes on ... and the driver dies here
    first.ledger.close()
    (run_dir / "tune").mkdir()  # Tune's snapshot from before the stop: both running (and a pickle beside it)
    (run_dir / "tune" / "experiment_state-2026-12-01_00-00-00.json").write_text(json.dumps({"trial_data": [
        [json.dumps({"trial_id": trial, "status": "RUNNING"}), "{}"] for trial in ("a", "b")]}))
    marker = tmp_path / "pwned"
    (run_dir / "tune" / "tuner.pkl").write_bytes(pickle.dumps(_Touch(str(marker))))

    resumed = searcher(run_dir)
    suggested = [resumed.suggest(name) for name in ("c", "d", "e")]
    assert [config.get(CONTINUES) for config in suggested[:2]] == ["a", None]  # b is not run again
    assert suggested[2] == Searcher.FINISHED and not marker.exists()
    resumed.on_trial_result("c", result(2, 0.35, False))  # a's saved epoch, again
    resumed.on_trial_complete("c", result(3, 0.40, True))
    resumed.on_trial_complete("d", result(1, -0.2, False))
    from_study, from_ledger = agreement(run_dir)
    assert from_study == from_ledger == [(0, "COMPLETE", 3, 0.4), (1, "PRUNED", 1, 0.01), (2, "PRUNED", 1, -0.2)]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_a_resumed_search_never_proposes_a_point_its_study_already_holds(tmp_path: Path, sampler: str) -> None:
    """Stopped after two trials (Qlib's default, then the sampler's first draw) and resumed: the sampler goes on
    from the study (seeded from the search's seed and the trials asked; QMC by counting them) instead of drawing
    its first points again; a new search with the search's seed still draws the same first point. (40 samples:
    TPE's first ten are its start-up draws, at random; before, TPE and random proposed trial 1's point again.)"""
    space = tiny_space(seed_open=True)

    def study(where: Path, asked: int) -> SearchStudy:
        where.mkdir(exist_ok=True)
        return SearchStudy.in_run(where, space, GOAL, make_sampler(sampler, 0, 40, asked=asked))

    first = study(tmp_path / "run", 0)
    proposed = []
    for _ in range(2):
        number, values = first.ask()
        first.tell(number, "finished", 0.01 * (number + 1))
        proposed.append(values)
    first.storage.remove_session()
    resumed = study(tmp_path / "run", 2)
    for _ in range(3):
        number, values = resumed.ask()
        assert values not in proposed, (values, proposed)
        resumed.tell(number, "finished", 0.0)
        proposed.append(values)
    again = study(tmp_path / "again", 0)
    number, _ = again.ask()
    again.tell(number, "finished", 0.01)
    assert again.ask()[1] == proposed[1]
