from .trainer import Trainer, load_weights, write_results

__all__ = ["Trainer", "load_weights", "write_results"]
