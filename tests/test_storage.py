"""Runs that live where clusters keep them, against real servers on 127.0.0.1: an S3-compatible server (moto's
server mode, real HTTP to the real pyarrow and boto3 clients) and a Ray cluster whose second node does not see
the driver's storage path (its own mount namespace; needs root)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from alphatune.storage import Lease, Location, StorageError
from planted import TINY_SPACE
from servers import can_unshare, postgres_unavailable, s3_server, two_node_cluster
from limits import HANG_SECONDS

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def s3():
    with s3_server(("runs", "other")) as server:
        saved = {key: os.environ.get(key) for key in server.env}
        os.environ.update(server.env)  # the pyarrow clients of this process, and every process it starts
        try:
            yield server
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def test_a_location_is_written_read_listed_and_checked_alike_on_disk_and_in_a_bucket(s3, tmp_path) -> None:
    for root in (Location.of(tmp_path / "runs"), Location.of("s3://runs/unit")):
        assert (root / "a" / "b.txt").exists() is False
        (root / "a" / "b.txt").write_text("one")
        (root / "a" / "b.txt").write_text("two")   # replaced whole
        (root / "c.bin").write_bytes(b"\x00\x01")
        assert (root / "a" / "b.txt").read_text() == "two" and (root / "c.bin").read_bytes() == b"\x00\x01"
        assert [child.name for child in root.children()] == ["a", "c.bin"]
        assert root.files() == ["a/b.txt", "c.bin"] and (root / "a").is_dir() and not (root / "a").is_file()
        assert root.unwritable() is None
        (root / "c.bin").delete()
        assert root.files() == ["a/b.txt"]
        with pytest.raises(FileNotFoundError):
            (root / "missing").read_bytes()
    assert str(Location.of("s3://runs/unit/")) == "s3://runs/unit"


def test_a_location_that_cannot_be_used_says_why_in_one_line(s3, tmp_path, monkeypatch) -> None:
    with pytest.raises(StorageError, match=r"^s3x://runs: not a storage location this machine can use"):
        Location.of("s3x://runs")
    assert Location.of("s3://nowhere/x").unwritable() == "the bucket nowhere does not exist"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard: nothing listens
    assert Location.of("s3://runs/x").unwritable() == "the endpoint 127.0.0.1:9 does not answer (connection refused)"


def test_one_writer_per_run_in_a_bucket_a_second_is_refused_and_a_dead_holders_lease_expires(s3) -> None:
    where = Location.of("s3://runs/lease/.writer.lease")
    first = Lease(where, ttl=2.0)
    first.acquire("s3://runs/lease")
    with pytest.raises(StorageError, match=rf"^s3://runs/lease is being written by pid {os.getpid()} on "):
        Lease(where, ttl=2.0).acquire("s3://runs/lease")
    first._stop.set()  # the holder dies: it renews no more
    first._thread.join()
    time.sleep(2.2)
    second = Lease(where, ttl=2.0)
    second.acquire("s3://runs/lease")  # expired: taken over
    assert second.holder()["token"] == second.token
    second.release()
    assert not where.exists()


def alphatune(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT,
              timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alphatune", *args], cwd=cwd, env=env or os.environ.copy(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("uri, message", [
    ("s3x://runs/x", "--storage-path s3x://runs/x: not a storage location this machine can use"),
    ("s3://nowhere/x", "--storage-path s3://nowhere/x/n: cannot write there (the bucket nowhere does not exist)"),
])
def test_a_storage_uri_that_cannot_be_used_is_one_line_and_never_a_local_folder(s3, uri, message, tmp_path) -> None:
    script = ("import json, sys\nfrom alphatune.cli import main\n"
              f"code = main(['search', 'run', '--storage-path', {uri!r}, '--name', 'n'])\n"
              "print(json.dumps([code, 'torch' in sys.modules, 'ray' in sys.modules]))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=HANG_SECONDS)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [2, False, False], done.stderr[-2000:]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {message}"), line
    assert not list(tmp_path.iterdir())  # no folder named s3x: or s3: beside it


def test_a_search_in_a_bucket_is_killed_resumed_exported_and_evaluated_there(s3, tmp_path) -> None:
    """The whole run lives in the bucket: trials write their files there, the driver puts its ledger, study and
    TensorBoard files there; a driver killed mid-search resumes from the bucket alone (its local copy deleted),
    export and evaluate read and write there."""
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    env = {**os.environ, "ALPHATUNE_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1",
           "ALPHATUNE_LEASE_SECONDS": "4"}
    args = ["search", "run", "--space", str(space), "--samples", "4", "--max-epochs", "2", "--confirm", "1",
            "--confirm-seeds", "1", "--max-concurrent", "1", "--sampler", "random", "--seed", "5", "--storage-path", "s3://runs/team", "--name", "killed",
            "--progress-seconds", "1"]
    driver = subprocess.Popen([sys.executable, "-m", "alphatune", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    for line in driver.stdout:
        if " trial " in line and (" finished " in line or " pruned " in line):
            break
    deadline = time.monotonic() + HANG_SECONDS  # the driver puts its records into the bucket after every ended trial
    while time.monotonic() < deadline and '"event": "end"' not in _ledger(s3, "runs", "team/killed/lstm"):
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and its private Ray, at once
    driver.wait(timeout=60)
    keys = s3.keys("runs", "team/killed/lstm/")
    assert "team/killed/lstm/search.yaml" in keys and "team/killed/lstm/trials.jsonl.parts/000000000000" in keys
    assert any(key.endswith("/model.pt") for key in keys) and "team/killed/lstm/best.yaml" not in keys
    import shutil
    shutil.rmtree(tmp_path / "cache")  # another machine: nothing but the bucket
    time.sleep(4.5)  # the dead driver's lease (4 s here) has expired

    resumed = alphatune("search", "resume", "s3://runs/team/killed", env=env)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "s3://runs/team/killed/lstm/best.yaml" in resumed.stdout
    best = yaml.safe_load(s3.client().get_object(Bucket="runs", Key="team/killed/lstm/best.yaml")["Body"].read())
    assert best["checkpoint"].startswith("s3://runs/team/killed/lstm/trials/") and "provisional" not in best
    keys = s3.keys("runs", "team/killed/lstm/")
    ledger = _ledger(s3, "runs", "team/killed/lstm")
    ended = [json.loads(line)["trial"] for line in ledger.splitlines() if '"event": "end"' in line]
    assert len(ended) == 4 and all(f"team/killed/lstm/trials/{trial}/state.pt" in keys for trial in ended)
    assert any(key.startswith("team/killed/lstm/tensorboard/") for key in keys) and "team/killed/lstm/optuna.db" in keys
    # the confirmation trained in the bucket too, and the overfitting report's files are there
    assert best["confirmation"]["complete"] is True and best["overfitting"]["daily_valid_ic"] == "daily_valid_ic.parquet"
    runs = [run for config in best["confirmation"]["configs"] for run in config["runs"]]
    assert runs and all(run["checkpoint"].startswith("s3://runs/team/killed/lstm/confirm/") for run in runs)
    assert all(run["checkpoint"].removeprefix("s3://runs/") in keys for run in runs)
    assert {"team/killed/lstm/daily_valid_ic.parquet", "team/killed/lstm/overfitting.png"} <= set(keys)

    exported = alphatune("search", "export", "s3://runs/team/killed", env=env)
    assert exported.returncode == 0 and "s3://runs/team/killed/lstm/best_qlib.yaml" in exported.stdout
    elsewhere = alphatune("search", "export", "s3://runs/team/killed", "--out", "s3://other/exports/killed", env=env)
    assert elsewhere.returncode == 0, elsewhere.stderr[-2000:]
    assert {"exports/killed/best.yaml", "exports/killed/best_qlib.yaml"} <= set(s3.keys("other", "exports/"))
    evaluated = alphatune("evaluate", "s3://runs/team/killed/lstm/best.yaml", env=env)  # at the search's budget
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert {"team/killed/lstm/evaluation.yaml", "team/killed/lstm/evaluation_ic.png",
            "team/killed/lstm/evaluation_returns.png"} <= set(s3.keys("runs", "team/killed/lstm/"))
    evaluation = yaml.safe_load(s3.client().get_object(Bucket="runs", Key="team/killed/lstm/evaluation.yaml")["Body"]
                                .read())
    assert evaluation["configs"]["searched"]["runs"][0]["reused"] == "confirmation"  # its model read from the bucket
    # the progress counts only epochs to train: the reused model is none, the default's run at most its 2
    totals = {int(total) for total in re.findall(r"\] \d+/(\d+) epochs", evaluated.stdout)}
    assert (not totals) if evaluation["searched_is_default"] else (totals and max(totals) <= 2), evaluated.stdout


@pytest.mark.skipif(can_unshare() is not None, reason=f"a node in its own mount namespace: {can_unshare()}")
def test_a_node_that_cannot_see_the_storage_path_is_refused_by_name_and_a_bucket_serves_both_nodes(s3,
                                                                                                   tmp_path) -> None:
    """Two Ray nodes; the second sees an empty folder of its own at the storage path (a forgotten NFS mount). A
    local --storage-path is refused before any trial, naming that node; the same cluster with s3:// finishes with
    every trial's files in the bucket."""
    storage = tmp_path / "shared"
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    with two_node_cluster(storage, extra_env=s3.env) as cluster:
        env = {**cluster.env, "ALPHATUNE_CACHE": str(tmp_path / "cache")}
        common = ["--space", str(space), "--samples", "4", "--max-epochs", "1", "--confirm", "0", "--sampler", "random",
                  "--address", cluster.address]
        refused = alphatune("search", "run", *common, "--storage-path", str(storage), "--name", "local", env=env)
        assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
        [line] = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
        assert re.match(rf"^error: node \S+ \(id [0-9a-f]{{12}}\) cannot see the run directory {storage}/local: ", line)
        done = alphatune("search", "run", *common, "--storage-path", "s3://other/two", "--name", "nodes", env=env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    keys = s3.keys("other", "two/nodes/lstm/")
    ledger = _ledger(s3, "other", "two/nodes/lstm")
    trials = {json.loads(line)["trial"] for line in ledger.splitlines() if '"event": "end"' in line}
    assert len(trials) == 4 and all(f"two/nodes/lstm/trials/{trial}/model.pt" in keys for trial in trials)


def _text(s3, bucket: str, key: str) -> str:
    try:
        return s3.client().get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    except s3.client().exceptions.NoSuchKey:
        return ""


def _ledger(s3, bucket: str, run: str) -> str:
    """A bucket run's ledger as an S3 client reads it: its parts (``trials.jsonl.parts/<offset>``) joined in order,
    each starting where the one before ended."""
    text = ""
    for key in sorted(key for key in s3.keys(bucket, f"{run}/trials.jsonl.parts/")):
        assert int(key.rsplit("/", 1)[1]) == len(text.encode()), key
        text += _text(s3, bucket, key)
    return text


def test_a_study_storage_url_is_recorded_without_its_password() -> None:
    from alphatune.search.options import without_password
    assert without_password("postgresql+psycopg://alice:s3cret@db.example:5432/optuna?sslmode=require") == (
        "postgresql+psycopg://alice@db.example:5432/optuna?sslmode=require")
    assert without_password("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_a_new_search_where_the_bucket_holds_no_run_starts_fresh_whatever_a_local_copy_says(s3, tmp_path) -> None:
    """The issue's case 6: a search in s3://runs/bar left its local copy; the run was then deleted from the bucket.
    A new search of the same name does not adopt the copy's study and ledger: it sets the copy aside (and says
    so), runs every sample afresh and exports its winner. An export while a search writes the run never touches
    that search's working copy."""
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    env = {**os.environ, "ALPHATUNE_CACHE": str(tmp_path / "cache")}
    args = ["search", "run", "--space", str(space), "--samples", "2", "--max-epochs", "1", "--confirm", "0",
            "--sampler", "random", "--storage-path", "s3://runs/bar", "--name", "again"]
    first = alphatune(*args, env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for key in s3.keys("runs", "bar/again/"):
        s3.client().delete_object(Bucket="runs", Key=key)
    second = alphatune(*args, env=env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "Using an existing study" not in second.stdout + second.stderr
    [note] = [line for line in second.stdout.splitlines() if "set aside" in line]
    assert note.startswith("[lstm] note: an earlier local copy of s3://runs/bar/again/lstm was set aside (")
    ledger = _ledger(s3, "runs", "bar/again/lstm")
    assert sorted(json.loads(line)["optuna_trial"] for line in ledger.splitlines() if '"event": "trial"' in line) == [0, 1]
    best = yaml.safe_load(_text(s3, "runs", "bar/again/lstm/best.yaml"))
    assert f"bar/again/lstm/trials/{best['trial_id']}/model.pt" in s3.keys("runs", "bar/again/lstm/")

    # export while a search on this machine writes the run: the search's working copy (its ledger appended since
    # its last push, as after every epoch) stays where it is, untouched; export reads the bucket into a copy of
    # its own and says who is writing
    runs = tmp_path / "cache" / "runs"
    [work] = [path for path in runs.iterdir() if path.name.endswith("-lstm")]
    with open(work / "trials.jsonl", "a") as ledger_file:
        ledger_file.write('{"event": "note", "written": "after the last push"}\n')
    before = sorted(path.name for path in runs.iterdir())
    run = "s3://runs/bar/again/lstm"
    holder = subprocess.Popen([sys.executable, "-c", "import time; from alphatune.search.rundir import acquire_writer; "
                               f"acquire_writer({run!r}); print('held', flush=True); time.sleep(120)"],
                              env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        exported = alphatune("search", "export", "s3://runs/bar/again", env=env)
    finally:
        holder.kill()
        holder.wait()
    assert exported.returncode == 0, exported.stdout[-3000:] + exported.stderr[-3000:]
    assert sorted(path.name for path in runs.iterdir()) == before  # nothing set aside
    assert (work / "trials.jsonl").read_text().endswith('"written": "after the last push"}\n')
    [note] = [line for line in exported.stdout.splitlines() if "being written" in line]
    assert note.startswith(f"[lstm] note: {run} is being written by pid {holder.pid} on "), note
    assert f"tensorboard --logdir {tmp_path / 'cache' / 'exports' / work.name} " in exported.stdout
    assert "s3://runs/bar/again/lstm/best.yaml" in exported.stdout


@pytest.mark.skipif(postgres_unavailable() is not None, reason=str(postgres_unavailable()))
def test_no_secret_lands_in_a_run_its_lock_or_lease_a_refusal_or_any_output(s3, tmp_path) -> None:
    """A password in --study-storage and a token in the environment: a search in a bucket and one on a local path,
    a second writer refused on each while a holder (its command line carrying the password) holds them. Every file
    of both runs (the bucket's objects, the local copy, the local run), every lock and lease, and every line
    printed is searched for both secrets: none holds them. The local lock file is its owner's and group's only and names no one
    once the search that held it ended."""
    import psycopg
    from servers import postgres_server
    password, token = "pw-Zq81-not-for-files", "tok-7c1e-not-for-files"
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    with postgres_server(tmp_path / "pg") as url:
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1), autocommit=True) as connection:
            connection.execute(f"CREATE ROLE alice LOGIN SUPERUSER PASSWORD '{password}'")
        secret_url = url.replace("postgres:@", f"alice:{password}@", 1)
        assert password in secret_url
        env = {**os.environ, "ALPHATUNE_CACHE": str(tmp_path / "cache"), "DEPLOY_TOKEN": token,
               "ALPHATUNE_LEASE_SECONDS": "4"}
        printed = []
        for storage, name in (("s3://runs/secret", "bucket"), (str(tmp_path / "runs"), "disk")):
            args = ["--space", str(space), "--samples", "2", "--max-epochs", "1", "--confirm", "0", "--sampler", "random",
                    "--study-storage", secret_url, "--storage-path", storage, "--name", name]
            done = alphatune("search", "run", *args, env=env)
            printed.append(done.stdout + done.stderr)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            if not storage.startswith("s3://"):  # the search ended: its lock file names no one
                assert (tmp_path / "runs" / "disk" / "lstm" / ".writer.lock").read_text() == ""
            run = f"{storage}/{name}/lstm"
            holder = subprocess.Popen(
                [sys.executable, "-c", "import sys, time; from alphatune.search.rundir import acquire_writer; "
                 f"acquire_writer({run!r}); print('held', flush=True); time.sleep(120)",
                 "--study-storage", secret_url, f"--deploy-token={token}"],
                env=env, stdout=subprocess.PIPE, text=True)
            try:
                assert holder.stdout.readline().strip() == "held"
                if storage.startswith("s3://"):
                    printed.append(_text(s3, "runs", "secret/bucket/lstm/.writer.lease"))
                else:
                    lock = tmp_path / "runs" / "disk" / "lstm" / ".writer.lock"
                    assert lock.stat().st_mode & 0o777 == 0o640
                    printed.append(lock.read_text())
                refused = alphatune("search", "resume", f"{storage}/{name}", env=env)
                printed.append(refused.stdout + refused.stderr)
                [line] = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
                assert f"is being written by pid {holder.pid} " in line and "alice:***@" in line, line
            finally:
                holder.kill()
                holder.wait()
        files = [s3.client().get_object(Bucket="runs", Key=key)["Body"].read() for key in s3.keys("runs", "secret/")]
        files += [path.read_bytes() for root in (tmp_path / "cache", tmp_path / "runs")
                  for path in root.rglob("*") if path.is_file()]
        assert len(files) > 20 and printed
        for secret in (password, token):
            assert not [text for text in printed if secret in text]
            assert not [data for data in files if secret.encode() in data]


def test_a_search_whose_lease_is_taken_over_stops_and_writes_no_more_into_the_bucket(s3, tmp_path) -> None:
    """A driver that stalled past its lease (here: the lease object overwritten as another writer would, after
    taking over an expired lease) finds out at its next renewal, stops its trials and says so in one line; it puts
    nothing more into the bucket, which is the new writer's now."""
    from alphatune import datasets
    from planted import planted_dataset
    data = tmp_path / "data"
    datasets.save(planted_dataset(n_days=220, n_stocks=120, seed=4), data)
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    env = {**os.environ, "ALPHATUNE_CACHE": str(tmp_path / "cache"), "ALPHATUNE_LEASE_SECONDS": "4",
           "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "alphatune", "search", "run", "--space", str(space), "--data", str(data),
               "--samples", "3", "--max-epochs", "4", "--grace-epochs", "4", "--max-concurrent", "1", "--confirm", "0",
               "--storage-path", "s3://runs/taken", "--name", "over"]
    search = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + HANG_SECONDS  # guards a hang only
    while time.monotonic() < deadline and search.poll() is None and not [
            key for key in s3.keys("runs", "taken/over/lstm/trials/") if key.endswith("/state.pt")]:
        time.sleep(0.1)
    usurper = json.dumps({"token": "usurper", "pid": 1, "host": "elsewhere", "command": "alphatune search resume",
                          "since": "now"})
    s3.client().put_object(Bucket="runs", Key="taken/over/lstm/.writer.lease", Body=usurper.encode())
    time.sleep(1.0)  # a push the driver began before the takeover (its lease then confirmed) has ended
    taken_at = {key: s3.client().head_object(Bucket="runs", Key=key)["ETag"]
                for key in s3.keys("runs", "taken/over/lstm/") if "/trials/" not in key and not key.endswith(".lease")}
    out, err = search.communicate(timeout=HANG_SECONDS)
    assert search.returncode == 2, out[-3000:] + err[-3000:]
    [line] = [line for line in err.splitlines() if line.startswith("error:")]
    assert line.startswith("error: s3://runs/taken/over/lstm was taken over by pid 1 on elsewhere ") and \
        line.endswith("this process stopped writing it"), line
    assert "Traceback" not in err, err[-3000:]
    assert _text(s3, "runs", "taken/over/lstm/.writer.lease") == usurper  # left as the new writer wrote it
    after = {key: s3.client().head_object(Bucket="runs", Key=key)["ETag"]
             for key in s3.keys("runs", "taken/over/lstm/") if "/trials/" not in key and not key.endswith(".lease")}
    assert after == taken_at  # the driver's records: nothing pushed over the new writer's
