"""How sam_d2's meta-architectures take a checkpoint, whatever loads it.

Official files hold one sub-model each: a SAM file (``sam_vit_*.pth``) has ``image_encoder.*``,
``prompt_encoder.*`` and ``mask_decoder.*``; a detector file (ViTDet's ``model_final_*.pkl``) has
``backbone.*``, ``proposal_generator.*``, ``roi_heads.*``. A meta-architecture made of parts
(``sam``, ``detector``) calls :func:`register_part_loading` once; on every ``load_state_dict``
— Detectron2's ``DetectionCheckpointer`` (``DefaultPredictor``, ``DefaultTrainer``), sam_d2's
``SamCheckpointer``, or a plain call — the pre-hook then

1. places a file that fits one part under that part's name (``image_encoder.x`` ->
   ``sam.image_encoder.x``), after the part has renamed an official file's keys to its own
   (``adopt_official_keys``, e.g. SAM 2's ``sam_mask_decoder.*``);
2. refuses tensors of the wrong shape (another variant's file);
3. lets a part be absent from the file when it was already loaded from its own file
   (:func:`load_part_weights`, ``MODEL.SAM.WEIGHTS``): its current tensors are passed through, so
   no loader reports them as missing;
4. after loading (a post-hook, once the modules' own renamings have run), raises
   :class:`~sam_d2.checkpoint.CheckpointError` if any tensor of the model was not filled, with one
   line: how many tensors of the part the file filled, examples of what is missing and of what the
   file holds instead, and the variants of file and model when they differ.

A checkpoint that does not fit therefore never leaves a part of the model random.
"""

from typing import Any, Dict, List, Mapping, Sequence

from torch import nn

from ..checkpoint import CheckpointError, SamCheckpointer, describe_shape_mismatch, variant_hint

__all__ = ["register_part_loading", "load_part_weights"]

_LOADED_FROM = "_weights_loaded_from"
_ROOT_LOAD = "_part_loading_root_load"  # (foreign keys, variant hint) of a root load, pre -> post


def load_part_weights(part: nn.Module, path: str, new_modules: Sequence[str] = ()) -> None:
    """Load a checkpoint file into one part (e.g. ``MODEL.SAM.WEIGHTS`` into the SAM) and remember
    it, so that later checkpoints of the whole model may omit that part.

    Args:
        new_modules: names (in the part) of modules or parameters the file may lack; they keep
            their initialisation (:class:`~sam_d2.checkpoint.SamCheckpointer`).
    """
    SamCheckpointer(part, new_modules=new_modules).load(path)
    setattr(part, _LOADED_FROM, path)


def _top_level_names(module: nn.Module) -> List[str]:
    names = [n for n, _ in module.named_children()]
    names += [n for n, _ in module.named_parameters(recurse=False)]
    return names + [n for n, _ in module.named_buffers(recurse=False)]


def _place(state_dict: Dict[str, Any], prefix: str, parts: Mapping[str, nn.Module]) -> None:
    """Move keys of a part's own file (no part prefix) under the part's name, in place."""
    part_prefixes = tuple(f"{prefix}{name}." for name in parts)
    for name, part in parts.items():
        target = f"{prefix}{name}."
        if any(k.startswith(target) for k in state_dict):
            continue  # the file already has this part in the whole model's layout
        heads = tuple(f"{prefix}{n}." for n in _top_level_names(part))
        for key in [
            k for k in state_dict if k.startswith(heads) and not k.startswith(part_prefixes)
        ]:
            state_dict[target + key[len(prefix) :]] = state_dict.pop(key)


def _holds(state_dict: Dict[str, Any], part_prefix: str, part: nn.Module) -> bool:
    """Whether ``state_dict`` has any tensor of the part (under any of its top-level names)."""
    heads = tuple(f"{part_prefix}{n}." for n in _top_level_names(part))
    return any(k.startswith(heads) for k in state_dict)


def _describe_unfilled(
    model: nn.Module, names: Sequence[str], missing: List[str], foreign: List[str], hint: str
) -> str:
    """One line on the part a load left unfilled: counts, examples, what the file held instead."""
    for name in names:
        part = getattr(model, name) if name else model
        if part is None:
            continue
        prefix = f"{name}." if name else ""
        own = [prefix + k for k in part.state_dict()]
        lacking = [k for k in own if k in set(missing)]
        if lacking:
            label = f"'{name}'" if name else "model"
            return (
                f"checkpoint fills {len(own) - len(lacking)} of {len(own)} tensors of the {label} "
                f"(missing e.g. {lacking[:3]}"
                + (f"; the file holds e.g. {foreign[:3]})" if foreign else ")")
                + hint
            )
    return (
        f"checkpoint leaves {len(missing)} tensors of the model unfilled, e.g. {missing[:3]}{hint}"
    )


def register_part_loading(model: nn.Module, part_names: Sequence[str]) -> None:
    """Install the loading rules of the module docstring on ``model``.

    Args:
        model: the meta-architecture.
        part_names: attributes of ``model`` holding its parts (an attribute that is None is
            ignored, e.g. no detector when boxes come from the ground truth); ``""`` stands for
            ``model`` itself, a model that is one part (like :class:`PromptableSam`): then only
            completeness is checked. Parts are looked up at load time, so copies of the model
            (``copy.deepcopy``) check themselves.
    """
    names = tuple(part_names)

    def before(module: nn.Module, state_dict: Dict[str, Any], prefix: str, *args: Any) -> None:
        if prefix:  # loaded as a sub-module of a larger model: the root's hooks decide
            return
        parts = {n: getattr(module, n) if n else module for n in names}
        parts = {n: p for n, p in parts.items() if p is not None}
        for part in parts.values():
            if hasattr(part, "adopt_official_keys"):  # the file at the root, unprefixed
                part.adopt_official_keys(state_dict, prefix)
        _place(state_dict, prefix, {n: p for n, p in parts.items() if n})
        own = module.state_dict()
        mismatch = describe_shape_mismatch(state_dict, own)
        if mismatch:
            raise CheckpointError(mismatch)
        for name, part in parts.items():
            part_prefix = f"{name}." if name else ""
            if getattr(part, _LOADED_FROM, None) and not _holds(state_dict, part_prefix, part):
                state_dict.update({part_prefix + k: v for k, v in part.state_dict().items()})
        heads = tuple(f"{n}." for n in _top_level_names(module))
        foreign = [k for k in state_dict if not k.startswith(heads)]
        module.__dict__[_ROOT_LOAD] = (foreign, variant_hint(state_dict, own))

    def after(module: nn.Module, incompatible: Any) -> None:
        root_load = module.__dict__.pop(_ROOT_LOAD, None)
        if root_load is None or not incompatible.missing_keys:
            return
        missing = list(incompatible.missing_keys)
        raise CheckpointError(_describe_unfilled(module, names, missing, *root_load))

    model.register_load_state_dict_pre_hook(before)
    model.register_load_state_dict_post_hook(after)
