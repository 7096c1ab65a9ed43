"""Layer-wise lr decay for every encoder trunk of the SAM family, each by its own recipe.

A parameter's lr is the base lr times a factor ``decay ** (deepest layer - its layer)``, so the
layers nearest the input change least. With D blocks in the trunk and block i counted from 0:

- :class:`~.vit.ViT` (SAM ``vit_*``, HQ-SAM ``hq_vit_*``, ViTDet; the MAE / ViTDet recipe,
  :func:`sam_d2.modeling.vit.lr_decay_rate`): patch and position embeddings ``decay^(D+1)``,
  block i ``decay^(D-i)``, the rest of the encoder (SAM's neck) 1.
- :class:`~.hiera.Hiera` (SAM 2.1): SAM 2's ``Hiera.get_layer_id`` is the same rule (hence the same
  function), which ``training.optimizer.layer_decay_param_modifier`` applies to
  ``image_encoder.trunk`` only; SAM 2.1's training config (``sam2.1_training/*.yaml``) overrides
  ``*pos_embed*`` (both position embeddings) to factor 1, and so does this module.
- :class:`~.tiny_vit.TinyViT` (MobileSAM ``vit_t``; ``TinyViT.set_layer_lr_decay`` of TinyViT and
  MobileSAM): block i counted over all stages ``decay^(D-1-i)``, the patch embedding as block 0,
  each stage's downsampling (patch merging) as that stage's last block; what it leaves unscaled
  (TinyViT's classifier head, in MobileSAM the neck) 1.

Parameters outside the trunks (SAM 2's FPN neck and high-res projections, prompt encoders, mask
decoders, detector heads) keep factor 1.
"""

from functools import partial
from typing import Callable, Dict, Sequence

from torch import nn

from .hiera import Hiera
from .tiny_vit import TinyViT
from .vit import ViT, lr_decay_rate

__all__ = ["KNOWN_TRUNKS", "layer_decay_factors"]

#: The encoder trunks whose layers :func:`layer_decay_factors` knows.
KNOWN_TRUNKS = (ViT, Hiera, TinyViT)


def _hiera_factor(depth: int, decay: float, name: str) -> float:
    """SAM 2's rule for a Hiera parameter ``name`` (relative to the trunk), pos embeds exempt."""
    return 1.0 if "pos_embed" in name else lr_decay_rate(name, decay, depth)


def _tiny_vit_factor(depths: Sequence[int], decay: float, name: str) -> float:
    """TinyViT's rule for a parameter ``name`` (relative to the trunk); ``depths`` per stage."""
    total = sum(depths)
    layer = total - 1  # unscaled, as TinyViT's classifier head
    if name.startswith("patch_embed."):
        layer = 0
    elif name.startswith("layers."):
        _, stage, part, *rest = name.split(".")
        first = sum(depths[: int(stage)])
        layer = first + (int(rest[0]) if part == "blocks" else depths[int(stage)] - 1)
    return decay ** (total - 1 - layer)


def _trunk_rule(trunk: nn.Module, decay: float) -> Callable[[str], float]:
    """The factor of a parameter of the known ``trunk``, from its name relative to the trunk."""
    if isinstance(trunk, ViT):
        depth = len(trunk.blocks)
        return lambda name: lr_decay_rate(name, decay, depth)
    if isinstance(trunk, Hiera):
        return partial(_hiera_factor, len(trunk.blocks), decay)
    return partial(_tiny_vit_factor, [len(stage.blocks) for stage in trunk.layers], decay)


def _encoder(model: nn.Module) -> nn.Module:
    """The module whose layers decay: SAM's ``image_encoder``, a detector's ``backbone``, else
    the model itself."""
    for attr in ("image_encoder", "backbone"):
        encoder = getattr(model, attr, None)
        if isinstance(encoder, nn.Module):
            return encoder
    return model


def layer_decay_factors(model: nn.Module, decay: float) -> Callable[[str], float]:
    """The lr factor of each parameter of ``model`` under layer-wise decay ``decay``.

    Every trunk of :data:`KNOWN_TRUNKS` in ``model`` follows its family's recipe (module
    docstring); other parameters get 1.

    Args:
        model: a model holding one or more encoder trunks (e.g. a ``PromptableSam``, a ViTDet
            ``GeneralizedRCNN``, or a trunk itself).
        decay: the decay per layer; 1.0 turns it off (every factor 1, nothing checked).

    Returns:
        ``factor(name)`` for a parameter name of ``model.named_parameters()``, as Detectron2's
        ``get_default_optimizer_params(lr_factor_func=...)`` takes it.

    Raises:
        ValueError: ``decay`` is not 1 and the model's encoder (its ``image_encoder``, else its
            ``backbone``, else the model) holds no known trunk.
    """
    if decay == 1.0:
        return lambda name: 1.0
    encoder = _encoder(model)
    if not any(isinstance(m, KNOWN_TRUNKS) for m in encoder.modules()):
        raise ValueError(
            f"layer-wise lr decay {decay}: no rule for the encoder {type(encoder).__name__} "
            f"(known trunks: {', '.join(t.__name__ for t in KNOWN_TRUNKS)}); use a decay of 1.0"
        )
    rules: Dict[str, Callable[[str], float]] = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, KNOWN_TRUNKS) and not any(prefix.startswith(p) for p in rules):
            rules[prefix] = _trunk_rule(module, decay)

    def factor(name: str) -> float:
        for prefix, rule in rules.items():
            if name.startswith(prefix):
                return rule(name[len(prefix) :])
        return 1.0

    return factor
