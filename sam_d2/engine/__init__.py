"""Training and evaluation driver: Detectron2's trainer fitted to sam_d2's meta-architectures."""

from .trainer import Trainer, load_weights, write_results

__all__ = ["Trainer", "load_weights", "write_results"]
