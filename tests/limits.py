"""Time limits in tests guard against hangs, never against slowness: CI machines are shared and may be loaded many
times over their cores, so a limit is generous (``HANG_SECONDS``, or ``$ALPHATUNE_TEST_HANG_SECONDS``), and a test
that hits one says what was still running (``conftest.py`` adds the command, its output so far and the processes
left to the failure)."""

from __future__ import annotations

import os

HANG_SECONDS = float(os.environ.get("ALPHATUNE_TEST_HANG_SECONDS") or 3600)
