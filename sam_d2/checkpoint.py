"""sam_d2's checkpointer: Detectron2's ``DetectionCheckpointer`` that refuses files that do not fit.

Layouts need no conversion here: the modules load official files themselves (SAM's ``mlp.lin1``
names in :class:`~sam_d2.modeling.vit.Mlp`, ViTDet's class-token position embedding stored as
upstream stores it, sub-model files placed by :mod:`sam_d2.modeling.weights`), so Detectron2's own
``DetectionCheckpointer`` and ``DefaultPredictor`` load them as well. What this class adds is
strictness, with one line naming the file:

- a missing or unreadable file, or one without a state dict;
- tensors whose shapes differ from the model's (with the variant of each, e.g. "the checkpoint is
  vit_h but the model is vit_b") — Detectron2 would skip them with a warning;
- a file that leaves parameters of the model unfilled, or holds tensors the model does not have
  (with the variants too, e.g. a SAM file into a SAM 2.1 model) — Detectron2 would warn and go
  on with a partly random model. Exceptions: parts loaded from their
  own file (``MODEL.SAM.WEIGHTS``), and ``matching_heuristics`` loads (pretrained backbones, e.g.
  MAE for ViTDet training), which are partial by design.
"""

import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from detectron2.checkpoint import DetectionCheckpointer
from torch import Tensor, nn

from .modeling.families import family_variant_of

__all__ = [
    "SamCheckpointer",
    "CheckpointError",
    "describe_shape_mismatch",
    "load_sam_checkpoint",
    "variant_hint",
]

logger = logging.getLogger(__name__)

_WIDTH_TO_VARIANT = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or does not fit the model."""


def _variant_of(state_dict: Dict[str, Any]) -> Optional[str]:
    """ "vit_b" / "vit_l" / "vit_h" from the width of a SAM image encoder among the tensors, or the
    SAM-family variant (MobileSAM, ...) the keys reveal."""
    family = family_variant_of(state_dict)
    if family is not None:
        return family
    for key, value in state_dict.items():
        if key.endswith("image_encoder.patch_embed.proj.weight"):
            width = int(value.shape[0])
            return _WIDTH_TO_VARIANT.get(width, f"width {width}")
    return None


def variant_hint(state: Dict[str, Any], own: Dict[str, Any]) -> str:
    """ "; the checkpoint is X but the model is Y" when the tensors of a file (``state``) and of
    the model (``own``) reveal different SAM variants, else ""."""
    ck_variant, model_variant = _variant_of(state), _variant_of(own)
    if ck_variant and model_variant and ck_variant != model_variant:
        return f"; the checkpoint is {ck_variant} but the model is {model_variant}"
    return ""


def describe_shape_mismatch(state: Dict[str, Any], own: Dict[str, Tensor]) -> Optional[str]:
    """One line on the tensors of ``state`` whose shapes differ from the model's ``own``, or None.

    Names the SAM variant of each side when they differ (e.g. ViT-H weights into a ViT-B model).
    """
    bad: List[Tuple[str, tuple, tuple]] = [
        (k, tuple(v.shape), tuple(own[k].shape))
        for k, v in state.items()
        if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)
    ]
    if not bad:
        return None
    key, got, want = bad[0]
    return (
        f"{len(bad)} tensors do not fit the model, e.g. {key}: checkpoint {got} vs model "
        f"{want}{variant_hint(state, own)}"
    )


class SamCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that fails with one line on any file that does not fit (module doc).

    ``new_modules`` names modules (or parameters) of the model that a file may lack, e.g.
    HQ-SAM's additions when it starts from a SAM file: those the file does not hold keep their
    current values; every other tensor must still come from the file.
    """

    def __init__(self, model: nn.Module, *args: Any, new_modules: Sequence[str] = (), **kwargs):
        super().__init__(model, *args, **kwargs)
        own = list(model.state_dict())
        for name in new_modules:
            if not any(k == name or k.startswith(f"{name}.") for k in own):
                raise CheckpointError(
                    f"new module {name!r} names no module or parameter of the model (names look "
                    "like 'mask_decoder.hf_token')"
                )
        self.new_modules = tuple(new_modules)

    def _keep_new_modules(self, state: Dict[str, Any], own: Dict[str, Tensor]) -> None:
        """Give the file the model's current tensors of ``new_modules`` that it lacks."""
        for key, value in own.items():
            new = any(key == n or key.startswith(f"{n}.") for n in self.new_modules)
            if new and key not in state:
                state[key] = value

    def load(self, path: str, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        if path and "://" not in path and not os.path.isfile(path.split("?")[0]):
            raise CheckpointError(f"{path}: checkpoint file not found")
        self._current_file = path
        return super().load(path, *args, **kwargs)

    def _load_file(self, filename: str) -> Dict[str, Any]:
        try:
            loaded = super()._load_file(filename)
        except Exception as e:  # torch/pickle raise many types for a damaged file
            raise CheckpointError(
                f"{filename}: not a readable checkpoint ({type(e).__name__}: {e})"
            ) from e
        if not isinstance(loaded.get("model"), dict):
            found = type(loaded.get("model")).__name__
            raise CheckpointError(f"{filename}: no state dict found (got {found})")
        return loaded

    def _load_model(self, checkpoint: Dict[str, Any]) -> Any:
        filename = getattr(self, "_current_file", "<checkpoint>")
        heuristics = checkpoint.get("matching_heuristics", False)
        own = self.model.state_dict()
        self._keep_new_modules(checkpoint["model"], own)
        hint = "" if heuristics else variant_hint(checkpoint["model"], own)
        if not heuristics:
            mismatch = describe_shape_mismatch(checkpoint["model"], own)
            if mismatch:
                raise CheckpointError(f"{filename}: {mismatch}")
        try:
            incompatible = super()._load_model(checkpoint)
        except CheckpointError as e:
            raise CheckpointError(f"{filename}: {e}") from None
        if not heuristics and incompatible is not None:
            self._check_complete(
                filename,
                incompatible.missing_keys,
                incompatible.unexpected_keys,
                hint,
            )
        return incompatible

    def _check_complete(
        self, filename: str, missing: List[str], unexpected: List[str], hint: str
    ) -> None:
        if not missing and not unexpected:
            return
        total = len(self.model.state_dict())
        raise CheckpointError(
            f"{filename}: does not fit the model: {len(missing)} of its {total} tensors not in the "
            f"file (e.g. {sorted(missing)[:3]}), {len(unexpected)} tensors of the file unused "
            f"(e.g. {sorted(unexpected)[:3]}){hint}"
        )


def load_sam_checkpoint(model: nn.Module, path: str) -> None:
    """Load a checkpoint (official SAM, ViTDet or sam_d2) into ``model``, strictly, on the CPU."""
    SamCheckpointer(model).load(path)
