"""Loading official SAM (``sam_vit_*.pth``) and ViTDet (``model_final_*.pkl``) checkpoints.

:class:`SamCheckpointer` is a Detectron2 ``DetectionCheckpointer`` that additionally
- renames official SAM keys onto sam_d2's (``image_encoder.blocks.N.mlp.lin1/2`` ->
  ``mlp.fc1/2``) and turns ViTDet's cls-token position embedding (1, 1 + s*s, C) into sam_d2's
  (1, s, s, C) grid;
- places a checkpoint of a sub-model under the sub-module it belongs to (a SAM checkpoint into
  ``model.sam`` of a detector-prompted model, a detector checkpoint into ``model.detector``);
- fails with one line naming the file and the problem for missing, corrupt or mismatched files
  (another variant's weights, e.g. ViT-H weights into a ViT-B model), and, for official SAM
  checkpoints, for any missing or unexpected key.
"""

import logging
import os
from typing import Any, Dict, Iterable, Optional

import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch import Tensor, nn

from .modeling.families import family_variant_of

__all__ = [
    "SamCheckpointer",
    "CheckpointError",
    "convert_official_state_dict",
    "load_sam_checkpoint",
]

logger = logging.getLogger(__name__)

_SAM_PREFIXES = ("image_encoder.", "prompt_encoder.", "mask_decoder.")
_WIDTH_TO_VARIANT = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or does not fit the model."""


def _is_sam_state_dict(keys: Iterable[str]) -> bool:
    keys = list(keys)
    return bool(keys) and all(k.startswith(_SAM_PREFIXES) for k in keys)


def convert_official_state_dict(state_dict: Dict[str, Any]) -> Dict[str, Any]:
    """Map official SAM / ViTDet key names and layouts onto sam_d2's.

    - ``*.blocks.N.mlp.lin1|lin2`` (official SAM encoder) -> ``*.blocks.N.mlp.fc1|fc2``
    - ``*pos_embed`` of shape (1, 1 + s*s, C) (ViTDet/MAE, with cls token) -> (1, s, s, C)
    Other keys pass unchanged. Tensors may be numpy arrays (Detectron2 ``.pkl`` files).
    """
    out = {}
    for key, value in state_dict.items():
        if ".blocks." in key or key.startswith("blocks."):
            key = key.replace(".mlp.lin1.", ".mlp.fc1.").replace(".mlp.lin2.", ".mlp.fc2.")
        if key.endswith("pos_embed") and len(value.shape) == 3:
            value = torch.as_tensor(value)
            n = value.shape[1] - 1
            side = int(round(n**0.5))
            if side * side != n:
                raise CheckpointError(
                    f"{key}: position embedding of shape {tuple(value.shape)} is not 1 + s*s tokens"
                )
            value = value[:, 1:].reshape(1, side, side, value.shape[2])
        out[key] = value
    return out


def _placement_prefix(file_keys: Iterable[str], model_keys: Iterable[str]) -> str:
    """The sub-module prefix ("" or e.g. "sam.") under which most checkpoint keys exist."""
    file_keys, model_keys = list(file_keys), set(model_keys)
    prefixes = {""} | {k.split(".", 1)[0] + "." for k in model_keys}
    hits = {p: sum((p + k) in model_keys for k in file_keys) for p in prefixes}
    best = max(sorted(hits), key=lambda p: hits[p])
    return best if hits[best] > hits[""] else ""


def _variant_of(state_dict: Dict[str, Any], prefix: str) -> Optional[str]:
    family = family_variant_of(state_dict)  # MobileSAM, ...
    if family is not None:
        return family
    w = state_dict.get(prefix + "image_encoder.patch_embed.proj.weight")
    return None if w is None else _WIDTH_TO_VARIANT.get(int(w.shape[0]), f"width {w.shape[0]}")


class SamCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer reading official SAM and ViTDet checkpoints as well (see module)."""

    def load(self, path: str, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        if path and "://" not in path and not os.path.isfile(path):
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
        model = loaded.get("model")
        if not isinstance(model, dict):
            raise CheckpointError(f"{filename}: no state dict found (got {type(model).__name__})")
        loaded["model"] = convert_official_state_dict(model)
        loaded["__official_sam__"] = _is_sam_state_dict(model)
        return loaded

    def _load_model(self, checkpoint: Dict[str, Any]) -> Any:
        filename = getattr(self, "_current_file", "<checkpoint>")
        own = self.model.state_dict()
        state = checkpoint["model"]
        if not checkpoint.get("matching_heuristics", False):
            prefix = _placement_prefix(state.keys(), own.keys())
            if prefix:
                logger.info(f"{filename}: loading into sub-module '{prefix[:-1]}'")
                state = {prefix + k: v for k, v in state.items()}
                checkpoint["model"] = state
            self._check_shapes(filename, state, own, prefix)
            if checkpoint.pop("__official_sam__", False):
                self._check_complete(filename, state, own, prefix)
        checkpoint.pop("__official_sam__", None)
        return super()._load_model(checkpoint)

    @staticmethod
    def _check_shapes(
        filename: str, state: Dict[str, Any], own: Dict[str, Tensor], prefix: str
    ) -> None:
        bad = [
            (k, tuple(v.shape), tuple(own[k].shape))
            for k, v in state.items()
            if k in own and tuple(v.shape) != tuple(own[k].shape)
        ]
        if not bad:
            return
        k, got, want = bad[0]
        hint = ""
        ck_variant, model_variant = _variant_of(state, prefix), _variant_of(own, prefix)
        if ck_variant and model_variant and ck_variant != model_variant:
            hint = f"; the checkpoint is {ck_variant} but the model is {model_variant}"
        raise CheckpointError(
            f"{filename}: {len(bad)} tensors do not fit the model, e.g. {k}: checkpoint {got} vs "
            f"model {want}{hint}"
        )

    @staticmethod
    def _check_complete(
        filename: str, state: Dict[str, Any], own: Dict[str, Tensor], prefix: str
    ) -> None:
        expected = {k for k in own if k.startswith(tuple(prefix + p for p in _SAM_PREFIXES))}
        missing = sorted(expected - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise CheckpointError(
                f"{filename}: SAM checkpoint does not match the model: {len(missing)} missing "
                f"keys {missing[:3]}, {len(unexpected)} unexpected keys {unexpected[:3]}"
            )


def load_sam_checkpoint(model: nn.Module, path: str) -> None:
    """Load a checkpoint (official SAM, ViTDet or sam_d2) into ``model`` on CPU-only machines."""
    SamCheckpointer(model).load(path)
