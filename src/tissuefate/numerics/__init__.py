"""Numerical kernels that know nothing about biology: LOD/ADI diffusion, advection, elliptic solves, stiff reactions."""
