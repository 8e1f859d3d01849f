"""Supervised feature fine-tuning (HARDY-MER spec §1.1).

A small MLP per modality maps each raw utterance feature to a same-size feature and is trained
to predict the utterance label, on **the fold's training split only** (the reference trains it
once on IEMOCAP sessions 1-4 and reuses it in every fold, which leaks test labels into folds
1-4; we do not). The fine-tuned features of every utterance (train, val and test) are then
what the teacher, the feature database and the final model read.

    f_m(x) = GELU(W2 · Dropout(GELU(W1 x)))      (d_m -> d_m -> d_m)
    logits = W_head · Dropout(f_m(x))

The epoch with the best validation metric (the fold's validation part, never test) is kept.
Results are cached per fold: ``<workdir>/<m>.npy`` plus ``finetune.json``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ...data.dataset import MERDataset
from ...fileio import atomic_path, atomic_write_json, filled
from ...metrics import better, compute_metrics, default_selection_metric
from .reference import ReferenceFinetuner


@dataclass
class FinetuneConfig:
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 64         # utterances
    dropout: float = 0.3
    weight_decay: float = 1e-5
    seed: int = 152              # the reference's fine-tuning seed
    net: str = "ours"            # "reference": models.FineTuning (fc2 pre-activation feature,
                                 # CE on its softmax output), the last epoch kept
    output: str = "finetuned"    # "concat": [raw, fine-tuned] (2d), nothing the raw had is lost


class FeatureFinetuner(nn.Module):
    """(N, d) -> fine-tuned (N, d) features, and (N, C) logits for training."""

    def __init__(self, dim: int, n_outputs: int, dropout: float):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout),
                                     nn.Linear(dim, dim), nn.GELU())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, n_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self(x)
        return F.cross_entropy(out, y) if out.shape[-1] > 1 else F.mse_loss(out[:, 0], y.float())


def new_finetuner(net: str, dim: int, n_outputs: int, dropout: float) -> nn.Module:
    """Our fine-tuning network, or the reference's ``FineTuning`` (``net="reference"``)."""
    if net == "reference":
        return ReferenceFinetuner(dim, n_outputs)
    return FeatureFinetuner(dim, n_outputs, dropout)


def _split_rows(dataset: MERDataset, seqs: np.ndarray, m_i: int) -> np.ndarray:
    rows = dataset.rows_of(seqs)
    return rows[dataset.available[rows, m_i]]


def finetune_modality(dataset: MERDataset, modality: str, train_seqs: np.ndarray,
                      val_seqs: np.ndarray, cfg: FinetuneConfig, device: torch.device,
                      progress: bool = False, out: Path | None = None
                      ) -> tuple[np.ndarray, dict, FeatureFinetuner]:
    """Fine-tune one modality; returns the (N, d) fine-tuned features of every utterance, a
    report, and the selected network (which maps any new utterance the same way).

    Rows where the data lacks the modality stay zero (and stay marked unavailable). A
    memory-mapped data set's training rows are read batch by batch, not copied whole; with
    ``out`` (a ``.npy`` path) the features are written there and returned as a read-only map.
    """
    m_i = dataset.modalities.index(modality)
    x_all = dataset.features[modality]
    task = dataset.task
    tr, va = _split_rows(dataset, train_seqs, m_i), _split_rows(dataset, val_seqs, m_i)
    if len(tr) == 0:
        raise ValueError(f"modality {modality!r} has no available training utterance in this "
                         "fold: it cannot be fine-tuned (set model.finetune=false)")
    torch.manual_seed(cfg.seed + m_i)
    net = new_finetuner(cfg.net, x_all.shape[1], dataset.n_classes, cfg.dropout).to(device)
    net.output = cfg.output
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # In memory: the training rows once, on the device. Mapped: each batch's rows read from
    # the map (the same values, so the same steps).
    xt = None if isinstance(x_all, np.memmap) else \
        torch.from_numpy(np.asarray(x_all[tr], np.float32)).to(device)
    yt = torch.from_numpy(dataset.labels[tr]).to(device)
    metric = default_selection_metric(task)
    gen = torch.Generator().manual_seed(cfg.seed)
    best, best_state, best_epoch, history = None, None, 0, []
    for epoch in tqdm(range(1, cfg.epochs + 1), desc=f"fine-tune {modality}", leave=False,
                      disable=not progress):
        net.train()
        for idx in torch.randperm(len(tr), generator=gen).split(cfg.batch_size):
            on = idx.to(device)
            x = xt[on] if xt is not None else torch.from_numpy(
                np.asarray(x_all[tr[idx.numpy()]], np.float32)).to(device)
            loss = net.loss(x, yt[on])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if len(va) and cfg.net != "reference":   # the reference keeps its last epoch
            res = _evaluate(net, dataset, modality, va, device)
            history.append({"epoch": epoch, **res})
            if better(metric, res[metric], best):
                best, best_epoch = res[metric], epoch
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    if best_state is not None:
        net.load_state_dict(best_state)
    else:
        best_epoch = cfg.epochs  # no validation part: last epoch
    feats = transform(net, x_all, device, available=dataset.available[:, m_i], out=out)
    return feats, {"selected_epoch": best_epoch, "val": history[best_epoch - 1]
                   if history else {}, "n_train": int(len(tr))}, net


