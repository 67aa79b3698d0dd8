"""Slow end-to-end searches: a killed driver resumed, a killed worker retried (``ray job submit``: test_job_submit).

Run with ``pytest -m slow tests/test_search_slow.py``. Each drives real processes: the search CLI in a
subprocess and Ray's own workers.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ray
import yaml

from alphatune import datasets
from planted import TINY_SPACE, planted_dataset
from alphatune.search import cluster, driver
from alphatune.search.options import SearchOptions
from alphatune.search.ledger import read_ledger
from alphatune.search.results import read_trials
from alphatune.search.rundir import read_manifest
from limits import HANG_SECONDS

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def write_space(tmp_path: Path) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(TINY_SPACE)
    return path


def save_planted(tmp_path: Path, **sizes) -> Path:
    directory = tmp_path / "data"
    datasets.save(planted_dataset(seed=4, **sizes), directory)
    return directory


def ended_trials(run_dir: Path) -> dict[str, list[dict]]:
    """Trial id → its reported results (one per epoch, the latest report of each), from the run's ledger."""
    return {trial.trial_id: [row for _, row in sorted(trial.epochs().items())]
            for trial in (read_ledger(run_dir) or []) if trial.results}


def test_resume_after_killing_the_driver_keeps_every_ended_trial_and_finishes_the_rest(tmp_path) -> None:
    data = save_planted(tmp_path, n_days=150, n_stocks=100)
    command = [sys.executable, "-m", "alphatune", "search", "run", "--space", str(write_space(tmp_path)), "--data", str(data),
               "--samples", "12", "--max-epochs", "3", "--max-concurrent", "1", "--sampler", "random", "--seed", "5",
               "--storage-path", str(tmp_path / "runs"), "--name", "killed", "--progress-seconds", "1"]
    driver_process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ended_lines = []
    deadline = time.monotonic() + HANG_SECONDS
    for line in driver_process.stdout:
        if " trial " in line and (" finished " in line or " pruned " in line or " failed " in line):
            ended_lines.append(line)
        if len(ended_lines) >= 2 or time.monotonic() > deadline:
            break
    assert len(ended_lines) >= 2, "the search did not end two trials in time"
    time.sleep(1)  # the third trial is running now; ten are left, so the search cannot have ended
    driver_process.kill()
    driver_process.wait(timeout=30)
    run_dir = tmp_path / "runs" / "killed" / "lstm"
    reported = ended_trials(run_dir)  # every trial with a result when the driver died (more may have ended by then)
    before = {trial: rows for trial, rows in reported.items() if any(trial in line for line in ended_lines)}
    assert len(before) >= 2
    assert not (run_dir / "best.yaml").exists()
    exported = subprocess.run([sys.executable, "-m", "alphatune", "search", "export", str(run_dir)], cwd=ROOT,
                              capture_output=True, text=True, timeout=HANG_SECONDS)
    assert exported.returncode == 0, exported.stderr[-3000:]
    interrupted_best = yaml.safe_load((run_dir / "best.yaml").read_text())
    assert interrupted_best["trial_id"] in reported
    assert interrupted_best["provisional"] is True and interrupted_best["unfinished"] >= 9

    resumed = subprocess.run([sys.executable, "-m", "alphatune", "search", "resume", str(run_dir.parent)], cwd=ROOT,
                             capture_output=True, text=True, timeout=HANG_SECONDS)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    records = {record.trial_id: record for record in read_trials(run_dir, read_manifest(run_dir))}
    assert len(records) == 12 and all(r.outcome in ("finished", "pruned") for r in records.values()), records
    after = ended_trials(run_dir)
    for trial, rows in before.items():  # an ended trial is neither lost nor trained again
        assert [(row["epoch"], row["valid_ic"]) for row in after[trial]] == [(row["epoch"], row["valid_ic"])
                                                                            for row in rows]
    assert (run_dir / "best.yaml").is_file() and (run_dir / "best_qlib.yaml").is_file()
    assert "provisional" not in yaml.safe_load((run_dir / "best.yaml").read_text())  # resume wrote it again
    from test_resume import agreement
    from_study, from_ledger = agreement(run_dir)
    assert from_study == from_ledger and len(from_study) == 12  # one truth: state, epochs and value of each

    import optuna
    study = optuna.load_study(study_name="lstm", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    told = [t for t in study.get_trials() if t.state.is_finished()]
    assert len(told) == 12
    assert sum(t.params == {"lr": 1e-2, "hidden_size": 8} and t.number == 0 for t in told) == 1  # not restarted


def test_a_trial_whose_worker_is_killed_is_retried_from_its_last_epoch(tmp_path) -> None:
    data = save_planted(tmp_path, n_days=220, n_stocks=120)
    options = SearchOptions(models=["lstm"], space_files={"lstm": str(write_space(tmp_path))}, data=str(data),
                            samples=1, max_epochs=4, grace_epochs=4, max_failures=2, sampler="random", seed=5,
                            storage_path=str(tmp_path / "runs"), name="retry", progress_seconds=60.0)
    run_dir = options.run_dir("lstm")
    killed: list[int] = []

    def kill_worker_after_two_epochs() -> None:
        deadline = time.monotonic() + HANG_SECONDS
        while time.monotonic() < deadline:
            for rows in ended_trials(run_dir).values():
                if len(rows) >= 2:
                    os.kill(rows[0]["pid"], signal.SIGKILL)
                    killed.append(rows[0]["pid"])
                    return
            time.sleep(0.1)

    cluster.start_ray(num_cpus=2)
    try:
        killer = threading.Thread(target=kill_worker_after_two_epochs)
        killer.start()
        said = io.StringIO()
        driver.run(options, stream=said)
        killer.join()
    finally:
        ray.shutdown()
    assert killed, "the worker was never killed"
    [trial] = read_ledger(run_dir)
    assert trial.starts == 2  # Tune started it again after the worker died
    rows = trial.results
    assert rows[-1]["epoch"] == 4 and rows[-1]["final"] and sorted(trial.epochs()) == [1, 2, 3, 4]
    before_kill = [row["epoch"] for row in rows if row["pid"] in killed]
    after_kill = [row["epoch"] for row in rows if row["pid"] not in killed]
    # The new worker reports its saved epoch again, then goes on. The state is written while the next epoch trains,
    # so it is at most one epoch behind the last report: at most one epoch is trained again.
    assert before_kill and after_kill and after_kill == list(range(after_kill[0], 5)), (before_kill, after_kill)
    assert after_kill[0] >= max(before_kill) - 1, (before_kill, after_kill)
    [record] = read_trials(run_dir, read_manifest(run_dir))
    assert record.outcome == "finished"
    assert f"trial {trial.trial_id} failed after epoch" in said.getvalue() and "Tune retries it" in said.getvalue()


def _confirmation_workers() -> list[int]:
    """The processes running a confirmation run now (Ray titles a task's worker ``ray::<function>``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(b"ray::_confirm_run"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_a_confirmation_run_whose_worker_is_lost_is_one_line_not_failed_and_resume_finishes_it(tmp_path) -> None:
    """A confirmation run's worker killed (a lost node, Ray's OOM killer) beyond --max-failures: the search ends
    with one line saying so and how to go on (not an exit as if Ctrl-C had been pressed), the run is recorded as
    nothing (not failed), best.yaml is provisional; resume trains it again and the confirmation completes."""
    from alphatune.search.ledger import read_confirmation
    from alphatune.search.rundir import RunDirError
    data = save_planted(tmp_path, n_days=220, n_stocks=120)
    options = SearchOptions(models=["lstm"], space_files={"lstm": str(write_space(tmp_path))}, data=str(data),
                            samples=1, max_epochs=3, grace_epochs=3, max_failures=0, confirm=1, confirm_seeds=1,
                            sampler="random", seed=5, storage_path=str(tmp_path / "runs"), name="lost",
                            progress_seconds=60.0)
    run_dir = options.run_dir("lstm").local
    killed: list[int] = []

    def kill_the_confirmation_after_an_epoch() -> None:
        deadline = time.monotonic() + HANG_SECONDS
        while time.monotonic() < deadline:
            workers = _confirmation_workers()
            if workers and list((run_dir / "confirm").glob("*/state.pt")):
                os.kill(workers[0], signal.SIGKILL)
                killed.append(workers[0])
                return
            time.sleep(0.1)

    cluster.start_ray(num_cpus=2)
    try:
        killer = threading.Thread(target=kill_the_confirmation_after_an_epoch)
        killer.start()
        with pytest.raises(RunDirError) as stopped:
            driver.run(options, stream=io.StringIO())
        killer.join()
    finally:
        ray.shutdown()
    assert killed, "the confirmation run's worker was never killed"
    line = str(stopped.value)
    assert "\n" not in line and line.startswith(f"{run_dir}: 1 confirmation run interrupted by a fault of the "
                                                 f"environment, its worker lost beyond --max-failures (the last: "), line
    assert line.endswith(f"not failed, resume trains it again from the last saved epoch: alphatune search resume "
                         f"{run_dir.parent}"), line
    plan, done = read_confirmation(run_dir)
    assert plan is not None and not done  # nothing recorded of it: not failed
    assert "provisional" in (run_dir / "best.yaml").read_text()

    resumed = subprocess.run([sys.executable, "-m", "alphatune", "search", "resume", str(run_dir.parent)], cwd=ROOT,
                             capture_output=True, text=True, timeout=HANG_SECONDS)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    _, done = read_confirmation(run_dir)
    assert len(done) == 1 and not any(run.get("error") for run in done.values()), done
    best = yaml.safe_load((run_dir / "best.yaml").read_text())
    assert best["confirmation"]["complete"] is True and "provisional" not in (run_dir / "best.yaml").read_text()


def test_a_driver_killed_seconds_after_an_asha_stop_resumes_without_running_that_trial_again(tmp_path) -> None:
    """The kill a few seconds after ASHA stopped a trial (the report that found Tune's snapshot still listing it
    RUNNING, and resume training it two more epochs): now resume reads only the run's records, so the pruned
    trial stays pruned with its one epoch, and summary, best.yaml and study agree on every trial."""
    data = save_planted(tmp_path, n_days=150, n_stocks=100)
    command = [sys.executable, "-m", "alphatune", "search", "run", "--space", str(write_space(tmp_path)), "--data", str(data),
               "--samples", "8", "--max-epochs", "3", "--max-concurrent", "1", "--sampler", "random", "--seed", "5",
               "--storage-path", str(tmp_path / "runs"), "--name", "asha", "--progress-seconds", "1", "--confirm", "0"]
    driver_process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pruned = None
    deadline = time.monotonic() + HANG_SECONDS
    for line in driver_process.stdout:
        if " trial " in line and " pruned after epoch 1 " in line:
            pruned = line.split(" trial ")[1].split()[0]
            break
        if time.monotonic() > deadline:
            break
    assert pruned, "no trial was pruned in time"
    time.sleep(4.5)
    driver_process.kill()
    driver_process.wait(timeout=30)
    run_dir = tmp_path / "runs" / "asha" / "lstm"
    resumed = subprocess.run([sys.executable, "-m", "alphatune", "search", "resume", str(run_dir.parent)], cwd=ROOT,
                             capture_output=True, text=True, timeout=HANG_SECONDS)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    [trial] = [trial for trial in read_ledger(run_dir) if trial.trial_id == pruned]
    assert sorted(trial.epochs()) == [1] and trial.starts == 1  # stopped by ASHA, never started again
    from test_resume import agreement
    from_study, from_ledger = agreement(run_dir)
    assert from_study == from_ledger and len(from_study) == 8
    best = yaml.safe_load((run_dir / "best.yaml").read_text())
    records = {record.trial_id: record for record in read_trials(run_dir, read_manifest(run_dir))}
    assert best["validation"]["valid_ic"] == max(record.best_valid_ic for record in records.values())


def test_a_node_lost_mid_trial_costs_no_trial_the_trial_goes_on_elsewhere_from_its_saved_epoch(tmp_path) -> None:
    """Two Ray nodes on this machine (one CPU each), a trial on each. The second node's raylet and the workers it
    started are killed while its trial trains (a node lost, as a crash loses it): Tune retries that trial on the
    node left, from its saved epoch, and the search ends with every trial finished or pruned, none failed; the ledger records which node
    ran each epoch (two nodes on one machine share an address, never an id)."""
    from servers import can_unshare, two_node_cluster
    if can_unshare() is not None:
        pytest.skip(f"a second node in its own mount namespace: {can_unshare()}")
    data = save_planted(tmp_path, n_days=220, n_stocks=120)
    runs = tmp_path / "runs"
    run_dir = runs / "lost" / "lstm"
    with two_node_cluster(tmp_path / "unused") as nodes:
        command = [sys.executable, "-m", "alphatune", "search", "run", "--space", str(write_space(tmp_path)),
                   "--data", str(data), "--samples", "2", "--max-epochs", "6", "--grace-epochs", "6", "--confirm", "0",
                   "--max-concurrent", "2", "--sampler", "random", "--seed", "5", "--address", nodes.address,
                   "--storage-path", str(runs), "--name", "lost"]
        search = subprocess.Popen(command, cwd=ROOT, env=nodes.env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        killed: dict[str, object] = {}

        def kill_the_second_node_under_a_trial() -> None:
            deadline = time.monotonic() + HANG_SECONDS
            while time.monotonic() < deadline and search.poll() is None:
                trials = ended_trials(run_dir)
                training = [trial for trial, rows in trials.items() if rows[-1]["epoch"] < 5
                            and (run_dir / "trials" / trial / "state.pt").is_file()]
                if len(training) == 2 and len({trials[trial][-1]["node_id"] for trial in training}) == 2:
                    killed["pids"] = nodes.lose_second_node()  # one trial on each node, each with a saved epoch
                    return
                time.sleep(0.1)

        killer = threading.Thread(target=kill_the_second_node_under_a_trial)
        killer.start()
        out, _ = search.communicate(timeout=HANG_SECONDS)
        killer.join()
    assert killed, "the second node was never killed under a training trial:\n" + out[-3000:]
    assert search.returncode == 0, out[-3000:]
    records = read_trials(run_dir, read_manifest(run_dir))
    assert len(records) == 2 and all(record.outcome in ("finished", "pruned") for record in records), records
    trials = read_ledger(run_dir)
    assert all(trial.status == "TERMINATED" and not trial.fault for trial in trials)
    moved = [trial for trial in trials if len({row["node_id"] for row in trial.results}) == 2]
    assert moved, [[row["node_id"][:8] for row in trial.results] for trial in trials]
    [trial] = moved
    assert trial.starts == 2 and sorted(trial.epochs()) == list(range(1, 7))


def test_a_trial_costs_no_more_after_a_few_hundred_trials_than_at_the_start(tmp_path) -> None:
    """300 one-epoch trials, two at a time: the time between two trial ends in the last tenth of the search is at
    most twice what it is in the first tenth (after the slots' first trials, which carry the start-up). A cost per
    trial that grew with the trials before it (a ledger read again, a file put again, a loop over every trial)
    doubles well within 300 trials; both tenths are measured in the one run, so a loaded machine slows both."""
    data = save_planted(tmp_path, n_days=60, n_stocks=30)
    command = [sys.executable, "-m", "alphatune", "search", "run", "--space", str(write_space(tmp_path)), "--data",
               str(data), "--samples", "300", "--max-epochs", "1", "--grace-epochs", "1", "--confirm", "0",
               "--max-concurrent", "2", "--sampler", "tpe", "--seed", "1", "--storage-path", str(tmp_path / "runs"),
               "--name", "many", "--progress-seconds", "30"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=4 * HANG_SECONDS)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_dir = tmp_path / "runs" / "many" / "lstm"
    ends = sorted(json.loads(line)["time"] for line in (run_dir / "trials.jsonl").read_text().splitlines()
                  if '"event": "end"' in line)
    assert len(ends) == 300
    tenth = len(ends) // 10
    first = (ends[2 + tenth] - ends[2]) / tenth
    last = (ends[-1] - ends[-1 - tenth]) / tenth
    assert last <= 2 * first, f"a trial took {first:.3f} s in the first tenth and {last:.3f} s in the last"
    assert "... and 280 more trials" in done.stdout and (run_dir / "trials.txt").read_text().count("\n") == 302
