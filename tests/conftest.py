"""Shared pytest fixtures: where the real data lives (../shared/data beside the repository)."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """Path under ../shared/data; skips the calling test with a clear message if it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real test data not found at {path} (expected ../shared/data beside the repo)")
    return path


# One tiny SAM for every test that needs "a SAM" but not the real architecture: a 256-px input,
# 2 blocks (one windowed, one global), a narrow decoder. Encodes an image in milliseconds.
TINY_SAM = dict(
    img_size=256,
    embed_dim=64,
    depth=2,
    num_heads=2,
    global_attn_indexes=(1,),
    window_size=8,
    prompt_embed_dim=32,
    decoder_mlp_dim=64,
    decoder_num_heads=2,
    iou_head_hidden_dim=32,
    mask_in_chans=4,
)


def tiny_sam(seed: int = 0, **overrides):
    """``sam_d2.build_sam("custom", **TINY_SAM)`` with every parameter and buffer randomised."""
    import sam_d2
    from sam_d2.utils.random_weights import randomize_state_dict

    model = sam_d2.build_sam("custom", **{**TINY_SAM, **overrides})
    model.load_state_dict(randomize_state_dict(model.state_dict(), seed))
    return model.eval()
