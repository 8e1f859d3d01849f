"""Checkpoints without pickle: tensors in safetensors, everything else in a JSON sidecar.

``<name>.safetensors`` holds the model (``model.*``), the optimizer's per-parameter state
(``optim.<i>.<key>``) and the RNG states (``rng.*``); ``<name>.json`` holds counters, the
optimizer's hyper-parameters and the trainer's bookkeeping — for people and tools; the same
state is embedded in the tensor file's metadata, which loading trusts. Both are written to a
temporary file and renamed, JSON last, so a checkpoint is either complete or absent.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..fileio import atomic_path, atomic_write_json


def save_checkpoint(path_stem: Path, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None, state: dict,
                    rank_rng: list[torch.Tensor] | None = None) -> None:
    """Write ``path_stem.safetensors`` then ``path_stem.json`` (the JSON marks completeness).

    ``rank_rng``: every rank's torch RNG state of a data-parallel run (rank r's as
    ``rng.torch.rank<r>``; rank 0's is also ``rng.torch``)."""
    path_stem = Path(path_stem)
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = dict(state)
    if optimizer is not None:
        opt = optimizer.state_dict()
        for pid, st in opt["state"].items():
            for key, val in st.items():
                t = val if torch.is_tensor(val) else torch.tensor(val)
                tensors[f"optim.{pid}.{key}"] = t.detach().cpu().contiguous()
        meta["optimizer"] = {"param_groups": opt["param_groups"]}
    tensors["rng.torch"] = torch.get_rng_state()
    for r, st in enumerate(rank_rng or []):
        tensors[f"rng.torch.rank{r}"] = st
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    # The state also travels inside the tensor file: a kill between the two renames
    # cannot pair new weights with an old epoch counter (load trusts the embedded copy).
    with atomic_path(path_stem.with_suffix(".safetensors")) as tmp:
        save_file(tensors, str(tmp), metadata={"state": json.dumps(meta, default=str)})
    atomic_write_json(path_stem.with_suffix(".json"), meta)


def export_weights(src_stem: Path, dst_stem: Path) -> None:
    """A copy of a checkpoint with the model's tensors only (no optimizer state, no RNG):
    what a shared model needs; :func:`load_checkpoint` reads it like any other."""
    src_stem, dst_stem = Path(src_stem), Path(dst_stem)
    tensor_file = src_stem.with_suffix(".safetensors")
    try:
        with safe_open(str(tensor_file), "pt") as f:
            embedded = json.loads((f.metadata() or {}).get("state") or "{}")
            tensors = {k: f.get_tensor(k) for k in f.keys() if k.startswith("model.")}
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        raise CheckpointError(tensor_file, err) from None
    meta = {k: v for k, v in embedded.items() if k != "optimizer"}
    dst_stem.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst_stem.with_suffix(".safetensors")) as tmp:
        save_file(tensors, str(tmp), metadata={"state": json.dumps(meta, default=str)})
    atomic_write_json(dst_stem.with_suffix(".json"), meta)


def checkpoint_exists(path_stem: Path) -> bool:
    p = Path(path_stem)
    return p.with_suffix(".json").is_file() and p.with_suffix(".safetensors").is_file()


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read; the message names it and how to recover."""

    def __init__(self, file: Path, err: Exception):
        folder = Path(file).parent
        super().__init__(
            f"{file} is truncated or corrupt ({type(err).__name__}: {err}). To recover, delete "
            f"the folder {folder} and re-run the command that trained it (`hardymer train` or "
            "`hardymer sweep`, same arguments): that part of the run trains again from its "
            "start; everything else in the run is kept")


def checkpoint_epoch(path_stem: Path) -> int:
    """Epochs a checkpoint has trained (0 when there is none)."""
    p = Path(path_stem)
    if not checkpoint_exists(p):
        return 0
    try:
        return int(json.loads(p.with_suffix(".json").read_text())["epoch"])
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(p.with_suffix(".json"), err) from None


def load_checkpoint(path_stem: Path, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None,
                    restore_rng: bool = False, rank: int = 0) -> dict:
    """Load weights (and optimizer state, RNG) in place; returns the JSON state. ``rank``:
    restore that rank's RNG state of a data-parallel run (rank 0's without one)."""
    path_stem = Path(path_stem)
    tensor_file = path_stem.with_suffix(".safetensors")
    try:
        with safe_open(str(tensor_file), "pt") as f:
            embedded = (f.metadata() or {}).get("state")
        tensors = load_file(str(tensor_file))
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        raise CheckpointError(tensor_file, err) from None
    try:
        meta = json.loads(embedded) if embedded else \
            json.loads(path_stem.with_suffix(".json").read_text())
    except ValueError as err:
        raise CheckpointError(path_stem.with_suffix(".json"), err) from None
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(model_sd)
    if optimizer is not None and "optimizer" in meta:
        state: dict[int, dict] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, pid, key = k.split(".", 2)
                state.setdefault(int(pid), {})[key] = v
        optimizer.load_state_dict({"state": state,
                                   "param_groups": meta["optimizer"]["param_groups"]})
    if restore_rng:
        torch.set_rng_state(tensors.get(f"rng.torch.rank{rank}", tensors["rng.torch"]))
        cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    return meta
