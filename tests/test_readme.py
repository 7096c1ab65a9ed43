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


# ---------------------------------------------------------------- commands and names in docs
def _fenced(text: str, language: str) -> List[Tuple[int, str]]:
    """(line number, line) of every line inside ```<language> blocks."""
    out, inside = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip().startswith("```"):
            inside = not inside and line.strip() == f"```{language}"
        elif inside:
            out.append((number, line))
    return out


def test_readme_commands_use_python_tools_and_existing_files():
    """Shell lines run tools as `python tools/X.py` (they are not executable scripts), and every
    tool and config the README names exists."""
    text = README.read_text()
    for number, line in _fenced(text, "bash"):
        for match in re.finditer(r"(\S*)\s*\btools/\w+\.py", line):
            assert match.group(1) in ("python", ".venv/bin/python"), (
                f"README.md:{number}: run tools as `python tools/X.py`: {line.strip()}"
            )
    for path in set(re.findall(r"\b(?:tools/\w+\.py|configs/[\w/.-]+\.yaml)", text)):
        assert (REPO_ROOT / path).exists(), f"README.md names {path}, which does not exist"


def _config_datasets() -> List[Tuple[str, str]]:
    """(config file, dataset name) for every name in DATASETS.TRAIN / TEST of configs/."""
    import ast

    import yaml

    out = []
    for path in sorted((REPO_ROOT / "configs").rglob("*.yaml")):
        datasets = (yaml.safe_load(path.read_text()) or {}).get("DATASETS") or {}
        for split in ("TRAIN", "TEST"):
            value = datasets.get(split, ())
            names = ast.literal_eval(value) if isinstance(value, str) else value
            out += [(str(path.relative_to(REPO_ROOT)), name) for name in names]
    return out


def test_datasets_readme_documents_every_dataset_the_configs_read():
    """Every builtin (registered on import) dataset a config reads has its entry; names that
    users register themselves (e.g. through SAM_D2_COCO_DATASETS) are not builtins."""
    from detectron2.data import DatasetCatalog

    import sam_d2  # noqa: F401  (registers the builtins)

    text = (REPO_ROOT / "datasets" / "README.md").read_text()
    pairs = [(c, n) for c, n in _config_datasets() if n in DatasetCatalog.list()]
    assert len(pairs) >= 25, "expected COCO, LVIS, BSDS500 and the 23 point datasets in configs/"
    for config, name in pairs:
        listed = name.removeprefix("sam23_") if name.startswith("sam23_") else name
        assert f"`{listed}`" in text, f"{config} reads {name!r}; datasets/README.md lacks it"
