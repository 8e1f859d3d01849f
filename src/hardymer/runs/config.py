"""Typed run configuration, with presets that reproduce the reference hyper-parameters.

Presets are YAML files in ``hardymer/configs/<method>/``: ``default.yaml`` holds the method's
reference values (IEMOCAP), and ``<family>.yaml`` (``mosi``, ``mosei``, …) overrides them for a
data set family. They are merged by OmegaConf into the dataclasses below, so a wrong type or
an unknown key fails at load time with the key's name. Command-line ``--set key=value``
overrides merge last.
"""
from __future__ import annotations

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
        return cls(method=d["method"], model=dict(d["model"]),
                   train=TrainConfig(**upgrade_train(d["train"])))


def upgrade_train(train: dict) -> dict:
    """A stored ``train`` section with the behaviour it was trained with: runs written before
    ``standardize`` existed read raw features, whatever the default is now."""
    return {"standardize": "false", **train}


def preset_files(method: str, family: str) -> list[str]:
    """Names of the preset files that apply (default first)."""
    folder = resources.files("hardymer") / "configs" / method
    names = ["default.yaml", f"{family}.yaml"]
    return [str(folder / n) for n in names if (folder / n).is_file()]


def load_run_config(method: str, family: str = "iemocap", overrides: list[str] | None = None,
                    config_file: str | None = None) -> RunConfig:
    """Resolve a method's preset for a data-set family, then a user file, then overrides.

    Parameters
    ----------
    method : registered method name
    family : data-set family (``iemocap``, ``mosi``, ``mosei``, ``generic``)
    overrides : list of ``"section.key=value"`` strings, e.g. ``["train.epochs=[5,5]"]``
    config_file : optional YAML with ``model:`` / ``train:`` sections
    """
    cls = get_method_class(method)
    # Without a preset, every stage gets TrainConfig's 100 epochs (the papers' usual budget).
    schema = OmegaConf.create({"model": OmegaConf.structured(cls.Config),
                               "train": OmegaConf.structured(TrainConfig(
                                   epochs=[100] * len(cls.stage_names)))})
    layers = [OmegaConf.load(p) for p in preset_files(method, family)]
    if config_file:
        layers.append(OmegaConf.load(config_file))
    if overrides:
        layers.append(OmegaConf.from_dotlist(list(overrides)))
    try:
        merged = OmegaConf.merge(schema, *[_sections(x) for x in layers])
        model = OmegaConf.to_object(merged.model)
        train = OmegaConf.to_object(merged.train)
    except OmegaConfBaseException as err:
        raise ValueError(f"invalid configuration for method {method!r}: {err}") from err
    if train.protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {train.protocol!r}; expected one of "
                         f"{', '.join(PROTOCOLS)}")
    train.protocol = PROTOCOLS[train.protocol]
    n_stages = len(cls.stage_names)
    if len(train.epochs) != n_stages:
        raise ValueError(f"train.epochs has {len(train.epochs)} entries; method {method!r} has "
                         f"{n_stages} stage(s) {cls.stage_names}")
    return RunConfig(method=method, model={f.name: getattr(model, f.name) for f in fields(model)},
                     train=train)


def _sections(cfg):
    """Keep only the sections we know (preset files carry comments and a ``paper`` note)."""
    return OmegaConf.masked_copy(cfg, [k for k in ("model", "train") if k in cfg])
