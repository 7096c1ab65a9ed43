"""The model side of the annotation app: the current SAM, its embedding cache, pre-encoding.

* :class:`ModelSlot` holds the current :class:`~sam_d2.modeling.sam.Sam` and a short id naming
  it (variant, checkpoint file and the first 12 hex digits of the file's SHA-256); it can switch
  to another checkpoint while the app runs.
* :class:`EmbeddingCache` keeps image embeddings on disk, keyed by the image file's content and
  the model id (``<cache>/<model key>/<content sha256>.pt``, written atomically), with a small
  in-memory LRU in front.
* :class:`Encoder` computes missing embeddings on one worker thread: the image the annotator
  opens goes first, the next images of the list are queued behind it at low priority so moving
  on does not wait.

Prompts are decoded by :class:`sam_d2.SamPredictor` given a cached embedding
(:func:`predictor_for`), so the app's masks are exactly the predictor's.
"""

import hashlib
import heapq
import itertools
import logging
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.config import CfgNode
from torch import Tensor

from ..data.image_io import read_image_rgb
from ..modeling.sam import Sam
from ..predictor import SamPredictor
from ..utils.atomic import atomic_open

__all__ = [
    "DetectorPrefill",
    "Embedding",
    "EmbeddingCache",
    "Encoder",
    "ModelSlot",
    "ModelSwitched",
    "build_app_model",
    "file_sha256",
    "model_id_for",
    "predictor_for",
]

logger = logging.getLogger(__name__)


