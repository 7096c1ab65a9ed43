"""The annotation app of the data engine's stages 1-2 (model-assisted and semi-automatic).

``storage`` (SA-1B per-image JSON, COCO export) and ``embeddings`` (model slot, embedding cache)
import no web framework; ``server`` (FastAPI) is imported on demand by ``tools/annotate.py``.
"""

from .storage import AnnotationStore, ImageFolder, export_coco

__all__ = ["AnnotationStore", "ImageFolder", "export_coco"]
