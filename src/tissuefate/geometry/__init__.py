"""Voxel grid, built-in phantoms and image (NIfTI label map) import."""
from .grid import Grid

__all__ = ["Grid"]
