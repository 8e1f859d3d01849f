"""PriMD: the two stages, freezing and seeding, retrieval, every loss term, the reference's
selection by name."""
import pytest
import torch

from hardymer.data.dataset import SequenceDataset
from hardymer.models import create_method
from hardymer.protocol import parse_condition
from hardymer.runs.config import load_run_config
from hardymer.training.method import Stage

from conftest import make_toy

SMALL = dict(hidden=16, memory_size=8, k_max=4, retrieval_dim=8)
TEACHER, STUDENT = Stage("teacher", 1, False, False), Stage("student", 1)


def small(ds, **kw):
    torch.manual_seed(0)
    return create_method("primd", ds.dims, ds.n_classes, ds.task, **{**SMALL, **kw})


def batch_of(ds, cond="atv", n=4):
    mask = parse_condition(cond, ds.modalities).mask(ds.available, ds.modalities)
    sds = SequenceDataset(ds, list(range(n)), mask)
    return sds.collate([sds[i] for i in range(n)])


def train(m, b, stage, steps, lr=3e-3):
    opt = m.configure_optimizer(lr, 0.0)
    history = []
    for _ in range(steps):
        loss, parts = m.stage_loss(b, stage)
        history.append(parts)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    return history


def test_teacher_stage_every_term_exists_and_falls(toy):
    m = small(toy, dropout=0.0)
    b = batch_of(toy, "atv", n=3)
    hist = train(m, b, TEACHER, 200)
    first, last = hist[0], hist[-1]
    assert set(first) == {"task", "unimodal", "align", "indep", "vq"}
    assert all(first[k] > 0 for k in first)
    for k in ("task", "unimodal"):
        assert last[k] < 0.2 * first[k], k
    assert last["align"] < 0.8 * first["align"]
    # Shared and specific features grow while CE trains them, so with their small weights
    # L_indep and L_VQ need not fall in the joint objective; they move, and alone they fall.
    for k in ("indep", "vq"):
        assert last[k] != pytest.approx(first[k], rel=0.05), k
    opt = torch.optim.Adam(m.teacher.specific.parameters(), lr=1e-2)
    values = []
    for _ in range(100):
        shared, specific = m.teacher.encode(b.x, b.available.float())
        loss = m.indep_loss({k: v.detach() for k, v in shared.items()}, specific, b.available)
        values.append(float(loss))
        opt.zero_grad(); loss.backward(); opt.step()
    assert values[-1] < 0.5 * values[0]
    avail = b.available
    opt = torch.optim.Adam(m.memory.parameters(), lr=3e-2)
    _, specific = m.teacher.encode(b.x, avail.float())
    specific = {k: v.detach() for k, v in specific.items()}
    start = float(m.vq_loss(specific, avail))
    for _ in range(200):
        loss = m.vq_loss(specific, avail)
        opt.zero_grad(); loss.backward(); opt.step()
    assert float(loss) < 0.2 * start


def test_student_stage_seeds_from_the_teacher_freezes_it_and_losses_fall(toy):
    m = small(toy, dropout=0.0)
    b = batch_of(toy, "a", n=3)
    train(m, batch_of(toy, "atv", n=3), TEACHER, 30)
    teacher = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    memory = {k: v.clone() for k, v in m.memory.state_dict().items()}
    assert not bool(m.student_ready)
    m.on_epoch_start(31, STUDENT, None)
    assert bool(m.student_ready)
    assert all(torch.equal(v, m.student.state_dict()[k]) for k, v in teacher.items())
    hist = train(m, b, STUDENT, 150)
    assert set(hist[0]) == {"task", "kd", "cost"}
    assert hist[-1]["task"] < 0.2 * hist[0]["task"] and hist[-1]["kd"] < hist[0]["kd"]
    assert hist[0]["cost"] > 0     # t and v are missing: retrieval is paid for
    assert all(torch.equal(v, m.teacher.state_dict()[k]) for k, v in teacher.items())
    assert all(torch.equal(v, m.memory.state_dict()[k]) for k, v in memory.items())
    # A second call (a resumed run) does not re-seed the trained student.
    student = {k: v.clone() for k, v in m.student.state_dict().items()}
    m.on_epoch_start(32, STUDENT, None)
    assert all(torch.equal(v, m.student.state_dict()[k]) for k, v in student.items())


