"""Our modules against numbers the reference code produced (``tools/reference_golden.py``).

Weights: the reference-named recipe of ``tests/reference_fixture.py``, loaded into our modules
through the name mapping below (documented in ``docs/hardymer.md``, "Name mapping").
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from hardymer.data.dataset import Batch
from hardymer.models.hardymer.reference import (ReferenceFinetuner, ReferenceTeacher,
                                                ReferenceTeacherConfig)
from hardymer.models.momke import MoMKE, MoMKEConfig
from reference_fixture import SHAPES, load, recipe_state, reduce

MODS = ("a", "t", "v")
DIMS = {m: SHAPES[f"{m}dim"] for m in MODS}
CROSS = {"at": "a_t", "ta": "t_a", "va": "a_v", "av": "v_a", "tv": "t_v", "vt": "v_t"}


def our_name(ref: str, decoder: str = "decoder") -> str | None:
    """Reference parameter name -> ours (None: a reference module that computes nothing).
    ``decoder``: where our model keeps the reference decoder (teacher ``decoder``, HARDY-MER
    ``decoders``)."""
    rules = [
        (r"(\w)_in_proj\.0\.(\w+)", r"proj.\1.\2"),
        (r"block\.blocks\.(\d+)\.Transformer_(\w)\.([qkv])\.(\w+)", r"experts.\2.layers.\1.attn.\3.\4"),
        (r"block\.blocks\.(\d+)\.Transformer_(\w)\.mlp\.fc1\.(\w+)", r"experts.\2.layers.\1.mlp.0.\3"),
        (r"block\.blocks\.(\d+)\.Transformer_(\w)\.mlp\.fc2\.(\w+)", r"experts.\2.layers.\1.mlp.3.\3"),
        (r"router_(\w)\.fc1\.(\w+)", r"routers.\1.0.\2"),
        (r"router_(\w)\.fc2\.(\w+)", r"routers.\1.3.\2"),
        (r"nlp_head_(\w)\.(\w+)", r"unimodal_heads.\1.\2"),
        (r"nlp_head\.(\w+)", r"head.\1"),
        (r"proj1\.(\w+)", r"fuse.\1"),
        (r"autoencoder_decoder\.(\d)\.(\w+)", decoder + r".net.\1.\2"),
        (r"cross_attn_(\w\w)\.mlp\.fc1\.(\w+)", r"cross.{\1}.mlp.0.\2"),
        (r"cross_attn_(\w\w)\.mlp\.fc2\.(\w+)", r"cross.{\1}.mlp.3.\2"),
        (r"cross_attn_(\w\w)\.(q|k|v|proj)\.(\w+)", r"cross.{\1}.\2.\3"),
    ]
    if re.match(r"[atv]_in_mi\.", ref):
        return None   # EasyReconstructModel's a/t/v_in_mi blocks are built but never called
    for pat, rep in rules:
        if re.fullmatch(pat, ref):
            name = re.sub(pat, rep, ref)
            return re.sub(r"\{(\w\w)\}", lambda g: CROSS[g.group(1)], name)
    raise KeyError(ref)


def load_mapped(model: torch.nn.Module, meta: dict, seed: int | None = None,
                decoder: str = "decoder") -> None:
    state = recipe_state(meta["shapes"], meta["weights_seed"] if seed is None else seed)
    ours = {}
    for ref, w in state.items():
        name = our_name(ref, decoder)
        if name is not None:
            ours[name] = torch.from_numpy(w)
    own = model.state_dict()
    missing = [n for n in own if n not in ours]
    # Our modules without a reference counterpart must not matter for the output: MoMKE's
    # routers in the teacher (it sums the experts) and in the student (own experts only).
    assert all(n.startswith("routers.") for n in missing), missing
    model.load_state_dict({**{n: own[n] for n in missing}, **ours})


def make_batch(t: dict, cond: str) -> Batch:
    um = torch.from_numpy(t["umask"]).bool()
    present = um[..., None].expand(*um.shape, 3).clone()
    avail = present & torch.tensor([m in cond for m in MODS])
    return Batch(x={m: torch.from_numpy(t[f"x_{m}"]) for m in MODS}, available=avail,
                 present=present, utt_mask=um,
                 labels=torch.from_numpy(t["labels"]).long() if "labels" in t
                 else torch.zeros(um.shape, dtype=torch.long),
                 index=torch.zeros(um.shape, dtype=torch.long),
                 speaker=torch.zeros(um.shape, dtype=torch.long), modalities=MODS)


def close(ours, ref, tol=1e-5, atol=None):
    """Equal to ``tol`` (relative and absolute; ``atol`` for quantities far below 1). The
    reference computes attention scores in float32 (``q.float() @ k.float()``), the rest in
    float64 here, so agreement is to about 1e-7 relative."""
    ours = ours.detach().double().numpy() if torch.is_tensor(ours) else np.asarray(ours)
    np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol if atol is None else atol)


def config(cls, **kw):
    return cls(hidden=SHAPES["hidden"], heads=SHAPES["heads"], depth=SHAPES["depth"],
               dropout=0.0, attention="loop", **kw)


# --- MoMKE -------------------------------------------------------------------------------------
def test_momke_forward_equals_the_reference_in_both_stages():
    t, meta = load("momke")
    model = MoMKE(config(MoMKEConfig), DIMS, SHAPES["n_classes"], "classification").double()
    load_mapped(model, meta)
    model.eval()
    with torch.no_grad():
        b = make_batch(t, "atv")
        real = b.utt_mask.numpy()
        for m, out in model.unimodal_logits(b).items():   # packed: padding is not computed
            close(out[b.utt_mask], t[f"stage1_out_{m}"][real])
        full = MoMKE(config(MoMKEConfig, skip_absent=False), DIMS, SHAPES["n_classes"],
                     "classification").double().eval()
        full.load_state_dict(model.state_dict())
        for m, out in full.unimodal_logits(b).items():    # the full grid, padding included
            close(out, t[f"stage1_out_{m}"])
        for cond in ("at", "v", "atv"):
            b = make_batch(t, cond)
            fused = model.fused(model.mixed_representations(b))
            close(fused, t[f"stage2_{cond}_hidden"])
            close(model(b), t[f"stage2_{cond}_out"])


# --- the teacher -------------------------------------------------------------------------------
def teacher(**kw):
    t, meta = load("teacher")
    model = ReferenceTeacher(config(ReferenceTeacherConfig, **kw), DIMS, SHAPES["n_classes"],
                             "classification").double()
    load_mapped(model, meta)
    return model, t


def split_rec(rec: np.ndarray) -> dict[str, np.ndarray]:
    a, tt = DIMS["a"], DIMS["t"]
    return {"a": rec[..., :a], "t": rec[..., a:a + tt], "v": rec[..., a + tt:]}


@pytest.mark.parametrize("key,cond,first", [("stage1", "atv", True), ("stage2_a", "a", False),
                                            ("stage2_tv", "tv", False),
                                            ("stage2_at", "at", False)])
def test_teacher_outputs_equal_the_reference(key, cond, first):
    model, t = teacher()
    model.eval()
    with torch.no_grad():
        o = model.outputs(make_batch(t, cond), first)
    close(o["logits"], t[f"{key}_out"])
    ref_rec = split_rec(t[f"{key}_rec"])
    for m in MODS:
        close(o["recon"][m], ref_rec[m])
    for p in ("at", "av", "tv"):
        close(o["mi"][p], t[f"{key}_mi_{p}"])


@pytest.mark.parametrize("cond", ["a", "tv"])
def test_teacher_hardness_equals_the_reference_per_batch_formula(cond):
    model, t = teacher()
    model.eval()
    h = model.hardness(make_batch(t, cond), 4.0, 0.6, 0.4)
    close(h.reshape(-1), t[f"stage2_{cond}_h"])     # both batch-major


@pytest.mark.parametrize("key,cond", [("stage1", "atv"), ("stage2_tv", "tv")])
def test_teacher_training_losses_and_gradients_equal_the_reference(key, cond):
    from hardymer.training.method import Stage
    model, t = teacher()
    model.train()   # dropout 0, so deterministic; the cross-attention's dropout is p = 1.0
    stage = Stage("unimodal" if key == "stage1" else "teacher", 1)
    loss, parts = model.stage_loss(make_batch(t, cond), stage)
    close(loss, t[f"train_{key}_loss"])
    close(parts["rec"], t[f"train_{key}_rec"])
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    checked = 0
    for name in [k for k in t if k.startswith(f"train_{key}_grad/")]:
        ref_name = name.split("/", 1)[1]
        ours = grads.get(our_name(ref_name))
        ref = t[name]
        if ours is None:   # a parameter whose gradient is zero in the reference
            assert np.abs(ref).max() < 1e-12, ref_name
            continue
        close(reduce(ref_name, ours.numpy()), ref, tol=1e-6 + 1e-5 * np.abs(ref).max())
        checked += 1
    assert checked > 20


def test_attention_slip_and_zero_target_are_switches_with_a_documented_difference():
    slip, t = teacher()
    fixed, _ = teacher(attn_slip=False, rec_target="true", row_bug=False)
    for m in (slip, fixed):
        m.train()
    b = make_batch(t, "tv")
    from hardymer.training.method import Stage
    with torch.no_grad():
        o_slip = slip.outputs(b, False)
        o_fixed = fixed.outputs(b, False)
        # p = 1.0: every cross-attention output is its bias path, so MI ignores the input's
        # attention pattern; without the slip it does not.
        assert not torch.allclose(o_slip["mi"]["at"], o_fixed["mi"]["at"])
        # The zero target: with it the teacher is trained to output zeros for a missing
        # modality; with the true target, to reconstruct it.
        l_slip = slip.stage_loss(b, Stage("teacher", 1))[1]["rec"]
        l_true = fixed.stage_loss(b, Stage("teacher", 1))[1]["rec"]
    assert l_slip != pytest.approx(l_true)


# --- the fine-tuning network -------------------------------------------------------------------
def test_finetuning_network_equals_the_reference():
    t, meta = load("finetune")
    net = ReferenceFinetuner(DIMS["a"], SHAPES["n_classes"]).double()
    net.load_state_dict({n: torch.from_numpy(w) for n, w in
                         recipe_state(meta["shapes"], meta["weights_seed"]).items()})
    x = torch.from_numpy(t["x"])
    close(net(x), t["out"])
    close(net.features(x), t["feature"])     # fc2's pre-activation output
    loss = net.loss(x, torch.from_numpy(t["y"]).long())
    close(loss, t["loss"])
    loss.backward()
    for n, p in net.named_parameters():
        close(p.grad, t[f"grad/{n}"])
    # Without the double softmax the loss is the usual cross-entropy of the logits.
    single = net.loss(x, torch.from_numpy(t["y"]).long(), double_softmax=False)
    assert float(single.detach()) != pytest.approx(float(loss.detach()))


# --- one stage-2 training step of the student ---------------------------------------------------
class _Context:
    """What HARDY-MER asks of its fold context in the views form: the database and teacher."""

    def __init__(self, database, features, teacher):
        self.database, self.features, self.teacher = database, features, teacher

    def view_batches(self, batch, cfg, plan_h=None):
        from hardymer.models.hardymer.reference import view_batches
        return view_batches(batch, cfg, self.database, self.features, self.teacher, plan_h)


def student_step(**changes):
    """Our HARDY-MER in reference form after one stage-2 batch; (model, optimizer, views, t)."""
    from hardymer.models.hardymer.method import HardyConfig, HardyMER
    from hardymer.retrieval import FeatureDatabase
    from hardymer.training.method import Stage
    t, meta = load("student_step")
    k, cond = meta["k"], meta["condition"]
    cfg = HardyConfig.reference(hidden=SHAPES["hidden"], heads=SHAPES["heads"],
                                depth=SHAPES["depth"], dropout=0.0, attention="loop", k=k,
                                **changes)
    model = HardyMER(cfg, DIMS, SHAPES["n_classes"], "classification").double()
    load_mapped(model, meta, decoder="decoders")
    tmodel, tmeta = teacher(row_bug=cfg.row_bug, rec_target=cfg.rec_target,
                            attn_slip=cfg.attn_slip)
    tmodel.eval()
    db = {m: t[f"db_{m}"] for m in MODS}
    database = FeatureDatabase.build({m: v.astype(np.float32) for m, v in db.items()})
    model.ctx = _Context(database, db, tmodel)
    rows = meta["rows"]
    B, S = len(rows), max(map(len, rows))
    index = torch.full((B, S), -1, dtype=torch.long)
    for b, r in enumerate(rows):
        index[b, :len(r)] = torch.tensor(r)
    um = index >= 0
    x = {m: torch.from_numpy(np.where(um.numpy()[..., None], db[m][index.clamp(min=0)], 0.0))
         for m in MODS}
    present = um[..., None].expand(B, S, 3).clone()
    batch = Batch(x=x, available=present & torch.tensor([m in cond for m in MODS]),
                  present=present, utt_mask=um,
                  labels=torch.from_numpy(t["batch_labels"]).long(), index=index,
                  speaker=torch.zeros((B, S), dtype=torch.long), modalities=MODS)
    np.testing.assert_array_equal(batch.labels.numpy(), t["batch_labels"])
    views = model.ctx.view_batches(batch, cfg)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=meta["lr"], weight_decay=meta["weight_decay"])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.zero_grad()          # the trainer's order: zero once per batch, then one step per loss
    losses = []
    for step in model.stage_steps(batch, Stage("mixing", 1)):
        loss, parts = step()
        loss.backward()
        opt.step()
        losses.append([float(loss.detach()), parts["task"], parts["rec"]])
    return model, opt, before, views, np.array(losses), t, meta


def test_student_views_equal_the_reference_retrieval():
    model, _, _, views, _, t, meta = student_step()
    ref = t["views"]                                            # (S, B, k+1, a+t+v)
    a, tt = DIMS["a"], DIMS["t"]
    for j, v in enumerate(views):
        v = model.inputs(v)                                     # text L2-normalised
        ours = torch.cat([v.x["a"], v.x["t"], v.x["v"]], -1).numpy()   # (B, S, F)
        close(ours, ref[:, :, j].transpose(1, 0, 2))
    assert a + tt < ref.shape[-1]


def test_one_reference_training_step_equals_the_reference():
    model, opt, before, _, losses, t, meta = student_step()
    close(losses, t["view_losses"])                 # k + 1 steps, each view's L_task + L_rec
    params = dict(model.named_parameters())
    checked = 0
    for key in [k for k in t if k.startswith("delta/")]:
        ref_name = key.split("/", 1)[1]
        name = our_name(ref_name, "decoders")
        p = params[name]
        g_ref = t.get(f"grad/{ref_name}")
        if g_ref is not None and np.abs(g_ref).max() < 1e-8:
            # The key biases: their gradient is zero in exact arithmetic (a constant added to
            # every score of a row); the reference's is float32 noise (~1e-10) that Adam
            # turns into steps of size lr, so only "both zero" is comparable.
            assert float(p.grad.abs().max()) < 1e-8, ref_name
            continue
        # Adam divides by sqrt(v): for elements whose gradients are tiny or change sign over
        # the views, the reference's float32 attention scores move the step by up to ~5e-4
        # relative, hence 1e-3 for the weight changes (gradients and moments: 1e-5).
        close(reduce(ref_name, (p.detach() - before[name]).numpy()), t[key], tol=1e-3,
              atol=1e-9)
        if f"grad/{ref_name}" in t:   # gradients accumulated over the views
            close(reduce(ref_name, p.grad.numpy()), t[f"grad/{ref_name}"])
            st = opt.state[p]
            close(reduce(ref_name, st["exp_avg"].numpy()), t[f"exp_avg/{ref_name}"])
            close(reduce(ref_name, st["exp_avg_sq"].numpy()), t[f"exp_avg_sq/{ref_name}"],
                  atol=1e-12)
            checked += 1
    assert checked > 20


def test_without_the_row_bug_hardness_and_masks_follow_their_rows():
    # The same step with the row-order bug off differs, and only through it.
    *_, buggy, t, _ = student_step()
    *_, fixed, _, _ = student_step(row_bug=False)
    assert not np.allclose(buggy, fixed)
