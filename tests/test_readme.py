"""Every ```python block of README.md runs as written (so the README stays true).

Each block runs on its own, in a fresh namespace, with the working directory set to a temporary
folder laid out like the repository root for a new user: ``configs/`` (a link to the repository's),
the official notebooks' images ``truck.jpg``, ``dog.jpg``, ``groceries.jpg`` (links into
``../shared/data/sam_images``), and random-weight checkpoints in the official format under the
official file names (:data:`CHECKPOINT_NAMES`).

Test-only shortcut (documented in README "Test"): while a block runs, the ``vit_b`` / ``vit_l`` /
``vit_h`` encoder presets are replaced by :data:`TINY_ENCODER` (2 blocks, 32 channels, same input
size and decoder), and the checkpoint files are written for that encoder, so a block that builds
"ViT-H" runs in seconds on a CPU. The code executed is the README's text, unchanged.
"""

import os
import re
from pathlib import Path
from typing import List, Tuple

import pytest
import torch
from conftest import REPO_ROOT, shared_path
from sam_reference import reference_sam

from sam_d2.modeling.image_encoder import ENCODER_PRESETS
from sam_d2.utils.random_weights import randomize_state_dict

README = REPO_ROOT / "README.md"
#: variant -> the official checkpoint file name a README block may load.
CHECKPOINT_NAMES = {
    "vit_b": "sam_vit_b_01ec64.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_h": "sam_vit_h_4b8939.pth",
}
TINY_ENCODER = dict(embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,))
EXAMPLE_IMAGES = ("truck.jpg", "dog.jpg", "groceries.jpg")


def python_blocks(text: str) -> List[Tuple[int, str]]:
    """(line number of the opening fence, code) of every ```python block of a markdown text."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if re.fullmatch(r"\s*```python\s*", lines[i]):
            start = i + 1
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                i += 1
            if i == len(lines):
                raise ValueError(f"README.md:{start}: ```python block is never closed")
            blocks.append((start, "\n".join(lines[start:i]) + "\n"))
        i += 1
    return blocks


BLOCKS = python_blocks(README.read_text())


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 2, "README.md lost its Quick start code blocks"


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory) -> Path:
    """A folder laid out like the repository root of a new user (see module docstring)."""
    root = tmp_path_factory.mktemp("readme_user")
    (root / "configs").symlink_to(REPO_ROOT / "configs", target_is_directory=True)
    for name in EXAMPLE_IMAGES:
        (root / name).symlink_to(shared_path("sam_images", name))
    model = reference_sam(**TINY_ENCODER)  # the official architecture with the tiny encoder
    state = randomize_state_dict(model.state_dict(), seed=0)
    for name in CHECKPOINT_NAMES.values():
        torch.save(state, root / name)
    return root


@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_readme_block_runs(line, code, user_dir, monkeypatch):
    for variant in CHECKPOINT_NAMES:
        monkeypatch.setitem(ENCODER_PRESETS, variant, TINY_ENCODER)
    monkeypatch.chdir(user_dir)
    namespace = {"__name__": "__main__"}
    try:
        # padded so that tracebacks give README.md line numbers
        exec(compile("\n" * line + code, str(README), "exec"), namespace)
    except Exception as e:
        pytest.fail(
            f"the ```python block at README.md:{line} fails when run on its own in a folder with "
            f"{sorted(os.listdir(user_dir))}: {type(e).__name__}: {e}",
            pytrace=True,
        )
