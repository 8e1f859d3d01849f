"""Typed run configuration, with presets that reproduce the reference hyper-parameters.

Presets are YAML files in ``hardymer/configs/<method>/``: ``default.yaml`` holds the method's
reference values (IEMOCAP), and ``<family>.yaml`` (``mosi``, ``mosei``, …) overrides them for a
data set family. They are merged by OmegaConf into the dataclasses below, so a wrong type or
an unknown key fails at load time with the key's name. Command-line ``--set key=value``
overrides merge last.
"""
from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, fields
from importlib import resources
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..models import get_method_class
from ..training.config import PROTOCOLS, TrainConfig


@dataclass
class RunConfig:
    """Everything needed to rebuild a run: method, its hyper-parameters, training settings."""

    method: str
    model: dict[str, Any]
    train: TrainConfig

    def to_dict(self) -> dict:
        return {"method": self.method, "model": dict(self.model), "train": asdict(self.train)}

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        return cls(method=d["method"], model=upgrade_model(d["method"], d["model"]),
                   train=TrainConfig(**upgrade_train(d["train"])))


def upgrade_model(method: str, model: dict) -> dict:
    """A stored ``model`` section without fields the method has retired (their old value kept
    the behaviour every run has now); a run that set one otherwise cannot be rebuilt."""
    retired = get_method_class(method).retired_fields
    out = {}
    for k, v in model.items():
        if k in retired:
            if v != retired[k]:
                raise ValueError(f"this run was trained with model.{k}={v!r}, an option "
                                 f"hardymer no longer has (see docs); train it again into a "
                                 "new --out")
            continue
        out[k] = v
    return out


def upgrade_train(train: dict) -> dict:
    """A stored ``train`` section with the behaviour it was trained with: runs written before
    ``standardize`` existed read raw features, whatever the default is now."""
    return {"standardize": "false", **train}


def preset_files(method: str, family: str) -> list[str]:
    """Names of the preset files that apply (default first)."""
    folder = resources.files("hardymer") / "configs" / method
    names = ["default.yaml", f"{family}.yaml"]
    return [str(folder / n) for n in names if (folder / n).is_file()]


SECTIONS = ("model", "train", "budget")


def load_run_config(method: str, family: str = "iemocap", overrides: list[str] | None = None,
                    config_file: str | None = None) -> RunConfig:
    """Resolve a method's preset for a data-set family, then a user file, then overrides.

    Every value is checked before anything runs: an unknown section or key is an error that
    names the nearest valid one, and each value is checked for its range or choices
    (:meth:`TrainConfig.check`, the method's ``check_config``). ``budget.scale=F`` (file or
    override) multiplies every stage's epochs, the method's hidden ones included
    (``budget_fields``: HARDY-MER's teacher and fine-tuning), after all other settings;
    a stage keeps at least one epoch.

    Parameters
    ----------
    method : registered method name
    family : data-set family (``iemocap``, ``mosi``, ``mosei``, ``generic``)
    overrides : list of ``"section.key=value"`` strings, e.g. ``["train.epochs=[5,5]"]``
    config_file : optional YAML with ``model:`` / ``train:`` / ``budget:`` sections
    """
    try:
        cls = get_method_class(method)
    except KeyError as err:
        raise ValueError(err.args[0]) from None
    # Without a preset, every stage gets TrainConfig's 100 epochs (the papers' usual budget).
    schema = OmegaConf.create({"model": OmegaConf.structured(cls.Config),
                               "train": OmegaConf.structured(TrainConfig(
                                   epochs=[100] * len(cls.stage_names))),
                               "budget": OmegaConf.structured(Budget())})
    layers = [_sections(OmegaConf.load(p)) for p in preset_files(method, family)]
    if config_file:
        try:
            user = OmegaConf.load(config_file)
        except (OSError, OmegaConfBaseException, ValueError) as err:
            raise ValueError(f"--config {config_file}: cannot read as YAML: {err}") from None
        layers.append(_checked(user, schema, f"--config {config_file}"))
    if overrides:
        bare = [o for o in overrides if "=" not in o]
        if bare:
            raise ValueError(f"--set {bare[0]!r}: expected section.key=value, e.g. "
                             "train.epochs=[10,10]")
        try:
            dotlist = OmegaConf.from_dotlist(list(overrides))
        except OmegaConfBaseException as err:
            raise ValueError(f"--set: {str(err).splitlines()[0]}") from None
        layers.append(_checked(dotlist, schema, "--set"))
    layers = [_bools_as_text(layer, schema) for layer in layers]
    n_presets = len(preset_files(method, family))
    try:
        merged = OmegaConf.merge(schema, *layers)
        groups = {k: v for k, v in cls.flag_presets.items() if merged.model.get(k) is True}
        if groups:  # flag groups go over the presets and under the user's layers
            layers.insert(n_presets, OmegaConf.create(
                {"model": {k: v for g in groups.values() for k, v in g.items()}}))
            merged = OmegaConf.merge(schema, *layers)
        model = OmegaConf.to_object(merged.model)
        train = OmegaConf.to_object(merged.train)
        budget = OmegaConf.to_object(merged.budget)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        msg = str(getattr(err, "msg", None) or err).splitlines()[0]
        raise ValueError(f"{key}: {msg}" if key else
                         f"invalid configuration for method {method!r}: {msg}") from None
    if train.protocol not in PROTOCOLS:
        raise ValueError(f"train.protocol={train.protocol!r}; expected one of "
                         f"{', '.join(PROTOCOLS)}")
    train.protocol = PROTOCOLS[train.protocol]
    n_stages = len(cls.stage_names)
    if len(train.epochs) != n_stages:
        raise ValueError(f"train.epochs has {len(train.epochs)} entries; method {method!r} has "
                         f"{n_stages} stage(s) {cls.stage_names}")
    if not budget.scale > 0:
        raise ValueError(f"budget.scale={budget.scale!r}; expected a factor > 0")
    if budget.scale != 1:
        train.epochs = _scaled(train.epochs, budget.scale)
        for name in cls.budget_fields:
            setattr(model, name, _scaled(getattr(model, name), budget.scale))
    train.check()
    cls.check_config(model)
    return RunConfig(method=method, model={f.name: getattr(model, f.name) for f in fields(model)},
                     train=train)


