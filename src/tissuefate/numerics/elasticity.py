"""Quasi-static small-strain linear elasticity on the voxel grid (trilinear hexahedra, B-bar).

Equations
---------
Find the displacement ``u`` (m) on the solid part ``Omega`` of the grid (the union of the voxels flagged in
``solid``) such that

    div sigma = 0                                   in Omega          (no body force, quasi-static)
    sigma     = C : (eps(u) - eps*)                 eps(u) = (grad u + grad u^T) / 2
    C : e     = K tr(e) I + 2 mu dev(e)             K = E / (3 (1 - 2 nu)),  mu = E / (2 (1 + nu))
    u         = g   (0 unless ``dirichlet`` is given)   on the fixed domain faces (``fixed_faces``)
    sigma n   = 0                                   on every other surface, including solid/void interfaces

``eps*`` is the stress-free (eigen-)strain of each voxel: swelling, shrinkage, thermal or injection strain.
An isotropic linear eigenstrain ``e`` means ``eps* = e I`` (volumetric stress-free strain ``3 e``).

Weak form: with V_h the trilinear functions that equal g on the fixed faces (V_h^0: zero there),

    sum_e  int_e  [ 2 mu dev eps(v) : dev eps(u) + K  <div v>_e <div u>_e ] dV
        =  sum_e  int_e  eps_bar(v) : C : eps*  dV                    for all v in V_h^0,

where ``<.>_e`` is the mean over element e and ``eps_bar(v) = dev eps(v) + <div v>_e I / 3``.

Discretisation
--------------
* Elements are the voxels: 8-node trilinear hexahedra (Q1), nodes at the voxel corners, so the nodal
  displacement has shape ``(nx+1, ny+1, nz+1, 3)``. E, nu and eps* are constant per voxel.
* Volumetric locking (nu -> 1/2): the deviatoric part is integrated with 2x2x2 Gauss points, the volumetric
  part with the element-mean dilatation (B-bar / mean-dilatation method of Hughes 1980, the same as selective
  reduced integration of the bulk term with one point on these box elements). The pressure is then one value
  per element (Q1-P0). The displacement does not lock: on the Eshelby sphere at 48^3 voxels the exterior
  displacement error is 0.06 / 0.07 / 0.12 / 0.29 % for nu = 0.35 / 0.45 / 0.49 / 0.499. Q1-P0 is not
  inf-sup stable, so the element pressure carries a checkerboard-like scatter near incompressibility (inside
  the Eshelby sphere, whose exact pressure is uniform, its standard deviation is 2.4 % at nu = 0.49 and 6.5 % at
  0.499; the mean is right to 0.02 % / 0.9 %): average stress over a few voxels before using it pointwise.
  The element matrix is ``mu_e Kdev + K_e Kvol`` with two 24x24 reference matrices (the grid is uniform) and
  has exactly the six rigid-body zero modes (checked in the tests).
* Eigenstrain load: ``f_e = V_e B0^T (C_e : eps*_e)`` (B0 = shape-function gradients at the element centre,
  which equal their element means on a box); exact for element-wise constant eps*.
* Nodes that touch no solid voxel are removed (void). Solid pieces that are not connected through voxel faces
  to a fixed face would float (singular system); they are removed too and reported as
  ``ElasticSolution.floating_voxels``. Nodes on fixed faces that touch solid are Dirichlet nodes.

Outputs (``ElasticSolution``)
-----------------------------
* ``displacement`` (nx+1, ny+1, nz+1, 3) m; **NaN at removed nodes**.
* ``strain`` (6, nx, ny, nz): total strain at the element centre (= element mean of eps(u) on a box), Voigt
  order xx, yy, zz, yz, xz, xy, **tensor** shear components (eps_yz, not gamma_yz = 2 eps_yz); NaN in void.
* ``stress`` (6, nx, ny, nz) Pa: element-mean Cauchy stress of the B-bar element, ``C : (strain - eps*)``,
  same ordering; 0 in void (air carries no stress).
* ``volumetric_strain`` (nx, ny, nz): trace of ``strain`` = exact element mean of div u; NaN in void.

Solvers
-------
* ``method="amg"``: the stiffness of the free nodes is assembled as a 3x3-block (BSR) sparse matrix by a
  Numba node-row kernel (no per-element Python loop, no COO triplets) and solved by conjugate gradients
  preconditioned by a pyamg smoothed-aggregation V-cycle (symmetric block Gauss-Seidel smoothing) built with
  the six rigid-body modes as near-null space. Memory: 27 * (9 * 8 + 4) B ~ 2 kB per node for the matrix plus
  the hierarchy and pyamg's copies; set-up time grows faster than the unknowns (see BENCHMARKS.md); use it up
  to ~1e6 unknowns.
* ``method="gmg"``: matrix-free geometric multigrid as the CG preconditioner. The operator is applied element
  by element (Numba; slabs of constant i, even then odd, in parallel). The element product does not use the
  24x24 matrices: the trilinear field is transformed to its 8 Walsh-Hadamard modes (1, xi, eta, zeta, xi eta,
  ...), which are L2-orthogonal on a box, so the exactly integrated deviatoric energy is a weighted sum of
  mode energies and the mean dilatation involves only the constant mode; about 350 flops per element instead
  of 2300, bit-for-bit the same operator as the assembled one up to rounding (tested). Coarse levels
  re-discretise the element on 2x coarser voxels with the 8 children's K and mu averaged (void children count
  as 0) and "any child solid" as the coarse solid mask; trilinear prolongation, restriction = its transpose;
  smoother: Chebyshev polynomial (degree 2, interval [lmax/8, 1.1 lmax]) of the 3x3 node-block Jacobi
  preconditioned operator, lmax from 10 Lanczos (CG) steps per level; the coarsest grid (<= 6000 unknowns,
  or the last grid with even voxel counts) is factorised by sparse LU or, when still large, approximated by
  one smoothed-aggregation V-cycle. Memory: about ten nodal vectors plus the coefficients (1.2 GiB peak for
  the 128^3 benchmark). Coarsening needs even voxel counts; grids divisible by 2^3 or more benefit.
  Iterations grow near incompressibility (nu 0.35: ~9, 0.45: ~15, 0.49: ~30-45, 0.499: 140-330 on the Eshelby
  cube): the point-block smoother does not see the volumetric constraint; keep nu <= 0.49.
* ``method="auto"``: "gmg" when the grid coarsens at least twice and the problem has more than 5000
  unknowns, "amg" otherwise (the matrix-free path is faster and leaner at every size measured).

Both preconditioners are symmetric positive definite, so CG converges to ``||b - A x|| <= rtol ||b||``.
The hierarchy is kept between ``solve`` calls with the same (effective) solid mask; when the moduli change
it remains a valid (if less exact) preconditioner and is rebuilt only if CG needs more than
``max(2 n0, n0 + 8)`` iterations (n0: iterations of the first solve after the build) or does not converge.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numba
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from numba import njit, prange
from scipy import ndimage

try:
    import pyamg
except Exception:  # pragma: no cover
    pyamg = None

__all__ = ["ElasticitySolver", "ElasticSolution", "eshelby_sphere", "eshelby_interior_strain",
           "sphere_volume_fraction", "partial_volume_moduli", "element_matrices", "FACES"]

FACES = ("x-", "x+", "y-", "y+", "z-", "z+")


# ---------------------------------------------------------------------------------------------- analytic
def eshelby_sphere(r, a, eps_star, E_in, nu_in, E_out=None, nu_out=None):
    """Radial displacement (m) of the Eshelby inclusion problem in an infinite medium.

    A sphere of radius ``a`` with the uniform isotropic eigenstrain ``eps_star * I`` (moduli E_in, nu_in) is
    bonded to an infinite matrix (E_out, nu_out; defaults: the same as inside). With u = A r inside and
    u = B / r^2 outside (the only regular radial fields with div sigma = 0), continuity of u and of the radial
    traction at r = a, 3 K1 (A - eps*) = -4 mu2 A, give the uniform interior strain

        eps_in = A = 3 K1 eps* / (3 K1 + 4 mu2),      B = eps_in a^3,

    which for equal moduli is eps* (1 + nu) / (3 (1 - nu)). Returns u_r(r) (same shape as r).
    """
    if E_out is None:
        E_out = E_in
    if nu_out is None:
        nu_out = nu_in
    K1 = E_in / (3.0 * (1.0 - 2.0 * nu_in))
    mu2 = E_out / (2.0 * (1.0 + nu_out))
    eps_in = 3.0 * K1 * eps_star / (3.0 * K1 + 4.0 * mu2)
    r = np.asarray(r, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(r <= a, eps_in * r, eps_in * a ** 3 / np.maximum(r, 1e-300) ** 2)


def eshelby_interior_strain(eps_star, E_in, nu_in, E_out=None, nu_out=None):
    """Uniform linear strain eps_in inside the Eshelby sphere (see :func:`eshelby_sphere`)."""
    return float(eshelby_sphere(1.0, 1.0, eps_star, E_in, nu_in, E_out, nu_out))


def sphere_volume_fraction(shape, spacing, centre, radius, samples: int = 12) -> np.ndarray:
    """Fraction of each voxel inside a sphere (grid frame: voxel (i,j,k) spans [i dx, (i+1) dx] x ...).

    Voxels whose centre is farther than half a voxel diagonal from the surface are 0 or 1; the others are
    sampled on a ``samples^3`` midpoint lattice (error ~ 1/samples^2 per voxel for a smooth surface)."""
    shape = tuple(int(n) for n in shape)
    h = np.asarray(spacing, dtype=float)
    c = np.asarray(centre, dtype=float)
    ax = [(np.arange(shape[d]) + 0.5) * h[d] - c[d] for d in range(3)]
    r = np.sqrt(ax[0][:, None, None] ** 2 + ax[1][None, :, None] ** 2 + ax[2][None, None, :] ** 2)
    half_diag = 0.5 * float(np.linalg.norm(h))
    frac = (r < radius).astype(np.float64)
    band = np.nonzero(np.abs(r - radius) <= half_diag)
    if band[0].size:
        s = (np.arange(samples) + 0.5) / samples - 0.5
        off = np.stack(np.meshgrid(s * h[0], s * h[1], s * h[2], indexing="ij"), -1).reshape(-1, 3)
        cen = np.stack([ax[d][band[d]] for d in range(3)], -1)
        out = np.empty(cen.shape[0])
        step = max(1, 2_000_000 // off.shape[0])
        for p in range(0, cen.shape[0], step):
            q = cen[p:p + step, None, :] + off[None, :, :]
            out[p:p + step] = np.mean(np.einsum("ijk,ijk->ij", q, q) < radius * radius, axis=1)
        frac[band] = out
    return frac


def partial_volume_moduli(phi, E_in, nu_in, E_out, nu_out, eps_in=0.0, eps_out=0.0):
    """Isotropic moduli and eigenstrain for voxels filled to the volume fraction ``phi`` by an inclusion.

    Uniform-stress (Reuss) mixture: 1/K = phi/K_in + (1-phi)/K_out, 1/mu likewise, and the volume-averaged
    eigenstrain eps* = phi eps_in + (1-phi) eps_out (the strain-free state of the mixture under uniform
    stress). On the Eshelby sphere with E_in = 5 E_out at 64^3 voxels this gave an exterior displacement
    error of 1.5e-3 against 2.8e-2 for the uniform-strain (Voigt) mixture with the volume-averaged
    eigenstress phi C_in:eps_in (tests/test_elasticity.py).
    Returns (E, nu, eps) arrays of the shape of phi."""
    phi = np.clip(np.asarray(phi, dtype=float), 0.0, 1.0)
    K1, K2 = E_in / (3.0 * (1.0 - 2.0 * nu_in)), E_out / (3.0 * (1.0 - 2.0 * nu_out))
    m1, m2 = E_in / (2.0 * (1.0 + nu_in)), E_out / (2.0 * (1.0 + nu_out))
    K = 1.0 / (phi / K1 + (1.0 - phi) / K2)
    m = 1.0 / (phi / m1 + (1.0 - phi) / m2)
    E = 9.0 * K * m / (3.0 * K + m)
    nu = (3.0 * K - 2.0 * m) / (2.0 * (3.0 * K + m))
    return E, nu, phi * eps_in + (1.0 - phi) * eps_out


# ---------------------------------------------------------------------------------------- element matrices
_LOC = np.array([[a & 1, (a >> 1) & 1, (a >> 2) & 1] for a in range(8)], dtype=np.int64)


def element_matrices(spacing):
    """Reference matrices of the B-bar trilinear box element with edges ``spacing``.

    Returns (Kdev, gs, g, V): the 24x24 deviatoric stiffness for mu = 1 (2x2x2 Gauss), the scaled centre
    gradient ``gs = sqrt(V) g`` so that the volumetric stiffness for K = 1 is ``outer(gs, gs)``, the centre
    gradients g (24,) (dof 3 a + c, local node a = ax + 2 ay + 4 az) and the volume V."""
    h = np.asarray(spacing, dtype=float)
    V = float(np.prod(h))

    def grad(p):
        G = np.empty((8, 3))
        for a in range(8):
            f = [p[d] if _LOC[a, d] else 1.0 - p[d] for d in range(3)]
            df = [(2 * _LOC[a, d] - 1) / h[d] for d in range(3)]
            G[a] = [df[0] * f[1] * f[2], f[0] * df[1] * f[2], f[0] * f[1] * df[2]]
        return G

    gp = (0.5 - 0.5 / np.sqrt(3.0), 0.5 + 0.5 / np.sqrt(3.0))
    Kd = np.zeros((24, 24))
    for x in gp:
        for y in gp:
            for z in gp:
                G = grad((x, y, z))
                w = V / 8.0
                for c in range(3):
                    for d in range(3):
                        blk = (float(c == d) * (G @ G.T) + np.outer(G[:, d], G[:, c])
                               - (2.0 / 3.0) * np.outer(G[:, c], G[:, d]))
                        Kd[c::3, d::3] += w * blk
    Kd = 0.5 * (Kd + Kd.T)
    g = grad((0.5, 0.5, 0.5)).reshape(-1)
    return np.ascontiguousarray(Kd), np.sqrt(V) * g, g, V


# ------------------------------------------------------------------------------------------- Numba kernels
@njit(inline="always", fastmath=True)
def _elem_op(t, m, kb, hx, hy, hz, V):
    """In place: t (24, component-major t[8 c + a]) <- element stiffness times t.

    Exact for the B-bar box element: a trilinear field is written in the modes 1, xi, eta, xi eta, zeta,
    xi zeta, eta zeta, xi eta zeta (xi, eta, zeta in [-1, 1]; index b = bx + 2 by + 4 bz) by a Walsh-Hadamard
    butterfly. The modes are L2-orthogonal on the element, so the fully integrated deviatoric energy is a sum
    over modes of (mode weight 1, 1/3 or 1/9) * 2 mu |dev sym G_mode|^2 and the mean-dilatation bulk energy
    involves only the constant mode. About 350 flops per element instead of 2 x 24 x 24 for the dense matrix.
    hx = 2 / (8 dx) etc. (the 1/8 of the modal transform folded in), V the element volume."""
    for c in range(3):
        o = 8 * c
        for s in (1, 2, 4):
            for a in range(8):
                if a & s == 0:
                    p = t[o + a]
                    q = t[o + a + s]
                    t[o + a] = p + q
                    t[o + a + s] = q - p
    third = 1.0 / 3.0
    # constant mode: full gradient; bulk (mean dilatation) + deviatoric
    g00 = hx * t[1]
    g01 = hy * t[2]
    g02 = hz * t[4]
    g10 = hx * t[9]
    g11 = hy * t[10]
    g12 = hz * t[12]
    g20 = hx * t[17]
    g21 = hy * t[18]
    g22 = hz * t[20]
    tr = g00 + g11 + g22
    c2 = 2.0 * m * V
    pv = kb * V * tr - c2 * tr * third
    S00 = pv + c2 * g00
    S11 = pv + c2 * g11
    S22 = pv + c2 * g22
    S01 = c2 * 0.5 * (g01 + g10)
    S02 = c2 * 0.5 * (g02 + g20)
    S12 = c2 * 0.5 * (g12 + g21)
    cw = c2 * third
    # mode xi: G[:, y] = hy A_3, G[:, z] = hz A_5
    a01 = hy * t[3]
    a02 = hz * t[5]
    a11 = hy * t[11]
    a12 = hz * t[13]
    a21 = hy * t[19]
    a22 = hz * t[21]
    trm = (a11 + a22) * third
    X01 = cw * 0.5 * a01
    X02 = cw * 0.5 * a02
    X11 = cw * (a11 - trm)
    X12 = cw * 0.5 * (a12 + a21)
    X22 = cw * (a22 - trm)
    # mode eta: G[:, x] = hx A_3, G[:, z] = hz A_6
    b00 = hx * t[3]
    b02 = hz * t[6]
    b10 = hx * t[11]
    b12 = hz * t[14]
    b20 = hx * t[19]
    b22 = hz * t[22]
    trm = (b00 + b22) * third
    Y00 = cw * (b00 - trm)
    Y01 = cw * 0.5 * b10
    Y02 = cw * 0.5 * (b02 + b20)
    Y12 = cw * 0.5 * b12
    Y22 = cw * (b22 - trm)
    # mode zeta: G[:, x] = hx A_5, G[:, y] = hy A_6
    c00 = hx * t[5]
    c01 = hy * t[6]
    c10 = hx * t[13]
    c11 = hy * t[14]
    c20 = hx * t[21]
    c21 = hy * t[22]
    trm = (c00 + c11) * third
    Z00 = cw * (c00 - trm)
    Z01 = cw * 0.5 * (c01 + c10)
    Z02 = cw * 0.5 * c20
    Z11 = cw * (c11 - trm)
    Z12 = cw * 0.5 * c21
    # modes eta zeta (G[:, x]), xi zeta (G[:, y]), xi eta (G[:, z]), all from A_7, weight 1/9
    cw2 = c2 / 9.0
    p0 = hx * t[7]
    p1 = hx * t[15]
    p2 = hx * t[23]
    P00 = cw2 * p0 * 2.0 * third
    P01 = cw2 * 0.5 * p1
    P02 = cw2 * 0.5 * p2
    q0 = hy * t[7]
    q1 = hy * t[15]
    q2 = hy * t[23]
    Q01 = cw2 * 0.5 * q0
    Q11 = cw2 * q1 * 2.0 * third
    Q12 = cw2 * 0.5 * q2
    r0 = hz * t[7]
    r1 = hz * t[15]
    r2 = hz * t[23]
    R02 = cw2 * 0.5 * r0
    R12 = cw2 * 0.5 * r1
    R22 = cw2 * r2 * 2.0 * third
    # the diagonal entries of the A_7 modes that the transposed map does not read are omitted:
    # column x of mode P is read at rows 0..2 -> P00, P01 (= P10), P02 (= P20); likewise Q, R.
    for c in range(3):
        o = 8 * c
        if c == 0:
            s0x = S00
            s0y = S01
            s0z = S02
            sxy = X01
            sxz = X02
            syx = Y00
            syz = Y02
            szx = Z00
            szy = Z01
            f7 = hx * P00 + hy * Q01 + hz * R02
        elif c == 1:
            s0x = S01
            s0y = S11
            s0z = S12
            sxy = X11
            sxz = X12
            syx = Y01
            syz = Y12
            szx = Z01
            szy = Z11
            f7 = hx * P01 + hy * Q11 + hz * R12
        else:
            s0x = S02
            s0y = S12
            s0z = S22
            sxy = X12
            sxz = X22
            syx = Y02
            syz = Y22
            szx = Z02
            szy = Z12
            f7 = hx * P02 + hy * Q12 + hz * R22
        t[o] = 0.0
        t[o + 1] = hx * s0x
        t[o + 2] = hy * s0y
        t[o + 4] = hz * s0z
        t[o + 3] = hy * sxy + hx * syx
        t[o + 5] = hz * sxz + hx * szx
        t[o + 6] = hz * syz + hy * szy
        t[o + 7] = f7
        for s in (1, 2, 4):
            for a in range(8):
                if a & s == 0:
                    p = t[o + a]
                    q = t[o + a + s]
                    t[o + a] = p - q
                    t[o + a + s] = p + q


@njit(cache=True, parallel=True, fastmath=True)
def _apply(u, cK, cM, hx, hy, hz, V, free, y):
    """y = A u on the node grid (u, y: (NX, NY, NZ, 3)); y is zeroed at nodes with free == 0.

    Elements are visited in slabs of constant i; even slabs, then odd slabs, run in parallel (slabs of one
    colour share no nodes)."""
    nx, ny, nz = cM.shape
    NY = ny + 1
    NZ = nz + 1
    uf = u.reshape(-1)
    yf = y.reshape(-1)
    for p in prange(yf.size):
        yf[p] = 0.0
    for colour in range(2):
        nslab = (nx - colour + 1) // 2
        for sl in prange(nslab):
            i = 2 * sl + colour
            t = np.empty(24)
            for j in range(ny):
                for k in range(nz):
                    m = cM[i, j, k]
                    kb = cK[i, j, k]
                    if m == 0.0 and kb == 0.0:
                        continue
                    for b in range(4):
                        base = (((i + (b & 1)) * NY + j + (b >> 1)) * NZ + k) * 3
                        for c in range(3):
                            t[8 * c + b] = uf[base + c]
                            t[8 * c + b + 4] = uf[base + 3 + c]
                    _elem_op(t, m, kb, hx, hy, hz, V)
                    for b in range(4):
                        base = (((i + (b & 1)) * NY + j + (b >> 1)) * NZ + k) * 3
                        for c in range(3):
                            yf[base + c] += t[8 * c + b]
                            yf[base + 3 + c] += t[8 * c + b + 4]
    NX = nx + 1
    for i in prange(NX):
        for j in range(NY):
            for k in range(NZ):
                if free[i, j, k] == 0:
                    y[i, j, k, 0] = 0.0
                    y[i, j, k, 1] = 0.0
                    y[i, j, k, 2] = 0.0


@njit(cache=True)
def _block_diag_inv(cK, cM, Kd, gs, free, Dinv):
    """Inverse 3x3 diagonal node blocks of A (row-major 9 per node); 0 at non-free nodes."""
    nx, ny, nz = cM.shape
    D = np.zeros(Dinv.shape)
    for colour in range(2):
        nslab = (nx - colour + 1) // 2
        for s in range(nslab):
            i = 2 * s + colour
            for j in range(ny):
                for k in range(nz):
                    m = cM[i, j, k]
                    kb = cK[i, j, k]
                    if m == 0.0 and kb == 0.0:
                        continue
                    for a in range(8):
                        ia = i + (a & 1)
                        ja = j + ((a >> 1) & 1)
                        ka = k + (a >> 2)
                        for c in range(3):
                            for d in range(3):
                                D[ia, ja, ka, 3 * c + d] += (m * Kd[3 * a + c, 3 * a + d]
                                                             + kb * gs[3 * a + c] * gs[3 * a + d])
    NX, NY, NZ = free.shape
    for i in range(NX):
        for j in range(NY):
            for k in range(NZ):
                if free[i, j, k] == 0:
                    for q in range(9):
                        Dinv[i, j, k, q] = 0.0
                    continue
                a0 = D[i, j, k, 0]
                a1 = D[i, j, k, 1]
                a2 = D[i, j, k, 2]
                b1 = D[i, j, k, 4]
                b2 = D[i, j, k, 5]
                c2 = D[i, j, k, 8]
                # symmetric 3x3 inverse via cofactors
                m00 = b1 * c2 - b2 * b2
                m01 = a2 * b2 - a1 * c2
                m02 = a1 * b2 - a2 * b1
                m11 = a0 * c2 - a2 * a2
                m12 = a1 * a2 - a0 * b2
                m22 = a0 * b1 - a1 * a1
                det = a0 * m00 + a1 * m01 + a2 * m02
                inv = 1.0 / det
                Dinv[i, j, k, 0] = m00 * inv
                Dinv[i, j, k, 1] = m01 * inv
                Dinv[i, j, k, 2] = m02 * inv
                Dinv[i, j, k, 3] = m01 * inv
                Dinv[i, j, k, 4] = m11 * inv
                Dinv[i, j, k, 5] = m12 * inv
                Dinv[i, j, k, 6] = m02 * inv
                Dinv[i, j, k, 7] = m12 * inv
                Dinv[i, j, k, 8] = m22 * inv


@njit(cache=True, parallel=True, fastmath=True)
def _cheb_start(f, Dinv, scale, x, d, add):
    """d = scale * Dinv f; x = d (add=False: zero initial guess) or x += d (add=True)."""
    n = Dinv.shape[0] * Dinv.shape[1] * Dinv.shape[2]
    ff = f.reshape(-1)
    xf = x.reshape(-1)
    df = d.reshape(-1)
    Di = Dinv.reshape(-1)
    for p in prange(n):
        r0 = ff[3 * p]
        r1 = ff[3 * p + 1]
        r2 = ff[3 * p + 2]
        for c in range(3):
            v = scale * (Di[9 * p + 3 * c] * r0 + Di[9 * p + 3 * c + 1] * r1 + Di[9 * p + 3 * c + 2] * r2)
            df[3 * p + c] = v
            if add:
                xf[3 * p + c] += v
            else:
                xf[3 * p + c] = v


@njit(cache=True, parallel=True, fastmath=True)
def _cheb_step(r, Ad, Dinv, c1, c2, x, d):
    """r -= Ad; d = c1 d + c2 Dinv r; x += d."""
    n = Dinv.shape[0] * Dinv.shape[1] * Dinv.shape[2]
    rf = r.reshape(-1)
    af = Ad.reshape(-1)
    xf = x.reshape(-1)
    df = d.reshape(-1)
    Di = Dinv.reshape(-1)
    for p in prange(n):
        r0 = rf[3 * p] - af[3 * p]
        r1 = rf[3 * p + 1] - af[3 * p + 1]
        r2 = rf[3 * p + 2] - af[3 * p + 2]
        rf[3 * p] = r0
        rf[3 * p + 1] = r1
        rf[3 * p + 2] = r2
        for c in range(3):
            v = c1 * df[3 * p + c] + c2 * (Di[9 * p + 3 * c] * r0 + Di[9 * p + 3 * c + 1] * r1
                                           + Di[9 * p + 3 * c + 2] * r2)
            df[3 * p + c] = v
            xf[3 * p + c] += v


@njit(cache=True, parallel=True, fastmath=True)
def _sub(a, b, out):
    """out = a - b (flat)."""
    af = a.reshape(-1)
    bf = b.reshape(-1)
    of = out.reshape(-1)
    for p in prange(of.size):
        of[p] = af[p] - bf[p]


@njit(cache=True, parallel=True, fastmath=True)
def _restrict(rf, freec, rc):
    """rc = P^T rf (vertex-centred trilinear), zero at non-free coarse nodes."""
    NXc, NYc, NZc = freec.shape
    NX, NY, NZ = rf.shape[0], rf.shape[1], rf.shape[2]
    for I in prange(NXc):
        for J in range(NYc):
            for K in range(NZc):
                s0 = 0.0
                s1 = 0.0
                s2 = 0.0
                if freec[I, J, K] != 0:
                    for di in range(-1, 2):
                        i = 2 * I + di
                        if i < 0 or i >= NX:
                            continue
                        wi = 1.0 if di == 0 else 0.5
                        for dj in range(-1, 2):
                            j = 2 * J + dj
                            if j < 0 or j >= NY:
                                continue
                            wj = wi * (1.0 if dj == 0 else 0.5)
                            for dk in range(-1, 2):
                                k = 2 * K + dk
                                if k < 0 or k >= NZ:
                                    continue
                                w = wj * (1.0 if dk == 0 else 0.5)
                                s0 += w * rf[i, j, k, 0]
                                s1 += w * rf[i, j, k, 1]
                                s2 += w * rf[i, j, k, 2]
                rc[I, J, K, 0] = s0
                rc[I, J, K, 1] = s1
                rc[I, J, K, 2] = s2


@njit(cache=True, parallel=True, fastmath=True)
def _prolong_add(xc, free, x):
    """x += P xc at free fine nodes."""
    NX, NY, NZ = free.shape
    for i in prange(NX):
        i0 = i // 2
        i1 = (i + 1) // 2
        for j in range(NY):
            j0 = j // 2
            j1 = (j + 1) // 2
            for k in range(NZ):
                if free[i, j, k] == 0:
                    continue
                k0 = k // 2
                k1 = (k + 1) // 2
                for c in range(3):
                    v = (xc[i0, j0, k0, c] + xc[i1, j0, k0, c] + xc[i0, j1, k0, c] + xc[i1, j1, k0, c]
                         + xc[i0, j0, k1, c] + xc[i1, j0, k1, c] + xc[i0, j1, k1, c] + xc[i1, j1, k1, c])
                    x[i, j, k, c] += 0.125 * v


@njit(cache=True, parallel=True, fastmath=True)
def _dot(a, b):
    s = 0.0
    for p in prange(a.size):
        s += a[p] * b[p]
    return s


@njit(cache=True, parallel=True, fastmath=True)
def _cg_update(x, r, p, Ap, alpha):
    s = 0.0
    for q in prange(x.size):
        x[q] += alpha * p[q]
        rq = r[q] - alpha * Ap[q]
        r[q] = rq
        s += rq * rq
    return s


@njit(cache=True, parallel=True, fastmath=True)
def _xpby(p, z, beta):
    for q in prange(p.size):
        p[q] = z[q] + beta * p[q]


@njit(cache=True)
def _eigen_force(sig, g, V, f):
    """f += sum_e V B0^T sig_e (sig: (6, nx, ny, nz) eigenstress C:eps*, Voigt tensor order)."""
    nx, ny, nz = sig.shape[1], sig.shape[2], sig.shape[3]
    for colour in range(2):
        nslab = (nx - colour + 1) // 2
        for s in range(nslab):
            i = 2 * s + colour
            for j in range(ny):
                for k in range(nz):
                    sxx = sig[0, i, j, k]
                    syy = sig[1, i, j, k]
                    szz = sig[2, i, j, k]
                    syz = sig[3, i, j, k]
                    sxz = sig[4, i, j, k]
                    sxy = sig[5, i, j, k]
                    if sxx == 0.0 and syy == 0.0 and szz == 0.0 and syz == 0.0 and sxz == 0.0 and sxy == 0.0:
                        continue
                    for a in range(8):
                        gx = V * g[3 * a]
                        gy = V * g[3 * a + 1]
                        gz = V * g[3 * a + 2]
                        ia = i + (a & 1)
                        ja = j + ((a >> 1) & 1)
                        ka = k + (a >> 2)
                        f[ia, ja, ka, 0] += sxx * gx + sxy * gy + sxz * gz
                        f[ia, ja, ka, 1] += sxy * gx + syy * gy + syz * gz
                        f[ia, ja, ka, 2] += sxz * gx + syz * gy + szz * gz


@njit(cache=True)
def _post(u, g, Kb, mu, solid, sig_star, strain, stress):
    """Element-centre strain (tensor Voigt) and stress C:strain - sig_star; NaN strain / 0 stress in void."""
    nx, ny, nz = solid.shape
    for i in range(nx):
        for j in range(ny):
            for k in range(nz):
                if not solid[i, j, k]:
                    for q in range(6):
                        strain[q, i, j, k] = np.nan
                        stress[q, i, j, k] = 0.0
                    continue
                gxx = 0.0
                gxy = 0.0
                gxz = 0.0
                gyx = 0.0
                gyy = 0.0
                gyz = 0.0
                gzx = 0.0
                gzy = 0.0
                gzz = 0.0
                for a in range(8):
                    ia = i + (a & 1)
                    ja = j + ((a >> 1) & 1)
                    ka = k + (a >> 2)
                    ux = u[ia, ja, ka, 0]
                    uy = u[ia, ja, ka, 1]
                    uz = u[ia, ja, ka, 2]
                    dx = g[3 * a]
                    dy = g[3 * a + 1]
                    dz = g[3 * a + 2]
                    gxx += ux * dx
                    gxy += ux * dy
                    gxz += ux * dz
                    gyx += uy * dx
                    gyy += uy * dy
                    gyz += uy * dz
                    gzx += uz * dx
                    gzy += uz * dy
                    gzz += uz * dz
                exx = gxx
                eyy = gyy
                ezz = gzz
                eyz = 0.5 * (gyz + gzy)
                exz = 0.5 * (gxz + gzx)
                exy = 0.5 * (gxy + gyx)
                strain[0, i, j, k] = exx
                strain[1, i, j, k] = eyy
                strain[2, i, j, k] = ezz
                strain[3, i, j, k] = eyz
                strain[4, i, j, k] = exz
                strain[5, i, j, k] = exy
                tr = exx + eyy + ezz
                m2 = 2.0 * mu[i, j, k]
                p = Kb[i, j, k] * tr
                stress[0, i, j, k] = p + m2 * (exx - tr / 3.0) - sig_star[0, i, j, k]
                stress[1, i, j, k] = p + m2 * (eyy - tr / 3.0) - sig_star[1, i, j, k]
                stress[2, i, j, k] = p + m2 * (ezz - tr / 3.0) - sig_star[2, i, j, k]
                stress[3, i, j, k] = m2 * eyz - sig_star[3, i, j, k]
                stress[4, i, j, k] = m2 * exz - sig_star[4, i, j, k]
                stress[5, i, j, k] = m2 * exy - sig_star[5, i, j, k]


@njit(cache=True)
def _bsr_count(node_id, cK, cM):
    """Number of nonzero 3x3 blocks per free-node row (neighbours that share an element with stiffness)."""
    NX, NY, NZ = node_id.shape
    nx, ny, nz = cM.shape
    nfree = 0
    for i in range(NX):
        for j in range(NY):
            for k in range(NZ):
                if node_id[i, j, k] >= 0:
                    nfree += 1
    counts = np.zeros(nfree, dtype=np.int64)
    for i in range(NX):
        for j in range(NY):
            for k in range(NZ):
                row = node_id[i, j, k]
                if row < 0:
                    continue
                cnt = 0
                for di in range(-1, 2):
                    for dj in range(-1, 2):
                        for dk in range(-1, 2):
                            i2 = i + di
                            j2 = j + dj
                            k2 = k + dk
                            if i2 < 0 or j2 < 0 or k2 < 0 or i2 >= NX or j2 >= NY or k2 >= NZ:
                                continue
                            if node_id[i2, j2, k2] < 0:
                                continue
                            ok = False
                            for ex in range(max(i, i2) - 1, min(i, i2) + 1):
                                if ex < 0 or ex >= nx:
                                    continue
                                for ey in range(max(j, j2) - 1, min(j, j2) + 1):
                                    if ey < 0 or ey >= ny:
                                        continue
                                    for ez in range(max(k, k2) - 1, min(k, k2) + 1):
                                        if ez < 0 or ez >= nz:
                                            continue
                                        if cM[ex, ey, ez] != 0.0 or cK[ex, ey, ez] != 0.0:
                                            ok = True
                            if ok:
                                cnt += 1
                counts[row] = cnt
    return counts


@njit(cache=True)
def _bsr_fill(node_id, cK, cM, Kd, gs, indptr, indices, data):
    NX, NY, NZ = node_id.shape
    nx, ny, nz = cM.shape
    for i in range(NX):
        for j in range(NY):
            for k in range(NZ):
                row = node_id[i, j, k]
                if row < 0:
                    continue
                pos = indptr[row]
                for di in range(-1, 2):
                    for dj in range(-1, 2):
                        for dk in range(-1, 2):
                            i2 = i + di
                            j2 = j + dj
                            k2 = k + dk
                            if i2 < 0 or j2 < 0 or k2 < 0 or i2 >= NX or j2 >= NY or k2 >= NZ:
                                continue
                            col = node_id[i2, j2, k2]
                            if col < 0:
                                continue
                            ok = False
                            for c in range(3):
                                for d in range(3):
                                    data[pos, c, d] = 0.0
                            for ex in range(max(i, i2) - 1, min(i, i2) + 1):
                                if ex < 0 or ex >= nx:
                                    continue
                                for ey in range(max(j, j2) - 1, min(j, j2) + 1):
                                    if ey < 0 or ey >= ny:
                                        continue
                                    for ez in range(max(k, k2) - 1, min(k, k2) + 1):
                                        if ez < 0 or ez >= nz:
                                            continue
                                        m = cM[ex, ey, ez]
                                        kb = cK[ex, ey, ez]
                                        if m == 0.0 and kb == 0.0:
                                            continue
                                        ok = True
                                        a = (i - ex) + 2 * (j - ey) + 4 * (k - ez)
                                        b = (i2 - ex) + 2 * (j2 - ey) + 4 * (k2 - ez)
                                        for c in range(3):
                                            for d in range(3):
                                                data[pos, c, d] += (m * Kd[3 * a + c, 3 * b + d]
                                                                    + kb * gs[3 * a + c] * gs[3 * b + d])
                            if ok:
                                indices[pos] = col
                                pos += 1


# ------------------------------------------------------------------------------------------------ helpers
SMALL_NODES = 150_000


@contextmanager
def _threads(n):
    """Run the Numba kernels with n threads (restored afterwards)."""
    prev = numba.get_num_threads()
    n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(prev)


def _other_runnable(samples=5):
    """Runnable threads of other processes right now (median of a few reads of /proc/loadavg, minus this
    thread), or None where that file does not exist. Unlike the load average it does not count this
    process's own recent work."""
    vals = []
    try:
        for q in range(samples):
            with open("/proc/loadavg") as fh:
                vals.append(int(fh.read().split()[3].split("/")[0]) - 1)
            if q + 1 < samples:
                time.sleep(0.002)
    except (OSError, ValueError, IndexError):
        return None
    return int(np.median(vals))


