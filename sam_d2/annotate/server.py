"""The annotation app's HTTP API (FastAPI) and static page: a thin layer over model and storage.

Routes (all JSON unless noted; image names are paths relative to ``--images``, looked up in the
folder listing, never joined onto a path):

====================================================  ==========================================
``GET  /``                                            the page (``static/index.html``)
``GET  /api/state``                                   images with progress, skipped files,
                                                      corrupt files, categories, model, stats
``GET  /api/images/{name}``                           the image's record (SA-1B JSON)
``GET  /api/images/{name}/file``                      the decoded image as JPEG / PNG
``POST /api/images/{name}/embed``                     embed (or load) it; queue the next images
``POST /api/images/{name}/predict``                   points / box (+ previous logits) -> masks
``POST /api/images/{name}/annotations``               add a mask (uncompressed RLE + provenance)
``PUT  /api/images/{name}/annotations/{id}``          accept / relabel / replace the mask
``DELETE /api/images/{name}/annotations/{id}``        delete
``POST /api/images/{name}/prefill``                   stage 2: automatic confident masks (pending)
``POST /api/export``                                  one COCO instances JSON of accepted masks
``GET|POST /api/model``                               current model / checkpoints; switch
====================================================  ==========================================

Masks go to the page as COCO compressed RLE (``counts`` a string) and come back as
uncompressed RLE (``counts`` a list of run lengths). Bad requests get a 4xx whose ``detail``
says what is wrong in one line.
"""

import logging
import math
import socket
import threading
import time
from collections import OrderedDict
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Dict, List, Literal, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from pycocotools import mask as mask_utils
from pydantic import BaseModel, Field

from ..automatic import AutomaticMaskGenerator
from ..automatic.masks import stability_score
from ..data.image_io import read_image_rgb
from ..modeling.sam import Sam
from ..prompts import PromptError
from .embeddings import (
    DetectorPrefill,
    Embedding,
    EmbeddingCache,
    Encoder,
    ModelSlot,
    ModelSwitched,
    predictor_for,
)
from .storage import (
    AnnotationError,
    AnnotationStore,
    ImageFolder,
    ImageInfo,
    check_rle,
    default_export_path,
    export_coco,
    make_annotation,
    mask_geometry,
)

__all__ = ["AppSettings", "Annotator", "create_app", "bind_socket", "serve", "ServerThread"]

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"


@dataclass
class AppSettings:
    """Everything the app is started with (the CLI fills it from its flags).

    Attributes:
        images: folder of images to annotate.
        out: folder of the per-image JSON files (and of the embedding cache, ``.embeddings``).
        export: the COCO export file (default: ``<out>_coco.json`` beside ``out``).
        categories: allowed labels; empty means free text.
        default_category: label of new objects.
        prefetch: how many following images are pre-encoded in the background.
        prefill: automatic generator settings for stage 2 (``AutomaticMaskGenerator`` keywords).
        checkpoint_dir: folder whose ``*.pth`` files the app may switch to (None: no switching).
        load_checkpoint: builds a model from a checkpoint path -> (SAM, model id, detector
            pre-fill or None), as :func:`~.embeddings.build_app_model`.
    """

    images: Path
    out: Path
    categories: Sequence[str] = ()
    export: Optional[Path] = None
    default_category: str = "object"
    prefetch: int = 2
    prefill: Dict[str, Any] = field(
        default_factory=lambda: dict(
            points_per_side=32, pred_iou_thresh=0.88, stability_score_thresh=0.95
        )
    )
    checkpoint_dir: Optional[Path] = None
    load_checkpoint: Optional[Callable[[str], Tuple[Sam, str, Optional[DetectorPrefill]]]] = None


class Point(BaseModel):
    x: float
    y: float
    label: int = 1


class Prompts(BaseModel):
    points: List[Point] = []
    box: Optional[Tuple[float, float, float, float]] = None


class PredictRequest(Prompts):
    session: str = Field("default", max_length=64)
    previous: Optional[int] = None  # candidate of the session's last prediction fed back
    multimask: Optional[bool] = None  # default: three candidates for a single point alone


class AnnotationIn(BaseModel):
    mask: Dict[str, Any]  # uncompressed COCO RLE {"size": [h, w], "counts": [...]}
    source: Literal["point", "box", "brush", "edited"]
    category: Optional[str] = Field(None, max_length=200)
    prompts: Prompts = Prompts()
    time_s: float = Field(0.0, ge=0, le=86400)
    predicted_iou: Optional[float] = None
    stability_score: Optional[float] = None
    model: Optional[str] = None


