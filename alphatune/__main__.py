"""``python -m alphatune ...``: the ``alphatune`` command."""

import sys

from alphatune.cli import main

if __name__ == "__main__":
    sys.exit(main())
