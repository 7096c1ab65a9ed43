"""SAM's training losses: focal + dice on the best of the multimask outputs, MSE on IoU."""

from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["sam_mask_losses", "mask_iou"]


def mask_iou(pred: Tensor, gt: Tensor) -> Tensor:
    """IoU of binary masks: pred (N, K, H, W) bool, gt (N, 1, H, W) bool -> (N, K)."""
    inter = (pred & gt).flatten(2).sum(-1).float()
    union = (pred | gt).flatten(2).sum(-1).float()
    return inter / union.clamp(min=1)


def sam_mask_losses(
    logits: Tensor,
    iou_pred: Tensor,
    gt: Tensor,
    focal_weight: float = 20.0,
    dice_weight: float = 1.0,
    iou_weight: float = 1.0,
    gamma: float = 2.0,
    alpha: float = 0.25,
) -> Dict[str, Tensor]:
    """Losses of the SAM paper: focal:dice 20:1 on the output with the lowest mask loss per
    prompt, plus MSE between predicted IoU and the actual IoU of every output.

    Args:
        logits: (N, K, H, W) mask logits.
        iou_pred: (N, K) predicted IoUs.
        gt: (N, H, W) binary target masks in the same frame as ``logits``.

    Returns:
        {"loss_mask_focal", "loss_mask_dice", "loss_iou"}, each a scalar.
    """
    target = gt[:, None].to(logits.dtype).expand_as(logits)
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    focal = ce * (1 - p_t) ** gamma
    focal = (alpha * target + (1 - alpha) * (1 - target)) * focal
    focal = focal.flatten(2).mean(-1)  # (N, K)
    inter = (prob * target).flatten(2).sum(-1)
    dice = 1 - (2 * inter + 1) / (prob.flatten(2).sum(-1) + target.flatten(2).sum(-1) + 1)
    per_output = focal_weight * focal + dice_weight * dice
    best = per_output.argmin(dim=1)
    rows = torch.arange(logits.shape[0], device=logits.device)
    with torch.no_grad():
        actual_iou = mask_iou(logits > 0, gt[:, None].bool())
    n = max(logits.shape[0], 1)
    return {
        "loss_mask_focal": focal_weight * focal[rows, best].sum() / n,
        "loss_mask_dice": dice_weight * dice[rows, best].sum() / n,
        "loss_iou": iou_weight * F.mse_loss(iou_pred, actual_iou, reduction="sum") / n,
    }