@torch.no_grad()
def transform(net: FeatureFinetuner, x: np.ndarray, device: torch.device,
              chunk: int = 4096, available: np.ndarray | None = None,
              out: Path | None = None) -> np.ndarray:
    """Fine-tuned features (N, d) float32 of raw features (N, d), in chunks; with the
    network's ``output == "concat"``, (N, 2d) ``[raw, fine-tuned]``. Rows where
    ``available`` (N,) is False are zero. With ``out`` (a ``.npy`` path) they are written there
    chunk by chunk and returned as a read-only memory map."""
    net.eval()
    concat = getattr(net, "output", "finetuned") == "concat"
    shape = (x.shape[0], x.shape[1] * (2 if concat else 1))

    def fill(dst):
        for a in range(0, x.shape[0], chunk):
            raw = np.array(x[a:a + chunk], np.float32)   # a writable copy (x: maybe a map)
            ft = net.features(torch.from_numpy(raw).to(device)).cpu().numpy()
            part = np.concatenate([raw, ft], 1) if concat else ft
            if available is not None:
                part[~available[a:a + chunk]] = 0.0
            dst[a:a + chunk] = part

    return filled(shape, fill, out)


@torch.no_grad()
def _evaluate(net, dataset, modality, rows, device, chunk: int = 4096) -> dict:
    net.eval()
    x = dataset.features[modality]
    out = np.concatenate([net(torch.from_numpy(np.asarray(x[rows[a:a + chunk]], np.float32))
                              .to(device)).cpu().numpy() for a in range(0, len(rows), chunk)])
    pred = out.argmax(-1) if dataset.task == "classification" else out[:, 0]
    return compute_metrics(dataset.task, dataset.labels[rows], pred)


def finetune_features(dataset: MERDataset, train_seqs: np.ndarray, val_seqs: np.ndarray,
                      cfg: FinetuneConfig, device: torch.device, workdir: Path | None = None,
                      progress: bool = False) -> dict[str, np.ndarray]:
    """Fine-tuned features of every modality, cached in ``workdir`` when given.

    Returns
    -------
    dict of str -> ndarray (n_utterances, d_m), float32 (memory-mapped when read from cache)
    """
    meta_path = workdir / "finetune.json" if workdir is not None else None
    want = {"config": asdict(cfg), "train_sequences": int(len(train_seqs)),
            "dims": dataset.dims}
    if meta_path is not None and meta_path.is_file():
        have = json.loads(meta_path.read_text())
        # fields added since a cache was written keep their default (its behaviour)
        have["config"] = {**asdict(FinetuneConfig()), **have.get("config", {})}
        if have["config"].get("crossfit", 0) == 0:   # a retired option, off in that cache
            have["config"].pop("crossfit", None)
        nets_saved = all((workdir / f"{m}.safetensors").is_file() for m in dataset.modalities)
        if {k: have.get(k) for k in want} == want and nets_saved:
            return {m: np.load(workdir / f"{m}.npy", mmap_mode="r") for m in dataset.modalities}
    out, report, nets = {}, {}, {}
    for m in dataset.modalities:   # with a workdir, written there as computed (then mapped)
        out[m], report[m], nets[m] = finetune_modality(
            dataset, m, train_seqs, val_seqs, cfg, device, progress,
            workdir / f"{m}.npy" if workdir is not None else None)
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        for m in out:
            # The encoder too: `hardymer predict` maps new utterances with it.
            state = {k: v.detach().cpu().contiguous() for k, v in nets[m].state_dict().items()}
            with atomic_path(workdir / f"{m}.safetensors") as tmp:
                save_file(state, tmp)
        atomic_write_json(meta_path, {**want, "modalities": report})  # written last: the marker
    return out


def load_finetuner(workdir: Path, modality: str, dim: int, n_outputs: int) -> nn.Module:
    """The fold's saved fine-tuning network of one modality (eval mode), for new utterances."""
    path = Path(workdir) / f"{modality}.safetensors"
    meta = Path(workdir) / "finetune.json"
    saved = json.loads(meta.read_text())["config"] if meta.is_file() else {}
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: this run was trained before fine-tuning "
                                "networks were saved; train it again into a new --out to "
                                "predict new utterances")
    net = new_finetuner(saved.get("net", "ours"), dim, n_outputs, dropout=0.0)
    net.load_state_dict(load_file(path))
    net.output = saved.get("output", "finetuned")
    return net.eval()
