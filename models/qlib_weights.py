"""Load weights saved from Qlib's networks (or from this project) into our networks.

Our networks keep Qlib's parameter names for every parameter Qlib's forward uses, so loading is: read the file
safely, drop the parameters Qlib registers but never uses, rename the few names the wart-free version changes,
then load strictly. Anything else (a missing key, an unexpected key, a shape that differs) is refused with an
error naming the key.

Per model, from the reference (``qlib-models.md`` 3.10):

* Transformer, Localformer: ``encoder_layer.*`` is an unused extra copy of the encoder layer: dropped.
* TCN: Qlib's old ``weight_norm`` stores ``weight_g``/``weight_v``; ours (``parametrizations.weight_norm``, dim 0)
  stores the same tensors as ``parametrizations.weight.original0``/``original1``. Each block's convs are also
  registered a second time under ``net.0`` (≡ ``conv1``) and ``net.4`` (≡ ``conv2``): these aliases are dropped
  after checking that they hold the same values as the convs.
* HIST: ``fc_es_middle``, ``fc_is_middle``, ``fc_indi_fore``, ``fc_out_es``, ``fc_out_is``, ``fc_out_indi`` are unused.
* IGMTF: ``fc_output`` is unused.
* LSTM, GRU, GATs: names are identical.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Union

import torch

from alphatune.models.registry import REGISTRY
from alphatune.storage import load_tensors

StateDict = dict[str, torch.Tensor]
StateSource = Union[str, os.PathLike, Mapping[str, Any]]

# Modules Qlib registers but whose parameters its forward never reads, by model: ``<prefix>.*`` keys are dropped.
UNUSED_MODULES: dict[str, tuple[str, ...]] = {
    "lstm": (),
    "gru": (),
    "transformer": ("encoder_layer",),
    "localformer": ("encoder_layer",),
    "tcn": (),
    "gats": (),
    "hist": ("fc_es_middle", "fc_is_middle", "fc_indi_fore", "fc_out_es", "fc_out_is", "fc_out_indi"),
    "igmtf": ("fc_output",),
}

# Qlib's name → ours, as (regex, replacement) applied to every key, by model.
RENAMES: dict[str, tuple[tuple[str, str], ...]] = {
    "lstm": (),
    "gru": (),
    "transformer": (),
    "localformer": (),
    "tcn": ((r"^(tcn\.network\.\d+\.conv[12])\.weight_g$", r"\1.parametrizations.weight.original0"),
            (r"^(tcn\.network\.\d+\.conv[12])\.weight_v$", r"\1.parametrizations.weight.original1")),
    "gats": (),
    "hist": (),
    "igmtf": (),
}

# Keys registered twice by Qlib (alias → the key it duplicates), by model: the alias is dropped once checked equal.
ALIASES: dict[str, tuple[tuple[str, str], ...]] = {
    "tcn": ((r"^(tcn\.network\.\d+)\.net\.0\.(.+)$", r"\1.conv1.\2"),
            (r"^(tcn\.network\.\d+)\.net\.4\.(.+)$", r"\1.conv2.\2")),
}

_CHECKPOINT_KEYS = {"model", "hyperparameters", "state_dict"}


def read_state_dict(source: StateSource) -> StateDict:
    """The tensors of a state_dict, on CPU, from a mapping or a file.

    ``source`` is a state_dict (any mapping of name → tensor), a checkpoint of ours (a mapping with ``model``,
    ``hyperparameters`` and ``state_dict``), or a path or URI (``alphatune.storage``) to either saved with
    ``torch.save`` (Qlib's ``.pkl``
    checkpoints are such files, often saved on ``cuda:0``). Files are read with ``weights_only=True`` (no
    arbitrary code runs) and mapped to CPU. Raises ``FileNotFoundError`` for a missing path and ``ValueError``
    for a file that is not a plain state_dict (e.g. a pickled Qlib model object) or a non-tensor entry.
    """
    where = "state_dict"
    if isinstance(source, (str, os.PathLike)):
        where = str(source)
        try:
            loaded = load_tensors(source)
        except FileNotFoundError:
            raise FileNotFoundError(f"no weights file at {where}") from None
        except Exception as error:  # torch.load raises many kinds for a bad file; all mean "not loadable"
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(f"{where}: not a torch state_dict that loads with weights_only=True ({first_line}); "
                             f"a pickled Qlib model must be re-saved as torch.save(model.<network>.state_dict(), path)"
                             ) from error
    else:
        loaded = source
    if isinstance(loaded, Mapping) and _CHECKPOINT_KEYS <= set(loaded):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{where}: expected a state_dict (name → tensor), got {type(loaded).__name__}")
    state: StateDict = {}
    for key, value in loaded.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ValueError(f"{where}: entry {key!r} is a {type(value).__name__}, not a tensor")
        state[key] = value.detach().cpu()
    return state


def model_name(net: torch.nn.Module) -> str:
    """The registry name of ``net``'s class (``ValueError`` if the class is not a registered network)."""
    cls = type(net)
    for name, spec in REGISTRY.items():
        if spec.network == f"{cls.__module__}:{cls.__qualname__}":
            return name
    raise ValueError(f"{cls.__module__}.{cls.__qualname__} is not a registered network; "
                     f"known: {', '.join(spec.network for spec in REGISTRY.values())}")


