"""``sam_mask_losses`` against focal / dice / MSE values computed by hand."""

import math

import pytest
import torch

from sam_d2.modeling.losses import mask_iou, sam_mask_losses

LN3 = math.log(3.0)


def test_losses_match_hand_computed_values():
    # One prompt, two outputs over a 1x2 image whose target is [1, 0].
    #   output 0: logits [0, 0]       -> p = [1/2, 1/2]
    #   output 1: logits [ln3, -ln3]  -> p = [3/4, 1/4]
    # Focal (gamma 2, alpha 0.25 on positives, 0.75 on negatives), mean over pixels:
    #   output 0: ce = ln2, (1 - p_t)^2 = 1/4 -> (0.25 + 0.75) * ln2 / 4 / 2 = ln2 / 8
    #   output 1: ce = ln(4/3), (1 - p_t)^2 = 1/16 -> ln(4/3) / 32
    # Dice 1 - (2 inter + 1) / (sum p + sum t + 1):
    #   output 0: 1 - 2/3 = 1/3;  output 1: 1 - 2.5/3 = 1/6
    # 20 focal + dice: output 0 = 2.5 ln2 + 1/3 = 2.07, output 1 = 0.625 ln(4/3) + 1/6 = 0.35
    # -> output 1 is supervised. Its binary mask [1, 0] has IoU 1, output 0's [0, 0] IoU 0.
    logits = torch.tensor([[[[0.0, 0.0]], [[LN3, -LN3]]]])
    gt = torch.tensor([[[True, False]]])
    iou_pred = torch.tensor([[0.2, 0.7]])
    out = sam_mask_losses(logits, iou_pred, gt)
    assert set(out) == {"loss_mask_focal", "loss_mask_dice", "loss_iou"}
    assert math.isclose(out["loss_mask_focal"].item(), 20 * math.log(4 / 3) / 32, rel_tol=1e-6)
    assert math.isclose(out["loss_mask_dice"].item(), 1 / 6, rel_tol=1e-6)
    # MSE over every output: (0.2 - 0)^2 + (0.7 - 1)^2
    assert math.isclose(out["loss_iou"].item(), 0.04 + 0.09, rel_tol=1e-6)


def test_losses_average_over_prompts_and_pick_each_prompts_best_output():
    # Prompt 2 has the outputs of prompt 1 swapped: its best output is output 0. Equal losses,
    # so the mean over the 2 prompts equals one prompt's value; weights scale each term.
    logits = torch.tensor([[[[0.0, 0.0]], [[LN3, -LN3]]], [[[LN3, -LN3]], [[0.0, 0.0]]]])
    gt = torch.tensor([[[True, False]], [[True, False]]])
    iou_pred = torch.tensor([[0.2, 0.7], [0.7, 0.2]])
    out = sam_mask_losses(logits, iou_pred, gt, focal_weight=10.0, dice_weight=2.0, iou_weight=3.0)
    assert math.isclose(out["loss_mask_focal"].item(), 10 * math.log(4 / 3) / 32, rel_tol=1e-6)
    assert math.isclose(out["loss_mask_dice"].item(), 2 / 6, rel_tol=1e-6)
    assert math.isclose(out["loss_iou"].item(), 3 * 0.13, rel_tol=1e-6)


def test_mask_iou():
    pred = torch.tensor([[[[True, True, False, False]], [[False, False, False, False]]]])
    gt = torch.tensor([[[[True, False, True, False]]]])
    assert mask_iou(pred, gt).tolist() == [[pytest.approx(1 / 3), 0.0]]
