from .engine import TrainConfig, fit, metrics, predict

__all__ = ["TrainConfig", "fit", "metrics", "predict"]
