"""The search command line as a user meets it: real subprocesses, a stale Ray cluster file, a dead address,
Ctrl-C, and ``--help``."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from alphatune import datasets
from planted import TINY_SPACE, planted_dataset
from alphatune.cli import parser
from limits import HANG_SECONDS

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_search(tmp_path_factory) -> list[str]:
    """Arguments of a tiny real search (planted data, the two-point LSTM space, 2 trials of 1 epoch)."""
    root = tmp_path_factory.mktemp("cli")
    datasets.save(planted_dataset(n_days=60, n_stocks=30, seed=4), root / "data")
    (root / "space.yaml").write_text(TINY_SPACE)
    return ["run", "--space", str(root / "space.yaml"), "--data", str(root / "data"), "--samples", "2",
            "--max-epochs", "1", "--sampler", "random", "--progress-seconds", "1", "--confirm", "0"]


@pytest.fixture
def ray_tmpdir() -> Path:
    """A private ``RAY_TMPDIR`` (short: Ray's socket paths must fit in 107 characters)."""
    with tempfile.TemporaryDirectory(prefix="rt", dir="/tmp") as directory:
        yield Path(directory)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def search_env(ray_tmpdir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    return {**env, "RAY_TMPDIR": str(ray_tmpdir), "PYTHONUNBUFFERED": "1"}


def leaf_parsers(top) -> dict[str, object]:
    """``"search run"`` → its parser, for every command of the ``alphatune`` tree."""
    out = {}
    for name, sub in top._subparsers._group_actions[0].choices.items():
        nested = [action for action in sub._actions if isinstance(action, type(top._subparsers._group_actions[0]))]
        if nested:
            out.update({f"{name} {leaf}": parser for leaf, parser in nested[0].choices.items()})
        else:
            out[name] = sub
    return out


def test_help_shows_every_default_and_promises_nothing_it_lacks() -> None:
    commands = leaf_parsers(parser())
    assert set(commands) == {"prepare", "search run", "search resume", "search export", "evaluate", "models list"}
    for name, subparser in commands.items():
        options = [action for action in subparser._actions if action.option_strings and action.dest != "help"]
        for action in options:
            assert "(default: " in action.help, (name, action.option_strings)
    text = " ".join(commands["search run"].format_help().split())
    for shown in ("trials per model (default: 8)", "epochs a trial may train at most",
                  "(default: csi300)", "CPUs per trial (also its torch threads) (default: 1.0)",
                  "seconds between progress lines (default: 10.0)", "(default: valid_ic)",
                  "(per fold) (default: 6)", "walk-forward folds"):
        assert shown in text, shown
    top = parser().format_help()
    assert "table below" not in top and all(name in top for name in ("prepare", "search", "evaluate", "models"))


def test_a_stale_ray_cluster_file_is_ignored_and_a_private_cluster_started(tiny_search, tmp_path,
                                                                          ray_tmpdir) -> None:
    """``ray start`` leaves ``$RAY_TMPDIR/ray/ray_current_cluster``; a search without --address must neither join
    the (dead) cluster it names nor hang on it."""
    (ray_tmpdir / "ray").mkdir()
    (ray_tmpdir / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")
    completed = subprocess.run([sys.executable, "-m", "alphatune", "search", *tiny_search, "--storage-path", str(tmp_path),
                                "--name", "stale"], cwd=ROOT, env=search_env(ray_tmpdir), capture_output=True,
                               text=True, timeout=HANG_SECONDS)  # joining the dead address would retry for many minutes
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
    assert (tmp_path / "stale" / "lstm" / "best.yaml").is_file()
    assert "Failed to connect to GCS" not in completed.stderr


def test_a_damaged_ledger_is_one_line_naming_its_line_before_torch_and_a_torn_tail_is_not_damage(
        tiny_search, tmp_path, ray_tmpdir) -> None:
    """The ledger is read as a whole before export or resume do any work: a line no search wrote (here, an editor's
    stray text in the middle) is one line naming the file and the line, exit 2, before torch or Ray loads; the
    torn last line a kill leaves is no damage and export goes on."""
    env = search_env(ray_tmpdir)
    searched = subprocess.run([sys.executable, "-m", "alphatune", "search", *tiny_search, "--storage-path",
                               str(tmp_path), "--name", "ledger"], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=HANG_SECONDS)
    assert searched.returncode == 0, searched.stdout[-2000:] + searched.stderr[-3000:]
    run_dir = tmp_path / "ledger" / "lstm"
    ledger = run_dir / "trials.jsonl"
    lines = ledger.read_text().splitlines(keepends=True)

    def alphatune(*args: str) -> tuple[int, list[str], bool]:
        script = ("import json, sys\nfrom alphatune.cli import main\n"
                  f"code = main({list(args)!r})\n"
                  "print(json.dumps([code, 'torch' in sys.modules or 'ray' in sys.modules]))\n")
        done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=HANG_SECONDS)
        code, heavy = json.loads(done.stdout.strip().splitlines()[-1])
        return code, done.stderr.strip().splitlines(), heavy

    ledger.write_text("".join(lines[:3]) + "trial 2 looked odd, rerun it\n" + "".join(lines[3:]))
    for args in (("search", "export", str(run_dir)), ("search", "resume", str(run_dir))):
        code, errors, heavy = alphatune(*args)
        assert code == 2 and errors == [f"error: {ledger}:4: not a ledger record (Expecting value at column 1): "
                                        f"the ledger is damaged"] and not heavy, (args, errors)
    ledger.write_text("".join(lines) + lines[-1][:len(lines[-1]) // 2])  # a kill's torn tail: no damage
    code, errors, _ = alphatune("search", "export", str(run_dir))
    assert code == 0 and not [line for line in errors if line.startswith("error")], errors


def test_an_address_that_does_not_answer_is_one_line_before_any_work(tiny_search, tmp_path, ray_tmpdir) -> None:
    port = free_port()
    completed = subprocess.run([sys.executable, "-m", "alphatune", "search", *tiny_search, "--storage-path", str(tmp_path),
                                "--address", f"127.0.0.1:{port}"], cwd=ROOT, env=search_env(ray_tmpdir),
                               capture_output=True, text=True, timeout=HANG_SECONDS)
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        f"error: --address 127.0.0.1:{port}: no Ray cluster answers at 127.0.0.1:{port} (connection refused); start "
        f"one with `ray start --head`, or leave --address and $RAY_ADDRESS unset for a private local cluster"]
    assert not list(tmp_path.iterdir())  # refused before anything was written
    web = subprocess.run([sys.executable, "-m", "alphatune", "search", "run", "--address", "http://127.0.0.1:8265"], cwd=ROOT,
                         env=search_env(ray_tmpdir), capture_output=True, text=True, timeout=HANG_SECONDS)
    assert web.returncode == 2 and "that is a dashboard or job-server URL" in web.stderr


def ray_processes(ray_tmpdir: Path, grace: float = 30.0) -> list[str]:
    """Command lines of processes of the private Ray under ``ray_tmpdir`` still alive after ``grace`` seconds."""
    deadline = time.monotonic() + grace
    while True:
        alive = []
        for entry in Path("/proc").iterdir():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(ray_tmpdir) in command:
                alive.append(command[:200])
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)


@pytest.mark.parametrize("moment,stop", [("while starting", signal.SIGINT), ("while searching", signal.SIGINT),
                                         ("while searching", signal.SIGTERM), ("while confirming", signal.SIGINT)],
                         ids=["ctrl-c while starting", "ctrl-c while searching", "sigterm while searching",
                              "ctrl-c while confirming"])
def test_ctrl_c_or_sigterm_ends_without_a_traceback_or_a_ray_left(moment, stop, tiny_search, tmp_path,
                                                                   ray_tmpdir) -> None:
    """SIGTERM too: a search started in the background by a script ignores SIGINT, and kill, a batch scheduler or
    ray job stop send SIGTERM. Either way the private Ray goes with the search. A Ctrl-C during the confirmation
    stops it too (Ray Tune leaves its own handler behind after the search, which took the first Ctrl-C and let the
    confirmation run on), and resume finishes it."""
    args = [*tiny_search, "--samples", "6", "--max-concurrent", "1", "--storage-path", str(tmp_path),
            "--name", "stopped"]
    if moment == "while confirming":
        args = [*tiny_search, "--samples", "2", "--confirm", "1", "--confirm-seeds", "4", "--max-epochs", "3",
                "--storage-path", str(tmp_path), "--name", "stopped"]
    process = subprocess.Popen([sys.executable, "-m", "alphatune", "search", *args], cwd=ROOT, env=search_env(ray_tmpdir),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = []
    if moment == "while starting":
        time.sleep(2.0)  # importing torch and Ray, or preparing the data
    else:
        for line in process.stdout:
            output.append(line)
            if (" confirming " in line) if moment == "while confirming" else (" trial " in line and " finished " in line):
                break
    process.send_signal(stop)
    rest, _ = process.communicate(timeout=HANG_SECONDS)
    text = "".join(output) + rest
    assert "Traceback" not in text, text[-3000:]
    assert process.returncode == 130, text[-3000:]
    if moment == "while confirming":
        assert f"alphatune search resume {tmp_path / 'stopped'}" in text, text[-3000:]
        resumed = subprocess.run([sys.executable, "-m", "alphatune", "search", "resume", str(tmp_path / "stopped")],
                                 cwd=ROOT, env=search_env(ray_tmpdir), capture_output=True, text=True,
                                 timeout=HANG_SECONDS)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        from alphatune.evaluation.best import Best
        confirmation = Best.read(tmp_path / "stopped" / "lstm" / "best.yaml").confirmation
        assert confirmation.winner and all(len(config.runs) == 4 for config in confirmation.configs)
    if moment == "while searching":
        assert "interrupted with" in text and f"alphatune search resume {tmp_path / 'stopped'}" in text
        assert "Tuner.restore" not in text and "Failed to fetch metrics" not in text, text[-3000:]  # ours only
        import yaml
        best = yaml.safe_load((tmp_path / "stopped" / "lstm" / "best.yaml").read_text())
        assert best["provisional"] is True and best["unfinished"] >= 1  # written from the ended trials: says so
    assert not ray_processes(ray_tmpdir), ray_processes(ray_tmpdir, grace=0)


def test_ctrl_c_cutting_short_an_extension_modules_import_is_interrupted_not_a_traceback(monkeypatch, capsys) -> None:
    """A Ctrl-C while scipy's extension initialises surfaces as ``ImportError: initialization failed`` raised from
    the KeyboardInterrupt (seen in CI: the "while starting" case above, timed onto that import)."""
    from alphatune import cli

    def import_cut_short(options) -> int:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            raise ImportError("initialization failed") from interrupt

    help_text, options_class, _ = cli.COMMANDS["models"]["list"]
    monkeypatch.setitem(cli.COMMANDS["models"], "list", (help_text, options_class, import_cut_short))
    assert cli.main(["models", "list"]) == 130
    assert capsys.readouterr().err == "interrupted\n"

    def import_failed(options) -> int:
        raise ImportError("initialization failed")

    monkeypatch.setitem(cli.COMMANDS["models"], "list", (help_text, options_class, import_failed))
    with pytest.raises(ImportError):  # a real import failure keeps its traceback
        cli.main(["models", "list"])


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A 400 kB tmpfs (root only; skipped where mounting is not allowed), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs to mount a small tmpfs (root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_one_line_and_the_search_resumes_once_there_is_room(tiny_search, small_disk,
                                                                           ray_tmpdir) -> None:
    args = [*tiny_search, "--samples", "8", "--max-epochs", "3", "--storage-path", str(small_disk), "--name", "full"]
    full = subprocess.run([sys.executable, "-m", "alphatune", "search", *args], cwd=ROOT, env=search_env(ray_tmpdir),
                          capture_output=True, text=True, timeout=HANG_SECONDS)
    assert full.returncode == 2, full.stdout[-2000:] + full.stderr[-2000:]
    errors = [line for line in full.stderr.splitlines() if line.startswith("error:")]
    # The driver or a trial's worker meets the full disk first; either way one line, and no trial is charged.
    assert len(errors) == 1 and re.fullmatch(
        rf"error: the disk holding {re.escape(str(small_disk / 'full' / 'lstm'))} is full"
        rf"( \(seen by trial \w+ on node [\d.]+\))?; free space, then continue with: alphatune search resume "
        rf"{re.escape(str(small_disk / 'full'))}", errors[0]), full.stderr[-3000:]
    assert not [line for line in full.stderr.splitlines() if line.startswith("Traceback")], full.stderr[-3000:]
    from alphatune.search.ledger import read_ledger
    assert all(trial.status != "ERROR" for trial in read_ledger(small_disk / "full" / "lstm") or [])

    subprocess.run(["mount", "-o", "remount,size=50m", str(small_disk)], check=True)
    resumed = subprocess.run([sys.executable, "-m", "alphatune", "search", "resume", str(small_disk / "full")], cwd=ROOT,
                             env=search_env(ray_tmpdir), capture_output=True, text=True, timeout=HANG_SECONDS)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    run_dir = small_disk / "full" / "lstm"
    import yaml
    assert "provisional" not in yaml.safe_load((run_dir / "best.yaml").read_text())  # the resume wrote it again
    from alphatune.search.results import read_trials
    from alphatune.search.rundir import read_manifest
    records = read_trials(run_dir, read_manifest(run_dir))
    assert len(records) == 8 and all(record.outcome in ("finished", "pruned") for record in records), records
    import optuna
    study = optuna.load_study(study_name="lstm", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    assert len(study.trials) == 8 and all(trial.state.name in ("COMPLETE", "PRUNED") for trial in study.trials)
    assert (run_dir / "best.yaml").is_file()


def test_amp_where_the_cpu_cannot_run_it_is_said_once_and_best_yaml_records_float32(tiny_search, tmp_path,
                                                                                   ray_tmpdir) -> None:
    """``ONEDNN_MAX_CPU_ISA=AVX2`` makes oneDNN behave as on an AVX2-only CPU (no bfloat16 LSTM), here and in the
    trial workers, which inherit the driver's environment."""
    env = {**search_env(ray_tmpdir), "ONEDNN_MAX_CPU_ISA": "AVX2"}
    completed = subprocess.run([sys.executable, "-m", "alphatune", "search", *tiny_search, "--amp",
                                "--storage-path", str(tmp_path), "--name", "amp"], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=HANG_SECONDS)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    said = [line for line in output.splitlines() if "bfloat16" in line]
    assert len(said) == 1 and said[0].startswith("note: --amp: this CPU has no bfloat16 kernels"), said
    import yaml
    training = yaml.safe_load((tmp_path / "amp" / "lstm" / "best.yaml").read_text())["training"]
    assert training["amp"] is False and training["precision"] == "float32"
    assert training["amp_refused"].startswith("--amp was asked for, but the trial's device has no mixed-precision")


@pytest.fixture
def read_only_mount():
    """Makes a directory read-only with a read-only bind mount of itself (root only; skipped elsewhere)."""
    mounted = []

    def make(directory: Path) -> None:
        if os.geteuid() != 0 or subprocess.run(["mount", "--bind", str(directory), str(directory)],
                                               capture_output=True).returncode != 0:
            pytest.skip("needs a read-only bind mount (root)")
        mounted.append(directory)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(directory)], check=True)

    yield make
    for directory in mounted:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def test_storage_failing_under_the_workers_stops_the_search_charges_no_trial_and_resume_goes_on(
        tmp_path, ray_tmpdir, read_only_mount) -> None:
    """The issue's case 1 as a permission change: the trials' folder turns read-only while the first trial trains
    (its first epoch saved). The search stops at once with one line naming the fault, exit 2, and charges nothing
    to any trial (none FAILED in the ledger or the study). Resumed once the folder is writable again (and its
    optuna.db corrupted meanwhile, the issue's case 3: rebuilt from the ledger), every trial ends without a
    failure, the interrupted one going on from its saved epoch, and TensorBoard holds each of its epochs once."""
    from alphatune.search.ledger import read_ledger
    from alphatune.search.results import read_trials
    from alphatune.search.rundir import read_manifest
    data = tmp_path / "data"
    datasets.save(planted_dataset(n_days=220, n_stocks=120, seed=4), data)
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    runs = tmp_path / "runs"
    run_dir = runs / "ro" / "lstm"
    (run_dir / "trials").mkdir(parents=True)
    env = search_env(ray_tmpdir)
    command = [sys.executable, "-m", "alphatune", "search", "run", "--space", str(space), "--data", str(data),
               "--samples", "3", "--max-epochs", "4", "--grace-epochs", "4", "--max-concurrent", "1", "--confirm", "0",
               "--sampler", "random", "--storage-path", str(runs), "--name", "ro"]
    search = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + HANG_SECONDS  # guards a hang only
    while time.monotonic() < deadline and search.poll() is None and not list((run_dir / "trials").glob("*/state.pt")):
        time.sleep(0.05)
    read_only_mount(run_dir / "trials")
    out, err = search.communicate(timeout=HANG_SECONDS)
    assert search.returncode == 2, out[-3000:] + err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {run_dir}: [Errno 30] Read-only file system: "), err[-3000:]
    assert errors[0].endswith(f"; once that is fixed, continue with: alphatune search resume {runs / 'ro'}"), errors
    assert "(seen by trial " in errors[0] and "Traceback" not in err, err[-3000:]
    trials = read_ledger(run_dir)
    assert trials and all(trial.status != "ERROR" for trial in trials), trials
    [interrupted] = [trial for trial in trials if trial.fault]
    assert "Read-only file system" in interrupted.fault and interrupted.status is None
    import optuna
    study = optuna.load_study(study_name="lstm", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    assert not [trial for trial in study.trials if trial.state.name == "FAIL"]

    subprocess.run(["umount", "-l", str(run_dir / "trials")], check=True)
    with open(run_dir / "optuna.db", "r+b") as file:
        file.write(os.urandom(100))
    resumed = subprocess.run([sys.executable, "-m", "alphatune", "search", "resume", str(runs / "ro")], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=HANG_SECONDS)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    notes = [line for line in resumed.stdout.splitlines() if "rebuilt it from the ledger" in line]
    assert len(notes) == 1 and "file is not a database" in notes[0], resumed.stdout[-3000:]
    assert resumed.stdout.index(notes[0]) < resumed.stdout.index("trial slot"), "rebuilt before Ray started"
    records = read_trials(run_dir, read_manifest(run_dir))
    assert len(records) == 3 and all(record.outcome == "finished" for record in records), records
    [went_on] = [trial for trial in read_ledger(run_dir) if trial.continues == interrupted.trial_id]
    assert sorted(went_on.epochs()) == [1, 2, 3, 4]
    before = [row["epoch"] for row in interrupted.results]
    assert [row["epoch"] for row in went_on.results] == before + list(range(before[-1] + 1, 5)), went_on.results
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    accumulator = EventAccumulator(str(run_dir / "tensorboard" / interrupted.trial_id), size_guidance={"scalars": 0})
    accumulator.Reload()
    assert [event.step for event in accumulator.Scalars("valid_ic")] == [1, 2, 3, 4]
    study = optuna.load_study(study_name="lstm", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    assert sorted(trial.state.name for trial in study.trials) == ["COMPLETE"] * 3


def test_a_read_only_run_is_exported_and_evaluated_elsewhere_and_its_resume_is_one_line(tmp_path, ray_tmpdir,
                                                                                        read_only_mount) -> None:
    """A run directory a team shares read-only: export and evaluate take no lock and write where --out says;
    resume is refused in one line; nothing tracebacks."""
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    env = search_env(ray_tmpdir)
    searched = subprocess.run([sys.executable, "-m", "alphatune", "search", "run", "--space", str(space),
                               "--samples", "2", "--max-epochs", "1", "--confirm", "0",
                               "--storage-path", str(tmp_path / "runs"),
                               "--name", "shared"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=HANG_SECONDS)
    assert searched.returncode == 0, searched.stdout[-2000:] + searched.stderr[-2000:]
    run_dir = tmp_path / "runs" / "shared" / "lstm"
    read_only_mount(tmp_path / "runs")

    def alphatune(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "alphatune", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=HANG_SECONDS)

    for args, message in [(("search", "export", str(run_dir)), "cannot write best.yaml there (Read-only file system"),
                          (("search", "resume", str(run_dir)), "cannot resume a search there (Read-only file system"),
                          (("search", "run", "--resume", "--storage-path", str(tmp_path / "runs"), "--name", "shared"),
                           "cannot resume a search there (Read-only file system"),
                          (("evaluate", str(run_dir / "best.yaml")), "cannot write evaluation.yaml there (Read-only")]:
        done = alphatune(*args)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
        [line] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert message in line, line
    exported = alphatune("search", "export", str(run_dir), "--out", str(tmp_path / "exports"))
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert "best trial" in exported.stdout and (tmp_path / "exports" / "best.yaml").is_file()
    evaluated = alphatune("evaluate", str(run_dir / "best.yaml"), "--epochs", "1", "--out", str(tmp_path / "eval"))
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert (tmp_path / "eval" / "evaluation.yaml").is_file()
