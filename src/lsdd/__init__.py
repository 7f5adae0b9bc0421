"""lsdd: Learnable Sampler Distillation (LSD / LSD+) for discrete diffusion models."""

__version__ = "0.1.0"

__all__ = ["__version__"]
