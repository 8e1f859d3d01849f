"""The SDPA path equals the reference formula: masking, scaling, all-masked rows."""
import math

import pytest
import torch

from hardymer.models.attention import MaskedSelfAttention, Packing, masked_attention


def reference(q, k, v, key_mask):
    """Written from the formula: softmax(q k^T / sqrt(d)) with masked keys, NaN rows -> 0."""
    B, H, S, d = q.shape
    out = torch.zeros_like(q)
    for b in range(B):
        for h in range(H):
            for i in range(S):
                keys = [j for j in range(S) if key_mask[b, j]]
                if not keys:
                    continue  # an all-masked row attends to nothing: zero output
                scores = torch.stack([q[b, h, i] @ k[b, h, j] / math.sqrt(d) for j in keys])
                w = torch.softmax(scores, 0)
                out[b, h, i] = sum(w[n] * v[b, h, j] for n, j in enumerate(keys))
    return out


@pytest.mark.parametrize("impl", ["sdpa", "loop"])
def test_matches_formula_with_masks_and_empty_rows(impl):
    g = torch.Generator().manual_seed(0)
    B, H, S, d = 3, 2, 5, 4
    q, k, v = (torch.randn(B, H, S, d, generator=g, dtype=torch.float64) for _ in range(3))
    key_mask = torch.tensor([[1, 1, 0, 1, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    got = masked_attention(q, k, v, key_mask, impl=impl)
    want = reference(q, k, v, key_mask)
    assert torch.allclose(got, want, atol=1e-10)
    assert torch.all(got[1] == 0)  # sequence whose every key is masked
    assert not torch.isnan(got).any()


def test_scaling_matters():
    # Without the 1/sqrt(d) scale the output would differ: guard against a silent change.
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 1, 4, 16, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.ones(1, 4, dtype=torch.bool)
    got = masked_attention(q, k, v, mask)
    unscaled = torch.softmax(q @ k.transpose(-2, -1), -1) @ v
    assert not torch.allclose(got, unscaled)


def test_masked_keys_have_no_influence():
    torch.manual_seed(0)
    attn = MaskedSelfAttention(8, 2).eval()
    x = torch.randn(2, 6, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 0, 1, 0, 1, 0]], dtype=torch.bool)
    y1 = attn(x, mask)
    x2 = x.clone()
    x2[~mask] = torch.randn(int((~mask).sum()), 8) * 100
    y2 = attn(x2, mask)
    # queries at unmasked positions read only unmasked keys/values
    assert torch.allclose(y1[mask], y2[mask], atol=1e-5)


def test_both_modules_agree():
    torch.manual_seed(0)
    a = MaskedSelfAttention(8, 2, impl="sdpa").eval()
    b = MaskedSelfAttention(8, 2, impl="loop").eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 7, 8)
    mask = torch.rand(3, 7) > 0.4
    mask[0] = False
    assert torch.allclose(a(x, mask), b(x, mask), atol=1e-6)


def test_one_utterance_shortcut_equals_the_full_path():
    """S == 1 (utterance-level data) skips q and k: same output, same gradients — q and k
    get exact zeros, not None, so Adam treats them as before."""
    torch.manual_seed(0)
    fast = MaskedSelfAttention(8, 2).double()
    loop = MaskedSelfAttention(8, 2, impl="loop").double()   # the full computation
    loop.load_state_dict(fast.state_dict())
    x = torch.randn(5, 1, 8, dtype=torch.float64)
    key_mask = torch.tensor([[True], [False], [True], [True], [False]])
    outs = []
    for mod in (fast, loop):
        mod.zero_grad()
        out = mod(x, key_mask)
        (out.sin().sum()).backward()
        outs.append((out, {n: p.grad.clone() for n, p in mod.named_parameters()}))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=0, atol=1e-12)
    assert outs[0][0][1].abs().max() == 0           # a masked utterance attends to nothing
    for n, g in outs[1][1].items():
        torch.testing.assert_close(outs[0][1][n], g, rtol=0, atol=1e-12)
    assert float(outs[0][1]["q.weight"].abs().max()) == 0.0


def _holey_mask(g, B=9, S=7):
    """Rows of different lengths, holes inside rows, one empty row."""
    lengths = torch.randint(1, S + 1, (B,), generator=g)
    mask = (torch.arange(S)[None] < lengths[:, None]) & (torch.rand(B, S, generator=g) > 0.2)
    mask[2] = False
    mask[:, 0] |= torch.arange(B) != 2
    return mask


@pytest.mark.parametrize("grouped", [True, False])
def test_packing_places_every_available_position_once(grouped):
    mask = _holey_mask(torch.Generator().manual_seed(0))
    pk = Packing.of(mask, grouped)
    natural = mask.reshape(-1).nonzero().squeeze(1)
    assert torch.equal(pk.rows, natural[pk.order])
    assert sorted(pk.order.tolist()) == list(range(natural.numel()))
    assert pk.groups[0].start == 0 and pk.groups[-1].stop == natural.numel()
    for g, nxt in zip(pk.groups, pk.groups[1:]):
        assert g.stop == nxt.start and g.width >= nxt.width
    for g in pk.groups:
        assert int(g.key_mask.sum()) == g.stop - g.start
        slots = torch.arange(g.n * g.width) if g.slots is None else g.slots
        assert len(set(slots.tolist())) == g.stop - g.start
        assert torch.equal(g.key_mask.reshape(-1)[slots], torch.ones(len(slots), dtype=bool))
    if grouped:
        assert len(pk.groups) == 1 or sum(g.n * g.width for g in pk.groups) < mask.numel()


def test_cuts_split_lengths_far_apart_and_keep_equal_ones_together():
    assert Packing._cuts([5] * 40) == [(0, 40)]
    assert Packing._cuts([110] + [10] * 40) == [(0, 1), (1, 41)]
    assert Packing._cuts([12, 11, 10]) == [(0, 3)]         # a call costs more than padding


@pytest.mark.parametrize("grouped", [True, False])
def test_packed_attention_equals_the_grid_with_gradients(grouped):
    """The available rows attended group by group give what the (B, S) grid gives there, and
    the same parameter gradients (float64)."""
    g = torch.Generator().manual_seed(3)
    mask = _holey_mask(g, B=12, S=40)
    mask[0] = True                   # one long sequence beside short ones: several groups
    mask[1:, 6:] = False
    torch.manual_seed(0)
    attn = MaskedSelfAttention(8, 2).double()
    x = torch.randn(12, 40, 8, dtype=torch.float64)
    pk = Packing.of(mask, grouped)
    if grouped:
        assert len(pk.groups) > 1
    results = []
    for packed in (False, True):
        attn.zero_grad()
        if packed:
            out = attn.packed(x.reshape(-1, 8)[pk.rows], pk)
            full = torch.zeros(12 * 40, 8, dtype=torch.float64).index_copy(0, pk.rows, out)
            out = full.view(12, 40, 8)
        else:
            out = attn(x, mask) * mask[..., None]
        out.pow(2).sum().backward()
        results.append((out, {n: p.grad.clone() for n, p in attn.named_parameters()}))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=0, atol=1e-10)
    for n, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][n], grad, rtol=0, atol=1e-10)