def _assemble_bsr(node_id, cK, cM, Kd, gs):
    """3x3-block CSR (BSR) stiffness of the nodes with node_id >= 0 (C-order numbering)."""
    counts = _bsr_count(node_id, cK, cM)
    n = counts.size
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    nnzb = int(indptr[-1])
    indices = np.empty(nnzb, dtype=np.int64)
    data = np.empty((nnzb, 3, 3))
    _bsr_fill(node_id, cK, cM, Kd, gs, indptr, indices, data)
    if nnzb < 2 ** 31 - 1:
        indptr = indptr.astype(np.int32)
        indices = indices.astype(np.int32)
    return sp.bsr_matrix((data, indices, indptr), shape=(3 * n, 3 * n))


def _sa_hierarchy(A, B):
    """pyamg smoothed aggregation for the BSR stiffness A with near-null space B (rigid-body modes).

    Gershgorin ('local') weighted Jacobi prolongation smoothing (no Arnoldi spectral-radius estimate), no
    candidate improvement (the rigid-body modes are exact zero-energy modes of the element), symmetric block
    Gauss-Seidel smoothing (pyamg default). Measured on a 32^3 block: 16 CG iterations, set-up 1.3 s, against
    14 iterations and 2.5-4.3 s with the spectral-radius weighting or the default candidate improvement."""
    if pyamg is None:  # pragma: no cover
        raise RuntimeError("pyamg is required for method='amg'")
    return pyamg.smoothed_aggregation_solver(
        A, B=B, symmetry="hermitian", strength=("symmetric", {"theta": 0.0}),
        smooth=("jacobi", {"omega": 4.0 / 3.0, "weighting": "local"}),
        improve_candidates=None, max_coarse=1000)


