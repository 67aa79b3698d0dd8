"""Subcommands ``run``, ``resume`` and ``export``: each a ``main(options) -> int`` over its options dataclass
(``search.options``; ``alphatune.cli`` derives the command line from it).

Nothing heavy is imported until the arguments have been checked: a bad option is refused in a second, before
torch, Ray or the data load.
"""

from __future__ import annotations

from pathlib import Path

from alphatune.search.cluster import prefer_loopback
from alphatune.search.options import ExportOptions, OptionError, ResumeOptions, SearchOptions, check_name
from alphatune.search.ledger import read_ledger
from alphatune.search.rundir import RunDir, check_resumable, find_run_dirs, recorded_address


def run_main(options: SearchOptions) -> int:
    if options.resume:
        if not options.name:
            raise OptionError("--resume needs --name (the search to continue, under --storage-path)")
        check_name(options.name)
        run_dirs = find_run_dirs(options.search_dir)
        check_resumable(run_dirs)  # one line before torch and Ray load
        prefer_loopback(recorded_address(run_dirs[0]))
        from alphatune.search import driver
        return _status(driver.resume(options.search_dir, within=options.storage_path))
    from alphatune.search import preflight
    checked = preflight.check(options)  # bad input is one line here, before torch and Ray load
    prefer_loopback(options.address)
    from alphatune.search import driver
    return _status(driver.run(options, checked=checked))


def _status(run_dirs: list[Path]) -> int:
    """130 when a search was interrupted (Ctrl-C) and can be resumed; 1 when one ended without a trial to export
    (every trial failed: the summary said so); else 0."""
    from alphatune.search import driver
    if any(driver.unfinished(run_dir) for run_dir in run_dirs):
        return 130
    return 0 if all(driver.has_winner(run_dir) for run_dir in run_dirs) else 1


def has_reports(run_dir: RunDir) -> bool:
    """Whether some trial of the run has reported an epoch, from its ledger alone (a run in a bucket is brought
    down into its reader's copy first, ``RunDir.reader``; a run of an earlier version without a ledger is assumed to
    have)."""
    with run_dir.reader() as copy:
        copy.pull()
        trials = read_ledger(copy.work)
    return trials is None or any(trial.results for trial in trials)


def resume_main(options: ResumeOptions) -> int:
    run_dirs = find_run_dirs(options.run_dir)
    check_resumable(run_dirs)  # one line before torch and Ray load
    prefer_loopback(recorded_address(run_dirs[0]))
    from alphatune.search import driver
    return _status(driver.resume(options.run_dir))


def export_main(options: ExportOptions) -> int:
    options.validate()
    run_dirs = find_run_dirs(options.run_dir)
    if not any(has_reports(run_dir) for run_dir in run_dirs):  # nothing to export: said before torch and Ray load
        for run_dir in run_dirs:
            print(f"[{run_dir.name}] no trial of {run_dir} has reported an epoch yet: nothing to export")
        return 1
    from alphatune.search import driver
    written = driver.export(options.run_dir, qlib_data=options.qlib_data, schedule=options.schedule,
                            out_dir=options.out)
    return 0 if written else 1