def file_sha256(path: os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Embedding:
    """An image embedding and the sizes :class:`SamPredictor` needs to decode against it.

    Attributes:
        features: (1, C, h, w) float32 on CPU.
        input_size: (h, w) of the resized image before padding (``Sam.input_size``).
        original_size: (H, W) of the image.
        encode_s: seconds the encoder took (0 when loaded from the cache).
    """

    features: Tensor
    input_size: Tuple[int, int]
    original_size: Tuple[int, int]
    encode_s: float = 0.0


class ModelSlot:
    """The app's current SAM (and detector pre-fill, if any); swapped whole, never mutated, when
    switching checkpoints."""

    def __init__(
        self,
        model: Sam,
        model_id: str,
        checkpoint: Optional[str] = None,
        detector: Optional["DetectorPrefill"] = None,
    ) -> None:
        self._lock = threading.Lock()
        self._current = (model.eval(), model_id, checkpoint)
        self._detector = detector

    @property
    def current(self) -> Tuple[Sam, str, Optional[str]]:
        """(model, model id, checkpoint path or None), read together."""
        with self._lock:
            return self._current

    @property
    def detector(self) -> Optional["DetectorPrefill"]:
        """Boxes from a Detectron2 detector prompting this SAM (None without a detector)."""
        with self._lock:
            return self._detector

    def switch(
        self,
        model: Sam,
        model_id: str,
        checkpoint: Optional[str],
        detector: Optional["DetectorPrefill"] = None,
    ) -> None:
        with self._lock:
            self._current = (model.eval(), model_id, checkpoint)
            self._detector = detector

    def info(self) -> Dict[str, Optional[str]]:
        _, model_id, checkpoint = self.current
        return {"id": model_id, "checkpoint": checkpoint}


def model_id_for(variant: str, checkpoint: Optional[str], seed: Optional[int] = None) -> str:
    """Short id of a model: variant, checkpoint name and content hash (or the random seed)."""
    if checkpoint:
        return f"{variant}:{Path(checkpoint).name}:{file_sha256(checkpoint)[:12]}"
    return f"{variant}:random-seed{seed if seed is not None else 0}"


class EmbeddingCache:
    """Embeddings on disk under ``root`` plus the ``memory`` most recent ones in RAM."""

    def __init__(self, root: os.PathLike, memory: int = 8) -> None:
        self.root = Path(root)
        self.memory = int(memory)
        self._lru: "OrderedDict[Tuple[str, str], Embedding]" = OrderedDict()
        self._lock = threading.Lock()

    def _file(self, model_id: str, content: str) -> Path:
        model_key = hashlib.sha1(model_id.encode()).hexdigest()[:16]
        return self.root / model_key / f"{content}.pt"

    def get(self, model_id: str, content: str) -> Optional[Embedding]:
        key = (model_id, content)
        with self._lock:
            if key in self._lru:
                self._lru.move_to_end(key)
                return self._lru[key]
        path = self._file(model_id, content)
        if not path.exists():
            return None
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            emb = Embedding(
                data["features"], tuple(data["input_size"]), tuple(data["original_size"])
            )
        except Exception as e:  # a torn or foreign file: recompute rather than fail
            logger.warning("embedding cache file %s unreadable (%s); recomputing", path, e)
            return None
        self._remember(key, emb)
        return emb

    def put(self, model_id: str, content: str, emb: Embedding) -> None:
        path = self._file(model_id, content)
        with atomic_open(str(path), "wb") as f:
            torch.save(
                {
                    "features": emb.features,
                    "input_size": list(emb.input_size),
                    "original_size": list(emb.original_size),
                    "model_id": model_id,
                },
                f,
            )
        self._remember((model_id, content), emb)

    def _remember(self, key: Tuple[str, str], emb: Embedding) -> None:
        with self._lock:
            self._lru[key] = emb
            self._lru.move_to_end(key)
            while len(self._lru) > self.memory:
                self._lru.popitem(last=False)


def encode_image(model: Sam, image: np.ndarray) -> Embedding:
    """Embed an (H, W, 3) uint8 RGB image with :class:`SamPredictor`'s preprocessing."""
    predictor = SamPredictor(model)
    start = time.perf_counter()
    predictor.set_image(image)
    emb = predictor.get_image_embedding().detach().to("cpu", torch.float32)
    return Embedding(
        emb, predictor.input_size, predictor.original_size, time.perf_counter() - start
    )


def predictor_for(model: Sam, emb: Embedding) -> SamPredictor:
    """A :class:`SamPredictor` whose current image is the cached embedding ``emb``."""
    predictor = SamPredictor(model)
    predictor.features = emb.features.to(model.device)
    predictor.input_size = emb.input_size
    predictor.original_size = emb.original_size
    predictor.is_image_set = True
    return predictor


class ModelSwitched(RuntimeError):
    """A queued embedding was for a model that is no longer the current one."""


class Encoder:
    """Computes embeddings on one worker thread, most urgent first, each at most once."""

    FOREGROUND, BACKGROUND = 0, 1

    def __init__(self, slot: ModelSlot, cache: EmbeddingCache) -> None:
        self.slot = slot
        self.cache = cache
        self._queue: List[Tuple[int, int, Tuple[str, str], Path]] = []
        self._futures: Dict[Tuple[str, str], Future] = {}
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="sam-encoder", daemon=True)
        self._thread.start()
        #: called with (image path, seconds) after each encode (for logs and benchmarks)
        self.on_encoded: Optional[Callable[[Path, float], None]] = None

    def request(self, path: Path, priority: int = FOREGROUND) -> "Future[Embedding]":
        """A future embedding of the image file at ``path`` with the current model."""
        _, model_id, _ = self.slot.current
        key = (model_id, file_sha256(path))
        with self._cond:
            fut = self._futures.get(key)  # only pending futures are kept
            if fut is not None:
                if priority == self.FOREGROUND:
                    heapq.heappush(self._queue, (priority, next(self._counter), key, path))
                    self._cond.notify()
                return fut
            fut = Future()
            cached = self.cache.get(*key)
            if cached is not None:
                fut.set_result(cached)
                return fut
            heapq.heappush(self._queue, (priority, next(self._counter), key, path))
            self._futures[key] = fut
            self._cond.notify()
            return fut

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                _, _, key, path = heapq.heappop(self._queue)
                fut = self._futures.get(key)  # None: done via a duplicate (re-prioritised) entry
                if fut is None or fut.done() or not fut.set_running_or_notify_cancel():
                    continue
            try:
                model, model_id, _ = self.slot.current
                if model_id != key[0]:
                    raise ModelSwitched("the model was switched before this image was encoded")
                with torch.no_grad():
                    emb = encode_image(model, read_image_rgb(path))
                self.cache.put(model_id, key[1], emb)
                logger.info("encoded %s in %.2f s", path.name, emb.encode_s)
                if self.on_encoded is not None:
                    self.on_encoded(path, emb.encode_s)
                fut.set_result(emb)
            except Exception as e:  # reported to whoever waits on the future
                fut.set_exception(e)
            with self._cond:
                self._futures.pop(key, None)


