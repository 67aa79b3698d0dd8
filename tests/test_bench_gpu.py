"""bench_gpu's arithmetic, which on a CPU machine never meets real GPU results: speed-ups and target verdicts
from a GPU run's JSON, and the most trials that ran at once."""

from __future__ import annotations

from types import SimpleNamespace

from benchmarks.bench_gpu import peak_running, render


def epochs(*seconds: float) -> dict:
    return {"epochs": [{"seconds": s, "valid_loss": 1.0 - i / 100} for i, s in enumerate(seconds)]}


def gpu_results() -> dict:
    row = lambda qlib, strict: {"rows": {"train": 66657, "valid": 30000}, "qlib": epochs(9.0, qlib, qlib),  # noqa
                                "eager": epochs(9.0, 0.5, 0.5), "graphs_strict": epochs(9.0, strict, strict),
                                "graphs": epochs(9.0, 0.2, 0.2), "graphs_amp": epochs(9.0, 0.25, 0.25)}
    return {"device": "cuda", "source": "/tmp/cn_trim", "epochs": 3, "seed": 0,
            "segments": {"train": ["2016-01-01", "2016-12-31"], "valid": ["2017-01-01", "2017-06-30"],
                         "test": ["2017-07-01", "2017-12-31"]},
            "models": {"lstm": row(0.9, 0.3), "gats": row(2.0, 0.5), "hist": {"error": "out of memory"}},
            "concurrency": {"model": "lstm", "mps": False, "runs": [
                {"processes": 1, "steps_per_second": 300.0, "epochs_per_second": 3.6, "busy": 0.31},
                {"processes": 4, "steps_per_second": 810.0, "epochs_per_second": 9.7, "busy": 0.9}]},
            "search": {"samples": 32, "max_epochs": 6, "gpus_per_trial": 0.125, "cpus_per_trial": 1.0, "trials": 32,
                       "epochs": 120, "seconds": 10.0, "epochs_per_second": 12.0, "slots": 8, "peak_running": 8,
                       "plan": ["8 trial slots"], "busy": 0.75, "mps": False, "bare_epochs_per_second": 3.6}}


def test_speed_ups_exclude_the_first_epoch_and_the_target_is_judged_in_strict_fp32() -> None:
    text = render(gpu_results())
    lines: dict[str, str] = {}
    for line in text.splitlines():  # each model's first row: the speed table's (its loss curve rows follow)
        if line.startswith("| "):
            lines.setdefault(line.split("|")[1].strip(), line)
    assert "0.300 (**3.0×**)" in lines["lstm"] and "3×: met" in lines["lstm"]   # 0.9 / 0.3, the first epoch left out
    assert "0.500 (**4.0×**)" in lines["gats"] and "5×: **not met**" in lines["gats"]  # TF32's 10× does not count
    assert "error: out of memory" in lines["hist"]
    assert "| 4 | 810.0 | 2.70× | 9.70 | 90% |" in text and "CUDA MPS off" in text
    assert "**12.00**" in text and "| 8 / 8 |" in text


def test_a_cpu_run_says_the_gpu_figures_need_a_gpu() -> None:
    results = {**gpu_results(), "device": "cpu"}
    results["models"] = {"lstm": {key: value for key, value in results["models"]["lstm"].items()
                                  if key in ("rows", "eager", "graphs_strict")}}
    text = render(results)
    assert "the GPU figures" in text and "need a GPU" in text and "Qlib s/epoch" not in text


def test_the_most_trials_running_at_once_counts_overlapping_workers() -> None:
    trial = lambda *spans: SimpleNamespace(results=[  # noqa: E731
        {"started_at": start, "reported_at": end} for start, end in spans])
    # a starts at 0 and reports until 5; b runs 1..3; c runs 4..6, then is restarted (a new worker) at 7..8
    trials = [trial((0, 2), (0, 5)), trial((1, 3)), trial((4, 6), (7, 8))]
    assert peak_running(trials) == 2
    assert peak_running([trial((0, 1)), trial((1, 2))]) == 1  # one ends as the next starts
    assert peak_running([]) == 0
