"""A model checkpoint: ``{"model", "hyperparameters", "state_dict"}``, written by ``save_checkpoint`` (what
``Trainer.save`` and a search trial's ``model.pt`` use) and read back by ``load_checkpoint``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from alphatune.models.config import TrainConfig
from alphatune.models.factory import from_hyperparameters
from alphatune.models.hyperparameters import Hyperparameters
from alphatune.models.qlib_weights import model_name
from alphatune.models.registry import get_spec
from alphatune.storage import load_tensors, save_tensors


def hyperparameters_of(net: torch.nn.Module, config: TrainConfig) -> Hyperparameters:
    """The typed hyperparameters of a network trained under ``config``, for a network built without them at hand:
    the network's own attributes (its constructor's values) and the config's training values. ``ValueError``
    when the network does not tell one of its values."""
    cls = get_spec(model_name(net)).hyperparameters_class()
    network = [name for name in cls.names() if cls.field_info(name)["network"]]
    missing = [name for name in network if not hasattr(net, name)]
    if missing:
        raise ValueError(f"{cls.model}: cannot tell the network's {', '.join(missing)}; create the trainer with "
                         f"models.fit(...) or Trainer(..., hyperparameters=...)")
    values: dict[str, Any] = {name: getattr(net, name) for name in network}
    values.update(lr=config.lr, n_epochs=config.n_epochs, early_stop=config.early_stop, batch_size=config.batch_size,
                  metric=config.metric, optimizer=config.optimizer, seed=config.seed)
    values[cls.DECAY] = config.weight_decay
    return cls.from_dict(values)


def save_checkpoint(path: str | Path, net: torch.nn.Module, hyperparameters: Hyperparameters) -> None:
    """Write ``{"model", "hyperparameters", "state_dict"}`` with ``torch.save`` (tensors on CPU) to ``path`` (a
    local path or a URI, atomically: ``alphatune.storage``)."""
    state = {key: value.detach().cpu() for key, value in net.state_dict().items()}
    save_tensors({"model": hyperparameters.model, "hyperparameters": hyperparameters.to_dict(), "state_dict": state},
                 path)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu"
                    ) -> tuple[str, dict[str, Any], torch.nn.Module]:
    """``(name, hyperparameters, net)`` from a checkpoint of ours, the net rebuilt and loaded strictly on ``device``.

    ``path`` is a local path or a URI. The file is read with ``torch.load(weights_only=True)`` onto CPU whatever
    device it was saved from, so no
    arbitrary code runs. A file that is not such a checkpoint (e.g. a bare Qlib state_dict: use
    ``models.load_qlib_weights``), an unknown model or a state_dict that does not fit the rebuilt network raises
    ``ValueError`` naming the file.
    """
    try:
        payload = load_tensors(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {path} does not exist") from None
    except Exception as error:  # a torn, foreign or hostile file: many exception types, one meaning
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: not a checkpoint of ours (it does not load with weights_only=True: "
                         f"{first_line})") from None
    if not isinstance(payload, dict) or not {"model", "hyperparameters", "state_dict"} <= set(payload):
        keys = sorted(payload)[:5] if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path}: not a checkpoint of ours (needs model, hyperparameters, state_dict; has {keys})")
    name, hyperparameters = payload["model"], dict(payload["hyperparameters"])
    try:
        net, _ = from_hyperparameters(name, hyperparameters)
        net.load_state_dict(payload["state_dict"])
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None
    return name, hyperparameters, net.to(device)
