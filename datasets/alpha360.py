"""Alpha360 features and label, computed exactly as Qlib does, vectorised over the whole panel.

For a row (day t, stock s) and lag L = 59 … 0 (calendar trading days; a day without a bar is NaN, not skipped):

    CLOSE<L> = close[t-L] / close[t]          OPEN<L> = open[t-L] / close[t]      (HIGH, LOW, VWAP alike)
    VOLUME<L> = volume[t-L] / (volume[t] + 1e-12)
    LABEL0 = float32(float32(close[t+2] / close[t+1]) - 1)

All arithmetic is float32 on float32 inputs, as Qlib's expression engine does on its float32 bin data. Lags and
the label read the stock's whole series regardless of membership (membership only decides which rows exist), so
lags may reach before the first segment day and the label two days past the last. Positions outside the
calendar or the stored series are NaN. A source without vwap gives an all-NaN VWAP block.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from alphatune.datasets.panel import Panel
from alphatune.datasets.prepared import WINDOW

BLOCKS = ("close", "open", "high", "low", "vwap", "volume")
VOLUME_EPS = np.float32(1e-12)
CHUNK_ROWS = 16384


class FeatureBuilder:
    """Holds NaN-padded stock-major copies of the panel's fields so any set of rows can be built quickly.

    Memory: one float32 ``[S, C + 61]`` copy per field (about 9 MB per field for 750 stocks × 3,000 days).
    """

    def __init__(self, panel: Panel) -> None:
        self.calendar_size = panel.calendar.size
        stocks = panel.instruments.size
        self.padded: dict[str, np.ndarray | None] = {}
        for name in BLOCKS:
            source = panel.fields.get(name)
            if source is None:
                self.padded[name] = None
                continue
            padded = np.full((stocks, WINDOW - 1 + self.calendar_size + 2), np.nan, dtype=np.float32)
            padded[:, WINDOW - 1:WINDOW - 1 + self.calendar_size] = source
            self.padded[name] = padded
        # windows[name][s, t] is field[s, t-59 .. t] (oldest first), a view without copying.
        self.windows = {name: None if arr is None else sliding_window_view(arr, WINDOW, axis=1)
                        for name, arr in self.padded.items()}

    def label(self, days: np.ndarray, stocks: np.ndarray) -> np.ndarray:
        """float32 ``[rows]``: close[t+2] / close[t+1] − 1, NaN when either day has no bar or is past the data."""
        close = self.padded["close"]
        next_close = close[stocks, days + WINDOW]          # calendar day t+1 in padded coordinates
        after_next = close[stocks, days + WINDOW + 1]      # t+2
        return np.subtract(np.divide(after_next, next_close), np.float32(1), dtype=np.float32)

    def features_into(self, out: np.ndarray, days: np.ndarray, stocks: np.ndarray) -> None:
        """Write the 360 raw features of rows (calendar position ``days[i]``, stock ``stocks[i]``) into ``out``.

        ``out`` is a preallocated float32 ``[rows, 360]`` array; work goes in chunks of rows so temporaries stay
        small. A row whose close (or volume) is NaN gets NaN in every price (volume) column.
        """
        for begin in range(0, days.size, CHUNK_ROWS):
            end = min(begin + CHUNK_ROWS, days.size)
            d, s = days[begin:end], stocks[begin:end]
            target = out[begin:end]
            close_today = self.padded["close"][s, d + WINDOW - 1][:, None]
            volume_today = np.add(self.padded["volume"][s, d + WINDOW - 1], VOLUME_EPS, dtype=np.float32)[:, None]
            for block, name in enumerate(BLOCKS):
                columns = target[:, block * WINDOW:(block + 1) * WINDOW]
                window = self.windows[name]
                if window is None:
                    columns[:] = np.nan
                    continue
                np.divide(window[s, d], volume_today if name == "volume" else close_today, out=columns)