class DetectorPrefill:
    """Stage-2 pre-fill from a Detectron2 detector: its boxes prompt SAM through the
    detector-prompted model (``MODEL.META_ARCHITECTURE: DetectorPromptedSam``), which keeps the
    most confident of SAM's masks per box and refines it once."""

    def __init__(self, model: torch.nn.Module, cfg: CfgNode) -> None:
        from ..data.mappers import DetectorPromptedSamMapper

        self.model = model.eval()
        self.mapper = DetectorPromptedSamMapper(cfg, is_train=False)

    @torch.no_grad()
    def __call__(self, path: Path) -> List[Dict[str, object]]:
        """Detections of one image file, most confident box first.

        Returns:
            dicts with ``mask`` ((H, W) bool numpy), ``box`` (XYXY pixels), ``score`` (the
            detector's) and ``predicted_iou`` (SAM's for the mask).
        """
        inputs = self.mapper({"file_name": str(path), "image_id": 0})
        inst = self.model([inputs])[0]["instances"].to("cpu")
        return [
            {
                "mask": mask.numpy(),
                "box": [float(v) for v in box],
                "score": float(score),
                "predicted_iou": float(iou),
            }
            for mask, box, score, iou in zip(
                inst.pred_masks, inst.pred_boxes.tensor, inst.scores, inst.mask_scores
            )
        ]


def build_app_model(
    variant: str = "vit_b",
    checkpoint: Optional[str] = None,
    config_file: Optional[str] = None,
    opts: Sequence[str] = (),
    device: str = "cpu",
    random_seed: Optional[int] = None,
) -> Tuple[Sam, str, Optional[DetectorPrefill]]:
    """The SAM the app prompts, its id, and a detector pre-fill when the model has a detector.

    Args:
        variant: "vit_b" / "vit_l" / "vit_h" when no config is given.
        checkpoint: official ``sam_vit_*.pth`` or a sam_d2 / ``tools/train_net.py`` checkpoint
            (for a config: overrides ``MODEL.WEIGHTS``).
        config_file: a sam_d2 config; its model is a SAM (``PromptableSam``) or holds one
            (``model.sam``, e.g. the detector-prompted model).
        opts: config overrides ("KEY", "VALUE", ...).
        device: torch device.
        random_seed: with neither checkpoint nor weights, randomise every weight with this seed
            (demos and benchmarks only: the masks mean nothing).

    Returns:
        (SAM, model id, :class:`DetectorPrefill` or None).

    Raises:
        ValueError: no weights were given and ``random_seed`` is None.
    """
    from ..checkpoint import SamCheckpointer
    from ..modeling.build import build_sam
    from ..utils.random_weights import randomize_state_dict

    sam_weights = ""  # SAM's own weights, loaded when a config's model is built
    if config_file:
        from detectron2.config import get_cfg
        from detectron2.modeling import build_model

        from ..config import add_sam_config

        cfg = get_cfg()
        add_sam_config(cfg)
        cfg.merge_from_file(config_file)
        cfg.merge_from_list(list(opts))
        cfg.MODEL.DEVICE = device
        model = build_model(cfg)
        checkpoint = checkpoint or cfg.MODEL.WEIGHTS or None
        variant = cfg.MODEL.SAM.VARIANT
        sam_weights = cfg.MODEL.SAM.get("WEIGHTS", "")
    else:
        model = build_sam(variant)
    if checkpoint:
        SamCheckpointer(model).load(checkpoint)
    elif random_seed is not None:
        model.load_state_dict(randomize_state_dict(model.state_dict(), random_seed))
    elif not sam_weights:
        raise ValueError(
            "no weights: give --checkpoint (or MODEL.WEIGHTS / MODEL.SAM.WEIGHTS in the config), "
            "or --random-weights for a demo with meaningless masks"
        )
    sam = model if isinstance(model, Sam) else getattr(model, "sam", None)
    if not isinstance(sam, Sam):
        raise ValueError(
            f"{config_file}: the model {type(model).__name__} neither is nor holds a SAM"
        )
    detector = None
    if getattr(model, "detector", None) is not None:
        detector = DetectorPrefill(model.to(device), cfg)
    if sam_weights and sam_weights != checkpoint:  # SAM's file (+ the detector's, if any)
        model_id = model_id_for(variant, sam_weights)
        if checkpoint:
            model_id += f"+{Path(checkpoint).name}"
    else:
        model_id = model_id_for(variant, checkpoint, random_seed)
    return sam.to(device).eval(), model_id, detector
