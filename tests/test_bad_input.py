"""Bad input as a new user meets it: one line naming the file, field or value, exit 2, before torch and Ray are
imported (so within about a second, whatever the machine), and nothing left behind."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from limits import HANG_SECONDS

ROOT = Path(__file__).resolve().parent.parent


def run_command(argv: list[str], cwd: Path, env: dict[str, str] | None = None
                ) -> tuple[int, list[str], dict[str, bool]]:
    """``alphatune ARGV`` in a fresh interpreter (``env``: its environment, else this one's): exit status, stderr
    lines, and which heavy modules it imported."""
    script = ("import json, sys\n"
              "from alphatune.cli import main\n"
              "try:\n"
              f"    code = main({argv!r})\n"
              "except SystemExit as stop:  # argparse's own errors end the process\n"
              "    code = stop.code\n"
              "print(json.dumps({'code': code, 'loaded': {name: name in sys.modules for name in "
              "('torch', 'ray', 'matplotlib')}}))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=HANG_SECONDS,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report["code"], done.stderr.strip().splitlines(), report["loaded"]


TABLES = {
    "missing.csv": ("date,symbol,open,high,low,close\n2020-01-02,SH600000,1,1,1,1\n",
                    "missing.csv: missing column(s) volume; a price table needs date, symbol, open, high, low, close, "
                    "volume"),
    "baddate.csv": ("date,symbol,open,high,low,close,volume\n2020-13-02,SH600000,1,1,1,1,5\n",
                    "baddate.csv: column 'date' line 2 has unparsable date '2020-13-02'"),
    "header.csv": ("date,symbol,open,high,low,close,volume\n", "header.csv: no rows"),
    "empty.csv": ("", "empty.csv: empty file (no header, no rows)"),
}


@pytest.mark.parametrize("name", list(TABLES))
@pytest.mark.parametrize("command", ["search run", "prepare"])
def test_a_bad_price_table_is_one_line_before_torch_and_ray_load_and_leaves_nothing(name, command,
                                                                                   tmp_path) -> None:
    text, message = TABLES[name]
    (tmp_path / name).write_text(text)
    argv = (["search", "run", "--data", name, "--storage-path", "runs"] if command == "search run" else
            ["prepare", "--source", name, "--out", "prepared"])
    code, errors, loaded = run_command(argv, tmp_path)
    assert code == 2 and errors == [f"error: {tmp_path / message}"]
    assert not any(loaded.values()), loaded
    assert sorted(path.name for path in tmp_path.iterdir()) == [name]  # no runs/ nor prepared/ folder


@pytest.mark.parametrize("case", ["reversed --train", "not a Qlib directory", "unknown --data"])
def test_bad_dates_or_sources_are_one_line_before_torch_and_ray_load(case, tmp_path) -> None:
    (tmp_path / "folder").mkdir()
    argv, message = {
        "reversed --train": (["--train", "2019-01-01:2018-01-01"], "segment train: start 2019-01-01 is after end "
                                                                  "2018-01-01"),
        "not a Qlib directory": (["--data", "folder"], f"{tmp_path / 'folder'}: not a Qlib data directory (no "
                                                       f"calendars/day.txt)"),
        "unknown --data": (["--data", "nowhere"], "--data: nowhere does not exist"),
    }[case]
    code, errors, loaded = run_command(["search", "run", *argv, "--storage-path", "runs"], tmp_path)
    assert code == 2 and errors == [f"error: {message}"]
    assert not any(loaded.values()), loaded
    assert sorted(path.name for path in tmp_path.iterdir()) == ["folder"]


def test_a_missing_run_or_best_yaml_is_one_line_before_torch_and_ray_load(tmp_path) -> None:
    cases = [(["search", "resume", "nothing"], f"{tmp_path / 'nothing'}: no run directory here (a run directory "
                                                f"holds search.yaml)"),
             (["search", "run", "--resume", "--name", "nothing", "--storage-path", "runs"],
              f"{tmp_path / 'runs' / 'nothing'}: no run directory here (a run directory holds search.yaml)"),
             (["search", "export", "nothing"], f"{tmp_path / 'nothing'}: no run directory here (a run directory "
                                                f"holds search.yaml)"),
             (["search", "export", "nothing", "--qlib-data", "."], "--qlib-data .: not a Qlib data directory (no "
                                                                   "calendars/day.txt)"),
             (["evaluate", "nothing.yaml"], "nothing.yaml: cannot read it (No such file or directory)"),
             (["search", "export", "foo://x/y"], "foo://x/y: not a storage location this machine can use "
                                                 "(Unrecognized filesystem type in URI: foo://x/y); give a local path "
                                                 "or an s3://, gs:// (or other pyarrow) URI")]
    for argv, message in cases:
        code, errors, loaded = run_command(argv, tmp_path)
        assert (code, errors) == (2, [f"error: {message}"]), argv
        assert not any(loaded.values()), (argv, loaded)
    assert not list(tmp_path.iterdir())


def test_the_first_hours_slips_are_one_line_before_the_data_and_leave_nothing(tmp_path) -> None:
    """The slips a new user met (issue 25): a --name too long for a directory, an unknown --metric (no usage
    screen), GPUs asked of a machine without one (refused before the data is prepared: no [datasets] line), and a
    bucket whose endpoint does not answer, without credentials (the message names the endpoint, within seconds,
    not "give an s3:// URI"). Each is one line, exit 2, Ray not loaded, nothing created."""
    import os
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: --gpus-per-trial is not refused here")
    long_name = "n" * 300
    no_credentials = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    no_credentials.update(AWS_ENDPOINT_URL="http://127.0.0.1:9", AWS_DEFAULT_REGION="us-east-1",
                          HOME=str(tmp_path / "home"))  # no ~/.aws/credentials either
    cases = [(["--name", long_name], None, f"--name is 300 bytes long; a directory name may have at most 200: "
                                           f"{long_name[:40]}..."),
             (["--metric", "foo"], None, "alphatune search run: argument --metric: invalid choice: 'foo' (choose "
                                         "from 'valid_ic', 'valid_loss') (see alphatune search run --help)"),
             (["--gpus-per-trial", "2"], None, "--gpus-per-trial 2: torch sees no CUDA GPU on this machine (torch "
                                               f"{torch.__version__}); use 0 for CPU trials")]
    for argv, env, message in cases:
        code, errors, loaded = run_command(["search", "run", *argv, "--storage-path", "runs"], tmp_path, env)
        assert (code, errors) == (2, [f"error: {message}"]), argv
        assert not loaded["ray"], argv
    code, errors, loaded = run_command(["search", "run", "--storage-path", "s3://runs/quick"], tmp_path,
                                       no_credentials)
    assert code == 2 and len(errors) == 1, errors
    assert re.fullmatch(r"error: --storage-path s3://runs/quick/search-[0-9-]+: cannot write there \(the endpoint "
                        r"127\.0\.0\.1:9 does not answer \(connection refused\)\)", errors[0]), errors
    assert not any(loaded.values()), loaded
    assert not list(tmp_path.iterdir())


def test_a_study_storage_whose_driver_is_not_installed_names_the_package(tmp_path) -> None:
    """A database that answers, and no driver for it in this environment (here: PyMySQL): one line that says which
    package to install, not "Failed to import DB access module"."""
    import socket
    import subprocess
    import sys
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        done = subprocess.run([sys.executable, "-m", "alphatune", "search", "run", "--study-storage",
                               f"mysql+pymysql://alice:pw@127.0.0.1:{port}/optuna", "--storage-path",
                               str(tmp_path / "runs"), "--name", "db"], capture_output=True, text=True, timeout=HANG_SECONDS)
    finally:
        listener.close()
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        f"error: --study-storage mysql+pymysql://alice@127.0.0.1:{port}/optuna: its database driver pymysql is not "
        f"installed; install it: pip install 'pymysql'"]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("text, message", [
    ("model: lstm\nparams:\n  lr: {type: float, low: 1\n", "space.yaml:4: invalid YAML: expected ',' or '}'"),
    ("model: lstm\n", "space.yaml: a space file needs params (the file is empty or damaged?)"),
    ("", "space.yaml: a space file needs model and params (the file is empty or damaged?)"),
    ("model: gru\nparams: {}\n", "space.yaml: a space for 'gru', given for --model lstm"),
])
def test_a_damaged_space_file_is_one_line_before_the_data_and_torch(text: str, message: str, tmp_path: Path) -> None:
    (tmp_path / "space.yaml").write_text(text)
    code, errors, loaded = run_command(["search", "run", "--space", str(tmp_path / "space.yaml"), "--storage-path",
                                        str(tmp_path / "runs")], tmp_path)
    assert code == 2 and len(errors) == 1 and errors[0].startswith(f"error: {tmp_path / message}"), errors
    assert not loaded["torch"] and not loaded["ray"] and not (tmp_path / "runs").exists()


def test_an_argument_argparse_refuses_is_quoted_without_its_secret(tmp_path) -> None:
    """``search resume`` takes no --study-storage: argparse's refusal quotes the argument, password redacted."""
    code, lines, loaded = run_command(["search", "resume", str(tmp_path), "--study-storage",
                                       "postgresql+psycopg://alice:Hunter2Secret@db.example/optuna"], tmp_path)
    assert code == 2 and len(lines) == 1 and not loaded["torch"], lines
    assert "unrecognized arguments" in lines[0] and "Hunter2Secret" not in lines[0], lines
    assert "alice:***@db.example" in lines[0], lines
