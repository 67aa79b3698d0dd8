"""Faults of the environment are not the trials' and not the user's: whose fault an error is, a torn ledger, a
study that cannot be opened, a bucket's stale local copy, a lease that is correct across clocks, secrets. Without
Ray: the searcher, ledger, study and storage layers are driven directly (tests/test_storage.py and test_cli.py
drive whole searches)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from ray.tune.search import Searcher

from alphatune.search.ledger import LEDGER, LedgerError, read_confirmation, read_ledger, torn_fragment
from alphatune.search.resume import open_study
from alphatune.search.rundir import RunDirError
from alphatune.search.searcher import OPTUNA_TRIAL, TENSORBOARD_RUN
from alphatune.search.study import STUDY_FILE, StudyPlace, unopenable
from alphatune.storage import (Lease, LineFile, Location, Mirror, StorageError, WriterRefused, disk_full,
                               environment_fault, redact)
from alphatune.storage.objects import ConditionalObject, S3Object
from servers import s3_server
from test_resume import GOAL, result, searcher, study_of, tiny_space
from limits import HANG_SECONDS


# ------------------------------------------------------------------ whose fault


@pytest.mark.parametrize("error, fault", [
    (OSError(errno.ENOSPC, "No space left on device", "/runs/x/trials/a/.state.pt.tmp"), True),
    (OSError(errno.EROFS, "Read-only file system"), True),
    (OSError(errno.EACCES, "Permission denied"), True),
    (OSError(errno.ESTALE, "Stale file handle"), True),
    (OSError("When uploading part for key 'x': AWS Error ACCESS_DENIED during UploadPart operation: Access Denied"),
     True),
    (OSError("AWS Error NETWORK_CONNECTION during PutObject operation: curlCode: 7, Couldn't connect to server"), True),
    (StorageError("node 10.0.0.2 cannot see the run directory /runs/x"), True),
    (ValueError("lstm: lr=0.0 is out of range"), False),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
    (FileNotFoundError(errno.ENOENT, "No such file or directory"), False),
])
def test_an_error_is_the_environments_fault_or_the_trials_own(error: Exception, fault: bool) -> None:
    assert (environment_fault(error) is not None) is fault
    try:  # a fault raised from inside the work's own exception handling is still the environment's
        try:
            raise KeyError("while saving")
        except KeyError:
            raise RuntimeError("the save failed") from error
    except RuntimeError as wrapped:
        assert (environment_fault(wrapped) is not None) is fault


def test_a_full_disk_is_known_by_errno_and_by_sqlites_words() -> None:
    assert disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert disk_full(RuntimeError("(sqlite3.OperationalError) database or disk is full"))
    assert not disk_full(OSError(errno.EACCES, "Permission denied"))


# ------------------------------------------------------------------ secrets


def test_secrets_are_redacted_from_urls_options_assignments_and_the_environment() -> None:
    environment = {"MY_API_TOKEN": "tok-4d9f", "PGPASSWORD": "pg-pass-1", "HOME": "/root", "AWS_ACCESS_KEY_ID": "AKIA1"}
    line = ("alphatune search run --study-storage postgresql+psycopg://alice:S3cr3t!@db:5432/optuna --api-key k-123 "
            "--token=t-456 AWS_SECRET_ACCESS_KEY=aws-789 --keys-dir /keys --monkey 3 --note tok-4d9f pg-pass-1")
    assert redact(line, environment) == (
        "alphatune search run --study-storage postgresql+psycopg://alice:***@db:5432/optuna --api-key *** "
        "--token=*** AWS_SECRET_ACCESS_KEY=*** --keys-dir /keys --monkey 3 --note *** ***")
    assert redact("s3://bucket/key ray://10.0.0.1:10001 http://user@host/", environment) == (
        "s3://bucket/key ray://10.0.0.1:10001 http://user@host/")


# ------------------------------------------------------------------ the ledger's torn tail


def test_an_append_after_a_torn_last_line_starts_a_line_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "trials.jsonl"
    path.write_text('{"event": "trial", "trial": "a"}\n{"event": "end", "tri')
    lines = LineFile(path)
    lines.append('{"event": "end", "trial": "a", "status": "TERMINATED"}')
    lines.append('{"event": "trial", "trial": "b"}')
    lines.close()
    assert path.read_text().splitlines()[1:] == ['{"event": "end", "tri',
                                                '{"event": "end", "trial": "a", "status": "TERMINATED"}',
                                                '{"event": "trial", "trial": "b"}']


def test_a_torn_ledger_line_swallows_nothing_and_every_count_stays_right(tmp_path: Path) -> None:
    """The issue's case: the ledger's last line (a trial's end) cut mid-JSON by a kill, the study holding the trial
    PRUNED. Resumed, the ledger gets the end from the study on a line of its own (it used to be glued onto the
    fragment and lost: the trial then showed as failed/abandoned with 0 epochs), the next trials are recorded, and
    ledger and study agree on every trial."""
    first = searcher(tmp_path, samples=3)
    first.suggest("t1")
    first.on_trial_result("t1", result(1, -0.00638, False))
    first.on_trial_complete("t1", result(1, -0.00638, False))  # ASHA stopped it: PRUNED
    first.ledger.close()
    ledger = tmp_path / LEDGER
    text = ledger.read_text()
    ledger.write_text(text[:text.rindex('"status"')])  # the end line torn by the kill, no newline

    resumed = searcher(tmp_path, samples=3)
    for name, epoch_value in (("t2", 0.02), ("t3", 0.03)):
        config = resumed.suggest(name)
        assert config[OPTUNA_TRIAL] in (1, 2)
        resumed.on_trial_result(name, result(1, epoch_value, False))
        resumed.on_trial_complete(name, result(2, epoch_value, True))
    assert resumed.suggest("t4") == Searcher.FINISHED
    resumed.ledger.close()
    trials = read_ledger(tmp_path)
    assert [(trial.trial_id, trial.optuna_trial, trial.status, len(trial.results)) for trial in trials] == [
        ("t1", 0, "TERMINATED", 1), ("t2", 1, "TERMINATED", 2), ("t3", 2, "TERMINATED", 2)]
    states = {trial.number: (trial.state.name, trial.value) for trial in study_of(tmp_path).trials}
    assert states == {0: ("PRUNED", -0.00638), 1: ("COMPLETE", 0.02), 2: ("COMPLETE", 0.03)}


def test_every_cut_of_a_record_is_a_torn_fragment_and_nothing_a_ledger_never_writes_is() -> None:
    record = json.dumps({"event": "result", "trial": "t1", "epoch": 3, "valid_ic": -0.0123, "final": False,
                         "best": None, "fold": 2, "seconds": 1.5e-3, "note": "a \"quoted\" word"})
    assert all(torn_fragment(record[:cut]) for cut in range(1, len(record)))
    for text in ("trial 2 looked odd", "[1, 2]", '{"event": "result"} trailing words', "", "{}x", '"text"'):
        assert not torn_fragment(text), text


@pytest.mark.parametrize("line, what", [
    (b"\xff\xfe garbage", "not UTF-8 text"),
    (b"hello", "not a ledger record (Expecting value at column 1)"),
    (b"[1, 2]", "a JSON list, not a ledger record"),
    (b'{"trial": "t1", "epoch": 1}', "a record without its event"),
    (b'{"event": "trial", "trial": 7, "config": {}}', "trial is 7, not a str"),
    (b'{"event": "trial", "trial": "t9", "config": [1]}', "config is [1], not a dict"),
])
def test_a_ledger_line_no_search_wrote_is_one_line_naming_the_file_and_line(line: bytes, what: str,
                                                                            tmp_path: Path) -> None:
    path = tmp_path / LEDGER
    path.write_bytes(b'{"event": "trial", "trial": "t1", "config": {"lr": 0.1}}\n{"event": "end", "tri\n'
                     + line + b'\n{"event": "end", "trial": "t1", "status": "TERMINATED"}\n')
    with pytest.raises(LedgerError) as raised:
        read_ledger(tmp_path)
    assert str(raised.value) == f"{path}:3: {what}: the ledger is damaged"
    with pytest.raises(LedgerError):
        read_confirmation(tmp_path)


# ------------------------------------------------------------------ a study that cannot be opened


def _interrupted_run(run_dir: Path) -> list[optuna.trial.FrozenTrial]:
    """A run with one trial finished (two epochs), one pruned and one still training when the driver died."""
    first = searcher(run_dir, samples=4)
    for name in ("t1", "t2", "t3"):
        first.suggest(name)
    first.on_trial_result("t1", result(1, 0.10, False))
    first.on_trial_complete("t1", result(2, 0.20, True))
    first.on_trial_complete("t2", result(1, -0.05, False))
    first.on_trial_result("t3", result(1, 0.07, False))
    first.ledger.close()
    first.study.storage.remove_session()
    return sorted(study_of(run_dir).trials, key=lambda trial: trial.number)


@pytest.mark.parametrize("damage", ["corrupted", "deleted"])
def test_a_study_that_cannot_be_opened_is_rebuilt_from_the_ledger_and_the_search_goes_on(tmp_path: Path,
                                                                                        damage: str) -> None:
    before = _interrupted_run(tmp_path)
    study_file = tmp_path / STUDY_FILE
    if damage == "corrupted":  # the case: its first 100 bytes overwritten
        with open(study_file, "r+b") as file:
            file.write(os.urandom(100))
    else:
        study_file.unlink()
    damaged = unopenable(StudyPlace.of_run(tmp_path, "lstm"))  # what export says of it (and creates nothing)
    assert damaged == ("file is not a database" if damage == "corrupted" else "its file does not exist"), damaged
    assert study_file.exists() is (damage == "corrupted")
    study, note = open_study(tmp_path, tiny_space(True), GOAL, StudyPlace.of_run(tmp_path, "lstm"))
    assert note is not None and "rebuilt it from the ledger (3 trials)" in note
    kept = sorted(tmp_path.glob(f"{STUDY_FILE}.damaged-*"))
    assert (len(kept) == 1 and f"the damaged file kept as {kept[0]}" in note) if damage == "corrupted" else not kept
    after = sorted(study_of(tmp_path).trials, key=lambda trial: trial.number)
    for old, new in zip(before, after, strict=True):
        assert (new.number, new.state, new.params, new.intermediate_values, new.user_attrs["seed"],
                new.user_attrs["ray_trial_id"]) == (old.number, old.state, old.params, old.intermediate_values,
                                                    old.user_attrs["seed"], old.user_attrs["ray_trial_id"])
        assert new.value == old.value or (new.state.name == "PRUNED" and new.value == old.intermediate_values[1])
    assert open_study(tmp_path, tiny_space(True), GOAL, StudyPlace.of_run(tmp_path, "lstm"))[1] is None  # healthy now
    assert unopenable(StudyPlace.of_run(tmp_path, "lstm")) is None
    resumed = searcher(tmp_path, samples=4)  # the interrupted trial is handed out first, with its values and seed
    taken_over = resumed.suggest("t5")
    assert taken_over[OPTUNA_TRIAL] == 2 and taken_over["continues"] == "t3"
    assert taken_over["seed"] == before[2].user_attrs["seed"] and taken_over["lr"] == before[2].params["lr"]
    assert resumed.suggest("t6")[OPTUNA_TRIAL] == 3 and resumed.suggest("t7") == Searcher.FINISHED
    # the takeover is interrupted too and the study lost again: the chain still writes into its first trial's run
    resumed.on_trial_result("t5", result(2, 0.08, False))
    resumed.ledger.close()
    resumed.study.storage.remove_session()
    study_file.unlink()
    open_study(tmp_path, tiny_space(True), GOAL, StudyPlace.of_run(tmp_path, "lstm"))
    rebuilt = {trial.number: trial for trial in study_of(tmp_path).trials}
    assert rebuilt[2].user_attrs["tensorboard_run"] == str(tmp_path / "tensorboard" / "t3")
    assert rebuilt[2].user_attrs["ray_trial_id"] == "t5"
    again = searcher(tmp_path, samples=4)
    [chain] = [config for config in (again.suggest("t8"), again.suggest("t9")) if config[OPTUNA_TRIAL] == 2]
    assert chain["continues"] == "t5" and chain[TENSORBOARD_RUN] == "t3"


def test_a_shared_study_storage_that_cannot_be_reached_is_one_line(tmp_path: Path) -> None:
    _interrupted_run(tmp_path)
    place = StudyPlace("sqlite:////nonexistent-folder/x/optuna.db", "search/lstm")
    with pytest.raises(RunDirError, match=r"^the study search/lstm in --study-storage cannot be opened: "):
        open_study(tmp_path, tiny_space(True), GOAL, place)


# ------------------------------------------------------------------ object storage: the bucket is the truth


@pytest.fixture(scope="module")
def s3():
    with s3_server(("runs",)) as server:
        saved = {key: os.environ.get(key) for key in server.env}
        os.environ.update(server.env)
        try:
            yield server
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def test_a_local_copy_is_used_only_as_the_bucket_confirms_it(s3, tmp_path: Path) -> None:
    root, work = Location.of("s3://runs/mirror/lstm"), tmp_path / "copy"
    mirror = Mirror(root, work, skip=("trials",))
    assert mirror.fresh() is None and work.is_dir()
    (work / "trials.jsonl").write_text("one\n")
    (work / "tensorboard").mkdir()
    (work / "tensorboard" / "events").write_bytes(b"\x00")
    mirror.push()
    assert sorted(s3.keys("runs", "mirror/")) == ["mirror/lstm/.sync.json", "mirror/lstm/tensorboard/events",
                                                  "mirror/lstm/trials.jsonl"]
    assert mirror.pull() is None and (work / "trials.jsonl").read_text() == "one\n"  # confirmed: kept as it is

    with open(work / "trials.jsonl", "a") as ledger:  # written after the last push by a driver that then died
        ledger.write("two\n")
    note = mirror.pull()
    assert note is not None and "did not match the bucket and was set aside" in note
    [aside] = tmp_path.glob("copy.set-aside-*")
    assert (aside / "trials.jsonl").read_text() == "one\ntwo\n"  # nothing is deleted
    assert (work / "trials.jsonl").read_text() == "one\n"  # the bucket's

    other = Mirror(root, tmp_path / "elsewhere")  # another machine pushes: this copy is stale now
    other.pull()
    (other.work / "trials.jsonl").write_text("one\nthree\n")
    other.push()
    assert mirror.pull() is not None and (work / "trials.jsonl").read_text() == "one\nthree\n"


def test_a_bucket_gets_each_byte_of_the_ledger_once_and_the_study_when_it_doubled_or_at_a_stop(s3, tmp_path) -> None:
    """The ledger goes into the bucket as parts, each push only the lines appended since the last one; the study
    is put by an incomplete push (after a trial) only once it has doubled, and always by a complete one (a stop).
    Another copy pulls the parts joined; a part missing between two is one line naming it."""
    import sqlite3
    from alphatune.storage import DamagedParts, joined
    root, work = Location.of("s3://runs/parts/lstm"), tmp_path / "copy"
    mirror = Mirror(root, work, sqlite=("optuna.db",), appended=("trials.jsonl",))
    mirror.fresh()
    with sqlite3.connect(work / "optuna.db") as db:
        db.execute("create table t (x text)")
    (work / "trials.jsonl").write_text("one\n")
    mirror.push(complete=False)  # the study's first snapshot goes: the bucket had none
    study_put = s3.keys("runs", "parts/lstm/optuna.db")
    assert study_put == ["parts/lstm/optuna.db"]
    first_study = _text_of(s3, "parts/lstm/optuna.db")
    for line in ("two\n", "three\n"):
        with open(work / "trials.jsonl", "a") as ledger:
            ledger.write(line)
        with sqlite3.connect(work / "optuna.db") as db:
            db.execute("insert into t values ('a row')")
        before = Mirror.bytes_put
        mirror.push(complete=False)
        assert Mirror.bytes_put - before == len(line)  # the new line only: the study has not doubled
    assert _text_of(s3, "parts/lstm/optuna.db") == first_study
    assert sorted(s3.keys("runs", "parts/lstm/trials.jsonl")) == [
        "parts/lstm/trials.jsonl.parts/000000000000", "parts/lstm/trials.jsonl.parts/000000000004",
        "parts/lstm/trials.jsonl.parts/000000000008"]
    assert not mirror.confirmed()  # the study changed since it was put: a dead driver's copy would not be used
    mirror.push()  # a stop: the study too
    assert _text_of(s3, "parts/lstm/optuna.db") != first_study and mirror.confirmed()
    for folder in ("a", "b"):  # folders written since: a push told which looks at those (and the top level) only
        (work / "tensorboard" / folder).mkdir(parents=True)
        (work / "tensorboard" / folder / "events").write_text(folder)
    mirror.push(complete=False, touched=["tensorboard/a"])
    assert [key for key in s3.keys("runs", "parts/lstm/tensorboard/")] == ["parts/lstm/tensorboard/a/events"]
    mirror.push()
    assert [key for key in s3.keys("runs", "parts/lstm/tensorboard/")] == ["parts/lstm/tensorboard/a/events",
                                                                          "parts/lstm/tensorboard/b/events"]
    other = Mirror(root, tmp_path / "elsewhere", sqlite=("optuna.db",), appended=("trials.jsonl",))
    other.pull()
    assert (other.work / "trials.jsonl").read_text() == "one\ntwo\nthree\n"
    s3.client().delete_object(Bucket="runs", Key="parts/lstm/trials.jsonl.parts/000000000004")
    with pytest.raises(DamagedParts, match=r"trials.jsonl.parts/000000000008: starts at byte 8, but the parts "
                                           r"before it end at byte 4"):
        joined(root, "trials.jsonl")


def _text_of(s3, key: str) -> bytes:
    return s3.client().get_object(Bucket="runs", Key=key)["Body"].read()


def test_a_bucket_that_lost_its_run_confirms_no_local_copy(s3, tmp_path: Path) -> None:
    """The issue's case 6 at the storage layer: the run pushed to the bucket, then deleted from it. The local copy
    is not used: pulled, it is set aside and the copy is the (empty) bucket's."""
    work = tmp_path / "copy"
    mirror = Mirror(Location.of("s3://runs/bar/lstm"), work)
    mirror.fresh()
    (work / "optuna.db").write_bytes(b"a study")
    mirror.push()
    assert mirror.confirmed()
    for key in s3.keys("runs", "bar/"):
        s3.client().delete_object(Bucket="runs", Key=key)
    assert not mirror.confirmed()
    assert mirror.pull() is not None and list(work.iterdir()) == []


# ------------------------------------------------------------------ a lease that is correct, not just probable


def test_a_lease_renews_conditionally_and_a_holder_whose_lease_was_taken_finds_out(s3) -> None:
    where = Location.of("s3://runs/taken/.writer.lease")
    told: list[str] = []
    holder = Lease(where, ttl=2.0, on_lost=told.append)
    holder.acquire("s3://runs/taken")
    assert isinstance(holder.object, S3Object)  # moto honours If-Match / If-None-Match
    since = json.loads(where.read_text())["since"]
    time.sleep(1.2)  # two renewals
    assert json.loads(where.read_text())["since"] == since and json.loads(where.read_text())["renewals"] >= 1
    where.write_text(json.dumps({"token": "someone-else", "pid": 1, "host": "elsewhere", "command": "x",
                                 "since": "then"}))  # another writer took it over
    deadline = time.monotonic() + HANG_SECONDS
    while not told and time.monotonic() < deadline:
        time.sleep(0.1)
    assert holder.lost is not None and told == [holder.lost] and "taken over by pid 1 on elsewhere" in holder.lost
    holder.release()
    assert json.loads(where.read_text())["token"] == "someone-else"  # a holder that lost it deletes nothing


_SKEWED_HOLDER = textwrap.dedent("""
    import sys, time
    real = time.time
    time.time = lambda: real() + {skew}  # this machine's clock is {skew} s off
    from alphatune.storage import Lease, Location, WriterRefused
    lease = Lease(Location.of("s3://runs/skew/.writer.lease"), ttl=3.0)
    try:
        lease.acquire("s3://runs/skew")
    except WriterRefused as error:
        print("refused:", error, flush=True)
        sys.exit(3)
    print("held", flush=True)
    time.sleep(120)
""")


def _holder(s3, skew: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _SKEWED_HOLDER.format(skew=skew)], env={**os.environ, **s3.env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("skew", [600.0, -600.0])
def test_lease_expiry_is_judged_by_the_storages_clock_not_by_clocks_ten_minutes_apart(s3, skew: float) -> None:
    where = Location.of("s3://runs/skew/.writer.lease")
    where.delete()
    holder = _holder(s3, skew)
    try:
        assert holder.stdout.readline().strip() == "held", holder.stderr.read()[-2000:]
        with pytest.raises(WriterRefused, match=rf"^s3://runs/skew is being written by pid {holder.pid} "):
            Lease(where, ttl=3.0).acquire("s3://runs/skew")  # alive: refused, however far its clock is off
        holder.kill()
        holder.wait()
        time.sleep(3.0 + 2.0)  # its last renewal is ttl old by the storage's clock (1 s resolution)
        successor = Lease(where, ttl=3.0)
        successor.acquire("s3://runs/skew")  # the dead holder's lease expired by the storage's clock
        successor.release()
    finally:
        holder.kill()
        holder.wait()
    # And a contender whose clock is off does not take a live lease either.
    live = Lease(where, ttl=3.0)
    live.acquire("s3://runs/skew")
    try:
        contender = _holder(s3, -skew)
        out, _ = contender.communicate(timeout=HANG_SECONDS)
        assert contender.returncode == 3 and out.startswith("refused: s3://runs/skew is being written by pid "), out
    finally:
        live.release()


def test_an_s3_server_that_ignores_conditions_is_detected(s3, monkeypatch) -> None:
    """A server that ignores ``If-None-Match`` would make every conditional write succeed: it is not trusted, and
    the lease falls back to writing and reading back."""
    import boto3
    where = Location.of("s3://runs/cond/.writer.lease")
    assert ConditionalObject.at(where).exact
    real_client = boto3.client

    class IgnoresConditions:  # what such a server amounts to: the header is dropped on its way
        def __init__(self, client) -> None:
            self.client = client

        def __getattr__(self, name: str):
            return getattr(self.client, name)

        def put_object(self, **kwargs):
            return self.client.put_object(**{k: v for k, v in kwargs.items() if k not in ("IfNoneMatch", "IfMatch")})

    monkeypatch.setattr(boto3, "client", lambda *args, **kwargs: IgnoresConditions(real_client(*args, **kwargs)))
    fallback = ConditionalObject.at(where)
    assert not fallback.exact
    lease = Lease(where, ttl=3.0)
    lease.acquire("s3://runs/cond")
    with pytest.raises(WriterRefused):
        Lease(where, ttl=3.0).acquire("s3://runs/cond")
    lease.release()
    assert not where.exists()


# ------------------------------------------------------------------ a run directory shared by a group


def _colleague(*code: str) -> list[str]:
    """Run ``code`` as a colleague: another member of the run directory's group, here root without the
    capabilities that pass over file permissions (what any other user of the group is to a file it does not own)."""
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", sys.executable, *code]


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/setpriv").exists(),
                    reason="acting as another user of the group needs root and util-linux's setpriv")
def test_a_colleague_of_the_group_is_refused_by_name_while_a_search_holds_a_shared_run_then_may_take_it(
        tmp_path: Path) -> None:
    """A run directory shared by a group: the lock file is its owner's to write and the group's to read, so a
    colleague's resume is refused in one line that names the holder, not a PermissionError; once the holder ended,
    the colleague takes the lock (read-only, as flock allows). A lock file an earlier version left unreadable to
    the group is one line that says whose it is."""
    from alphatune.storage.writer import LOCK_FILE
    run = tmp_path / "shared"
    run.mkdir()
    (run / "search.yaml").write_text("model: lstm\n")  # what makes it a run directory for `search resume`
    os.chmod(run, 0o2770)
    holder = subprocess.Popen([sys.executable, "-c", "import time; from alphatune.storage import LocalLock; "
                               f"lock = LocalLock({str(run)!r}); lock.acquire('it'); print('held', flush=True); "
                               "time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)
    lock = run / LOCK_FILE
    try:
        assert holder.stdout.readline().strip() == "held"
        assert lock.stat().st_mode & 0o777 == 0o640
        os.chown(lock, 65534, os.getgid())  # the holder is another user of the same group
        refused = subprocess.run(_colleague("-m", "alphatune", "search", "resume", str(run)), capture_output=True,
                                 text=True, timeout=HANG_SECONDS)
    finally:
        holder.kill()
        holder.wait()
    assert refused.returncode == 2, refused.stderr[-3000:]
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith(f"error: {run} is being written by pid {holder.pid} on "), line
    taken = subprocess.run(_colleague("-c", "from alphatune.storage import LocalLock; lock = LocalLock("
                                      f"{str(run)!r}); lock.acquire('it'); print('taken'); lock.release()"),
                           capture_output=True, text=True, timeout=HANG_SECONDS)
    assert taken.stdout.strip() == "taken", taken.stderr[-3000:]
    os.chmod(lock, 0o600)  # as an earlier version left it
    unreadable = subprocess.run(_colleague("-m", "alphatune", "search", "resume", str(run)), capture_output=True,
                                text=True, timeout=HANG_SECONDS)
    assert unreadable.returncode == 2, unreadable.stderr[-3000:]
    [line] = unreadable.stderr.strip().splitlines()
    assert line == (f"error: {run}: this user cannot open its lock file {lock} (it belongs to user nobody (uid "
                    f"65534)): run as user nobody (uid 65534), or let user nobody (uid 65534) make it readable by the "
                    f"group (chmod g+r {lock})"), line


# ------------------------------------------------------------------ Ray's own faults


def test_a_ray_start_that_times_out_is_tried_once_more_then_it_is_one_line(monkeypatch) -> None:
    """A machine so busy that Ray's processes do not register in time (seen: "The current node timed out during
    startup"): the start is shut down and tried once more; twice, it is one ClusterError line."""
    import ray
    from alphatune.search import cluster
    timeout = Exception("The current node timed out during startup. This could happen because some of the raylet "
                        "failed to startup or the GCS has become overloaded.")
    real_init, calls = ray.init, []

    def busy_once(**settings):
        calls.append(settings)
        if len(calls) == 1:
            raise timeout
        return real_init(**settings)

    monkeypatch.setattr(cluster, "RETRY_PAUSE_SECONDS", 0.0)
    monkeypatch.setattr(ray, "init", busy_once)
    cluster.start_ray(num_cpus=1)
    try:
        assert len(calls) == 2 and ray.is_initialized() and calls[0] == calls[1]
    finally:
        ray.shutdown()

    def always_busy(**settings):
        raise timeout

    monkeypatch.setattr(ray, "init", always_busy)
    with pytest.raises(cluster.ClusterError, match=r"^Ray did not start, twice \(The current node timed out during "
                                                   r"startup\. .*\); this machine is probably too busy right now"):
        cluster.start_ray(num_cpus=1)
    monkeypatch.setattr(ray, "init", lambda **settings: (_ for _ in ()).throw(ValueError("not a timeout")))
    with pytest.raises(ValueError, match="not a timeout"):  # anything else is not retried
        cluster.start_ray(num_cpus=1)
