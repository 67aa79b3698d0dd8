"""The space files: shipped ones (``spaces/<model>.yaml``, one per model) and a user's YAML files."""

from __future__ import annotations

from pathlib import Path

from alphatune.spaces.parser import SpaceError, loads
from alphatune.spaces.space import Space

SPACES_DIR = Path(__file__).resolve().parent


def available() -> list[str]:
    """The models with a shipped space file."""
    return sorted(path.stem for path in SPACES_DIR.glob("*.yaml"))


def path_of(name_or_path: str | Path) -> Path:
    """The file behind ``name_or_path``: a shipped model name (``lstm``) or a path to a YAML file."""
    text = str(name_or_path)
    shipped = SPACES_DIR / f"{text.lower()}.yaml"
    if "/" not in text and not text.endswith((".yaml", ".yml")) and shipped.is_file():
        return shipped
    path = Path(text).expanduser()
    if not path.is_file():
        raise SpaceError(f"{text}: no such space file (shipped spaces: {', '.join(available())})")
    return path


def load(name_or_path: str | Path, model: str | None = None) -> Space:
    """Read and validate a space: a shipped model name or a YAML path.

    ``model``, when given, must match the file's ``model`` (a user file passed for ``--model lstm`` must be an
    LSTM space). Raises ``SpaceError`` (``file:line: what is wrong``) on any problem.
    """
    path = path_of(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpaceError(f"{path}: cannot read space file: {exc}") from None
    return loads(text, source=str(path), model=model)


def check_file(name_or_path: str | Path, model: str | None = None) -> None:
    """A space file's YAML and shape, without loading the models (so without torch): it parses, it is a mapping
    with ``model`` (``model``'s, when given) and ``params``. ``SpaceError`` (``file:line: what is wrong``) otherwise;
    ``load`` checks the values."""
    import yaml
    path = path_of(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SpaceError(f"{path}: cannot read space file: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise SpaceError(f"{where}: invalid YAML: {getattr(exc, 'problem', None) or 'unreadable'}") from None
    if not isinstance(data, dict) or "params" not in data or "model" not in data:
        missing = [key for key in ("model", "params") if not isinstance(data, dict) or key not in data]
        raise SpaceError(f"{path}: a space file needs {' and '.join(missing)} (the file is empty or damaged?)")
    if model is not None and str(data["model"]).lower() != model:
        raise SpaceError(f"{path}: a space for {data['model']!r}, given for --model {model}")