def _node_id(free):
    nid = np.full(free.shape, -1, dtype=np.int64)
    m = free.astype(bool)
    nid[m] = np.arange(int(m.sum()))
    return nid


def _rigid_modes(free, spacing):
    """Six rigid-body modes (3 n_free x 6) at the free nodes, coordinates centred and scaled to O(1)."""
    idx = np.nonzero(free)
    X = [idx[d] * spacing[d] for d in range(3)]
    L = max(float(np.max(np.abs(X[d] - X[d].mean()))) for d in range(3)) or 1.0
    X = [(X[d] - X[d].mean()) / L for d in range(3)]
    n = X[0].size
    B = np.zeros((n, 3, 6))
    for d in range(3):
        B[:, d, d] = 1.0
    x, y, z = X
    B[:, 0, 3], B[:, 1, 3] = -y, x      # rotation about z
    B[:, 1, 4], B[:, 2, 4] = -z, y      # rotation about x
    B[:, 0, 5], B[:, 2, 5] = z, -x      # rotation about y
    return B.reshape(3 * n, 6)


def _node_mask_from_elements(el):
    """Nodes (NX, NY, NZ) touching at least one True element."""
    nx, ny, nz = el.shape
    nm = np.zeros((nx + 1, ny + 1, nz + 1), dtype=bool)
    for a in range(8):
        ax, ay, az = _LOC[a]
        nm[ax:ax + nx, ay:ay + ny, az:az + nz] |= el
    return nm


