"""Run-length encodings of binary masks.

Two forms are used:

* COCO's *uncompressed RLE* ``{"size": [H, W], "counts": [n0, n1, ...]}``: run lengths over the
  mask read in column-major (Fortran) order, alternating background / foreground and starting
  with background (so a mask whose first pixel is set starts with a 0 count). COCO's compressed
  form (``counts`` a string) comes from ``pycocotools.mask.frPyObjects``.
* :class:`PackedRle`, a batch of masks kept on the device while the generator runs: for every
  mask the sorted column-major positions where the value *toggles* (reading the mask as if it
  were preceded by a background pixel), all masks' positions in one flat tensor with one length
  per mask. A mask costs a few bytes per boundary crossing instead of H * W, and the batch is
  built, filtered, concatenated and decoded with tensor ops only. Toggle positions ``t`` convert
  to COCO counts as ``diff([0, *t, H * W])``.
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch import Tensor

__all__ = [
    "PackedRle",
    "mask_to_rle",
    "rle_to_mask",
    "rle_area",
    "rle_to_coco",
    "coco_to_mask",
]

Rle = Dict[str, Any]


class PackedRle:
    """N binary masks of one (H, W) image as toggle positions (see the module docstring).

    Attributes:
        size: (H, W).
        toggles: (T,) int64, the toggle positions of mask 0, then of mask 1, ...
        lengths: (N,) int64, number of toggles of each mask.
    """

    def __init__(self, size: Tuple[int, int], toggles: Tensor, lengths: Tensor) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.toggles = toggles
        self.lengths = lengths

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def device(self) -> torch.device:
        return self.lengths.device

    # ------------------------------------------------------------------ building
    @classmethod
    def empty(cls, size: Tuple[int, int], device: Union[str, torch.device] = "cpu") -> "PackedRle":
        zeros = torch.zeros(0, dtype=torch.int64, device=device)
        return cls(size, zeros, zeros.clone())

    @classmethod
    def from_masks(
        cls,
        masks: Tensor,
        image_hw: Optional[Tuple[int, int]] = None,
        offset: Tuple[int, int] = (0, 0),
    ) -> "PackedRle":
        """Encode (N, h, w) bool masks, optionally pasted into a larger all-background image.

        Args:
            masks: (N, h, w) bool, e.g. masks of a crop.
            image_hw: (H, W) of the image the masks live in (default: (h, w)).
            offset: (x0, y0) of the masks' top-left pixel in that image.

        Returns:
            the masks' encoding in the (H, W) frame, computed without materialising the pasted
            (N, H, W) masks.
        """
        n, h, w = masks.shape
        big_h, big_w = (h, w) if image_hw is None else (int(image_hw[0]), int(image_hw[1]))
        x0, y0 = int(offset[0]), int(offset[1])
        if x0 < 0 or y0 < 0 or x0 + w > big_w or y0 + h > big_h:
            raise ValueError(f"masks of size {h}x{w} at {offset} do not fit in {big_h}x{big_w}")
        full_height = h == big_h
        if not full_height:
            # A background row above and below each column: the columns of the crop are not
            # contiguous in the image's column-major order, and every column run must close.
            masks = torch.nn.functional.pad(masks, (0, 0, 1, 1))
        rows = masks.shape[1]
        seq = masks.transpose(1, 2).reshape(n, rows * w)
        seq = torch.nn.functional.pad(seq, (1, 1))  # background before and after
        changed = seq[:, 1:] != seq[:, :-1]  # changed[:, q]: value at q differs from q - 1
        mask_id, q = changed.nonzero(as_tuple=True)
        if full_height:
            pos = q + x0 * big_h
        else:
            col, row = q // rows, q % rows  # row 0 is the padding above the crop
            pos = (col + x0) * big_h + y0 + row - 1
        inside = pos < big_h * big_w  # a toggle at H * W closes the last run: implicit
        mask_id, pos = mask_id[inside], pos[inside]
        lengths = torch.bincount(mask_id, minlength=n)
        return cls((big_h, big_w), pos, lengths)

    @classmethod
    def cat(cls, parts: Sequence["PackedRle"]) -> "PackedRle":
        """Concatenate batches of the same image size."""
        if not parts:
            raise ValueError("PackedRle.cat needs at least one part")
        sizes = {p.size for p in parts}
        if len(sizes) != 1:
            raise ValueError(f"cannot concatenate encodings of different sizes {sorted(sizes)}")
        if len(parts) == 1:
            return parts[0]
        return cls(
            parts[0].size,
            torch.cat([p.toggles for p in parts]),
            torch.cat([p.lengths for p in parts]),
        )

    # ------------------------------------------------------------------ selecting
    def _starts(self) -> Tensor:
        return torch.cumsum(self.lengths, 0) - self.lengths

    def select(self, index: Tensor) -> "PackedRle":
        """Masks ``index`` (an int64 index tensor or an (N,) bool mask), in that order."""
        index = torch.as_tensor(index, device=self.device)
        if index.dtype == torch.bool:
            index = index.nonzero().flatten()
        lengths = self.lengths[index]
        starts = self._starts()[index]
        total = int(lengths.sum())
        new_starts = torch.cumsum(lengths, 0) - lengths
        owner = torch.repeat_interleave(torch.arange(len(index), device=self.device), lengths)
        within = torch.arange(total, device=self.device) - new_starts[owner]
        return PackedRle(self.size, self.toggles[starts[owner] + within], lengths)

    def replace(self, index: Tensor, other: "PackedRle") -> "PackedRle":
        """A copy where masks ``index`` are replaced by the masks of ``other`` (same order)."""
        index = torch.as_tensor(index, dtype=torch.int64, device=self.device)
        if len(index) != len(other):
            raise ValueError(f"{len(index)} indexes for {len(other)} replacement masks")
        source = torch.zeros(len(self), dtype=torch.int64, device=self.device)  # 0: self
        source[index] = 1
        slot = torch.arange(len(self), device=self.device)
        slot[index] = torch.arange(len(index), device=self.device)
        merged = PackedRle.cat([self, PackedRle(self.size, other.toggles, other.lengths)])
        return merged.select(torch.where(source.bool(), slot + len(self), slot))

    # ------------------------------------------------------------------ measuring / decoding
    def areas(self) -> Tensor:
        """(N,) int64 foreground pixel counts."""
        n = len(self)
        owner = torch.repeat_interleave(torch.arange(n, device=self.device), self.lengths)
        within = torch.arange(self.toggles.numel(), device=self.device) - self._starts()[owner]
        signed = torch.where(within % 2 == 0, -self.toggles, self.toggles)  # rise -, fall +
        area = torch.zeros(n, dtype=torch.int64, device=self.device).index_add_(0, owner, signed)
        h, w = self.size
        return area + (self.lengths % 2) * (h * w)  # an unclosed last run ends at H * W

    def decode(self, index: Optional[Tensor] = None) -> Tensor:
        """(n, H, W) bool masks (all, or ``index``) on the encoding's device.

        Memory is n * H * W bytes; decode large sets in slices of ``index``.
        """
        rle = self if index is None else self.select(index)
        n = len(rle)
        h, w = self.size
        owner = torch.repeat_interleave(torch.arange(n, device=self.device), rle.lengths)
        within = torch.arange(rle.toggles.numel(), device=self.device) - rle._starts()[owner]
        step = torch.where(within % 2 == 0, 1, -1).to(torch.int8)
        dense = torch.zeros(n, h * w, dtype=torch.int8, device=self.device)
        dense[owner, rle.toggles] = step  # positions are unique within a mask
        dense = torch.cumsum(dense, dim=1, dtype=torch.int8) > 0
        return dense.reshape(n, w, h).transpose(1, 2)

    def to_uncompressed(self) -> List[Rle]:
        """COCO uncompressed RLE dicts (counts as Python ints), one per mask."""
        h, w = self.size
        toggles = self.toggles.cpu().numpy()
        bounds = np.cumsum(self.lengths.cpu().numpy())[:-1]
        out = []
        for t in np.split(toggles, bounds) if len(self) else []:
            counts = np.diff(np.concatenate(([0], t, [h * w])))
            out.append({"size": [h, w], "counts": counts.tolist()})
        return out

    def to_coco(self) -> List[Rle]:
        """COCO compressed RLE dicts with ``counts`` as str (JSON-serialisable)."""
        return [rle_to_coco(r) for r in self.to_uncompressed()]


def mask_to_rle(mask: Union[np.ndarray, Tensor]) -> Rle:
    """(H, W) binary mask -> COCO uncompressed RLE."""
    mask = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask)
    if mask.dim() != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {tuple(mask.shape)}")
    return PackedRle.from_masks(mask.bool()[None]).to_uncompressed()[0]


def rle_to_mask(rle: Rle) -> np.ndarray:
    """COCO uncompressed RLE -> (H, W) bool array."""
    h, w = (int(v) for v in rle["size"])
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if counts.sum() != h * w:
        raise ValueError(f"RLE counts sum to {counts.sum()}, expected {h} * {w} = {h * w}")
    values = np.arange(len(counts)) % 2 == 1  # runs alternate background, foreground, ...
    return np.repeat(values, counts).reshape(w, h).T


def rle_area(rle: Rle) -> int:
    """Foreground pixels of a COCO uncompressed RLE."""
    return int(sum(rle["counts"][1::2]))


def rle_to_coco(rle: Rle) -> Rle:
    """COCO uncompressed RLE -> compressed RLE with ``counts`` as str."""
    h, w = rle["size"]
    coco = mask_utils.frPyObjects(rle, h, w)
    coco["counts"] = coco["counts"].decode("ascii")
    return coco


def coco_to_mask(rle: Rle) -> np.ndarray:
    """COCO compressed RLE (``counts`` str or bytes) -> (H, W) bool array."""
    counts = rle["counts"]
    rle = {
        "size": list(rle["size"]),
        "counts": counts.encode() if isinstance(counts, str) else counts,
    }
    return mask_utils.decode(rle).astype(bool)
