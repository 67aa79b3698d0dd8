"""Search spaces: one YAML file per model, validated in full before a search starts.

A space file looks like::

    model: transformer
    params:                       # what the search varies
      lr: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
      num_layers: {type: int, low: 1, high: 4}
      d_model: {type: categorical, choices: [32, 48, 64]}
      nhead:                      # conditional: one distribution per value of a categorical parent
        given: d_model
        cases:
          32: {type: categorical, choices: [1, 2, 4]}
          48: {type: categorical, choices: [1, 2, 3, 6]}
          64: {type: categorical, choices: [1, 2, 4, 8]}
    fixed: {n_epochs: 100, early_stop: 5}   # held constant (Qlib's names)
    default: {lr: 1.0e-4, ...}    # the first point evaluated; missing keys come from Qlib's Alpha360 config

``metric`` (which validation metric picks a trial's epoch) is not part of a space: the search's ``--metric``
decides it for every trial. ``load`` refuses a malformed file with ``SpaceError`` naming the file and the line at
fault (``spaces.parser``). Modules: ``distributions`` (one searched hyperparameter), ``space`` (``Space``),
``parser`` (YAML or plain data → ``Space``, validated against the model's declarations), ``files`` (shipped and
user space files). This ``__init__`` only re-exports.
"""

from __future__ import annotations

if __name__ != "alphatune.spaces":  # a checkout's folder imported as a bare `spaces`: not ours to be
    from alphatune._folders import hand_over
    hand_over(__name__, __file__)

from alphatune.spaces.distributions import KINDS, Conditional, Distribution, Param, Scalar
from alphatune.spaces.files import SPACES_DIR, available, check_file, load, path_of
from alphatune.spaces.parser import DECIDED_BY_THE_SEARCH, SpaceError, load_dict, loads
from alphatune.spaces.space import Space

__all__ = ["DECIDED_BY_THE_SEARCH", "KINDS", "SPACES_DIR", "Conditional", "Distribution", "Param", "Scalar", "Space",
           "SpaceError", "available", "check_file", "load", "load_dict", "loads", "path_of"]
