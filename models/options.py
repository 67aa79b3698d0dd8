"""How a fit runs besides its hyperparameters, as a command line asks for it: declared once, for ``alphatune
search run`` (its trials and bases) and ``alphatune evaluate`` (its retraining) alike.

``None`` leaves a choice to whoever runs the fit: a search, the trainer's own default (amp off; graphs and TF32 on
for CUDA); an evaluation, what the search's trials ran with (best.yaml ``training``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alphatune.arguments import option

# The words of --pretrained besides a file: train the base first, or start from random weights.
PRETRAIN, NONE = "pretrain", "none"


@dataclass
class FitOptions:
    """The trainer's speed options and where GATs, HIST and IGMTF start."""

    GROUP = "how models train"

    amp: bool | None = option(None, "mixed precision (bfloat16 autocast; on a CPU only with bfloat16 kernels, "
                                    "else float32, said once)", action="both", show="off")
    graphs: bool | None = option(None, "on CUDA, capture each training step in a CUDA graph", action="both",
                                 show="on for CUDA")
    tf32: bool | None = option(None, "on CUDA, TensorFloat-32 for float32 matmuls and convolutions",
                               action="both", show="on for CUDA")
    pretrained: str | None = option(None, "where GATs, HIST and IGMTF start: 'pretrain' (train the LSTM/GRU base "
                                          "first, registry defaults), 'none' (random weights) or a base file (our "
                                          "checkpoint or Qlib's .pkl); the other models ignore it",
                                    metavar="{pretrain,none,PATH}", show="pretrain")

    @property
    def uses_base_file(self) -> bool:
        """Whether ``pretrained`` names a base file (not ``pretrain``/``none``/unset)."""
        return self.pretrained not in (None, PRETRAIN, NONE)

    def speed(self, device: str) -> dict[str, Any]:
        """The trainer's ``amp``, ``graphs`` and ``tf32`` on ``device`` (``models.TrainConfig``), the trainer's own
        defaults where unset: graphs and TF32 act on CUDA only."""
        cuda = str(device).startswith("cuda")
        return {"amp": bool(self.amp), "graphs": (self.graphs is not False) if cuda else False,
                "tf32": (self.tf32 is not False) if cuda else None}
