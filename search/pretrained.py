"""A search's pretrained LSTM/GRU bases (GATs, HIST and IGMTF start from one, as Qlib's published configs do).

What a base is, how one is trained (``models.bases.pretrain_base``), read, loaded into a day model and chosen for
a trial lives in ``models.bases``; this module decides which bases a search needs, makes them once per search
and keeps them in its run directories.

``--pretrained`` takes three forms:

* ``pretrain`` (the default): before the trials start, the driver trains each base the model's space can ask
  for (``base_model``: its choices when searched, else its value) once per search, on the search's dataset,
  with the LSTM/GRU registry defaults (Qlib's Alpha360 LSTM/GRU config: d_feat 6, hidden_size 64, 2 layers)
  and ``n_epochs`` capped at ``--max-epochs``. It is saved in the run directory as ``base_<lstm|gru>.pt`` (our
  checkpoint) and ``base_<lstm|gru>.pkl`` (a plain state_dict with Qlib's ``LSTMModel``/``GRUModel`` names,
  for ``model_path`` in ``best_qlib.yaml``).
* a path: that file (our checkpoint, or a Qlib ``.pkl`` state_dict) is the base. It must exist and load as an
  LSTM/GRU state_dict before anything starts; it is copied into the run directory (every node reads it there),
  with a plain-state_dict copy beside it as above.
* ``none``: every trial starts from random weights.

Shape rule: one base serves every trial, so a trial whose ``base_model``, ``d_feat``, ``hidden_size`` or
``num_layers`` differs from the base's starts from random weights and records
``none (shape mismatch: ...)`` as its ``pretrained`` result instead of the base's path (training a base per
trial shape would cost as much as the trials). Qlib itself can only load the default-size base
(``LSTMModel()`` with 6/64/2), so the same rule keeps ``best_qlib.yaml`` loadable.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, TextIO

import torch

from alphatune import models
from alphatune.models.bases import KINDS, Base, bases_from_dicts, read_base
from alphatune.models.options import NONE, PRETRAIN
from alphatune.search.rundir import RunDir, as_run_dir, dump_yaml, read_yaml
from alphatune.storage import Location, save_tensors
from alphatune.spaces import Conditional, Space



def base_kinds(space: Space) -> list[str]:
    """The base models a search of ``space`` can ask for: ``base_model``'s choices when searched (every case of
    a conditional one), else its fixed/default value. Empty for models without a pretrained base."""
    spec = models.get_spec(space.model)
    if not spec.pretrained_base:
        return []
    param = space.params.get("base_model")
    if param is None:
        return [spec.hyperparameters(space.default).base_model]
    cases = [dist for _, dist in param.cases] if isinstance(param, Conditional) else [param]
    return [kind for kind in KINDS if any(kind in dist.choices for dist in cases)]


def _save_plain(state: dict[str, torch.Tensor], target: Path) -> None:
    """Write the ``rnn.*``/``fc_out.*`` tensors as a plain state_dict (what Qlib's ``model_path`` loads)."""
    save_tensors({key: value for key, value in state.items() if key.startswith(("rnn.", "fc_out."))}, target)


def _recorded(run_dir: RunDir, name: str) -> str:
    """Where the trials read a base file of the run: the run directory's root (a local path or a URI; the driver
    writes it into its working copy, which ``RunDir.push`` puts there)."""
    return str(run_dir.root / name)


def pretrain(kind: str, ds: Any, run_dir: RunDir, max_epochs: int, seed: int | None, device: str,
             label: str, out: TextIO, speed: dict[str, Any] | None = None) -> Base:
    """Train the ``kind`` base (``models.bases.pretrain_base``: registry defaults, ``n_epochs`` capped at
    ``max_epochs``) on ``ds``; save ``base_<kind>.pt`` and ``.pkl`` in ``run_dir``; print a line when it starts
    and when it ends."""
    name = kind.lower()
    defaults = models.get_spec(name).hyperparameters()
    out.write(f"[{label}] pretraining the {kind} base (hidden_size {defaults.hidden_size}, num_layers "
              f"{defaults.num_layers}, registry defaults) for at most {min(defaults.n_epochs, max_epochs)} epochs "
              f"on {device}\n")
    out.flush()
    began = time.perf_counter()
    trainer, fit = models.pretrain_base(kind, ds, d_feat=defaults.d_feat, hidden_size=defaults.hidden_size,
                                        num_layers=defaults.num_layers, max_epochs=max_epochs, seed=seed,
                                        device=device, **(speed or {}))
    path, qlib_path = run_dir.work / f"base_{name}.pt", run_dir.work / f"base_{name}.pkl"
    trainer.save(path)
    _save_plain(trainer.net.state_dict(), qlib_path)
    best = next((m for m in fit.history if m.epoch == fit.best_epoch), fit.history[-1])
    out.write(f"[{label}] {kind} base: {len(fit.history)} epochs, best epoch {fit.best_epoch}: valid loss "
              f"{best.valid_loss:.4f}, valid IC {best.valid_ic:.4f} ({time.perf_counter() - began:.0f} s); "
              f"saved {path.name}, {qlib_path.name}\n")
    out.flush()
    _, shape = read_base(path)
    return Base(*shape, path=_recorded(run_dir, path.name), qlib_path=_recorded(run_dir, qlib_path.name))


def copy_base(base: Base, run_dir: RunDir) -> Base:
    """The same base for another model's run directory (one base per search; each run directory whole)."""
    names = [Location.of(base.path).name, Location.of(base.qlib_path).name]
    for source, name in zip((base.path, base.qlib_path), names):
        Location.of(run_dir.work / name).write_bytes(Location.of(source).read_bytes())
    return Base(base.kind, base.d_feat, base.hidden_size, base.num_layers, _recorded(run_dir, names[0]),
                _recorded(run_dir, names[1]))


def given_base(path: str | Path, run_dir: RunDir) -> Base:
    """A base from a user's file, copied into the run directory (every node reads it there) with its plain
    state_dict beside it."""
    state, shape = read_base(path)
    name = f"base_{shape[0].lower()}"
    Location.of(run_dir.work / f"{name}.pt").write_bytes(Location.of(path).read_bytes())
    _save_plain(state, run_dir.work / f"{name}.pkl")
    return Base(*shape, path=_recorded(run_dir, f"{name}.pt"), qlib_path=_recorded(run_dir, f"{name}.pkl"))


def prepare_bases(run_dir: RunDir, space: Space, setting: str | None, ds: Any, max_epochs: int, seed: int | None,
                  device: str, trained: dict[str, Base], out: TextIO,
                  speed: dict[str, Any] | None = None) -> dict[str, Base]:
    """The bases of one model's search (kind → ``Base``), made before its trials start.

    ``setting`` is ``--pretrained`` (``None``: the default, ``pretrain``). ``trained`` holds the bases this
    search has already pretrained (filled in here), so that each kind is trained once per search."""
    kinds = base_kinds(space)
    if not kinds or setting == NONE:
        return {}
    if setting not in (None, PRETRAIN):
        base = given_base(setting, run_dir)
        if base.kind not in kinds:
            out.write(f"note: [{space.model}] the base {setting} is a {base.kind}, but the space asks for "
                      f"base_model {', '.join(kinds)}: its trials start from random weights\n")
        return {base.kind: base}
    bases = {}
    for kind in kinds:
        if kind in trained:
            bases[kind] = copy_base(trained[kind], run_dir)
        else:
            bases[kind] = trained[kind] = pretrain(kind, ds, run_dir, max_epochs, seed, device, space.model, out,
                                                   speed)
    return bases


BASES_FILE = "bases.yaml"


def write_bases(run_dir: RunDir | Location | Path, bases: dict[str, Base]) -> None:
    """Record the run's bases (``bases.yaml``) so that a resumed search and the export see the same ones."""
    dump_yaml({kind: base.to_dict() for kind, base in bases.items()}, as_run_dir(run_dir).work / BASES_FILE)


def read_bases(run_dir: RunDir | Location | Path) -> dict[str, Base]:
    """The run's bases from ``bases.yaml``; empty when the run has none (random start, or a row model)."""
    path = as_run_dir(run_dir).work / BASES_FILE
    return bases_from_dicts(read_yaml(path)) if path.is_file() else {}