class AnnotationUpdate(BaseModel):
    mask: Optional[Dict[str, Any]] = None
    category: Optional[str] = Field(None, max_length=200)
    accepted: Optional[bool] = None
    add_time_s: float = Field(0.0, ge=0, le=86400)


class PrefillRequest(BaseModel):
    source: Optional[Literal["automatic", "detector"]] = None  # default: detector if loaded
    points_per_side: Optional[int] = Field(None, ge=1, le=128)
    pred_iou_thresh: Optional[float] = Field(None, ge=0, le=1)
    stability_score_thresh: Optional[float] = Field(None, ge=0, le=1)


class ModelRequest(BaseModel):
    checkpoint: str = Field(..., max_length=500)


class Annotator:
    """The app's state: folder, storage, model, embeddings, prompt sessions."""

    def __init__(self, settings: AppSettings, slot: ModelSlot) -> None:
        self.settings = settings
        self.folder = ImageFolder.scan(settings.images)
        self.store = AnnotationStore(self.folder, settings.out)
        self.slot = slot
        self.cache = EmbeddingCache(self.store.out / ".embeddings")
        self.encoder = Encoder(slot, self.cache)
        self._sessions: "OrderedDict[str, Tuple[str, str, np.ndarray]]" = OrderedDict()
        self._session_lock = threading.Lock()
        self._generate_lock = threading.Lock()  # one automatic generation at a time
        self._image_bytes: "OrderedDict[str, Tuple[bytes, str]]" = OrderedDict()
        self._bytes_lock = threading.Lock()
        self.unreadable: Dict[str, str] = {}
        self.prefill_progress: Dict[str, Any] = {"running": False, "done": 0, "total": 0}
        for s in self.folder.skipped:
            logger.warning("skipping %s: %s", s["name"], s["reason"])

    # ------------------------------------------------------------------ helpers
    def image(self, name: str) -> ImageInfo:
        try:
            return self.folder.get(name)
        except KeyError:
            raise HTTPException(404, f"no image {name!r} in the image folder") from None

    def read(self, info: ImageInfo) -> np.ndarray:
        try:
            return read_image_rgb(info.path)
        except (OSError, ValueError) as e:
            self.unreadable[info.name] = str(e)
            raise HTTPException(422, f"image {info.name!r} cannot be decoded: {e}") from None

    def embedding(self, info: ImageInfo, prefetch: bool = False) -> Embedding:
        """The image's embedding with the current model (waits for it); optionally queue the
        next ``settings.prefetch`` images behind it."""
        fut = self.encoder.request(info.path)
        if prefetch:
            start = self.folder.index(info.name) + 1
            for nxt in self.folder.images[start : start + self.settings.prefetch]:
                if nxt.name not in self.unreadable:
                    self.encoder.request(nxt.path, Encoder.BACKGROUND)
        try:
            return fut.result()
        except (OSError, ValueError) as e:
            self.unreadable[info.name] = str(e)
            raise HTTPException(422, f"image {info.name!r} cannot be decoded: {e}") from None
        except ModelSwitched as e:
            raise HTTPException(409, f"{e}; open the image again") from None

    def category(self, value: Optional[str]) -> str:
        value = (value or self.settings.default_category).strip()
        if not value:
            raise HTTPException(422, "category must not be empty")
        cats = self.settings.categories
        if cats and value not in cats:
            raise HTTPException(422, f"category {value!r} is not one of {list(cats)}")
        return value

    def stage_of(self, name: str) -> int:
        """2 once the image was pre-filled (stage 2), else 1."""
        return 2 if self.store.load(name)["annotate"].get("prefill") else 1

    def remember(self, session: str, name: str, model_id: str, low_res: np.ndarray) -> None:
        with self._session_lock:
            self._sessions[session] = (name, model_id, low_res)
            self._sessions.move_to_end(session)
            while len(self._sessions) > 64:
                self._sessions.popitem(last=False)

    def previous_logits(self, session: str, name: str, model_id: str) -> Optional[np.ndarray]:
        with self._session_lock:
            entry = self._sessions.get(session)
        if entry is None or entry[:2] != (name, model_id):
            return None
        return entry[2]

    def image_bytes(self, info: ImageInfo) -> Tuple[bytes, str]:
        """The decoded image SAM sees, for the page: PNG (exact) or, for JPEG / WebP files,
        JPEG at quality 92 (same size and orientation, pixels within JPEG error)."""
        with self._bytes_lock:
            if info.name in self._image_bytes:
                return self._image_bytes[info.name]
        rgb = self.read(info)
        lossy = info.path.suffix.lower() in (".jpg", ".jpeg", ".webp")
        ext, params = (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 92]) if lossy else (".png", [])
        ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[..., ::-1]), params)
        if not ok:
            raise HTTPException(500, f"could not encode {info.name!r} for the browser")
        out = (buf.tobytes(), "image/jpeg" if lossy else "image/png")
        with self._bytes_lock:
            self._image_bytes[info.name] = out
            while len(self._image_bytes) > 4:
                self._image_bytes.popitem(last=False)
        return out

    def generator(self, overrides: Dict[str, Any]) -> Tuple[AutomaticMaskGenerator, Dict[str, Any]]:
        """The automatic generator with the pre-fill settings (``overrides`` win) and those."""
        model, _, _ = self.slot.current
        kwargs = dict(self.settings.prefill)
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return AutomaticMaskGenerator(model, output_mode="coco_rle", **kwargs), kwargs

    def prefill(self, info: ImageInfo, overrides: Dict[str, Any]) -> List[Dict[str, Any]]:
        """Stage 2 pre-fill, stored as pending masks: the automatic generator's confident masks,
        or (``source="detector"``) SAM's masks for a detector's boxes with predicted IoU above
        ``pred_iou_thresh``."""
        overrides = dict(overrides)
        detector = self.slot.detector
        source = overrides.pop("source", None) or ("detector" if detector else "automatic")
        _, model_id, checkpoint = self.slot.current
        made_by = {"id": model_id, "checkpoint": checkpoint}
        anns = []
        if source == "detector":
            if detector is None:
                raise HTTPException(
                    400, "no detector loaded: start with a DetectorPromptedSam config"
                )
            thresh = overrides.get("pred_iou_thresh")
            if thresh is None:
                thresh = self.settings.prefill.get("pred_iou_thresh", 0.0)
            settings = {"source": "detector", "pred_iou_thresh": thresh}
            with self._generate_lock:
                try:
                    found = detector(info.path)
                except (OSError, ValueError) as e:
                    raise HTTPException(422, f"detector pre-fill of {info.name!r}: {e}") from None
            for d in found:
                if d["predicted_iou"] < thresh:
                    continue
                ann = make_annotation(
                    encode_mask(d["mask"]),
                    source="prefill",
                    category=self.settings.default_category,
                    stage=2,
                    time_s=0.0,
                    model=made_by,
                    prompts={"points": [], "box": d["box"]},
                    predicted_iou=d["predicted_iou"],
                )
                ann["detector_score"] = d["score"]
                anns.append(ann)
        else:
            image = self.read(info)
            generator, settings = self.generator(overrides)
            settings["source"] = "automatic"
            with self._generate_lock, torch.no_grad():
                records = generator.generate(image)
            for r in records:
                ann = make_annotation(
                    r["segmentation"],
                    source="prefill",
                    category=self.settings.default_category,
                    stage=2,
                    time_s=0.0,
                    model=made_by,
                    predicted_iou=float(r["predicted_iou"]),
                    stability_score=float(r["stability_score"]),
                )
                ann.update(point_coords=r["point_coords"], crop_box=r["crop_box"])
                anns.append(ann)
        for ann in anns:
            ann["accepted"] = False
        return self.store.replace_prefill(info.name, anns, dict(settings, model=model_id))

    def prefill_all(self) -> None:
        """Pre-fill every image not pre-filled yet (``--prefill``; resumable: done ones skip)."""
        todo = [
            i for i in self.folder.images if not self.store.load(i.name)["annotate"].get("prefill")
        ]
        self.prefill_progress.update(running=True, done=0, total=len(todo))
        for info in todo:
            try:
                self.prefill(info, {})
            except HTTPException as e:
                logger.error("pre-fill of %s failed: %s", info.name, e.detail)
            self.prefill_progress["done"] += 1
        self.prefill_progress["running"] = False

    def checkpoints(self) -> List[str]:
        d = self.settings.checkpoint_dir
        if d is None or not d.is_dir():
            return []
        return sorted(p.relative_to(d).as_posix() for p in d.rglob("*.pth") if p.is_file())


