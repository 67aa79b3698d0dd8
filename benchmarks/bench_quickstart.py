"""The quick start as a new user meets it, timed from a fresh venv, with where its minutes go.

Runs the README's first command in a fresh clone of this checkout (``git clone``, then ``python3 -m venv .venv &&
.venv/bin/pip install torch==2.13.0 -e . && .venv/bin/alphatune search run``; ``--venv DIR`` reuses an installed
environment and skips the install) and splits its wall time with the run's own records (the ledger's times, each
epoch's measured training and validation seconds) and the times its output lines arrive:

* install (pip), the command's start (imports, argument and data checks), the data (the embedded data prepared, or
  loaded from the cache), Ray's start;
* the trials: their training epochs (the trainer's own seconds: training and validation), each trial's start (a
  worker process started or reused, torch imported, the dataset fetched from the object store, the network built),
  the work around each epoch (model and state files, the daily IC, the report), and the trial slots left idle;
* the confirmation, likewise (its runs that started while the last trials still ran, in slots they left idle,
  and what was left after the last trial ended); the idle slot time; the export and the summary at the end.

With ``--baseline REV`` it measures that revision first, then this checkout's HEAD, one after the other in one
run, and gives the ratio of their wall times. With ``--amp`` it measures HEAD once more with ``--amp`` added (bf16
autocast where the CPU has native bf16: opt-in, not the default, since it changes the arithmetic), so that what
it saves and what it changes (the winner, its confirmation against Qlib's default) are side by side.

    python benchmarks/bench_quickstart.py [--venv DIR] [--baseline REV] [--amp] [--json FILE] [--no-record] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import report  # noqa: E402

INSTALL = "python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e ."


def timed_lines(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[list[tuple[float, str]], int]:
    """Run ``command``; every output line with the second it arrived (from the start)."""
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[tuple[float, str]] = []
    for line in process.stdout:
        lines.append((time.monotonic() - started, line.rstrip("\n")))
        print(line, end="", file=sys.stderr, flush=True)
    return lines, process.wait()


def first(lines: list[tuple[float, str]], *needles: str) -> float | None:
    return next((at for at, line in lines if any(needle in line for needle in needles)), None)


def breakdown(lines: list[tuple[float, str]], wall: float, run_dir: Path, slots: int) -> dict[str, Any]:
    """Where the command's wall time went (see the module doc), from its output and the run's ledger."""
    events = [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines() if line.strip()]
    created = {event["trial"]: event["time"] for event in events if event.get("event") == "trial"}
    results = [event for event in events if event.get("event") == "result"]
    confirmed = [event for event in events if event.get("event") == "confirmed" and "reported_at" in event]
    ends = [event["time"] for event in events if event.get("event") == "end"]
    t0 = min(created.values())  # the first trial's creation, in wall-clock seconds
    trials_end = max(ends) if ends else t0
    runs_end = max([trials_end] + [entry["time"] for entry in confirmed])
    starts = {trial: min(row["started_at"] for row in results if row["trial"] == trial) for trial in created
              if any(row["trial"] == trial for row in results)}
    per_trial: dict[str, list[dict[str, Any]]] = {}
    for row in results:
        per_trial.setdefault(row["trial"], []).append(row)
    around = busy = 0.0
    for trial, rows in per_trial.items():
        rows.sort(key=lambda row: row["reported_at"])
        previous = rows[0]["started_at"]
        for row in rows:
            around += max(0.0, row["reported_at"] - previous - row["seconds"])
            previous = row["reported_at"]
        busy += rows[-1]["reported_at"] - created[trial]
    run_seconds = sum(entry["reported_at"] - entry["started_at"] for entry in confirmed)
    early = [entry for entry in confirmed if entry["started_at"] < trials_end]
    return {"wall": wall, "before_trials": first(lines, "searching"), "ray_up": first(lines, "trial slot"),
            "trials_phase": trials_end - t0, "train_seconds": sum(row["seconds"] for row in results),
            "epochs": len(results), "trials": len(created),
            "worker_start": sum(starts[trial] - created[trial] for trial in starts), "around_epochs": around,
            "trial_slot_seconds": busy, "slots": slots,
            "confirmation": {"runs": len(confirmed), "epochs": sum(int(entry.get("epoch") or 0) for entry in confirmed),
                             "run_seconds": run_seconds, "early_runs": len(early),
                             "early_seconds": sum(min(entry["reported_at"], trials_end) - entry["started_at"]
                                                  for entry in early),
                             "after_trials": runs_end - trials_end},
            "idle_slots": max(0.0, slots * (runs_end - t0) - busy - run_seconds),
            "after_confirmation": wall - next((at for at, line in lines if SUMMARY.search(line)), wall)}


SUMMARY = re.compile(r"\] \d+ trials?: ")  # the summary's first line, "[lstm] 8 trials: ..."


def measure(args: argparse.Namespace, revision: str | None = None, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """The quick start of this checkout's HEAD (or of ``revision``) from a fresh clone, with ``extra`` arguments:
    its breakdown, and what it found (the winner and its verdict against Qlib's default, from best.yaml)."""
    scratch = Path(tempfile.mkdtemp(prefix="alphatune-quickstart-", dir="/tmp"))
    try:
        clone = scratch / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        if revision:
            subprocess.run(["git", "checkout", "-q", revision], cwd=clone, check=True)
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("RAY_", "ALPHATUNE_")) and key != "PYTHONPATH"}
        env.update(PYTHONUNBUFFERED="1", ALPHATUNE_CACHE=str(scratch / "cache"))
        install = 0.0
        if args.venv is None:
            began = time.monotonic()
            subprocess.run(INSTALL, shell=True, cwd=clone, env=env, check=True, stdout=subprocess.DEVNULL)
            install = time.monotonic() - began
            alphatune = clone / ".venv" / "bin" / "alphatune"
        else:
            alphatune = Path(args.venv) / "bin" / "alphatune"
        command = [str(alphatune), "search", "run", "--storage-path", str(scratch / "runs"), "--name", "quickstart",
                   *extra]
        if args.smoke:
            command += ["--samples", "2", "--max-epochs", "1", "--confirm-seeds", "1", "--train", "2018-12-03:2018-12-14",
                        "--valid", "2019-01-02:2019-01-15", "--test", "2019-03-01:2019-03-29"]
        began = time.monotonic()
        lines, code = timed_lines(command, clone, env)
        wall = time.monotonic() - began
        if code != 0:
            raise SystemExit(f"the quick start exited with {code}")
        run_dir = scratch / "runs" / "quickstart" / "lstm"
        result = breakdown(lines, wall, run_dir, slots=os.cpu_count() or 2)
        described = subprocess.run(["git", "log", "-1", "--format=%h %cs"], cwd=clone, capture_output=True,
                                   text=True, check=True).stdout.strip()
        result.update(install=install, command=" ".join(command[1:]), revision=" ".join([described, *extra]),
                      load=load_average(), found=found(run_dir))
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def found(run_dir: Path) -> dict[str, Any]:
    """The search's answer, from its best.yaml: the winner, its searched values, its confirmed mean and the verdict
    against Qlib's default."""
    import yaml
    best = yaml.safe_load((run_dir / "best.yaml").read_text())
    searched = yaml.safe_load((run_dir / "search.yaml").read_text())["space"]["params"]
    confirmation = best.get("confirmation") or {}
    winner = next((config for config in confirmation.get("configs") or []
                   if config["trial"] == confirmation.get("winner")), None)
    values = winner["hyperparameters"] if winner else best["hyperparameters"]
    return {"winner": ", ".join(f"{name} {values[name]:.3g}" if isinstance(values.get(name), float)
                                else f"{name} {values.get(name)}" for name in searched),
            "mean": winner.get("mean") if winner else None,
            "verdict": (confirmation.get("against_default") or {}).get("verdict", "(no confirmation)")}