def _face_nodes(shape_nodes, faces):
    m = np.zeros(shape_nodes, dtype=bool)
    for f in faces:
        d = "xyz".index(f[0])
        sl = [slice(None)] * 3
        sl[d] = 0 if f[1] == "-" else shape_nodes[d] - 1
        m[tuple(sl)] = True
    return m


def _pcg(matvec, prec, b, x, rtol, maxit):
    """Preconditioned CG on flat float64 vectors; returns (x, iterations, converged)."""
    bn = np.sqrt(_dot(b, b))
    if bn == 0.0:
        x[:] = 0.0
        return x, 0, True
    if np.any(x):
        r = b - matvec(x)
    else:
        r = b.copy()
    tol = rtol * bn
    if np.sqrt(_dot(r, r)) <= tol:
        return x, 0, True
    z = prec(r)
    p = z.copy()
    rz = _dot(r, z)
    for it in range(1, maxit + 1):
        Ap = matvec(p)
        pAp = _dot(p, Ap)
        if not pAp > 0.0:
            return x, it, False
        alpha = rz / pAp
        rn2 = _cg_update(x, r, p, Ap, alpha)
        if np.sqrt(rn2) <= tol:
            return x, it, True
        z = prec(r)
        rz_new = _dot(r, z)
        _xpby(p, z, rz_new / rz)
        rz = rz_new
    return x, maxit, False


