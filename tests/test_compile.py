"""``torch.compile`` opt-in (``sam_d2.modeling.speed.compile_sam``) on CPU with a tiny model:
same outputs as eager, any prompt count after the first compilation, checkpoints unchanged.

Cost: inductor compiles the tiny encoder and the dynamic-shape decoder once, ~145 s of CPU time
(measured on the shared 2-core machine: 260 s wall at a 37 % CPU share); the compiled graph, not
the model size, sets it, so it cannot be made much cheaper and still test the real path."""

import pytest
import torch

import sam_d2
from sam_d2.modeling.speed import compile_sam

TINY = dict(embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=4)


def test_compiled_sam_matches_eager():
    pytest.importorskip("torch._inductor")
    torch.manual_seed(0)
    eager = sam_d2.build_sam("custom", img_size=128, **TINY).eval()
    compiled = sam_d2.build_sam("custom", img_size=128, **TINY).eval()
    compiled.load_state_dict(eager.state_dict())
    compile_sam(compiled)
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    g = torch.Generator().manual_seed(1)
    images = torch.randn(1, 3, 128, 128, generator=g)
    with torch.no_grad():
        emb = eager.encode(images)
        torch.testing.assert_close(compiled.encode(images), emb, atol=1e-4, rtol=1e-4)
        for n in (3, 5):  # a second prompt count reuses the dynamic-shape decoder
            coords = torch.rand(n, 2, 2, generator=g) * 128
            labels = torch.randint(0, 2, (n, 2), generator=g)
            expected = eager.decode(emb, coords, labels)
            for a, b in zip(compiled.decode(emb, coords, labels), expected):
                torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_compile_sam_rejects_other_modules():
    with pytest.raises(ValueError, match="no image_encoder"):
        compile_sam(torch.nn.Linear(2, 2))
