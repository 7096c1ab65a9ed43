"""Simulated interactive training of SAM (paper appendix A, "Training algorithm").

Every ground-truth mask of a batch goes through ``1 + num_correction_points (+ 2)`` rounds
(11 with the paper's defaults), all masks of the batch advancing together, round by round:

* **Round 0**: the first prompt is, with probability ``box_prob`` per mask, the mask's tight box
  with Gaussian noise on each coordinate (std ``box_noise_std`` x the box side, clipped to
  ``box_noise_max`` pixels), otherwise one foreground point drawn uniformly inside the mask.
* **Correction rounds**: one point drawn uniformly from the error region of the previous
  prediction: foreground (label 1) where the prediction misses the mask, background (label 0)
  where it spills over. The previous prediction's *unthresholded* low-res logits are fed back
  as the mask prompt. When the decoder gave several outputs, the one with the highest
  predicted IoU is fed back and used for the error region.
* **No-point rounds** (``no_point_rounds``): two rounds add no point and only feed the logits
  back, one inserted at a random position among the correction rounds, one always last.
* **Outputs**: the decoder's 3 ambiguity-aware masks while the prompt is a single point (no
  box), the lowest-loss one supervised; the single-mask token otherwise.
* **Loss** (:func:`sam_d2.modeling.losses.sam_mask_losses`): focal:dice 20:1 plus the MSE of the
  IoU head, averaged over masks and rounds.

Everything runs at the decoder's low-res mask resolution (256 x 256 for a 1024 input; 4 input
pixels per low-res pixel): targets are the GT masks downsampled like SAM's own prediction, and
sampled points sit at the centre of their low-res pixel. Masks that vanish at that resolution
(smaller than a few input pixels) are not trained on. Points are sampled on the model's device
with ``torch`` (a random score per error pixel, arg-max), so there is no Python loop over masks:
per round there is one decoder call for the box-first masks and one for the point-first masks
(their token counts differ), whatever the number of images and masks. Fed-back logits are
detached: gradients flow through each round's own prediction, not across rounds.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from torch import Tensor

from .losses import sam_mask_losses
from .sam import Sam

__all__ = [
    "InteractiveTraining",
    "round_schedule",
    "sample_error_points",
    "noisy_boxes",
    "mask_boxes",
    "to_low_res",
]

LOSS_KEYS = ("loss_mask_focal", "loss_mask_dice", "loss_iou")


def round_schedule(
    num_correction_points: int, no_point_rounds: bool, generator: Optional[torch.Generator] = None
) -> List[bool]:
    """Whether each round after the first adds a point.

    Args:
        num_correction_points: rounds that add one sampled point (paper: 8).
        no_point_rounds: add the paper's two rounds without a new point: one at a uniformly
            random position among the correction rounds, one last.
        generator: CPU generator of the random position (default: torch's global one).

    Returns:
        ``num_correction_points (+ 2)`` booleans, True where the round adds a point.
    """
    schedule = [True] * num_correction_points
    if no_point_rounds:
        pos = int(torch.randint(0, num_correction_points + 1, (1,), generator=generator))
        schedule.insert(pos, False)
        schedule.append(False)
    return schedule


def to_low_res(masks: Tensor, img_size: int, low_hw: Tuple[int, int]) -> Tensor:
    """Input-frame masks -> the decoder's low-res frame, as SAM's own outputs are laid out.

    Args:
        masks: (N, h, w) bool or float masks in the input frame (h, w <= img_size).
        img_size: side of the padded square encoder input.
        low_hw: (H, W) of the low-res decoder output.

    Returns:
        (N, H, W) bool: zero-padded to the square, bilinearly downsampled, thresholded at 0.5.
    """
    padded = F.pad(masks.float(), (0, img_size - masks.shape[-1], 0, img_size - masks.shape[-2]))
    return F.interpolate(padded[:, None], low_hw, mode="bilinear", align_corners=False)[:, 0] > 0.5


def mask_boxes(masks: Tensor) -> Tensor:
    """Tight XYXY boxes (N, 4) float of non-empty masks (N, h, w); x1, y1 exclusive."""
    h, w = masks.shape[-2:]
    rows, cols = masks.any(2), masks.any(1)
    y0 = rows.float().argmax(1)
    y1 = h - rows.flip(1).float().argmax(1)
    x0 = cols.float().argmax(1)
    x1 = w - cols.flip(1).float().argmax(1)
    return torch.stack([x0, y0, x1, y1], dim=1).float()


def noisy_boxes(
    boxes: Tensor,
    image_hw: Tensor,
    std: float,
    max_px: float,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Boxes with Gaussian noise per coordinate (std ``std`` x side, clipped to ``max_px``).

    Args:
        boxes: (N, 4) XYXY.
        image_hw: (N, 2) (h, w) of each box's image; noisy boxes are clipped to it.
        std: noise std as a fraction of the box width (x) or height (y).
        max_px: largest absolute noise per coordinate, in pixels.
        generator: generator on ``boxes.device`` (default: torch's global one).

    Returns:
        (N, 4) XYXY with x0 <= x1 and y0 <= y1.
    """
    side = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], dim=1).repeat(1, 2)
    noise = torch.randn(boxes.shape, generator=generator, device=boxes.device, dtype=boxes.dtype)
    noisy = boxes + (noise * std * side).clamp(-max_px, max_px)
    limit = image_hw.flip(1).repeat(1, 2).to(boxes.dtype)  # (w, h, w, h)
    noisy = torch.minimum(noisy.clamp(min=0), limit)
    x0, x1 = torch.minimum(noisy[:, 0], noisy[:, 2]), torch.maximum(noisy[:, 0], noisy[:, 2])
    y0, y1 = torch.minimum(noisy[:, 1], noisy[:, 3]), torch.maximum(noisy[:, 1], noisy[:, 3])
    return torch.stack([x0, y0, x1, y1], dim=1)


