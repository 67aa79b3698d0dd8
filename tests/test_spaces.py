"""Search spaces: the shipped files hold Qlib's published configs; malformed files are refused at the right line."""

from __future__ import annotations

import optuna
import pytest

from alphatune import models
from alphatune import spaces

LSTM_SPACE = """\
model: lstm
params:
  hidden_size: {type: int, low: 16, high: 128, log: true}
  lr: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}
  batch_size: {type: categorical, choices: [256, 800]}
fixed:
  n_epochs: 5
"""


def test_every_model_has_a_space_whose_default_is_qlibs_published_config() -> None:
    assert spaces.available() == sorted(models.REGISTRY)
    for name in models.REGISTRY:
        space = spaces.load(name)
        spec = models.REGISTRY[name]
        assert space.model == name
        defaults = spec.defaults
        assert space.default == {key: defaults[key] for key in space.default}
        assert set(space.default) - {"seed"} == set(defaults) - {"metric", "seed"}, f"{name}: space leaves Qlib keys unset"
        assert set(space.params).isdisjoint(space.fixed)
        config = models.train_config(spec.hyperparameters(space.default))
        assert config.lr == defaults["lr"] and config.batch_mode == spec.batch_mode


def test_suggested_points_are_valid_models_and_conditionals_respect_their_parent() -> None:
    space = spaces.load("transformer")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    study.enqueue_trial(space.optuna_params(space.default))
    seen_heads = set()
    for index in range(40):
        trial = study.ask()
        point = space.suggest(trial)
        if index == 0:
            assert point == {key: space.default[key] for key in space.params}
        assert point["d_model"] % point["nhead"] == 0
        models.REGISTRY["transformer"].hyperparameters(space.hyperparameters(point))
        seen_heads.add((point["d_model"], point["nhead"]))
        study.tell(trial, 0.0)
    assert any(d_model in (48, 96) and nhead in (3, 6) for d_model, nhead in seen_heads)


def test_a_cross_rule_is_checked_on_whole_points_not_against_qlibs_other_defaults() -> None:
    space = spaces.loads("model: transformer\nparams:\n  d_model: {type: categorical, choices: [48, 96]}\n"
                         "  nhead: {type: categorical, choices: [3, 6]}\ndefault: {d_model: 48, nhead: 3}\n")
    assert space.default["d_model"] == 48 and space.default["nhead"] == 3


def test_default_may_be_omitted_and_comes_from_qlib() -> None:
    space = spaces.loads(LSTM_SPACE, model="lstm")
    assert space.default == {"hidden_size": 64, "lr": 1e-3, "batch_size": 800, "n_epochs": 5}


def test_space_round_trips_through_plain_data() -> None:
    space = spaces.load("localformer")
    again = spaces.load_dict(space.to_dict())
    assert again.params == space.params and again.default == space.default and again.fixed == space.fixed