# ------------------------------------------------------------------------------------------ GMG hierarchy
class _Level:
    def __init__(self, spacing, cK, cM, free):
        self.spacing = tuple(float(h) for h in spacing)
        self.cK = np.ascontiguousarray(cK, dtype=np.float64)
        self.cM = np.ascontiguousarray(cM, dtype=np.float64)
        self.free = np.ascontiguousarray(free, dtype=np.uint8)
        self.Kd, self.gs, self.g, self.V = element_matrices(self.spacing)
        self.hx, self.hy, self.hz = (0.25 / h for h in self.spacing)
        self.nshape = self.free.shape + (3,)

    def apply(self, u, y):
        _apply(u, self.cK, self.cM, self.hx, self.hy, self.hz, self.V, self.free, y)
        return y


def _coarsen_coef(c, cs):
    """Coefficient of each coarse element: the mean of its 8 children (void children count as 0).

    Harmonic and geometric means of the solid children were tried on the benchmark block (64^3, nu 0.4):
    30 and 23 CG iterations against 20 for the arithmetic mean."""
    return c.reshape(cs[0], 2, cs[1], 2, cs[2], 2).mean(axis=(1, 3, 5))


class _GMG:
    """Matrix-free geometric multigrid V-cycle (see module docstring)."""

    def __init__(self, spacing, cK, cM, free, faces, degree=2, coarse_dofs=6000, lanczos=10, lo_ratio=8.0):
        self.degree = int(degree)
        self.levels = [_Level(spacing, cK, cM, free)]
        while True:
            L = self.levels[-1]
            shp = L.cM.shape
            ndof = 3 * int(L.free.sum())
            if ndof <= coarse_dofs or any(n % 2 or n < 4 for n in shp):
                break
            cs = tuple(n // 2 for n in shp)
            cKc = _coarsen_coef(L.cK, cs)
            cMc = _coarsen_coef(L.cM, cs)
            solid_c = (cKc > 0) | (cMc > 0)
            freec = _node_mask_from_elements(solid_c) & ~_face_nodes(tuple(n + 1 for n in cs), faces)
            self.levels.append(_Level(tuple(2 * h for h in L.spacing), cKc, cMc, freec))
        for L in self.levels[:-1]:
            L.Dinv = np.zeros(L.free.shape + (9,))
            _block_diag_inv(L.cK, L.cM, L.Kd, L.gs, L.free, L.Dinv)
            L.x = np.zeros(L.nshape)
            L.r = np.zeros(L.nshape)
            L.d = np.zeros(L.nshape)
            L.Ad = np.zeros(L.nshape)
            lmax = self._lmax(L, lanczos)
            hi = 1.1 * lmax
            lo = hi / lo_ratio
            L.theta = 0.5 * (hi + lo)
            L.delta = 0.5 * (hi - lo)
            L.lmax = lmax
        for L in self.levels[1:]:
            L.f = np.zeros(L.nshape)
        C = self.levels[-1]
        C.x = np.zeros(C.nshape)
        C.nid = _node_id(C.free)
        C.mask = C.free.astype(bool)
        A = _assemble_bsr(C.nid, C.cK, C.cM, C.Kd, C.gs)
        self.coarse_n = A.shape[0]
        if A.shape[0] == 0:
            self._csolve = lambda b: b
        elif A.shape[0] <= 25000 or pyamg is None:
            lu = spla.splu(sp.csc_matrix(A.tocsr()), permc_spec="MMD_AT_PLUS_A")
            self._csolve = lu.solve
        else:
            M = _sa_hierarchy(A, _rigid_modes(C.free, C.spacing)).aspreconditioner(cycle="V")
            self._csolve = M.matvec

    def _lmax(self, L, nit):
        """Largest eigenvalue of Dinv A from nit steps of block-Jacobi PCG (Lanczos tridiagonal)."""
        rng = np.random.default_rng(12345)
        b = rng.standard_normal(L.nshape) * L.free[..., None]
        x = np.zeros(L.nshape)
        r = b.copy()
        z = np.zeros(L.nshape)
        Ap = np.empty(L.nshape)
        _cheb_start(r, L.Dinv, 1.0, Ap, z, False)
        p = z.copy()
        rz = _dot(r.reshape(-1), z.reshape(-1))
        alphas, betas = [], []
        for _ in range(nit):
            L.apply(p, Ap)
            pAp = _dot(p.reshape(-1), Ap.reshape(-1))
            if pAp <= 0 or rz <= 0:
                break
            alpha = rz / pAp
            alphas.append(alpha)
            _cg_update(x.reshape(-1), r.reshape(-1), p.reshape(-1), Ap.reshape(-1), alpha)
            _cheb_start(r, L.Dinv, 1.0, Ap, z, False)  # z = Dinv r (Ap used as scratch)
            rz_new = _dot(r.reshape(-1), z.reshape(-1))
            beta = rz_new / rz
            betas.append(beta)
            _xpby(p.reshape(-1), z.reshape(-1), beta)
            rz = rz_new
        k = len(alphas)
        if k == 0:
            return 2.0
        T = np.zeros((k, k))
        for q in range(k):
            T[q, q] = 1.0 / alphas[q] + (betas[q - 1] / alphas[q - 1] if q > 0 else 0.0)
            if q + 1 < k:
                T[q, q + 1] = T[q + 1, q] = np.sqrt(betas[q]) / alphas[q]
        return float(np.linalg.eigvalsh(T)[-1])

    def _smooth(self, L, f, x, zero_start, want_residual):
        """Chebyshev smoothing of L x = f (degree self.degree); leaves the residual in L.r if asked."""
        theta, delta = L.theta, L.delta
        sigma = theta / delta
        rho = 1.0 / sigma
        if zero_start:
            L.r[...] = f
        else:
            L.apply(x, L.Ad)
            _sub(f, L.Ad, L.r)
        # first step: d = Dinv r / theta, x += d
        _cheb_start(L.r, L.Dinv, 1.0 / theta, x, L.d, not zero_start)
        for _ in range(1, self.degree):
            L.apply(L.d, L.Ad)
            rho_new = 1.0 / (2.0 * sigma - rho)
            _cheb_step(L.r, L.Ad, L.Dinv, rho_new * rho, 2.0 * rho_new / delta, x, L.d)
            rho = rho_new
        if want_residual:
            L.apply(L.d, L.Ad)
            _sub(L.r, L.Ad, L.r)

    def vcycle(self, f, lev=0):
        L = self.levels[lev]
        if lev == len(self.levels) - 1:
            x = L.x
            x[...] = 0.0
            if self.coarse_n:
                x[L.mask] = self._csolve(np.ascontiguousarray(f[L.mask].reshape(-1))).reshape(-1, 3)
            return x
        x = L.x
        self._smooth(L, f, x, True, True)
        C = self.levels[lev + 1]
        fc = C.f
        _restrict(L.r, C.free, fc)
        xc = self.vcycle(fc, lev + 1)
        _prolong_add(xc, L.free, x)
        self._smooth(L, f, x, False, False)
        return x

    def precondition(self, r_flat):
        L = self.levels[0]
        out = self.vcycle(r_flat.reshape(L.nshape))
        return out.reshape(-1).copy()


# --------------------------------------------------------------------------------------------- public API
@dataclass
class ElasticSolution:
    """Result of :meth:`ElasticitySolver.solve` (conventions in the module docstring).

    displacement: (nx+1, ny+1, nz+1, 3) m, NaN at removed nodes (touching no supported solid voxel).
    strain: (6, nx, ny, nz) total strain at element centres, tensor components xx, yy, zz, yz, xz, xy; NaN in void.
    stress: (6, nx, ny, nz) Pa, C : (strain - eps*); 0 in void.
    volumetric_strain: (nx, ny, nz) trace of strain (= element mean of div u); NaN in void.
    iterations / residual: CG iterations and final true relative residual ||b - A x|| / ||b||.
    setup_s / solve_s: wall time of set-up (masks, assembly, hierarchy) and of the CG solve (incl. output).
    method: "amg" or "gmg"; hierarchy_reused: whether the preconditioner of an earlier call was reused.
    floating_voxels: solid voxels removed because they are not face-connected to a fixed face.
    n_dofs: free unknowns (3 per free node). info: timings (mask_s, rhs_s, build_s, post_s), the hierarchy
    ("levels": grids / coarse size / lmax for gmg, assembly and set-up times / nnz for amg) and "threads".
    """

    displacement: np.ndarray
    strain: np.ndarray
    stress: np.ndarray
    volumetric_strain: np.ndarray
    iterations: int
    residual: float
    setup_s: float
    solve_s: float
    method: str = ""
    hierarchy_reused: bool = False
    floating_voxels: int = 0
    n_dofs: int = 0
    info: dict = field(default_factory=dict)

    def voxel_displacement(self) -> np.ndarray:
        """Mean of the 8 corner displacements of each voxel, (3, nx, ny, nz) m (NaN if a corner is removed)."""
        u = self.displacement
        nx, ny, nz = (s - 1 for s in u.shape[:3])
        out = np.zeros((nx, ny, nz, 3))
        for a in range(8):
            ax, ay, az = _LOC[a]
            out += u[ax:ax + nx, ay:ay + ny, az:az + nz]
        return np.moveaxis(out / 8.0, -1, 0)


class ElasticitySolver:
    """Quasi-static linear elasticity with eigenstrain on a voxel grid (see the module docstring).

    spacing: voxel edges (dx, dy, dz) in m. solid: bool (nx, ny, nz), True where there is material.
    fixed_faces: faces among "x-", "x+", "y-", "y+", "z-", "z+" whose nodes are prescribed (u = 0 or
    ``dirichlet``); all other surfaces are traction-free. rtol: CG relative residual tolerance.
    method: "auto", "amg" (assembled, smoothed aggregation) or "gmg" (matrix-free geometric multigrid).
    max_iter: CG iteration cap. rebuild_ratio: reuse policy (see module docstring).
    gmg_degree: Chebyshev smoother degree of "gmg". threads: Numba threads for the kernels (default: see
    ``_thread_count``: one thread for small grids or a busy machine, all configured threads otherwise).
    """

    def __init__(self, spacing, solid, *, fixed_faces=("z-",), rtol=1e-8, method="auto", max_iter=500,
                 rebuild_ratio=2.0, gmg_degree=2, threads=None):
        spacing = tuple(float(h) for h in spacing)
        if len(spacing) != 3 or not all(np.isfinite(h) and h > 0 for h in spacing):
            raise ValueError(f"spacing: got {spacing}; expected three positive lengths in m")
        solid = np.asarray(solid)
        if solid.ndim != 3:
            raise ValueError(f"solid: got an array of shape {solid.shape}; expected (nx, ny, nz)")
        faces = tuple(fixed_faces)
        bad = [f for f in faces if f not in FACES]
        if bad or not faces:
            raise ValueError(f"fixed_faces: got {faces}; expected a non-empty subset of {FACES}")
        if method not in ("auto", "amg", "gmg"):
            raise ValueError(f"method: got {method!r}; expected 'auto', 'amg' or 'gmg'")
        self.spacing = spacing
        self.shape = tuple(int(n) for n in solid.shape)
        self.faces = faces
        self.rtol = float(rtol)
        self.method = method
        self.max_iter = int(max_iter)
        self.rebuild_ratio = float(rebuild_ratio)
        self.gmg_degree = int(gmg_degree)
        self.threads = threads
        self.Kd, self.gs, self.g, self.V = element_matrices(spacing)
        self.hs = tuple(0.25 / h for h in spacing)
        self._set_mask(solid.astype(bool))
        self._prec = None
        self._prec_iters0 = None
        self._last_reused = False
        self.stats = {"solves": 0, "builds": 0}

    # ----------------------------------------------------------------------------------------- masks
    def _set_mask(self, solid):
        t0 = time.perf_counter()
        nx, ny, nz = self.shape
        lab, nlab = ndimage.label(solid)  # 6-connectivity: voxels sharing a face
        anchored = np.zeros(nlab + 1, dtype=bool)
        for f in self.faces:
            d = "xyz".index(f[0])
            sl = [slice(None)] * 3
            sl[d] = 0 if f[1] == "-" else self.shape[d] - 1
            anchored[np.unique(lab[tuple(sl)])] = True
        anchored[0] = False
        active = anchored[lab]
        if not active.any():
            raise ValueError("solid: no solid voxel is connected to a fixed face "
                             f"{self.faces}; the displacement would be undetermined")
        self.active = active
        self.floating = int(solid.sum() - active.sum())
        nodes = _node_mask_from_elements(active)
        self.dir_nodes = nodes & _face_nodes(nodes.shape, self.faces)
        self.free = (nodes & ~self.dir_nodes).astype(np.uint8)
        self.removed = ~nodes
        self.n_free = int(self.free.sum())
        self.mask_s = time.perf_counter() - t0

    def _choose(self):
        if self.method != "auto":
            return self.method
        shp = self.shape
        nlev = 0
        while all(n % 2 == 0 and n >= 4 for n in shp) and nlev < 10:
            shp = tuple(n // 2 for n in shp)
            nlev += 1
        return "gmg" if (nlev >= 2 and 3 * self.n_free > 5000) else "amg"

    # ----------------------------------------------------------------------------------------- solve
    def solve(self, E, nu, eigenstrain, dirichlet=None) -> ElasticSolution:
        """Solve for the displacement (conventions in the module docstring).

        E (Pa), nu: per-voxel arrays of the grid shape (or scalars); only solid voxels are read.
        eigenstrain: (nx, ny, nz) isotropic linear eigenstrain e (eps* = e I) or (6, nx, ny, nz) tensor
        components (xx, yy, zz, yz, xz, xy); a scalar is broadcast.
        dirichlet: optional callable (x, y, z) -> (ux, uy, uz), node coordinates in m from the grid corner,
        giving the displacement of the fixed-face nodes (default 0).
        Raises ValueError on bad input, RuntimeError if CG does not converge in max_iter iterations.
        """
        nthreads = self._thread_count()
        with _threads(nthreads):
            sol = self._solve(E, nu, eigenstrain, dirichlet)
        sol.info["threads"] = nthreads
        return sol

    def _thread_count(self):
        """Numba threads for this solve: ``threads`` if given; else 1 below SMALL_NODES nodes or when other
        processes keep the cores busy (see :func:`_other_runnable`), else all configured threads.

        A parallel region costs microseconds on an idle machine but up to a scheduler time slice per region
        on an oversubscribed one (measured 12 ms with load 7 on 2 cores), more than a whole kernel here."""
        if self.threads:
            return int(self.threads)
        nodes = int(np.prod([n + 1 for n in self.shape]))
        if nodes < SMALL_NODES:
            return 1
        nmax = numba.config.NUMBA_NUM_THREADS
        busy = _other_runnable()
        if busy is None:
            return nmax
        return int(max(1, min(nmax, (os.cpu_count() or nmax) - busy)))

    def _solve(self, E, nu, eigenstrain, dirichlet=None) -> ElasticSolution:
        t0 = time.perf_counter()
        shp = self.shape
        E = np.broadcast_to(np.asarray(E, dtype=float), shp)
        nu = np.broadcast_to(np.asarray(nu, dtype=float), shp)
        act = self.active
        if not np.all(np.isfinite(E[act])) or np.any(E[act] <= 0):
            raise ValueError("E: expected finite positive Young's moduli (Pa) in every solid voxel")
        if not np.all(np.isfinite(nu[act])) or np.any(nu[act] <= -1.0) or np.any(nu[act] >= 0.5):
            raise ValueError("nu: expected Poisson ratios in (-1, 0.5) in every solid voxel")
        Kb = np.where(act, E / (3.0 * (1.0 - 2.0 * np.where(act, nu, 0.0))), 0.0)
        mu = np.where(act, E / (2.0 * (1.0 + np.where(act, nu, 0.0))), 0.0)
        eig = np.asarray(eigenstrain, dtype=float)
        if eig.ndim == 0:
            eig = np.broadcast_to(eig, shp)
        if eig.shape == shp:
            s = np.where(act, 3.0 * Kb * eig, 0.0)
            sig_star = np.zeros((6,) + shp)
            sig_star[0] = sig_star[1] = sig_star[2] = s
        elif eig.shape == (6,) + shp:
            tr = eig[0] + eig[1] + eig[2]
            sig_star = np.empty((6,) + shp)
            for q in range(3):
                sig_star[q] = Kb * tr + 2.0 * mu * (eig[q] - tr / 3.0)
            for q in range(3, 6):
                sig_star[q] = 2.0 * mu * eig[q]
            sig_star = np.where(act, sig_star, 0.0)
        else:
            raise ValueError(f"eigenstrain: got shape {eig.shape}; expected {shp} or {(6,) + shp}")
        if not np.all(np.isfinite(sig_star)):
            raise ValueError("eigenstrain: expected finite values in every solid voxel")
        Kb = np.ascontiguousarray(Kb)
        mu = np.ascontiguousarray(mu)
        nshape = self.free.shape + (3,)

        # Dirichlet values and right-hand side
        uD = np.zeros(nshape)
        if dirichlet is not None:
            idx = np.nonzero(self.dir_nodes)
            vals = dirichlet(*(idx[d] * self.spacing[d] for d in range(3)))
            for c in range(3):
                uD[idx + (np.full(idx[0].size, c),)] = np.broadcast_to(np.asarray(vals[c], float), idx[0].shape)
            if not np.all(np.isfinite(uD)):
                raise ValueError("dirichlet: expected finite displacements (m) at the fixed-face nodes")
        f = np.zeros(nshape)
        _eigen_force(np.ascontiguousarray(sig_star), self.g, self.V, f)
        f *= self.free[..., None]
        if dirichlet is not None:
            lift = np.empty(nshape)
            _apply(uD, Kb, mu, *self.hs, self.V, self.free, lift)
            f -= lift

        method = self._choose()
        reused = self._prec is not None and self._prec[0] == method
        t_setup0 = time.perf_counter()
        if method == "amg":
            x, its, ok, res, t_build = self._solve_amg(Kb, mu, f, reused)
        else:
            x, its, ok, res, t_build = self._solve_gmg(Kb, mu, f, reused)
        if not ok:
            raise RuntimeError(f"ElasticitySolver: CG did not reach rtol={self.rtol} in {self.max_iter} "
                               f"iterations (method {method}, residual {res:.3g})")
        t1 = time.perf_counter()
        u = x + uD
        strain = np.empty((6,) + shp)
        stress = np.empty((6,) + shp)
        _post(u, self.g, Kb, mu, act, sig_star, strain, stress)
        u[self.removed] = np.nan
        vol = strain[0] + strain[1] + strain[2]
        t2 = time.perf_counter()
        setup = (t_setup0 - t0) + t_build
        self.stats["solves"] += 1
        return ElasticSolution(displacement=u, strain=strain, stress=stress, volumetric_strain=vol,
                               iterations=int(its), residual=float(res), setup_s=setup,
                               solve_s=(t1 - t_setup0 - t_build) + (t2 - t1), method=method,
                               hierarchy_reused=bool(reused and self._last_reused), floating_voxels=self.floating,
                               n_dofs=3 * self.n_free,
                               info={"build_s": t_build, "post_s": t2 - t1, "rhs_s": t_setup0 - t0,
                                     "mask_s": self.mask_s,
                                     "levels": getattr(self, "_levels_info", None)})

    # ------------------------------------------------------------------------------------- AMG path
    def _solve_amg(self, Kb, mu, f, reuse):
        t0 = time.perf_counter()
        if getattr(self, "_nid", None) is None:
            self._nid = _node_id(self.free)
        A = _assemble_bsr(self._nid, Kb, mu, self.Kd, self.gs)
        t_asm = time.perf_counter() - t0
        mask = self.free.astype(bool)
        b = np.ascontiguousarray(f[mask].reshape(-1))
        t_build = 0.0
        if not reuse:
            t1 = time.perf_counter()
            self._build_amg(A)
            t_build = time.perf_counter() - t1

        def matvec(v):
            return A @ v

        x, its, ok, rebuilt, dt = self._pcg_with_reuse(matvec, lambda: self._prec[1].matvec, b, reuse,
                                                         lambda: self._build_amg(A))
        t_build += dt
        bn = np.linalg.norm(b)
        res = float(np.linalg.norm(b - A @ x) / bn) if bn > 0 else 0.0
        out = np.zeros(self.free.shape + (3,))
        out[mask] = x.reshape(-1, 3)
        self._levels_info = {"assembly_s": t_asm, "amg_setup_s": t_build, "nnz": int(A.nnz),
                             "operator_complexity": float(self._prec[2].operator_complexity()),
                             "levels": len(self._prec[2].levels)}
        return out, its, ok, res, t_asm + t_build

    def _pcg_with_reuse(self, matvec, get_prec, b, reuse, rebuild):
        """CG with the current preconditioner; a reused one that is slow or fails is rebuilt once
        (CG then restarts from the current iterate). Returns (x, iterations, ok, rebuilt, rebuild_s)."""
        x = np.zeros_like(b)
        x, its, ok = _pcg(matvec, get_prec(), b, x, self.rtol, self.max_iter)
        n0 = self._prec_iters0
        slow = n0 is not None and its > max(self.rebuild_ratio * n0, n0 + 8)
        self._last_reused = reuse
        dt = 0.0
        if reuse and (slow or not ok):
            t1 = time.perf_counter()
            rebuild()
            dt = time.perf_counter() - t1
            self._last_reused = False
            x, its2, ok = _pcg(matvec, get_prec(), b, x, self.rtol, self.max_iter)
            its += its2
            self._prec_iters0 = max(its2, 4)
        elif self._prec_iters0 is None:
            self._prec_iters0 = max(its, 4)
        return x, its, ok, not self._last_reused and reuse, dt

    def _build_amg(self, A):
        ml = _sa_hierarchy(A, _rigid_modes(self.free, self.spacing))
        self._prec = ("amg", ml.aspreconditioner(cycle="V"), ml)
        self._prec_iters0 = None
        self.stats["builds"] += 1

    # ------------------------------------------------------------------------------------- GMG path
    def _solve_gmg(self, Kb, mu, f, reuse):
        t0 = time.perf_counter()
        if not reuse:
            self._build_gmg(Kb, mu)
        t_build = time.perf_counter() - t0
        free = self.free
        nshape = free.shape + (3,)
        y = np.empty(nshape)

        def matvec(v):
            _apply(v.reshape(nshape), Kb, mu, *self.hs, self.V, free, y)
            return y.reshape(-1)

        b = f.reshape(-1).copy()
        x, its, ok, rebuilt, dt = self._pcg_with_reuse(matvec, lambda: self._prec[1].precondition, b, reuse,
                                                         lambda: self._build_gmg(Kb, mu))
        t_build += dt
        bn = np.sqrt(_dot(b, b))
        if bn > 0:
            r = b - matvec(x)
            res = float(np.sqrt(_dot(r, r)) / bn)
        else:
            res = 0.0
        return x.reshape(nshape), its, ok, res, t_build

    def _build_gmg(self, Kb, mu):
        t0 = time.perf_counter()
        G = _GMG(self.spacing, Kb, mu, self.free, self.faces, degree=self.gmg_degree)
        self._prec = ("gmg", G)
        self._prec_iters0 = None
        self.stats["builds"] += 1
        self._levels_info = {"levels": [L.cM.shape for L in G.levels], "coarse_dofs": G.coarse_n,
                             "lmax": [getattr(L, "lmax", None) for L in G.levels],
                             "build_s": time.perf_counter() - t0}