def encode_mask(mask: np.ndarray) -> Dict[str, Any]:
    """(H, W) bool mask -> COCO compressed RLE with ``counts`` as str (what the page decodes)."""
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _check_prompts(req: PredictRequest, info: ImageInfo) -> None:
    w, h = info.width, info.height
    if not req.points and req.box is None:
        raise HTTPException(422, "give at least one point or a box")
    for i, p in enumerate(req.points):
        if not (math.isfinite(p.x) and math.isfinite(p.y)):
            raise HTTPException(422, f"point {i} has a non-finite coordinate ({p.x}, {p.y})")
        if not (0 <= p.x <= w and 0 <= p.y <= h):
            raise HTTPException(
                422, f"point {i} ({p.x:g}, {p.y:g}) lies outside the {w}x{h} image {info.name!r}"
            )
        if p.label not in (0, 1):
            raise HTTPException(422, f"point {i} label must be 1 (object) or 0 (background)")
    if req.box is not None:
        x0, y0, x1, y1 = req.box
        if not all(math.isfinite(v) for v in req.box):
            raise HTTPException(422, f"box {list(req.box)} has a non-finite coordinate")
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise HTTPException(
                422,
                f"box {list(req.box)} must satisfy 0 <= x0 < x1 <= {w} and 0 <= y0 < y1 <= {h}",
            )


