"""MRAN-like: the three parts its abstract names — reconstruction guided by modality and
missing-pattern embeddings, projection into the text space, alignment to label embeddings."""
import pytest
import torch

from hardymer.data.dataset import SequenceDataset
from hardymer.models import create_method
from hardymer.protocol import parse_condition

from conftest import make_toy

SMALL = dict(hidden=16, heads=2, depth=1)


def small(ds, **kw):
    torch.manual_seed(0)
    return create_method("mran-like", ds.dims, ds.n_classes, ds.task, **{**SMALL, **kw})


def batch_of(ds, cond="atv", n=4):
    mask = parse_condition(cond, ds.modalities).mask(ds.available, ds.modalities)
    sds = SequenceDataset(ds, list(range(n)), mask)
    return sds.collate([sds[i] for i in range(n)])


def test_every_term_exists_and_falls(toy):
    m = small(toy, dropout=0.0)
    b = batch_of(toy, "t", n=3)
    opt = m.configure_optimizer(3e-3, 0.0)
    hist = []
    for _ in range(250):
        loss, parts = m.stage_loss(b, m.stages([1])[0])
        hist.append(parts)
        opt.zero_grad(); loss.backward(); opt.step()
    assert set(hist[0]) == {"task", "rec", "align"}
    assert float(loss) == pytest.approx(parts["task"] + parts["rec"] + 0.1 * parts["align"],
                                        rel=1e-5)
    for k in ("task", "rec", "align"):
        assert hist[-1][k] < 0.3 * hist[0][k], k


def test_missing_pattern_embedding_guides_the_reconstruction(toy):
    m = small(toy).eval()
    b = batch_of(toy, "at")
    h, _ = m.encode(b)
    with torch.no_grad():
        m.pattern_embedding.weight[0b011] += 1.0      # pattern "a and t available"
    h2, _ = m.encode(b)
    assert not torch.allclose(h[:, 2], h2[:, 2], atol=1e-4)   # v's reconstructed token moves


def test_projection_into_the_text_space_and_text_centre(toy):
    m = small(toy).eval()
    assert set(m.to_text) == {"a", "v"} and m.centre == "t"
    b = batch_of(toy, "atv")
    z = m.represent(b)
    h, rows = m.encode(b)
    assert torch.allclose(z.flatten(0, 1)[rows][:, 1], h[:, 1])           # text: identity
    assert torch.allclose(z.flatten(0, 1)[rows][:, 0], m.to_text["a"](h[:, 0]), atol=1e-6)
    no_text = create_method("mran-like", {"a": 4, "v": 4}, 2, "classification", **SMALL)
    assert no_text.centre == "a" and set(no_text.to_text) == {"v"}


def test_alignment_pulls_features_towards_their_class_embedding(toy):
    m = small(toy, dropout=0.0, rec_weight=0.0)
    b = batch_of(toy, "atv", n=4)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(150):
        loss, _ = m.stage_loss(b, m.stages([1])[0])
        opt.zero_grad(); loss.backward(); opt.step()
    m.eval()
    z = m.represent(b)[b.utt_mask]                                          # (N, M, D)
    sim = torch.nn.functional.cosine_similarity(z[:, :, None], m.label_embedding[None, None],
                                                dim=-1)                     # (N, M, C)
    own = sim.gather(2, b.labels[b.utt_mask][:, None, None].expand(-1, 3, 1))[..., 0]
    assert (own > sim.mean(-1)).float().mean() > 0.9


def test_regression_aligns_by_sign_and_ignores_zero_labels():
    ds = make_toy(task="regression")
    m = small(ds)
    b = batch_of(ds, "av")
    b.labels[b.utt_mask] = 0.0
    loss, parts = m.stage_loss(b, m.stages([1])[0])
    assert parts["align"] == 0.0 and m(b).shape == b.labels.shape + (1,)
    assert m.label_embedding.shape[0] == 2


def test_reports_show_mrans_published_figures_beside_it():
    from hardymer.reports.sweep import published_name
    assert published_name("mran-like") == "mran" and published_name("gcnet") == "gcnet"
    assert published_name("hardymer:no-h-dir") == "hardymer w/o h_dir"