@pytest.mark.parametrize("text, line, message", [
    ("model: lstm\nparams: {hidden_size: {type: int, low: 16, high: 8}}\n", 2, "low 16 > high 8"),
    ("model: lstm\nparams:\n  lr: {type: float, low: 0.0, high: 0.1, log: true}\n", 3, "log range needs low > 0"),
    ("model: lstm\nparams:\n  lr: {type: float, low: -1.0, high: 0.1}\n", 3, "lr=-1.0 is out of range"),
    ("model: lstm\nparams:\n  batch_size: {type: categorical, choices: []}\n", 3, "non-empty list"),
    ("model: lstm\nparams:\n  hidden_size: {type: int, low: 8, high: 64}\n  n_chans: {type: int, low: 8, high: 64}\n",
     4, "no hyperparameter 'n_chans'"),
    ("model: lsmt\nparams: {}\n", 1, "unknown model 'lsmt'"),
    ("model: lstm\nparams:\n  hidden_size: {type: int, low: 8, high: 64\n", 4, "invalid YAML"),
    ("model: lstm\nparams:\n  hidden_size: {type: int, low: 8, high: 64}\ndefault:\n  hidden_size: 128\n", 5,
     "outside its distribution"),
    ("model: lstm\nparams:\n  hidden_size: {type: int, low: 8.5, high: 64}\n", 3, "finite integer"),
    ("model: lstm\nparams:\n  hidden_size: {type: normal, low: 8, high: 64}\n", 3, "type must be one of"),
    ("model: lstm\nparams:\n  hidden_size: {type: int, low: 8, high: 64}\nfixed:\n  hidden_size: 32\n", 5,
     "both searched"),
    ("model: transformer\nparams:\n  d_model: {type: categorical, choices: [48, 64]}\n"
     "  nhead: {type: categorical, choices: [2, 3]}\n", 3, "d_model=64 must be divisible by nhead=3"),
    ("model: transformer\nparams:\n  d_model: {type: categorical, choices: [48, 64]}\n"
     "  nhead: {type: categorical, choices: [3, 4]}\ndefault: {nhead: 3}\n", 5, "the default point is invalid"),
    ("model: transformer\nparams:\n  d_model: {type: categorical, choices: [32, 48]}\n  nhead:\n    given: d_model\n"
     "    cases:\n      32: {type: categorical, choices: [2]}\n", 4, "no case for d_model=48"),
    ("model: lstm\nparams:\n  lr: {type: float, low: 1.0e-4, high: 1.0e-2}\nsamples: 3\n", 4, "unknown top-level"),
    ("- just\n- a list\n", 1, "must be a mapping"),
    ("model: lstm\nparams:\n  lr: {type: float, low: 1.0e-4, high: 1.0e-2}\nfixed:\n  metric: loss\n", 5,
     "'metric' is not part of a space: the search's --metric decides"),
    ("model: lstm\nparams:\n  metric: {type: categorical, choices: [loss, ic]}\n", 3, "'metric' is not part"),
])
def test_malformed_spaces_are_refused_with_file_and_line(text: str, line: int, message: str, tmp_path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(spaces.SpaceError) as error:
        spaces.load(path)
    assert str(error.value).startswith(f"{path}:{line}: "), str(error.value)
    assert message in str(error.value)


def test_space_for_another_model_and_missing_file_are_refused(tmp_path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(LSTM_SPACE)
    with pytest.raises(spaces.SpaceError, match="for 'lstm', not 'gru'"):
        spaces.load(path, model="gru")
    with pytest.raises(spaces.SpaceError, match="no such space file"):
        spaces.load(tmp_path / "missing.yaml")


def test_yaml_tags_that_build_objects_are_refused(tmp_path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("model: !!python/object/apply:os.system ['true']\nparams: {}\n")
    with pytest.raises(spaces.SpaceError, match=r":1: invalid YAML"):
        spaces.load(path)


def test_a_value_is_checked_by_the_models_own_declaration_optional_seed_included() -> None:
    """The spaces ask the model's hyperparameters (one rule): a fixed ``seed: null`` is what the model accepts (no
    seed), and a bad value gets the model's own words with the file's line."""
    text = ("model: lstm\nparams:\n  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"
            "fixed: {seed: null, dropout: 0.1}\n")
    space = spaces.loads(text, source="open.yaml")
    assert space.fixed["seed"] is None and space.default["seed"] is None
    with pytest.raises(spaces.SpaceError, match=r"^bad\.yaml:4: lstm: dropout=1\.5 is out of range \[0\.0, 0\.99\]$"):
        spaces.loads(text.replace("dropout: 0.1", "dropout: 1.5"), source="bad.yaml")
    with pytest.raises(spaces.SpaceError, match=r"^bad\.yaml:4: lstm: hidden_size=None must be an integer in"):
        spaces.loads(text.replace("dropout: 0.1", "hidden_size: null"), source="bad.yaml")