@dataclass
class Budget:
    """``budget.scale``: one knob for every stage's length (a smoke test is a smoke test)."""

    scale: float = 1.0


def _scaled(epochs, scale: float):
    one = lambda e: e if e == 0 else max(1, int(e * scale + 0.5))  # noqa: E731  (half up)
    return [one(e) for e in epochs] if isinstance(epochs, list) else one(epochs)


def _checked(layer, schema, where: str):
    """A user layer whose every section and key exists in the schema, or a ValueError naming
    the nearest valid spelling ("did you mean train.epochs?")."""
    valid = {f"{s}.{k}" for s in SECTIONS for k in schema[s]}
    for section in layer:
        if section not in SECTIONS:
            full = [v for v in valid if v.split(".", 1)[1] == section]
            hint = full[0] if full else _nearest(str(section), list(SECTIONS) + sorted(valid))
            raise ValueError(f"{where}: unknown section {section!r}"
                             + (f"; did you mean {hint}?" if hint else "")
                             + f" (sections: {', '.join(SECTIONS)}; keys are section.key, "
                             "e.g. train.epochs)")
        if not OmegaConf.is_dict(layer[section]):
            raise ValueError(f"{where}: {section!r} must be a section of keys (e.g. "
                             f"{section}.{next(iter(schema[section]))}=...), got "
                             f"{layer[section]!r}")
        for key in layer[section]:
            if f"{section}.{key}" not in valid:
                hint = _nearest(f"{section}.{key}", sorted(valid))
                raise ValueError(f"{where}: unknown key {section}.{key}"
                                 + (f"; did you mean {hint}?" if hint else ""))
    return layer


def _bools_as_text(layer, schema):
    """A layer whose booleans on str fields are "true"/"false": YAML reads ``rec_target: true``
    as a boolean, which the str field would otherwise keep as "True"."""
    for section in layer:
        for key in layer[section]:
            if (isinstance(layer[section][key], bool) and key in schema[section]
                    and OmegaConf.get_type(schema[section], key) is str):
                layer[section][key] = str(layer[section][key]).lower()
    return layer


def _nearest(word: str, choices: list[str]) -> str | None:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return close[0] if close else None


def _sections(cfg):
    """Keep only the sections we know (preset files carry comments and a ``paper`` note)."""
    return OmegaConf.masked_copy(cfg, [k for k in SECTIONS if k in cfg])