def sample_error_points(
    pred: Tensor,
    gt: Tensor,
    valid: Tensor,
    scale: float,
    generator: Optional[torch.Generator] = None,
) -> Tuple[Tensor, Tensor]:
    """One point per mask, uniform over the error region of a prediction, on the device.

    Args:
        pred: (N, H, W) bool prediction in the low-res frame (all False: sample inside ``gt``).
        gt: (N, H, W) bool target; valid: (N, H, W) bool, the part of the frame inside the image.
        scale: input pixels per low-res pixel (``img_size / W``).
        generator: generator on ``pred.device`` (default: torch's global one).

    Returns:
        coords (N, 2) XY in the input frame (centre of the low-res pixel) and labels (N,) int:
        1 for a missed pixel (foreground click), 0 for a spurious one (background click), -1
        where the prediction has no error (the point is then padding).
    """
    error = (pred ^ gt) & valid
    n, h, w = error.shape
    score = torch.rand(error.shape, generator=generator, device=error.device)
    idx = torch.where(error, score, -1.0).flatten(1).argmax(1)
    has_error = error.flatten(1).any(1)
    labels = gt.flatten(1).gather(1, idx[:, None])[:, 0].long()
    labels = torch.where(has_error, labels, -1)
    xy = torch.stack([idx % w, idx // w], dim=1).to(torch.float32)
    return xy * scale + (scale - 1) / 2, labels


@dataclass
class _Group:
    """Masks of one first-prompt kind, simulated together (all have the same token count)."""

    rows: Tensor  # (G,) indices into the batch's masks
    image_index: Tensor  # (G,)
    gt: Tensor  # (G, H, W) bool low-res target
    valid: Tensor  # (G, H, W) bool
    coords: Tensor  # (G, P, 2)
    labels: Tensor  # (G, P)
    boxes: Optional[Tensor]  # (G, 4) or None


class InteractiveTraining:
    """The 11-round interactive training simulation (module docstring), a plain callable.

    Holds only hyper-parameters; ``__call__`` takes the model and a batch.
    """

    @configurable
    def __init__(
        self,
        *,
        num_correction_points: int = 8,
        no_point_rounds: bool = True,
        box_prob: float = 0.5,
        box_noise_std: float = 0.1,
        box_noise_max: float = 20.0,
        focal_weight: float = 20.0,
        dice_weight: float = 1.0,
        iou_weight: float = 1.0,
    ) -> None:
        """
        Args:
            num_correction_points: rounds adding a point sampled from the error (paper: 8).
            no_point_rounds: the paper's two extra rounds without a new point.
            box_prob: probability that a mask's first prompt is a noisy box (paper: 0.5).
            box_noise_std, box_noise_max: box noise std (fraction of the side), cap in pixels.
            focal_weight, dice_weight, iou_weight: loss weights (paper: 20, 1, 1).
        """
        if num_correction_points < 0:
            raise ValueError(f"num_correction_points must be >= 0, got {num_correction_points}")
        if not 0.0 <= box_prob <= 1.0:
            raise ValueError(f"box_prob must be in [0, 1], got {box_prob}")
        self.num_correction_points = int(num_correction_points)
        self.no_point_rounds = bool(no_point_rounds)
        self.box_prob = float(box_prob)
        self.box_noise = (float(box_noise_std), float(box_noise_max))
        self.weights = dict(
            focal_weight=focal_weight, dice_weight=dice_weight, iou_weight=iou_weight
        )

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, object]:
        t = cfg.MODEL.SAM.TRAIN
        return dict(
            num_correction_points=t.NUM_CORRECTION_POINTS,
            no_point_rounds=t.NO_POINT_ROUNDS,
            box_prob=t.BOX_PROMPT_PROB,
            box_noise_std=t.BOX_NOISE_STD,
            box_noise_max=t.BOX_NOISE_MAX,
            focal_weight=t.FOCAL_WEIGHT,
            dice_weight=t.DICE_WEIGHT,
            iou_weight=t.IOU_WEIGHT,
        )

    @property
    def num_rounds(self) -> int:
        """Decoder calls per mask (paper: 11)."""
        return 1 + self.num_correction_points + 2 * self.no_point_rounds

    def __call__(
        self,
        sam: Sam,
        embeddings: Tensor,
        gt_masks: Sequence[Tensor],
        generator: Optional[torch.Generator] = None,
    ) -> Dict[str, Tensor]:
        """Simulate the rounds for every mask of a batch and return the mean losses.

        Args:
            sam: the model (its prompt encoder and mask decoder are called).
            embeddings: (B, C, h, w) image embeddings.
            gt_masks: B tensors (N_i, h_i, w_i) bool, each image's masks in its input frame
                (the resized image before padding).
            generator: generator on the model's device (default: torch's global one).

        Returns:
            {"loss_mask_focal", "loss_mask_dice", "loss_iou"}: scalars averaged over masks and
            rounds (zeros that still backpropagate when the batch has no usable mask).
        """
        if len(gt_masks) != embeddings.shape[0]:
            raise ValueError(
                f"got {len(gt_masks)} gt_masks tensors for {embeddings.shape[0]} image embeddings"
            )
        low_hw = tuple(sam.prompt_encoder.mask_input_size)
        scale = sam.img_size / low_hw[1]
        gt, valid, boxes, image_hw, image_index = self._targets(sam, gt_masks, low_hw)
        m = gt.shape[0]
        if m == 0:
            zero = embeddings.sum() * 0.0
            return {k: zero for k in LOSS_KEYS}
        device = gt.device
        use_box = torch.rand(m, generator=generator, device=device) < self.box_prob
        groups: List[_Group] = []
        for box_first in (True, False):
            rows = torch.nonzero(use_box == box_first)[:, 0]
            if rows.numel() == 0:
                continue
            g_gt, g_valid = gt[rows], valid[rows]
            coords, labels = gt.new_zeros(len(rows), 0, 2, dtype=torch.float32), None
            g_boxes = None
            if box_first:
                g_boxes = noisy_boxes(boxes[rows], image_hw[rows], *self.box_noise, generator)
                labels = torch.zeros(len(rows), 0, dtype=torch.long, device=device)
            else:
                xy, labels = sample_error_points(
                    torch.zeros_like(g_gt), g_gt, g_valid, scale, generator
                )
                coords, labels = xy[:, None], labels[:, None]
            groups.append(_Group(rows, image_index[rows], g_gt, g_valid, coords, labels, g_boxes))
        schedule = [True] + round_schedule(self.num_correction_points, self.no_point_rounds)
        totals = {k: embeddings.new_zeros(()) for k in LOSS_KEYS}
        for g in groups:
            group_totals = self._simulate(sam, embeddings, g, schedule, scale, generator)
            for k in LOSS_KEYS:
                totals[k] = totals[k] + group_totals[k] * len(g.rows)
        return {k: v / (m * len(schedule)) for k, v in totals.items()}

    def _targets(
        self, sam: Sam, gt_masks: Sequence[Tensor], low_hw: Tuple[int, int]
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Low-res targets, valid regions, tight boxes, image sizes and image indices of the
        masks that are non-empty at low resolution (a loop over images, not masks)."""
        device = sam.device
        s = sam.img_size
        gts, valids, boxes, sizes, index = [], [], [], [], []
        for i, masks in enumerate(gt_masks):
            masks = torch.as_tensor(masks, device=device).bool()
            if masks.dim() != 3:
                raise ValueError(f"image {i}: gt_masks must be (N, h, w), got {tuple(masks.shape)}")
            h, w = masks.shape[-2:]
            if max(h, w) > s:
                raise ValueError(f"image {i}: gt_masks of size {h}x{w} exceed the input side {s}")
            low = to_low_res(masks, s, low_hw)
            keep = low.flatten(1).any(1)
            masks, low = masks[keep], low[keep]
            frame = to_low_res(torch.ones(1, h, w, device=device), s, low_hw)
            gts.append(low)
            valids.append(frame.expand_as(low))
            boxes.append(mask_boxes(masks))
            sizes.append(torch.tensor([[h, w]], device=device).expand(len(masks), 2))
            index.append(torch.full((len(masks),), i, device=device, dtype=torch.long))
        return tuple(torch.cat(t) for t in (gts, valids, boxes, sizes, index))

    def _simulate(
        self,
        sam: Sam,
        embeddings: Tensor,
        g: _Group,
        schedule: Sequence[bool],
        scale: float,
        generator: Optional[torch.Generator],
    ) -> Dict[str, Tensor]:
        """Run every round for one group; returns the losses summed over rounds (mean over
        the group's masks within each round)."""
        totals = {k: embeddings.new_zeros(()) for k in LOSS_KEYS}
        coords, labels = g.coords, g.labels
        mask_inputs: Optional[Tensor] = None  # (G, 1, H, W) logits fed back
        for r, adds_point in enumerate(schedule):
            if r > 0 and adds_point:
                pred = mask_inputs[:, 0] > sam.mask_threshold
                xy, lab = sample_error_points(pred, g.gt, g.valid, scale, generator)
                coords = torch.cat([coords, xy[:, None]], dim=1)
                labels = torch.cat([labels, lab[:, None]], dim=1)
            multimask = g.boxes is None and coords.shape[1] == 1
            logits, iou = sam.decode(
                embeddings,
                coords if coords.shape[1] else None,
                labels if coords.shape[1] else None,
                g.boxes,
                mask_inputs,
                multimask_output=multimask,
                image_index=g.image_index,
            )
            for k, v in sam_mask_losses(logits, iou, g.gt, **self.weights).items():
                totals[k] = totals[k] + v
            best = iou.argmax(dim=1)
            mask_inputs = logits[torch.arange(len(best), device=best.device), best, None].detach()
        return totals
