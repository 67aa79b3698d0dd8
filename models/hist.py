"""Qlib's HIST (``qlib.contrib.model.pytorch_hist.HISTModel``): predefined-concept, hidden-concept and individual
parts over one day's stocks.

State_dict names are Qlib's for every used layer (``rnn.*``, ``fc_es``, ``fc_es_back``, ``fc_es_fore``, ``fc_is``,
``fc_is_back``, ``fc_is_fore``, ``fc_indi``, ``fc_out``); Qlib's six unused layers are not built. Unlike Qlib's,
it runs on CPU as well as GPU (Qlib asks ``torch.get_device``, which fails on CPU) and it takes the day's concept
rows as an argument instead of re-reading the concept file every epoch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from alphatune.models.days import DayBatch, base_rnn, cosine, last_hidden, masked_softmax


class HIST(nn.Module):
    """``[N, d_feat * T]`` rows and their concept rows ``[N, K]`` (0/1) → ``[N]`` scores, mixing within each day.

    ``day_offsets`` as in ``GATs``. Concepts no stock of the day belongs to are left out (Qlib drops the zero
    rows of the concept matrix); a stock with no concept gets only the bias path of the concept part. On a
    single-stock day the hidden-concept part finds no other stock and contributes its bias path only.
    """

    cross_sectional = True
    uses_concepts = True

    def __init__(self, d_feat: int = 6, hidden_size: int = 64, num_layers: int = 2, dropout: float = 0.0,
                 base_model: str = "GRU"):
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

    def forward(self, x: torch.Tensor, concepts: torch.Tensor,
                day_offsets: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        days = DayBatch(len(x), day_offsets, x.device)
        rows = days.mask                                                   # [D, W] real rows, None: one day
        hidden = days.pad(last_hidden(self.rnn, x, self.d_feat))           # [D, W, H]
        member = days.pad(concepts.to(hidden.dtype))                       # [D, W, K], zero rows in padding

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
        eye = torch.eye(days.width, dtype=torch.bool, device=x.device)
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
        out = self.fc_out(out_shared + out_hidden + out_individual)        # [D, W, 1]
        return days.unpad(out).squeeze(-1)                                 # [N]
