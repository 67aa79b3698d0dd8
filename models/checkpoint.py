"""Read back a checkpoint written by ``Trainer.save``: ``{"model", "hyperparameters", "state_dict"}``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[str, dict[str, Any], torch.nn.Module]:
    """``(name, hyperparameters, net)`` from a checkpoint of ours, the net rebuilt and loaded strictly on ``device``.

    The file is read with ``torch.load(weights_only=True)`` onto CPU whatever device it was saved from, so no
    arbitrary code runs. A file that is not such a checkpoint (e.g. a bare Qlib state_dict: use
    ``models.load_qlib_weights``), an unknown model or a state_dict that does not fit the rebuilt network raises
    ``ValueError`` naming the file.
    """
    from alphatune.models import from_hyperparameters

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
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
