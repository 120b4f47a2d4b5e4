"""samscale: sharpness-aware minimization across model scale."""
__version__ = "0.1.0"
