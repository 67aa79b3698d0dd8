"""The LSTM/GRU base that GATs, HIST and IGMTF start from, as Qlib's published configs do (``model_path``).

* ``pretrain_base`` trains a base (the LSTM/GRU registry defaults, sized like the day model) on a dataset: the
  one place a base is trained, for ``models.fit(..., pretrained="pretrain")`` and for a search's bases.
* ``read_base`` / ``base_shape`` read a base file (our checkpoint or Qlib's ``.pkl`` state_dict) safely and tell
  its kind and shape; ``load_base`` copies a base into a day model, as Qlib's ``model_path`` does (``rnn.*``,
  and ``fc_out.*`` where the network has it).
* ``Base`` is one base file with its shape; ``choose`` picks, for a day model's hyperparameters, the base it can
  start from (one base serves every configuration of its shape: another shape starts from random weights).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from alphatune.models.epochs import FitResult
from alphatune.models.factory import seeded_network, train_config
from alphatune.models.options import NONE
from alphatune.models.qlib_weights import StateSource, read_state_dict
from alphatune.models.registry import get_spec
from alphatune.models.trainer import Trainer
from alphatune.storage import Location

KINDS = ("LSTM", "GRU")
_LAYER = re.compile(r"^rnn\.weight_ih_l(\d+)$")


@dataclass(frozen=True)
class Base:
    """One LSTM/GRU base: its shape, the file a day model loads (``path``) and its plain state_dict for Qlib."""

    kind: str  # "LSTM" | "GRU", as the day models' base_model
    d_feat: int
    hidden_size: int
    num_layers: int
    path: str
    qlib_path: str

    def mismatch(self, hyperparameters: dict[str, Any]) -> str | None:
        """Why a day model of these (full, flat) hyperparameters cannot start from this base; ``None`` if it can."""
        differences = [f"{key} {hyperparameters.get(key)} vs base {getattr(self, key)}"
                       for key in ("d_feat", "hidden_size", "num_layers")
                       if hyperparameters.get(key) != getattr(self, key)]
        return ", ".join(differences) or None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bases_from_dicts(data: dict[str, Any] | None) -> dict[str, Base]:
    """``Base`` objects back from ``{kind: Base.to_dict()}`` (as best.yaml and a run's bases file hold them);
    ``ValueError`` when an entry is not one."""
    try:
        return {kind: Base(**fields) for kind, fields in (data or {}).items()}
    except TypeError:
        raise ValueError(f"bases: expected kind → {{kind, d_feat, hidden_size, num_layers, path, qlib_path}}; got "
                         f"{data!r}") from None


def base_shape(state: dict[str, torch.Tensor], source: str) -> tuple[str, int, int, int]:
    """``(kind, d_feat, hidden_size, num_layers)`` of an LSTM/GRU state_dict (Qlib's names: ``rnn.*``).

    The kind comes from the gate rows of ``rnn.weight_ih_l0`` (4·H for an LSTM, 3·H for a GRU). ``ValueError``
    naming ``source`` when the tensors are not such a base."""
    layers = sorted(int(match.group(1)) for key in state if (match := _LAYER.match(key)))
    if not layers or "rnn.weight_hh_l0" not in state:
        raise ValueError(f"{source}: not an LSTM/GRU base (no rnn.weight_ih_l0 / rnn.weight_hh_l0; "
                         f"has {', '.join(sorted(state)[:4]) or 'nothing'})")
    hidden = int(state["rnn.weight_hh_l0"].shape[1])
    gates = int(state["rnn.weight_ih_l0"].shape[0]) // max(hidden, 1)
    kinds = {4: "LSTM", 3: "GRU"}
    if gates not in kinds or layers != list(range(len(layers))):
        raise ValueError(f"{source}: rnn.weight_ih_l0 {list(state['rnn.weight_ih_l0'].shape)} with hidden size "
                         f"{hidden} is neither an LSTM nor a GRU base")
    return kinds[gates], int(state["rnn.weight_ih_l0"].shape[1]), hidden, len(layers)


def read_base(path: str | Path) -> tuple[dict[str, torch.Tensor], tuple[str, int, int, int]]:
    """A base file's tensors (on CPU, read safely) and shape, from a local path or a URI; one-line
    ``FileNotFoundError`` / ``ValueError`` naming the file otherwise."""
    where = Location.of(path)
    if not where.is_file():
        raise FileNotFoundError(f"{where} does not exist")
    state = read_state_dict(where.uri)
    return state, base_shape(state, where.uri)


def load_base(net: torch.nn.Module, source: StateSource) -> torch.nn.Module:
    """Copy an LSTM/GRU base's ``rnn.*`` (and ``fc_out.*`` where the network has it, as Qlib) into a day model, in
    place; ``ValueError`` when the base is not of the network's ``base_model`` and shape. Returns ``net``."""
    state = read_state_dict(source)
    where = str(source) if not isinstance(source, dict) else "the base"
    own = net.state_dict()
    copied = {key: value for key, value in state.items() if key.startswith(("rnn.", "fc_out.")) and key in own}
    missing = [key for key in own if key.startswith("rnn.") and key not in copied]
    if missing:
        raise ValueError(f"pretrained base {where}: lacks {', '.join(missing)}: it must be a {net.base_model} of the "
                         f"same num_layers")
    for key, value in copied.items():
        if value.shape != own[key].shape:
            raise ValueError(f"pretrained base {where}: {key} has shape {list(value.shape)}, {type(net).__name__} "
                             f"expects {list(own[key].shape)} (base_model {net.base_model}, hidden_size "
                             f"{net.hidden_size}, d_feat {net.d_feat})")
    net.load_state_dict(copied, strict=False)
    return net


def pretrain_base(kind: str, ds: Any, *, d_feat: int = 6, hidden_size: int = 64, num_layers: int = 2,
                  max_epochs: int | None = None, seed: int | None = None, callback: Any = None,
                  **options: Any) -> tuple[Trainer, FitResult]:
    """Train the ``kind`` base (``"LSTM"``/``"GRU"``) on ``ds`` with its registry defaults at the given size,
    ``n_epochs`` capped at ``max_epochs``; ``options`` are ``TrainConfig`` run options (device, amp, ...). Returns
    ``(trainer, result)``: the trainer's network is the base."""
    spec = get_spec(kind.lower())
    defaults = spec.hyperparameters()
    n_epochs = defaults.n_epochs if max_epochs is None else min(defaults.n_epochs, max_epochs)
    hp = defaults.replace(d_feat=d_feat, hidden_size=hidden_size, num_layers=num_layers, n_epochs=n_epochs, seed=seed)
    trainer = Trainer(seeded_network(hp), train_config(hp, **options), hp)
    return trainer, trainer.fit(ds, callback)


def choose(bases: dict[str, Base], hyperparameters: dict[str, Any]) -> tuple[str | None, str]:
    """``(path to load or None, what the configuration records as its start)`` for a day model's full flat
    hyperparameters: the base's path, ``none``, or ``none (...)`` saying why not."""
    if not bases:
        return None, NONE
    kind = hyperparameters.get("base_model")
    base = bases.get(kind)
    if base is None:
        return None, f"{NONE} (no {kind} base; the base is {', '.join(bases)})"
    reason = base.mismatch(hyperparameters)
    if reason is not None:
        return None, f"{NONE} (shape mismatch: {reason})"
    return base.path, base.path
