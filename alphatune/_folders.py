"""A checkout's package folders imported under their bare names (``import datasets`` in the repository root).

The packages of ``alphatune`` are the folders at the repository's top level (``datasets/``, ``models/``,
``spaces/``, ``evaluation/``, ``search/``), so Python started in a checkout's root finds them as top-level
packages too, ahead of an installed package of the same name (Hugging Face's ``datasets``, ...). Imported so,
a folder does not pretend to be that package: ``hand_over`` loads the installed package of that name in its
place, or, when there is none, fails with a line that says to import ``alphatune.<name>``.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys


def hand_over(name: str, init_file: str) -> None:
    """Called by the folder ``name``'s ``__init__`` when it is imported as ``name`` rather than ``alphatune.name``:
    put the installed package ``name`` in its place in ``sys.modules`` (the import statement then returns that
    one), or raise ``ImportError`` when no other package of that name can be found on ``sys.path``."""
    checkout = os.path.dirname(os.path.dirname(os.path.realpath(init_file)))
    elsewhere = [entry for entry in sys.path if os.path.realpath(entry or os.curdir) != checkout]
    spec = importlib.machinery.PathFinder.find_spec(name, elsewhere)
    if spec is None or spec.loader is None:
        raise ImportError(f"`import {name}` found the folder {os.path.join(checkout, name)}, which is "
                          f"alphatune.{name}: import alphatune.{name} (no other package named {name!r} is installed)",
                          name=name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # what the running import statement returns, once this __init__ has finished
    spec.loader.exec_module(module)
