"""Cross-check evaluation.backtest against Qlib's own backtest on the same predictions.

Both sides get one prediction table for ``../shared/data/cn_csi300`` (a noisy 5-day momentum score for every
CSI300 member with stored data, so that limit-up stocks, suspensions and index changes all occur). Qlib's side
runs in its own virtualenv (``$QLIB_VENV``, default /work/qlib-venv) as a subprocess: ``backtest_daily`` with
``TopkDropoutStrategy(topk=50, n_drop=5)`` and the Alpha360 exchange settings. Ours runs ``evaluation.backtest``.
The tables report the largest daily differences and both risk analyses, for Qlib's account of 1e8 and for a
tiny account where lot rounding, minimum costs and cash clipping bind.

    python benchmarks/check_backtest_vs_qlib.py [--data DIR] [--qlib-venv DIR]
    python benchmarks/check_backtest_vs_qlib.py --smoke   # no Qlib: our side on the embedded data
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.report import SMOKE_HELP, SMOKE_SEGMENTS, markdown_table, write_section  # noqa: E402
from alphatune.datasets import MarketData  # noqa: E402
from alphatune.evaluation.backtest import BacktestConfig, backtest  # noqa: E402

QLIB_SIDE = r"""
import os, sys
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
import pandas as pd, qlib
from qlib.contrib.evaluate import backtest_daily, risk_analysis
from qlib.contrib.strategy import TopkDropoutStrategy
data, workdir, start, end, account = sys.argv[1:6]
qlib.init(provider_uri=data, region="cn", kernels=1)
pred = pd.read_parquet(os.path.join(workdir, "pred.parquet"))["score"]
strategy = TopkDropoutStrategy(signal=pred, topk=50, n_drop=5)
report, _ = backtest_daily(start, end, strategy, account=float(account), benchmark="SH000300",
                           exchange_kwargs={"limit_threshold": 0.095, "deal_price": "close", "open_cost": 0.0005,
                                            "close_cost": 0.0015, "min_cost": 5})
