"""Shared pytest fixtures: one torch thread per test, and a tiny synthetic price panel (CSV table or Qlib dir)."""

from __future__ import annotations

from pathlib import Path

import os

from alphatune.search.cluster import prefer_loopback

prefer_loopback()  # as the alphatune command does before Ray is imported: the tests' private Rays bind 127.0.0.1,
import ray  # noqa: E402,F401
os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")  # and the Ray nodes the tests start (`ray start`) may join up
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models train fastest on one thread, and CI's two cores are shared with Ray's workers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- datasets ---------------------------------------------------------------------------------------------------

TINY_SYMBOLS = ("SH600001", "SH600002", "SZ000003", "SZ000004", "SZ000005")
TINY_DAYS = 80
TINY_SEGMENTS = {"train": (0, 49), "valid": (50, 64), "test": (65, 79)}   # day positions, inclusive


def tiny_prices(seed: int = 0) -> pd.DataFrame:
    """Raw prices of 5 stocks over 80 business days from 2020-01-01, with the edge cases Alpha360 must handle.

    SH600002 has no row on days 40-41 (suspended); SZ000003 trades from day 20 (listing); SZ000004 stops after
    day 70 (delisted); every stock has a ``factor`` that steps once. Values are float32-exact so that a Qlib
    directory written from them holds the same numbers.
    """
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2020-01-01", periods=TINY_DAYS)
    frames = []
    for number, symbol in enumerate(TINY_SYMBOLS):
        close = (10 + number) * np.exp(np.cumsum(rng.normal(0, 0.02, TINY_DAYS)))
        close = np.round(close, 2)
        close[7 + number] = close[6 + number]                       # a tie in daily returns somewhere
        frame = pd.DataFrame({
            "date": dates, "symbol": symbol,
            "open": np.round(close * rng.uniform(0.98, 1.02, TINY_DAYS), 2),
            "high": np.round(close * 1.03, 2), "low": np.round(close * 0.97, 2), "close": close,
            "volume": rng.integers(1_000, 100_000, TINY_DAYS).astype(float) * 100,
            "vwap": np.round(close * rng.uniform(0.99, 1.01, TINY_DAYS), 2),
            "factor": np.where(np.arange(TINY_DAYS) < 30 + number, 1.0, 1.25)})
        keep = np.ones(TINY_DAYS, dtype=bool)
        if symbol == "SH600002":
            keep[40:42] = False
        if symbol == "SZ000003":
            keep[:20] = False
        if symbol == "SZ000004":
            keep[71:] = False
        frames.append(frame[keep])
    prices = pd.concat(frames, ignore_index=True).sort_values(["date", "symbol"], ignore_index=True)
    for column in ("open", "high", "low", "close", "volume", "vwap", "factor"):
        prices[column] = prices[column].astype(np.float32).astype(np.float64)
    return prices


def tiny_membership() -> pd.DataFrame:
    """Point-in-time spans: SZ000003 joins on day 25, SZ000004 leaves days 61-64, SZ000005 is a member on days
    30-50 only; SH600001/2 are members throughout."""
    day = pd.bdate_range("2020-01-01", periods=TINY_DAYS).strftime("%Y-%m-%d")
    return pd.DataFrame({"symbol": ["SH600001", "SH600002", "SZ000003", "SZ000004", "SZ000004", "SZ000005"],
                         "start": [day[0], day[0], day[25], day[0], day[65], day[30]],
                         "end": [day[79], day[79], day[79], day[60], day[79], day[50]]})


def tiny_segments() -> dict[str, tuple[str, str]]:
    day = pd.bdate_range("2020-01-01", periods=TINY_DAYS).strftime("%Y-%m-%d")
    return {name: (day[a], day[b]) for name, (a, b) in TINY_SEGMENTS.items()}


def write_qlib_dir(root: Path, prices: pd.DataFrame, membership: pd.DataFrame, market: str = "csi300") -> Path:
    """Write ``prices`` (raw, with factor) as a Qlib data directory: adjusted float32 bins from each stock's first
    to last row with NaN gaps, ``instruments/<market>.txt`` from ``membership``."""
    calendar = np.sort(prices["date"].unique())
    (root / "calendars").mkdir(parents=True)
    (root / "calendars" / "day.txt").write_text("\n".join(pd.DatetimeIndex(calendar).strftime("%Y-%m-%d")) + "\n")
    (root / "instruments").mkdir()
    (root / "instruments" / f"{market}.txt").write_text(
        "".join(f"{r.symbol}\t{r.start}\t{r.end}\n" for r in membership.itertuples()))
    for symbol, rows in prices.groupby("symbol"):
        position = np.searchsorted(calendar, rows["date"].to_numpy())
        start, stop = position.min(), position.max() + 1
        folder = root / "features" / symbol.lower()
        folder.mkdir(parents=True)
        adjusted = {"open": rows["open"] * rows["factor"], "high": rows["high"] * rows["factor"],
                    "low": rows["low"] * rows["factor"], "close": rows["close"] * rows["factor"],
                    "vwap": rows["vwap"] * rows["factor"], "volume": rows["volume"] / rows["factor"],
                    "factor": rows["factor"]}
        for field, values in adjusted.items():
            series = np.full(stop - start, np.nan, dtype="<f4")
            series[position - start] = values.to_numpy()
            np.concatenate([np.array([start], dtype="<f4"), series]).tofile(folder / f"{field}.day.bin")
    return root


@pytest.fixture
def tiny_table(tmp_path: Path) -> Path:
    """The tiny panel as ``prices.csv`` with ``csi300.csv`` membership beside it; returns the table's path."""
    tiny_prices().to_csv(tmp_path / "prices.csv", index=False)
    tiny_membership().to_csv(tmp_path / "csi300.csv", index=False)
    return tmp_path / "prices.csv"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test that hit a time limit (``limits.HANG_SECONDS``) says what was still running: the command, its output
    so far, and the processes this test run had left."""
    outcome = yield
    report = outcome.get_result()
    error = call.excinfo.value if call.excinfo is not None else None
    import subprocess
    if isinstance(error, subprocess.TimeoutExpired):
        def tail(data) -> str:
            text = data.decode(errors="replace") if isinstance(data, bytes) else (data or "")
            return text[-3000:]
        listing = subprocess.run(["ps", "-eo", "pid,etime,args", "--sort=start_time"], capture_output=True, text=True)
        report.sections.append(("still running", f"{error.cmd}\n--- its output so far ---\n{tail(error.output)}\n"
                                                 f"--- its errors so far ---\n{tail(error.stderr)}\n--- processes ---\n"
                                                 f"{listing.stdout[-3000:]}"))
