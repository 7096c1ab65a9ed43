"""Exact-math fast attention: the folded and chunked rel-pos attentions of the ViT and the factored
cross-attentions of the mask decoder equal the plain formulations (and the official modules)."""

import pytest
import torch
import torch.nn.functional as F

from sam_d2.modeling.transformer import DownsampledAttention, TwoWayTransformer
from sam_d2.modeling.vit import (
    FOLD_MIN_TOKENS,
    Attention,
    chunked_bias_attention,
    folded_rel_pos_attention,
    relative_position_bias,
)


def _reference_rel_pos_attention(q, k, v, table_h, table_w, hw):
    """Materialised logits + decomposed bias, softmax, values (the official formulation)."""
    c = q.shape[-1]
    logits = (q * c**-0.5) @ k.transpose(-2, -1)
    logits = logits + relative_position_bias(q, table_h, table_w, hw)
    return logits.softmax(dim=-1) @ v


@pytest.mark.parametrize("hw, c", [((5, 7), 16), ((6, 6), 12), ((3, 9), 8)])
def test_folded_attention_equals_bias_attention(hw, c):
    g = torch.Generator().manual_seed(0)
    b, heads, n = 2, 3, hw[0] * hw[1]
    q, k, v = (torch.randn(b, heads, n, c, generator=g) for _ in range(3))
    table_h = 0.5 * torch.randn(2 * hw[0] - 1, c, generator=g)
    table_w = 0.5 * torch.randn(2 * hw[1] - 1, c, generator=g)
    expected = _reference_rel_pos_attention(q, k, v, table_h, table_w, hw)
    out = folded_rel_pos_attention(q, k, v, table_h, table_w, hw)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_folded_attention_gradients_match():
    g = torch.Generator().manual_seed(1)
    hw, c = (4, 5), 8
    leaves = [torch.randn(1, 2, 20, c, generator=g, requires_grad=True) for _ in range(3)]
    tables = [torch.randn(2 * s - 1, c, generator=g, requires_grad=True) for s in hw]
    grads = []
    for fn in (folded_rel_pos_attention, _reference_rel_pos_attention):
        fn(*leaves, *tables, hw).square().sum().backward()
        grads.append([t.grad.clone() for t in leaves + tables])
        for t in leaves + tables:
            t.grad = None
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_folded_attention_bf16_error_is_small():
    """bf16 inputs: the folded form is at least as close to fp32 as the bias form."""
    g = torch.Generator().manual_seed(2)
    hw, c = (16, 16), 32
    q, k, v = (torch.randn(1, 2, 256, c, generator=g) for _ in range(3))
    tables = [0.3 * torch.randn(2 * s - 1, c, generator=g) for s in hw]
    exact = _reference_rel_pos_attention(q, k, v, *tables, hw)
    low = [t.bfloat16() for t in (q, k, v, *tables)]
    folded = folded_rel_pos_attention(*low, hw).float()
    bias = relative_position_bias(low[0], low[3], low[4], hw)
    plain = F.scaled_dot_product_attention(*low[:3], attn_mask=bias).float()
    err_folded = (folded - exact).abs().max().item()
    err_plain = (plain - exact).abs().max().item()
    assert err_folded < 0.05 and err_folded <= 1.5 * err_plain, (err_folded, err_plain)


@pytest.mark.parametrize("hw, chunk", [((5, 7), 1), ((5, 7), 8), ((6, 6), 36), ((3, 9), 100)])
def test_chunked_attention_equals_bias_attention(hw, chunk):
    g = torch.Generator().manual_seed(5)
    b, heads, n, c = 2, 3, hw[0] * hw[1], 8
    q, k, v = (torch.randn(b, heads, n, c, generator=g) for _ in range(3))
    tables = [0.5 * torch.randn(2 * s - 1, c, generator=g) for s in hw]
    expected = _reference_rel_pos_attention(q, k, v, *tables, hw)
    with torch.no_grad():
        out = chunked_bias_attention(q, k, v, *tables, hw, chunk_tokens=chunk)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_attention_module_paths(monkeypatch):
    """Global-size grids: fp32 inference attends in query chunks, autograd (or half precision)
    through the fold; windows add the bias. All give the same output."""
    side = int(FOLD_MIN_TOKENS**0.5)
    attn = Attention(32, 4, input_size=(side, side)).eval()
    with torch.no_grad():
        attn.rel_pos_h.normal_(0, 0.3)
        attn.rel_pos_w.normal_(0, 0.3)
    x = torch.randn(1, side, side, 32)
    calls = []
    import sam_d2.modeling.vit as vit

    for name in ("folded_rel_pos_attention", "chunked_bias_attention"):
        real = getattr(vit, name)
        monkeypatch.setattr(vit, name, lambda *a, _n=name, _f=real: calls.append(_n) or _f(*a))
    with torch.no_grad():
        chunked = attn(x)
    folded = attn(x)
    assert calls == ["chunked_bias_attention", "folded_rel_pos_attention"]
    monkeypatch.setattr(vit, "FOLD_MIN_TOKENS", side * side + 1)
    with torch.no_grad():
        plain = attn(x)
    assert len(calls) == 2
    torch.testing.assert_close(chunked, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(folded.detach(), plain, atol=1e-5, rtol=1e-5)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        attn(x)
    assert calls[-1] == "folded_rel_pos_attention"


def _random_attention(seed: int) -> DownsampledAttention:
    torch.manual_seed(seed)
    attn = DownsampledAttention(32, 4, downsample_rate=2)
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.3)
    return attn


@pytest.mark.parametrize("shared", [False, True])
def test_factored_cross_attentions_equal_plain_attention(shared):
    g = torch.Generator().manual_seed(3)
    attn = _random_attention(0)
    n, t, hw = 5, 7, 48
    tokens = torch.randn(n, t, 32, generator=g)
    image = torch.randn(1 if shared else n, hw, 32, generator=g)
    image_pe = torch.randn(1, hw, 32, generator=g)
    full = image.expand(n, -1, -1)
    with torch.no_grad():
        expected = attn(tokens, full + image_pe, full)
        got = attn.tokens_to_image(tokens, image + image_pe, image)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        expected = full + attn(full + image_pe, tokens + 1.0, tokens)
        got = attn.image_to_tokens(image + image_pe, tokens + 1.0, tokens, residual=image)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_two_way_transformer_shared_image_equals_expanded():
    torch.manual_seed(4)
    model = TwoWayTransformer(depth=2, embedding_dim=32, num_heads=4, mlp_dim=64).eval()
    image = torch.randn(1, 32, 6, 5)
    pe = torch.randn(1, 32, 6, 5)
    tokens = torch.randn(3, 4, 32)
    with torch.no_grad():
        shared = model(image, pe, tokens)
        expanded = model(image.expand(3, -1, -1, -1), pe, tokens)
    for a, b in zip(shared, expanded):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
