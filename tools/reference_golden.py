"""Write golden fixtures by running the reference code's own modules (HARDY-MER issue #14).

    python tools/reference_golden.py --momke PATH/MoMKE --hardymer PATH/HARDY-MER \
        [--out tests/fixtures/reference]

PATH/MoMKE and PATH/HARDY-MER are local checkouts of the public ``wxxv/MoMKE`` and
``HARDY-MER/HARDY-MER`` repositories. Nothing of theirs is copied into hardymer: this script
imports only their model, loss and utility modules (``model_expert_softmoe``,
``modules/Attention_softmoe``, ``models``, ``loss``, ``utils``, ``retrieval``) with a stub
``config`` module first on ``sys.path`` — never their training scripts, never their
``config.py`` (absolute paths, and a helper that opens a socket). The few lines of glue that
live inside their training loops (the hardness normalisation and the loop over views in
``train_our.py::train_or_eval_model``, the losses of ``train_teacher.py`` and
``train_fine_tuning.py``) are restated below with the line they come from.

Each part runs in its own Python process, because both repositories name their attention
module ``modules.Attention_softmoe``.

Weights come from the recipe in ``tests/reference_fixture.py`` (keyed by the reference's
parameter names), so the tests rebuild them instead of reading megabytes. Arithmetic is
float64 (``Module.double()``); FAISS searches float32, as the reference does. Written per
fixture: ``NAME.safetensors`` (inputs, outputs, losses, gradients, post-step weight changes) and
``NAME.json`` (shapes, names, settings). Parameters of more than 4096 values store a norm and
16 seeded random projections instead of their full gradient/optimizer state (size budget).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from reference_fixture import BIG, SHAPES, recipe_state, reduce  # noqa: E402

def batch_hardness(rec_b: np.ndarray, total_mi) -> np.ndarray:
    """train_our.py lines 131-151: the per-batch hardness, flattened batch-major."""
    eps = 1e-5
    diff_rec = np.zeros_like(rec_b)
    if rec_b.max() - rec_b.min() > eps:
        diff_rec = (rec_b - rec_b.min()) / (rec_b.max() - rec_b.min() + eps)
    diff_mi = ((total_mi - total_mi.min()) / (total_mi.max() - total_mi.min())).numpy()
    return (1 / (1 + np.exp(-4.0 * (0.6 * diff_rec + 0.4 * diff_mi)))).reshape(-1)


def _stub_config(folder: Path) -> None:
    (folder / "config.py").write_text(
        "# stub: the reference config.py holds absolute paths and a socket helper\n"
        "DATA_DIR = {}\nPATH_TO_LABEL = {}\nPATH_TO_FEATURES = {}\nPATH_TO_FT_FEATURES = {}\n"
        "PATH_TO_INDEX = {}\nPATH_TO_FT_INDEX = {}\nSAVED_ROOT = MODEL_DIR = LOG_DIR = "
        "LOSS_DIR = ''\n")


class Args:
    def __init__(self, **kw):
        import torch
        self.device = torch.device("cpu")
        self.drop_rate = 0.0
        self.__dict__.update(kw)


def inputs(seed: int = 0):
    """Our layout: x (B, S, d) per modality, utt_mask (B, S); zero at padding."""
    rng = np.random.default_rng(seed)
    L = SHAPES["lengths"]
    B, S = len(L), max(L)
    umask = np.zeros((B, S))
    for b, n in enumerate(L):
        umask[b, :n] = 1
    x = {m: rng.standard_normal((B, S, SHAPES[f"{m}dim"])) * umask[..., None] for m in "atv"}
    labels = rng.integers(0, SHAPES["n_classes"], (B, S)) * umask
    return x, umask, labels.astype(np.int64)


def ref_layout(x, avail):
    """(S, B, a+t+v) masked features and (S, B, 3) mask, the reference's layout."""
    import torch
    feats = np.concatenate([x[m] * avail[..., i, None] for i, m in enumerate("atv")], -1)
    return (torch.from_numpy(feats.transpose(1, 0, 2).copy()),
            torch.from_numpy(avail.transpose(1, 0, 2).astype(np.int64).copy()))


def avail_of(cond: str, umask):
    """generate_mask: the condition's mask at every position, padding included (the models
    apply ``umask`` themselves)."""
    return np.stack([np.ones_like(umask) * (m in cond) for m in "atv"], -1)


def set_weights(model, seed):
    import torch
    shapes = {n: list(p.shape) for n, p in model.state_dict().items()}
    state = recipe_state(shapes, seed)
    model.load_state_dict({n: torch.from_numpy(v) for n, v in state.items()})
    return shapes