report.to_parquet(os.path.join(workdir, "qlib_report.parquet"))
excess = report["return"] - report["bench"] - report["cost"]
risk_analysis(excess, freq="day")["risk"].to_frame("value").to_parquet(os.path.join(workdir, "qlib_risk.parquet"))
"""


def read_bin(path: Path, calendar_size: int) -> np.ndarray:
    """One Qlib ``.day.bin`` file as a float32 array over the whole calendar (NaN outside its stored span)."""
    raw = np.fromfile(path, dtype="<f4")
    out = np.full(calendar_size, np.nan, dtype=np.float32)
    if raw.size > 1:
        start = int(raw[0])
        out[start:start + raw.size - 1] = raw[1:]
    return out


def load_market(data: Path, first: str, last: str) -> tuple[MarketData, pd.Series]:
    """Prices of every CSI300 member with data between ``first`` and ``last``, the SH000300 close, and the
    membership row set ((date, instrument) where a member and inside its stored series) as a bool Series."""
    calendar = pd.DatetimeIndex(pd.read_csv(data / "calendars/day.txt", header=None)[0])
    spans = pd.read_csv(data / "instruments/csi300.txt", sep="\t", header=None, names=["symbol", "start", "end"])
    window = (calendar >= pd.Timestamp(first)) & (calendar <= pd.Timestamp(last))
    symbols = sorted(s for s in spans["symbol"].unique() if (data / "features" / s.lower()).is_dir())
    fields = {name: np.stack([read_bin(data / "features" / s.lower() / f"{name}.day.bin", len(calendar))
                              for s in symbols], axis=1)[window] for name in ("close", "factor", "change")}
    stored = np.stack([_inside_stored(data / "features" / s.lower() / "close.day.bin", len(calendar))
                       for s in symbols], axis=1)[window]
    dates = calendar[window]
    member = np.zeros((len(dates), len(symbols)), dtype=bool)
    position = {s: i for i, s in enumerate(symbols)}
    for symbol, start, end in spans.itertuples(index=False):
        if symbol in position:
            member[:, position[symbol]] |= (dates >= pd.Timestamp(start)) & (dates <= pd.Timestamp(end))
    bench = read_bin(data / "features/sh000300/close.day.bin", len(calendar))[window]
    market = MarketData(dates=dates.values, instruments=np.array(symbols), close=fields["close"],
                        factor=fields["factor"], change=fields["change"], benchmark_close=bench)
    rows = pd.DataFrame(member & stored, index=dates, columns=symbols).stack()
    return market, rows[rows]


def _inside_stored(path: Path, calendar_size: int) -> np.ndarray:
    raw = np.fromfile(path, dtype="<f4", count=1)
    start = int(raw[0])
    inside = np.zeros(calendar_size, dtype=bool)
    inside[start:start + path.stat().st_size // 4 - 1] = True
    return inside


def momentum_prediction(market: MarketData, rows: pd.Series, seed: int = 0) -> pd.Series:
    """A 5-day momentum score with noise, NaN-free (a suspended stock gets only noise), on ``rows``."""
    close = pd.DataFrame(market.close, index=pd.DatetimeIndex(market.dates), columns=market.instruments)
    momentum = (close / close.ffill().shift(5) - 1).stack(future_stack=True).reindex(rows.index).to_numpy()
    noise = np.random.default_rng(seed).normal(0, 0.02, len(rows))
    score = np.where(np.isfinite(momentum), momentum, 0.0) + noise
    return pd.Series(score.astype(np.float32), index=rows.index.set_names(["datetime", "instrument"]),
                     name="score")


def compare(data: Path, qlib_venv: Path, start: str, end: str, account: float) -> str:
    """Run both backtests on the same predictions; return a markdown paragraph and table of the differences."""
    first = (pd.Timestamp(start) - pd.Timedelta(days=30)).strftime("%Y-%m-%d")
    market, rows = load_market(data, first, end)
    prediction = momentum_prediction(market, rows)
    prediction = prediction[prediction.index.get_level_values(0) >= pd.Timestamp(start) - pd.Timedelta(days=7)]

    began = time.perf_counter()
    ours = backtest(prediction, market, start, end, BacktestConfig(account=account), benchmark_name="SH000300")
    ours_seconds = time.perf_counter() - began

    with tempfile.TemporaryDirectory() as workdir:
        prediction.to_frame().to_parquet(Path(workdir) / "pred.parquet")
        began = time.perf_counter()
        subprocess.run([str(qlib_venv / "bin/python"), "-c", QLIB_SIDE, str(data), workdir, start, end,
                        str(account)], check=True, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
        qlib_seconds = time.perf_counter() - began
        theirs = pd.read_parquet(Path(workdir) / "qlib_report.parquet")
        their_risk = pd.read_parquet(Path(workdir) / "qlib_risk.parquet")["value"]

    theirs.index = pd.DatetimeIndex(theirs.index)
    if not theirs.index.equals(ours.daily.index):
        raise SystemExit(f"trade days differ: ours {len(ours.daily)} ({ours.daily.index[0].date()}.."
                         f"{ours.daily.index[-1].date()}), Qlib {len(theirs)}")
    table = [[f"daily {name}", f"{np.max(np.abs(ours.daily[name].to_numpy() - theirs[name].to_numpy())):.3g}"]
             for name in ("account", "return", "cost", "turnover", "bench")]
    for key in ("mean", "std", "annualized_return", "information_ratio", "max_drawdown"):
        table.append([key, f"ours {ours.risk[key]:.10f}, Qlib {their_risk[key]:.10f}, "
                           f"diff {abs(ours.risk[key] - their_risk[key]):.3g}"])
    table.append(["seconds", f"ours {ours_seconds:.2f} (backtest only), Qlib {qlib_seconds:.1f} "
                             f"(subprocess incl. qlib.init and quote loading)"])
    return (f"Trade days {start}..{end} ({len(ours.daily)} days), account {account:,.0f}, "
            f"{len(prediction):,} prediction rows; at most {int(ours.daily['holdings'].max())} stocks held.\n\n"
            + markdown_table(["quantity", "largest absolute difference (account in CNY)"], table))


def smoke() -> int:
    """``--smoke``: our side only (no Qlib here): the same momentum predictions on the embedded data's test month,
    backtested by ``evaluation.backtest`` with a tiny account; prints the risk analysis."""
    from alphatune.datasets import DataSpec
    ds = DataSpec(**SMOKE_SEGMENTS).open(progress=False)
    test = ds.segment("test")
    rows = pd.Series(True, index=test.index())
    prediction = momentum_prediction(ds.market, rows)
    start, end = SMOKE_SEGMENTS["test"]
    ours = backtest(prediction, ds.market, start, end, BacktestConfig(account=3e5), benchmark_name=ds.benchmark)
    print(markdown_table(["quantity", "ours"], [[key, f"{ours.risk[key]:.6f}"] for key in
                                                ("mean", "std", "annualized_return", "information_ratio",
                                                 "max_drawdown")]))
    return 0 if len(ours.daily) > 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/cn_csi300")
    parser.add_argument("--qlib-venv", type=Path, default=Path(os.environ.get("QLIB_VENV", "/work/qlib-venv")))
    parser.add_argument("--no-record", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP + " (our side only: no Qlib)")
    args = parser.parse_args(argv)
    if args.smoke:
        return smoke()
    # Qlib's settings, then a tiny account over a year: lot rounding, minimum costs and cash clipping bind.
    cases = [("2017-07-01", "2017-12-31", 1e8), ("2017-01-01", "2017-12-31", 3e5)]
    body = ("Same predictions (a noisy 5-day momentum score for every CSI300 member with stored data) on "
            "`../shared/data/cn_csi300`; topk 50, n_drop 5, Qlib's Alpha360 exchange settings; Qlib 0.9.7 in "
            "its own virtualenv.\n\n"
            + "\n\n".join(compare(args.data, args.qlib_venv, *case) for case in cases))
    print(body)
    if not args.no_record:
        write_section("check_backtest_vs_qlib", "Backtest: ours vs Qlib on the same predictions", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