def load_average() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def rows_of(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(part, time) rows of one measurement."""
    confirmation = result["confirmation"]
    slots = result["slots"]
    return [("install (fresh venv)", minutes(result["install"]) if result["install"] else "(reused)"),
            ("start to the first trial (imports, checks, data, Ray)", minutes(result["before_trials"] or 0)),
            ("of which: until Ray is up", minutes(result["ray_up"] or 0)),
            ("the trials, first created to last ended", minutes(result["trials_phase"])),
            ("trials, epochs", f"{result['trials']}, {result['epochs']}"),
            (f"training epochs (the trainer's seconds, all {slots} slots)", minutes(result["train_seconds"])),
            ("trial starts (worker, imports, data, network; all slots)", minutes(result["worker_start"])),
            ("the work around each epoch (files, report; all slots)", minutes(result["around_epochs"])),
            ("confirmation runs, epochs", f"{confirmation['runs']}, {confirmation['epochs']}"),
            ("confirmation runs' training (all slots)", minutes(confirmation["run_seconds"])),
            ("of which: while trials still ran (runs started early)",
             f"{minutes(confirmation['early_seconds'])} ({confirmation['early_runs']} runs)"),
            ("confirmation after the last trial ended", minutes(confirmation["after_trials"])),
            ("idle slot time, first trial to last run (all slots)", minutes(result["idle_slots"])),
            ("summary, export, exit", minutes(result["after_confirmation"])),
            ("**the command, start to end**", f"**{minutes(result['wall'])}**")] + ([
            ("the winner (searched values)", result["found"]["winner"]),
            ("its mean valid_ic over the confirmation's seeds", f"{result['found']['mean']:.4f}"
             if isinstance(result["found"]["mean"], float) else "-"),
            ("against Qlib's default", result["found"]["verdict"])] if "found" in result else [])


def render(results: list[dict[str, Any]], smoke: bool) -> str:
    """One column per measurement (the baseline first), and the ratio of the last to the first."""
    columns = [dict(rows_of(result)) for result in results]
    parts = list(columns[0])
    header = ["part"] + [f"{result['revision']}" for result in results]
    table = [[part] + [column[part] for column in columns] for part in parts]
    text = ("Smoke run: checks the script, measures nothing. " if smoke else "") + (
        f"`alphatune {results[-1]['command']}` (the README's quick start) from a fresh clone"
        + (f", after `{INSTALL}`" if results[-1]["install"] else ", in an installed venv") + ", "
        + (f"each of {len(results)} revisions of this repository, one after the other in one run (columns: the "
           "commit measured); " if len(results) > 1 else "")
        + "slot times are sums over the trial slots. Load average at each end: "
        + ", ".join(result["load"] for result in results) + ".\n\n" + report.markdown_table(header, table))
    if len(results) > 1:
        before = results[0]["wall"]
        text += "\n\n" + " ".join(
            f"{result['revision']} took {result['wall'] / before:.2f}× the time of {results[0]['revision']} "
            f"({minutes(before)} → {minutes(result['wall'])})." for result in results[1:])
        text += " The same trials, epochs budget, seeds and data in every column."
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", help="an installed environment to use instead of a fresh one")
    parser.add_argument("--baseline", metavar="REV", help="also measure this git revision first, side by side")
    parser.add_argument("--amp", action="store_true", help="also measure HEAD with --amp (bf16 autocast, opt-in)")
    parser.add_argument("--json", type=Path, help="also write the measured numbers here")
    parser.add_argument("--render-from", type=Path, help="measure nothing: render (and record) a --json file")
    parser.add_argument("--no-record", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--smoke", action="store_true", help=report.SMOKE_HELP)
    args = parser.parse_args(argv)
    if args.smoke:
        args.no_record, args.venv = True, args.venv or str(Path(sys.executable).parent.parent)
    if args.render_from:
        results = json.loads(args.render_from.read_text())
    else:
        results = ([measure(args, args.baseline)] if args.baseline else []) + [measure(args)] + (
            [measure(args, extra=("--amp",))] if args.amp else [])
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    body = render(results, args.smoke)
    print(body)
    if not args.no_record:
        report.write_section("bench_quickstart", "The quick start: how long, and where the time goes", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