def to_our_names(name: str, qlib_state: Mapping[str, torch.Tensor], ours: set[str]) -> StateDict:
    """Map a Qlib state_dict of model ``name`` onto our names: drop unused modules and aliases, rename.

    Keys already in our naming pass through unchanged, so our own state_dicts map onto themselves. A dropped
    unused module is dropped only when ``ours`` (our network's keys) does not hold it. An alias whose values
    differ from the tensor it duplicates raises ``ValueError``.
    """
    unused = UNUSED_MODULES[name]
    aliases = [(re.compile(pattern), target) for pattern, target in ALIASES.get(name, ())]
    renames = [(re.compile(pattern), target) for pattern, target in RENAMES[name]]
    mapped: StateDict = {}
    for key, tensor in qlib_state.items():
        if key not in ours and key.split(".", 1)[0] in unused:
            continue
        alias = next((pattern.sub(target, key) for pattern, target in aliases if pattern.match(key)), None)
        if alias is not None and key not in ours:
            original = qlib_state.get(alias)
            if original is None:
                raise ValueError(f"{name}: {key!r} is an alias of {alias!r}, which is missing")
            if original.shape != tensor.shape or not torch.equal(original, tensor):
                raise ValueError(f"{name}: {key!r} should equal {alias!r} (Qlib registers the conv twice) "
                                 f"but differs: {tuple(tensor.shape)} vs {tuple(original.shape)}")
            continue
        for pattern, target in renames:
            key = pattern.sub(target, key)
        if key in mapped:
            raise ValueError(f"{name}: two entries map to {key!r}")
        mapped[key] = tensor
    return mapped


def load_qlib_weights(net: torch.nn.Module, source: StateSource) -> torch.nn.Module:
    """Copy weights saved from Qlib's network for ``net``'s model (or from ours) into ``net``, in place.

    ``source`` is a state_dict, a checkpoint of ours or a path (see ``read_state_dict``); tensors are read on
    CPU and copied onto ``net``'s device and dtype. Raises ``ValueError`` naming every missing key, unexpected
    key and shape mismatch (with both shapes) after mapping; ``net`` is left unchanged then. Returns ``net``.
    """
    name = model_name(net)
    ours = net.state_dict()
    mapped = to_our_names(name, read_state_dict(source), set(ours))
    problems = [f"missing {key!r} {tuple(tensor.shape)}" for key, tensor in ours.items() if key not in mapped]
    problems += [f"unexpected {key!r} {tuple(tensor.shape)}" for key, tensor in mapped.items() if key not in ours]
    problems += [f"{key!r} has shape {tuple(mapped[key].shape)}, the network expects {tuple(tensor.shape)}"
                 for key, tensor in ours.items() if key in mapped and mapped[key].shape != tensor.shape]
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise ValueError(f"{name}: weights do not fit the network: {shown}")
    net.load_state_dict(mapped, strict=True)
    return net