def test_retrieved_primitives_depend_on_the_input_and_only_fill_missing_modalities(toy):
    m = small(toy).eval()
    b = batch_of(toy, "at")
    obs = b.available.float()
    shared, _ = m.student.encode(b.x, obs)
    from hardymer.models.primd import _mean_shared
    q = _mean_shared(shared, obs)
    comp, cost, pi, top = m.retrieve(q, "v")
    assert comp.shape == q.shape and pi.shape == top.shape == q.shape[:2] + (4,)
    assert torch.allclose(pi.sum(-1), torch.ones_like(cost))
    rows = b.utt_mask
    assert not torch.allclose(comp[rows][0], comp[rows][1], atol=1e-6)   # input-dependent
    b.x["a"] = torch.randn_like(b.x["a"])
    shared2, _ = m.student.encode(b.x, obs)
    assert not torch.allclose(m.retrieve(_mean_shared(shared2, obs), "v")[0], comp, atol=1e-6)
    # Under atv nothing is missing: no retrieval cost, no compensation.
    _, cost_full = m.student_outputs(batch_of(toy, "atv"))
    assert float(cost_full.abs().sum()) == 0.0


def test_retrieval_picks_counts_by_gumbel_in_training_and_softmax_in_evaluation(toy):
    m = small(toy)
    q = torch.randn(2, 3, 16)
    m.train()
    torch.manual_seed(1)
    a = m.retrieve(q, "a")[2]
    torch.manual_seed(2)
    assert not torch.allclose(a, m.retrieve(q, "a")[2])      # Gumbel noise
    m.eval()
    logits = m.retrieve_num["a"](q)
    assert torch.allclose(m.retrieve(q, "a")[2], (logits / 0.5).softmax(-1))


def test_hsic_is_zero_for_independent_constant_and_positive_for_dependent_features():
    from hardymer.models.primd import hsic
    g = torch.Generator().manual_seed(0)
    s = torch.randn(64, 5, generator=g)
    assert float(hsic(s, s)) > 5 * float(hsic(s, torch.randn(64, 5, generator=g)))
    assert float(hsic(s, torch.ones(64, 5))) == pytest.approx(0.0, abs=1e-6)


def test_reference_selection_scores_teacher_epochs_on_every_modality(toy):
    cfg = load_run_config("primd", "iemocap", ["model.reference_selection=true"])
    assert cfg.model["reference_selection"]
    m = small(toy, reference_selection=True).eval()
    assert [s.select for s in m.stages([2, 2])] == [True, True]
    b = batch_of(toy, "a")
    y = m(b)
    b.x["v"] = torch.randn_like(b.x["v"])      # hidden, yet read: the released leak
    assert not torch.allclose(y, m(b), atol=1e-4)
    m.on_epoch_start(3, STUDENT, None)         # once the student exists, it answers alone
    y = m(b)
    b.x["v"] = torch.randn_like(b.x["v"])
    assert torch.equal(y, m(b))
    assert [s.select for s in small(toy).stages([2, 2])] == [False, True]


def test_paper_config_and_joint_feature_widths(toy):
    from hardymer.api import run_config
    cfg = run_config("primd", "iemocap", ablations=["paper-config"])
    assert (*(cfg.model[k] for k in ("joint", "hidden", "dropout", "optimizer")),
            cfg.train.batch_size) == ("paper", 128, 0.3, "adamw", 32)
    code, paper = small(toy), small(toy, joint="paper", optimizer="adamw")
    assert code.student.classifier[0].in_features == 4 * 16
    assert paper.student.classifier[0].in_features == 6 * 16
    assert isinstance(paper.configure_optimizer(1e-3, 1e-5), torch.optim.AdamW)
    b = batch_of(toy, "tv")
    assert paper.eval()(b).shape == b.labels.shape + (toy.n_classes,)
    with pytest.raises(ValueError, match="model.joint"):
        small(toy, joint="6d").check_config(small(toy, joint="6d").config)
    with pytest.raises(ValueError, match="model.k_max"):
        small(toy).check_config(type(small(toy).config)(**{**SMALL, "k_max": 9}))


def test_regression_distils_by_squared_error():
    ds = make_toy(task="regression")
    m = small(ds, dropout=0.0)
    b = batch_of(ds, "t", n=3)
    m.on_epoch_start(1, STUDENT, None)
    hist = train(m, b, STUDENT, 100)
    assert hist[-1]["task"] < 0.3 * hist[0]["task"]
    assert m.eval()(b).shape == b.labels.shape + (1,)
