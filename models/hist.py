"""Qlib's HIST (``qlib.contrib.model.pytorch_hist.HISTModel``): predefined-concept, hidden-concept and individual
parts over one day's stocks.

State_dict names are Qlib's for every used layer (``rnn.*``, ``fc_es``, ``fc_es_back``, ``fc_es_fore``, ``fc_is``,
``fc_is_back``, ``fc_is_fore``, ``fc_indi``, ``fc_out``); Qlib's six unused layers are not built. Unlike Qlib's,
it runs on CPU as well as GPU (Qlib asks ``torch.get_device``, which fails on CPU) and it takes its concept matrix
once from the dataset (``attach``) instead of re-reading the concept file every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from alphatune.models.days import DayModel, base_rnn, cosine, last_hidden, masked_softmax
from alphatune.models.hyperparameters import (Hyperparameters, base_model, d_feat, dropout, hidden_size, num_layers,
                                              param, weight_decay)


@dataclass(frozen=True)
class HISTHyperparameters(Hyperparameters):
    """Qlib's Alpha360 HIST config (examples/benchmarks/HIST/workflow_config_hist_Alpha360.yaml): early stopping on
    the IC; ``batch_size`` is not used (one day per step)."""

    model: ClassVar[str] = "hist"
    lr: float = param(1e-4, low=1e-7, high=1.0)
    metric: str = param("ic", choices=("loss", "ic"))
    d_feat: int = d_feat()
    hidden_size: int = hidden_size()
    num_layers: int = num_layers()
    dropout: float = dropout()
    base_model: str = base_model()
    weight_decay: float = weight_decay()


class HIST(DayModel):
    """Padded days ``[D, W, d_feat * T]`` and their rows' instruments → ``[D, W]`` scores, mixing within each day.

    The stock→concept matrix (``[instruments, K]``, 0/1) comes from the dataset (``attach``) or ``set_concepts``;
    each row's concepts are looked up by its instrument. Concepts no stock of the day belongs to are left out (Qlib
    drops the zero rows of the concept matrix); a stock with no concept gets only the bias path of the concept
    part. On a single-stock day the hidden-concept part finds no other stock and contributes its bias path only.
    """

    def __init__(self, d_feat: int, hidden_size: int, num_layers: int, dropout: float, base_model: str):
        super().__init__()
        self.d_feat, self.hidden_size, self.num_layers = d_feat, hidden_size, num_layers
        self.dropout, self.base_model = dropout, base_model
        self.rnn = base_rnn(base_model, d_feat, hidden_size, num_layers, dropout)
        square = ("fc_es", "fc_is", "fc_es_fore", "fc_is_fore", "fc_es_back", "fc_is_back", "fc_indi")
        for name in square:
            layer = nn.Linear(hidden_size, hidden_size)
            nn.init.xavier_uniform_(layer.weight)
            self.add_module(name, layer)
        self.fc_out = nn.Linear(hidden_size, 1)
        self.register_buffer("concepts", None, persistent=False)  # [instruments, K], from the dataset

    def attach(self, ds: Any) -> None:
        """Take ``ds.concepts`` (``ValueError`` when the dataset has none, or one of another shape)."""
        matrix = getattr(ds, "concepts", None)
        if matrix is None:
            raise ValueError("HIST needs the dataset's stock→concept matrix, and it has none (ds.concepts is None)")
        if matrix.ndim != 2 or len(matrix) != len(ds.instruments):
            raise ValueError(f"concepts has shape {tuple(matrix.shape)}; expected [{len(ds.instruments)}, K], one "
                             f"row per instrument of the dataset")
        self.set_concepts(matrix)

    def set_concepts(self, matrix: np.ndarray | torch.Tensor) -> None:
        """The stock→concept matrix ``[instruments, K]`` rows are looked up in, on the network's device."""
        device = next(self.parameters()).device
        self.concepts = torch.as_tensor(np.asarray(matrix, dtype=np.float32) if not isinstance(matrix, torch.Tensor)
                                        else matrix.float(), device=device)

    def forward_days(self, x: torch.Tensor, mask: torch.Tensor | None,
                     instruments: torch.Tensor | None) -> torch.Tensor:
        if self.concepts is None or instruments is None:
            raise RuntimeError("HIST needs its concept matrix (attach(ds) or set_concepts) and each row's instrument")
        n_days, width = x.shape[:2]
        rows = mask                                                        # [D, W] real rows, None: all real
        hidden = last_hidden(self.rnn, x.flatten(0, 1), self.d_feat).unflatten(0, (n_days, width))  # [D, W, H]
        member = self.concepts[instruments].to(hidden.dtype)               # [D, W, K]
        if rows is not None:
            member = member * rows[..., None]                              # padding belongs to no concept

        # Predefined concepts: member-weighted concept vectors, attended by each stock.
        size = member.sum(dim=1, keepdim=True)                             # [D, 1, K] stocks per concept
        weight = member / (member * size + 1)                              # [D, W, K]
        concept = weight.transpose(1, 2) @ hidden                          # [D, K, H]
        live = (concept.sum(dim=-1) != 0)[:, None, :]                      # [D, 1, K] Qlib drops zero-sum rows
        shared = self.fc_es(masked_softmax(cosine(hidden, concept), live) @ concept)  # [D, W, H]
        shared_back = self.fc_es_back(shared)
        out_shared = F.leaky_relu(self.fc_es_fore(shared))

        # Hidden concepts: each stock links to its most similar other stock of the day.
        residual = hidden - shared_back                                    # [D, W, H]
        similarity = cosine(residual, residual)                            # [D, W, W]
        self_similarity = similarity.diagonal(dim1=1, dim2=2)              # [D, W]
        eye = torch.eye(width, dtype=torch.bool, device=x.device)
        off_diagonal = similarity.masked_fill(eye, 0.0)                    # zeroed diagonal, as Qlib
        candidates = off_diagonal if rows is None else off_diagonal.masked_fill(~rows[:, None, :], float("-inf"))
        nearest = candidates.argmax(dim=-1, keepdim=True)                  # [D, W, 1]
        link = torch.zeros_like(similarity).scatter(-1, nearest, off_diagonal.gather(-1, nearest))
        if rows is not None:
            link = link * rows[:, :, None]                                 # padded stocks link to nothing
        linked = link.sum(dim=1) != 0                                      # [D, W] columns someone links to
        link = link + torch.diag_embed(linked * self_similarity)
        hidden_concept = link.transpose(1, 2) @ residual                   # [D, W, H]
        live = (hidden_concept.sum(dim=-1) != 0)[:, None, :]               # [D, 1, W]
        hidden_shared = self.fc_is(masked_softmax(cosine(residual, hidden_concept), live) @ hidden_concept)
        out_hidden = F.leaky_relu(self.fc_is_fore(hidden_shared))

        # Individual: what neither kind of concept explains.
        out_individual = F.leaky_relu(self.fc_indi(residual - self.fc_is_back(hidden_shared)))
        return self.fc_out(out_shared + out_hidden + out_individual).squeeze(-1)  # [D, W]