def save(out: Path, name: str, tensors: dict, meta: dict) -> None:
    from safetensors.numpy import save_file
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(np.asarray(v, np.float64)) for k, v in tensors.items()},
              str(out / f"{name}.safetensors"))
    (out / f"{name}.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


# --- MoMKE (wxxv/MoMKE) ----------------------------------------------------------------------
def part_momke(out: Path) -> None:
    import torch
    from model_expert_softmoe import MoMKE
    sh = SHAPES
    torch.manual_seed(0)
    model = MoMKE(Args(), sh["adim"], sh["tdim"], sh["vdim"], sh["hidden"], sh["n_classes"],
                  depth=sh["depth"], num_heads=sh["heads"], mlp_ratio=1, drop_rate=0.0,
                  attn_drop_rate=0.0).double().eval()
    shapes = set_weights(model, 1)
    x, umask, _ = inputs(0)
    um = torch.from_numpy(umask)
    t = {}
    with torch.no_grad():
        feats, mask = ref_layout(x, avail_of("atv", umask))
        hidden, o, oa, ot, ov, _ = model(feats, mask, um, first_stage=True)
        t.update({"stage1_out_a": oa, "stage1_out_t": ot, "stage1_out_v": ov})
        for cond in ("at", "v", "atv"):
            feats, mask = ref_layout(x, avail_of(cond, umask))
            hidden, o, *_ = model(feats, mask, um, first_stage=False)
            t[f"stage2_{cond}_out"], t[f"stage2_{cond}_hidden"] = o, hidden
    t.update({f"x_{m}": v for m, v in x.items()}, umask=umask)
    save(out, "momke", {k: np.asarray(v) for k, v in t.items()},
         {"weights_seed": 1, "shapes": shapes, "settings": sh, "eval": True})


# --- HARDY-MER (HARDY-MER/HARDY-MER) ---------------------------------------------------------
def part_hardymer(out: Path) -> None:
    import faiss
    import torch
    from loss import MaskedCELoss, MaskedReconLoss
    from models import EasyReconstructModel, FineTuning, OurModel
    from retrieval import integrated_features, search_and_integrate
    from utils import concatenate_and_reshape_samples, secondary_filtering, split_features

    sh = SHAPES
    A, T, V = sh["adim"], sh["tdim"], sh["vdim"]
    kw = dict(n_classes=sh["n_classes"], depth=sh["depth"], num_heads=sh["heads"], mlp_ratio=1,
              drop_rate=0.0, attn_drop_rate=0.0)    # as utils.create_model passes them
    cls_loss, rec_loss = MaskedCELoss(), MaskedReconLoss()
    x, umask, labels = inputs(0)
    um = torch.from_numpy(umask)
    lab = torch.from_numpy(labels)

    # Teacher (EasyReconstructModel): eval forwards, then train-mode losses (train_teacher.py).
    teacher = EasyReconstructModel(Args(), A, T, V, sh["hidden"], **kw).double()
    t_shapes = set_weights(teacher, 2)
    T_ = {}
    teacher.eval()
    with torch.no_grad():
        for cond, first in (("atv", True), ("a", False), ("tv", False), ("at", False)):
            feats, mask = ref_layout(x, avail_of(cond, umask))
            o = teacher(feats, mask, um, first_stage=first)
            key = "stage1" if first else f"stage2_{cond}"
            T_[f"{key}_out"] = o["out"]
            T_[f"{key}_rec"] = o["rec_feats"].permute(1, 0, 2)            # (B, S, a+t+v)
            for p in ("at", "av", "tv"):
                T_[f"{key}_mi_{p}"] = o[f"mi_{p}"]
            if not first:
                _, rec_b = rec_loss(o["rec_feats"], feats, mask, um, A, T, V)
                total_mi = o["mi_at"] + o["mi_av"] + o["mi_tv"]
                rec_b = rec_b.detach().numpy()
                T_[f"{key}_rec_batch"], T_[f"{key}_total_mi"] = rec_b, total_mi
                T_[f"{key}_h"] = batch_hardness(rec_b, total_mi)               # batch-major
    teacher.train()  # dropout rates 0, so deterministic; the cross-attention's p is 1.0
    for cond, first in (("atv", True), ("tv", False)):
        teacher.zero_grad()
        feats, mask = ref_layout(x, avail_of(cond, umask))
        o = teacher(feats, mask, um, first_stage=first)
        flat = lab.view(-1)
        loss_rec, _ = rec_loss(o["rec_feats"], feats, mask, um, A, T, V)
        loss_mi = -((o["mi_at"] + o["mi_av"] + o["mi_tv"]).sum() / 3)
        if first:   # train_teacher.py line 146
            parts = [cls_loss(o[f"out_{m}"].reshape(-1, kw["n_classes"]), flat, um)
                     for m in "atv"]
            total = parts[0] + parts[1] + parts[2] + loss_rec + 0.001 * loss_mi
        else:       # line 151
            total = cls_loss(o["out"].reshape(-1, kw["n_classes"]), flat, um) + loss_rec
        total.backward()
        key = "stage1" if first else f"stage2_{cond}"
        T_[f"train_{key}_loss"], T_[f"train_{key}_rec"] = total.detach(), loss_rec.detach()
        T_[f"train_{key}_mi"] = loss_mi.detach()
        for n, p in teacher.named_parameters():
            if p.grad is not None:
                T_[f"train_{key}_grad/{n}"] = reduce(n, p.grad.numpy())
    T_.update({f"x_{m}": v for m, v in x.items()}, umask=umask, labels=labels)
    save(out, "teacher", {k: np.asarray(v.detach() if torch.is_tensor(v) else v)
                          for k, v in T_.items()},
         {"weights_seed": 2, "shapes": t_shapes, "settings": sh, "big": BIG})

    # Student (OurModel), one stage-2 training step of train_our.py under condition "at".
    k, cond = 5, "at"   # k = 5 so that some rows keep fewer than k + 1 and get front padding
    rng = np.random.default_rng(5)
    n_db = 40
    db = {"a": rng.standard_normal((n_db, A)), "t": rng.standard_normal((n_db, T)),
          "v": rng.standard_normal((n_db, V))}
    db_labels = rng.integers(0, sh["n_classes"], n_db)
    # The batch's dialogues are training dialogues: their utterances are rows of the database.
    rows = [list(range(3, 8)), list(range(20, 23)), list(range(30, 34))]
    B, S = len(rows), max(map(len, rows))
    bx = {m: np.zeros((B, S, db[m].shape[1])) for m in "atv"}
    blab = np.zeros((B, S), np.int64)
    bmask = np.zeros((B, S))
    for b, r in enumerate(rows):
        for m in "atv":
            bx[m][b, :len(r)] = db[m][r]
        blab[b, :len(r)] = db_labels[r]
        bmask[b, :len(r)] = 1
    # retrieval.py build_index: audio/video L2, text inner product on L2-normalised vectors.
    idx_a, idx_t, idx_v = faiss.IndexFlatL2(A), faiss.IndexFlatIP(T), faiss.IndexFlatL2(V)
    idx_a.add(db["a"].astype(np.float32))
    txt = db["t"].astype(np.float32).copy()
    faiss.normalize_L2(txt)
    idx_t.add(txt)
    idx_v.add(db["v"].astype(np.float32))
    metadata = {i: {"label": int(db_labels[i]), "filename": f"u{i}"} for i in range(n_db)}

    bum = torch.from_numpy(bmask)
    feats, mask = ref_layout(bx, avail_of(cond, bmask))
    teacher.eval()
    with torch.no_grad():
        o = teacher(feats, mask, bum, first_stage=False)
        _, rec_b = rec_loss(o["rec_feats"], feats, mask, bum, A, T, V)
        total_mi = o["mi_at"] + o["mi_av"] + o["mi_tv"]
    rec_b = rec_b.numpy()
    h = batch_hardness(rec_b, total_mi)
    fa, ft, fv = split_features(feats, A, T, V)                           # sequence-major
    found = search_and_integrate(fa, ft, fv, idx_a, idx_t, idx_v, k, test_condition=cond,
                                 index_type="FlatL2")
    kept = secondary_filtering(found, h, k, min_k=1)                    # h is batch-major
    got, got_labels, _ = integrated_features(kept, idx_a, idx_t, idx_v, k, metadata)
    views = concatenate_and_reshape_samples(got["a"], got["t"], got["v"], S, B)  # (S,B,k+1,F)
    views = views.astype(np.float64)
    tv = views[..., A:A + T]
    norm = np.linalg.norm(tv, axis=-1, keepdims=True)
    views[..., A:A + T] = np.where(norm > 0, tv / np.where(norm > 0, norm, 1), tv)

    student = OurModel(Args(), A, T, V, sh["hidden"], **kw).double().train()
    s_shapes = set_weights(student, 3)
    before = {n: p.detach().numpy().copy() for n, p in student.named_parameters()}
    opt = torch.optim.Adam(student.parameters(), lr=1e-3, weight_decay=1e-5)
    opt.zero_grad()                                         # once per batch (train_our.py l. 43)
    view_losses = []
    for j in range(k + 1):                                  # lines 220-263
        inp = torch.from_numpy(views[:, :, j, :].copy())
        o = student(inp, mask, bum, False)
        loss = cls_loss(o["out"].reshape(-1, sh["n_classes"]), torch.from_numpy(blab).view(-1),
                        bum)
        loss_rec, _ = rec_loss(o["rec_feats"], inp, mask, bum, A, T, V)
        total = loss + loss_rec
        total.backward()
        opt.step()
        view_losses.append([float(total.detach()), float(loss.detach()), float(loss_rec.detach())])
    S_ = {"views": views, "h": h, "rec_batch": rec_b, "total_mi": total_mi.numpy(),
          "view_losses": np.array(view_losses), "batch_mask": bmask, "batch_labels": blab,
          "db_labels": db_labels, **{f"db_{m}": v for m, v in db.items()}}
    for n, p in student.named_parameters():
        S_[f"delta/{n}"] = reduce(n, p.detach().numpy() - before[n])   # post-step - initial
        if p.grad is None:      # the unimodal heads are not used in stage 2
            continue
        S_[f"grad/{n}"] = reduce(n, p.grad.numpy())
        st = opt.state[p]
        S_[f"exp_avg/{n}"] = reduce(n, st["exp_avg"].numpy())
        S_[f"exp_avg_sq/{n}"] = reduce(n, st["exp_avg_sq"].numpy())
    # Stage 1 of the student on the same batch (all modalities, text L2-normalised).
    student2 = OurModel(Args(), A, T, V, sh["hidden"], **kw).double().train()
    set_weights(student2, 3)
    feats1, mask1 = ref_layout(bx, avail_of("atv", bmask))
    f1 = feats1.numpy().copy()
    tn = np.linalg.norm(f1[..., A:A + T], axis=-1, keepdims=True)
    f1[..., A:A + T] = np.where(tn > 0, f1[..., A:A + T] / np.where(tn > 0, tn, 1), 0)
    o = student2(torch.from_numpy(f1), mask1, bum, True)
    flat = torch.from_numpy(blab).view(-1)
    l1 = sum(cls_loss(o[f"out_{m}"].reshape(-1, sh["n_classes"]), flat, bum) for m in "atv")
    S_["stage1_loss"] = np.array(float(l1.detach()))
    save(out, "student_step", S_,
         {"weights_seed": 3, "teacher_weights_seed": 2, "shapes": s_shapes, "settings": sh,
          "k": k, "condition": cond, "rows": rows, "lr": 1e-3, "weight_decay": 1e-5,
          "found": [list(map(int, f)) for f in found],
          "kept": [list(map(int, f)) for f in kept], "view_labels": got_labels, "big": BIG})

    # Fine-tuning network (models.FineTuning): outputs, the fc2 feature, CE on the softmax.
    ft_net = FineTuning(A, sh["n_classes"]).double().train()
    f_shapes = set_weights(ft_net, 4)
    xf = np.random.default_rng(6).standard_normal((20, A))
    yf = np.random.default_rng(7).integers(0, sh["n_classes"], 20)
    probs, feature = ft_net(torch.from_numpy(xf))
    loss = torch.nn.CrossEntropyLoss()(probs, torch.from_numpy(yf))   # train_fine_tuning l. 56
    loss.backward()
    F_ = {"x": xf, "y": yf, "out": probs.detach().numpy(), "feature": feature.detach().numpy(),
          "loss": np.array(float(loss))}
    F_.update({f"grad/{n}": p.grad.numpy() for n, p in ft_net.named_parameters()})
    save(out, "finetune", F_, {"weights_seed": 4, "shapes": f_shapes, "settings": sh})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--momke", type=Path, required=True, help="checkout of wxxv/MoMKE")
    ap.add_argument("--hardymer", type=Path, required=True, help="checkout of HARDY-MER/HARDY-MER")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "reference")
    ap.add_argument("--part", choices=["momke", "hardymer"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    momke_src = a.momke / "MoMKE"
    for p in (momke_src / "model_expert_softmoe.py", a.hardymer / "models.py"):
        if not p.is_file():
            sys.exit(f"{p} not found: pass the repository roots of wxxv/MoMKE and "
                     "HARDY-MER/HARDY-MER")
    if a.part is None:   # one process per part (both repositories name a module alike)
        for part in ("momke", "hardymer"):
            subprocess.run([sys.executable, __file__, "--momke", str(a.momke), "--hardymer",
                            str(a.hardymer), "--out", str(a.out), "--part", part], check=True)
        sizes = sum(f.stat().st_size for f in a.out.iterdir())
        print(f"fixtures in {a.out}: {sizes / 1024:.0f} KB")
        return
    stub = Path(tempfile.mkdtemp(prefix="refstub-"))
    _stub_config(stub)
    # The stub first; HARDY-MER's modules/ before MoMKE's (it is a superset of it).
    paths = [stub] + ([a.hardymer, momke_src] if a.part == "hardymer" else [momke_src])
    sys.path[:0] = [str(p) for p in paths]
    import torch
    torch.set_num_threads(1)
    (part_momke if a.part == "momke" else part_hardymer)(a.out)


if __name__ == "__main__":
    main()