def create_app(settings: AppSettings, slot: ModelSlot) -> FastAPI:
    """The FastAPI application; ``app.state.annotator`` holds its :class:`Annotator`."""
    ann = Annotator(settings, slot)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        ann.encoder.stop()

    app = FastAPI(
        title="sam_d2 annotation app", docs_url="/api/docs", redoc_url=None, lifespan=lifespan
    )
    app.state.annotator = ann
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/state")
    def state() -> Dict[str, Any]:
        images = []
        for info in ann.folder.images:
            entry = {"name": info.name, "width": info.width, "height": info.height}
            entry.update(ann.store.summary(info.name))
            entry["error"] = ann.unreadable.get(info.name)
            images.append(entry)
        return {
            "images": images,
            "skipped": ann.folder.skipped,
            "problems": ann.store.problems,
            "categories": list(settings.categories),
            "default_category": settings.default_category,
            "model": ann.slot.info(),
            "checkpoints": ann.checkpoints(),
            "stats": ann.store.stats(),
            "prefill": ann.prefill_progress,
            "prefill_settings": settings.prefill,
            "detector": ann.slot.detector is not None,
        }

    @app.get("/api/images/{name:path}/file")
    def image_file(name: str) -> Response:
        data, media = ann.image_bytes(ann.image(name))
        return Response(data, media_type=media, headers={"Cache-Control": "no-store"})

    @app.post("/api/images/{name:path}/embed")
    def embed(name: str) -> Dict[str, Any]:
        info = ann.image(name)
        start = time.perf_counter()
        emb = ann.embedding(info, prefetch=True)
        return {
            "width": info.width,
            "height": info.height,
            "encode_s": emb.encode_s,
            "wait_s": time.perf_counter() - start,
            "model": ann.slot.info(),
        }

    @app.post("/api/images/{name:path}/predict")
    def predict(name: str, req: PredictRequest) -> Dict[str, Any]:
        info = ann.image(name)
        _check_prompts(req, info)
        emb = ann.embedding(info)
        model, model_id, _ = ann.slot.current
        mask_input = None
        if req.previous is not None:
            logits = ann.previous_logits(req.session, name, model_id)
            if logits is None:
                raise HTTPException(409, f"session {req.session!r} has no previous prediction")
            if not 0 <= req.previous < len(logits):
                raise HTTPException(
                    422, f"previous must be in [0, {len(logits) - 1}], got {req.previous}"
                )
            mask_input = logits[req.previous][None]
        multimask = req.multimask
        if multimask is None:
            multimask = len(req.points) == 1 and req.box is None and mask_input is None
        coords = np.array([[p.x, p.y] for p in req.points]) if req.points else None
        labels = np.array([p.label for p in req.points]) if req.points else None
        box = np.array(req.box) if req.box is not None else None
        start = time.perf_counter()
        predictor = predictor_for(model, emb)
        try:
            masks, scores, low_res = predictor.predict(
                coords, labels, box, mask_input, multimask_output=multimask
            )
        except (PromptError, ValueError) as e:
            raise HTTPException(422, f"bad prompt: {e}") from None
        # Stability on the decoder's logits over the image (not the padding): the full-size
        # logits cost seconds on large images, and the score is only recorded.
        h, w = (math.ceil(v * low_res.shape[-1] / model.img_size) for v in emb.input_size)
        valid = torch.from_numpy(low_res[:, :h, :w])
        stab = stability_score(valid, model.mask_threshold, 1.0).nan_to_num(0.0)
        ann.remember(req.session, name, model_id, low_res)
        return {
            "masks": [encode_mask(m) for m in masks],
            "scores": [float(s) for s in scores],
            "stability": [float(s) for s in stab],
            "best": int(np.argmax(scores)),
            "multimask": multimask,
            "model": model_id,
            "decode_ms": 1000 * (time.perf_counter() - start),
        }

    @app.get("/api/images/{name:path}")
    def image_record(name: str) -> Dict[str, Any]:
        info = ann.image(name)
        record = ann.store.load(info.name)
        return {
            "image": record["image"],
            "annotate": record["annotate"],
            "annotations": record["annotations"],
        }

    @app.post("/api/images/{name:path}/annotations", status_code=201)
    def add_annotation(name: str, body: AnnotationIn) -> Dict[str, Any]:
        info = ann.image(name)
        try:
            rle = check_rle(body.mask, info.height, info.width)
        except AnnotationError as e:
            raise HTTPException(422, f"mask: {e}") from None
        _, model_id, checkpoint = ann.slot.current
        model = None
        if body.source != "brush":  # the page says which model predicted it (maybe an older one)
            same = body.model in (None, model_id)
            model = {"id": body.model or model_id, "checkpoint": checkpoint if same else None}
        record = make_annotation(
            rle,
            source=body.source,
            category=ann.category(body.category),
            stage=ann.stage_of(info.name),
            time_s=body.time_s,
            model=model,
            prompts=body.prompts.model_dump(),
            predicted_iou=body.predicted_iou,
            stability_score=body.stability_score,
        )
        return ann.store.add(info.name, record)

    @app.put("/api/images/{name:path}/annotations/{ann_id}")
    def update_annotation(name: str, ann_id: int, body: AnnotationUpdate) -> Dict[str, Any]:
        info = ann.image(name)
        try:
            current = ann.store.find(info.name, ann_id)
        except KeyError as e:
            raise HTTPException(404, str(e).strip("'\"")) from None
        changes: Dict[str, Any] = {"time_s": current["time_s"] + body.add_time_s}
        if body.category is not None:
            changes["category"] = ann.category(body.category)
        if body.accepted is not None:
            changes["accepted"] = body.accepted
        if body.mask is not None:
            try:
                rle = check_rle(body.mask, info.height, info.width)
            except AnnotationError as e:
                raise HTTPException(422, f"mask: {e}") from None
            bbox, area = mask_geometry(rle)
            changes.update(segmentation=rle, bbox=bbox, area=area, source="edited")
        return ann.store.update(info.name, ann_id, changes)

    @app.delete("/api/images/{name:path}/annotations/{ann_id}")
    def delete_annotation(name: str, ann_id: int) -> Dict[str, Any]:
        info = ann.image(name)
        try:
            ann.store.delete(info.name, ann_id)
        except KeyError as e:
            raise HTTPException(404, str(e).strip("'\"")) from None
        return {"deleted": ann_id}

    @app.post("/api/images/{name:path}/prefill")
    def prefill(name: str, body: Optional[PrefillRequest] = None) -> Dict[str, Any]:
        info = ann.image(name)
        start = time.perf_counter()
        new = ann.prefill(info, (body or PrefillRequest()).model_dump())
        return {
            "annotations": new,
            "seconds": time.perf_counter() - start,
        }

    @app.post("/api/export")
    def export() -> Dict[str, Any]:
        return export_coco(ann.store, settings.export or default_export_path(settings.out))

    @app.get("/api/model")
    def model_info() -> Dict[str, Any]:
        return {"current": ann.slot.info(), "checkpoints": ann.checkpoints()}

    @app.post("/api/model")
    def switch_model(body: ModelRequest) -> Dict[str, Any]:
        available = ann.checkpoints()
        if settings.load_checkpoint is None or settings.checkpoint_dir is None:
            raise HTTPException(400, "model switching is off (start with --checkpoint-dir)")
        if body.checkpoint not in available:
            raise HTTPException(
                404, f"no checkpoint {body.checkpoint!r} in {settings.checkpoint_dir}"
            )
        path = str(settings.checkpoint_dir / body.checkpoint)
        try:
            model, model_id, detector = settings.load_checkpoint(path)
        except Exception as e:  # the loader's own one-line message (CheckpointError, ...)
            raise HTTPException(422, f"cannot load {body.checkpoint!r}: {e}") from None
        ann.slot.switch(model, model_id, path, detector)
        logger.info("switched to %s", model_id)
        return {"current": ann.slot.info(), "checkpoints": available}

    return app


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket; raises OSError with a one-line message if the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(app: FastAPI, sock: socket.socket, log_level: str = "warning") -> None:
    """Serve ``app`` on an already bound socket until interrupted."""
    import uvicorn

    uvicorn.Server(uvicorn.Config(app, log_level=log_level)).run(sockets=[sock])


class ServerThread:
    """Runs ``app`` with uvicorn on a background thread (tests, benchmarks).

    Example::

        with ServerThread(app) as url:
            httpx.get(url + "/api/state")
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.sock = bind_socket(host, port)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the annotation server did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
