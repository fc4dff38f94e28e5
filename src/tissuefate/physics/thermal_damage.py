"""Thermal damage per voxel: Arrhenius cell death, Arrhenius microvessel/matrix fixation, CEM43 and cryo lethality.

Updated once per heat step from the temperature at the start (``T_old_k``) and end (``T_new_k``) of the step,
with T(t) taken as linear in between. Temperatures are in kelvin; CEM43 is defined in degC and reported in
minutes (converted at the edges of the formula only).

Equations::

    dOmega_cell/dt   = A_cell exp(-Ea_cell / (R T))     for T > T_onset, else 0     (per-voxel A_cell, Ea_cell)
    dOmega_vessel/dt = A_vessel exp(-Ea_vessel / (R T)) for T > T_onset, else 0     (one set for all voxels)
    dCEM43/dt        = Rc^(43 - T_degC),  Rc = 0.5 for T >= 43 degC, 0.25 below    (Sapareto & Dewey 1984 [R])
    coagulated             <=> Omega_cell   >= omega_threshold           (or CEM43 >= cem43_threshold_min, optional)
    microvessels_coagulated <=> Omega_vessel >= vessel_threshold;  matrix_fixed <=> Omega_vessel >= matrix_threshold
    perfusion_factor = exp(-Omega_vessel)  ("exponential")  or  [Omega_vessel < vessel_threshold]  ("step"),
                       and 0 where the voxel is currently frozen
    cryo: T_min = min over time of T;  t_below = time with T < T_lethal;  frozen: set when T <= T_solidus,
          cleared when T >= T_liquidus (hysteresis), a completed freeze-thaw cycle is counted at each thaw;
          frozen_dead <=> (T_min <= T_lethal and t_below >= t_hold) or (cycles >= 2 and T_min <= T_lethal_double)

Quadrature (per voxel, per step):

* Arrhenius: 3-point Gauss-Legendre in time of the rate, on the part of the step where T > T_onset (that
  part is found exactly since T is linear), split into ``int(|dT| / max_dT_sub_k) + 1`` equal sub-intervals so
  that the integrand varies by at most a factor exp(Ea dT_sub / (R T^2)) ~ 1.8 (cell) / 2.6 (vessel) within one
  (relative error per sub-interval ~5e-7 (Ea dT_sub / (R T^2))^6 < 4e-7): exact for constant T, global order 6
  in dt for a smooth T(t) (measured in tests/test_thermal_damage.py).
* CEM43: exact; Rc^(43 - T(t)) is the exponential of a linear function of t on each side of 43 degC, so the
  step integral is the logarithmic mean of the end values (split at the 43 degC crossing). Steps that stay at
  or below ``cem43_floor_k`` (default 39 degC) are skipped: two transcendental calls per voxel were 90 % of the
  update cost on a body-temperature domain, for at most 0.23 CEM43-min per hour (0 K disables the floor).
* Cryo: T_min, the time below T_lethal and the solidus/liquidus crossings are exact for linear T(t).

Fields (float64 unless stated, all of ``shape``; written in place by ``update``): ``omega_cell``,
``omega_vessel``, ``cem43_min``, ``t_min_k`` (+inf before the first update), ``time_below_lethal_s``,
``frozen`` (bool), ``freeze_thaw_cycles`` (int8, saturates at 127).
Read: ``T_old_k``, ``T_new_k`` (K, arrays of ``shape``), ``dt`` (s); per-voxel ``A_cell`` (1/s), ``Ea_cell`` (J/mol).

Assumptions and limits:

* The gas constant is R = 8.314 J/(mol K), the value with which the (A, Ea) pairs were fitted and with which
  the parameters.md V1 times (61.4 s at 50 degC) are derived; CODATA 8.314462618 shifts the rate by 0.5 %.
* ``T_onset``: the Chang & Nguyen parameters give Omega = 1 after ~57 min at 37 degC (rate 2.9e-4 1/s), an
  artefact of extrapolating a 50-70 degC fit to body temperature. Damage therefore accumulates only above
  T_onset (hypothesis, default 43 degC, where the same set gives t(Omega=1) = 8.5 min). Set it to 0 K to disable.
* One Arrhenius rate process per tissue; the coagulation data of Jacques et al. were ~10x broader than a single
  process (parameters.md D2), so the lesion edge is a model definition, not a sharp physical boundary.
* The microvessel/matrix process uses the Agah/Pearce/Welch "artery" set as a proxy (hypothesis): no liver
  microvessel or collagen-fixation set was read. Damage is irreversible; recovery belongs to the healing model.
* Cryo lethality is a threshold rule on the thermal history (no cooling-rate or ice-nucleation kinetics).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numba import njit, prange

from ..tissue import Param, make_param, table_hypotheses

R_GAS = 8.314          # J/(mol K): the value used with the fitted (A, Ea) pairs (see module docstring)
T0C = 273.15           # K at 0 degC

# numba fast-math without the no-NaN / no-Inf assumptions (t_min_k starts at +inf)
_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


_p = make_param


_TABLE = {
    "A_cell": _p("A_cell", 7.39e39, "1/s", "7.39e39 1/s",
                 "parameters.md D2 (Chang IA, Nguyen UD 2004 BioMed Eng OnLine 3:27 [R]); liver and tumour default"),
    "Ea_cell": _p("Ea_cell", 2.577e5, "J/mol", "2.577e5 J/mol", "parameters.md D2 (Chang & Nguyen 2004 [R])"),
    "A_vessel": _p("A_vessel", 5.6e63, "1/s", "5.6e63 1/s",
                   "parameters.md D2 'artery' set (Agah R, Pearce JA, Welch AJ [R]); hypothesis: proxy for "
                   "microvessel coagulation and matrix (collagen) fixation", True, (1e40, 1e100)),
    "Ea_vessel": _p("Ea_vessel", 4.3e5, "J/mol", "4.3e5 J/mol",
                    "parameters.md D2 'artery' set (Agah/Pearce/Welch [R]); hypothesis as for A_vessel",
                    True, (2.5e5, 6.3e5)),
    "T_onset_k": _p("T_onset_k", T0C + 43.0, "K", "43 degC",
                    "hypothesis: no Arrhenius damage below this temperature (the fits are for 50-70 degC; "
                    "without it 37 degC gives Omega = 1 in ~57 min)", True, (T0C + 37.0, T0C + 45.0)),
    "omega_threshold": _p("omega_threshold", 1.0, "1", "Omega = 1",
                          "parameters.md D2 (Omega = 1 as lesion boundary [R])", False, (0.5, 4.6)),
    "vessel_threshold": _p("vessel_threshold", 1.0, "1", "Omega_vessel = 1",
                           "hypothesis: microvessels occluded at Omega_vessel = 1 (63 % of the process)",
                           True, (0.5, 4.6)),
    "matrix_threshold": _p("matrix_threshold", 1.0, "1", "Omega_vessel = 1",
                           "hypothesis: matrix (collagen) fixed at Omega_vessel = 1", True, (0.5, 4.6)),
    "cem43_threshold_min": _p("cem43_threshold_min", 240.0, "min", "240 CEM43",
                              "parameters.md D2 (240 CEM43 necrosis threshold for soft tissue [R]; Sapareto & "
                              "Dewey 1984 [R], Yarmolenko 2011 [V that the review exists])", False, (60.0, 1.0e4)),
    "T_lethal_k": _p("T_lethal_k", T0C - 40.0, "K", "-40 degC",
                     "parameters.md D3 (Gage & Baust 1998 Cryobiology 37:171 [R]; Littrup 2009 used -30 degC [V])",
                     False, (T0C - 50.0, T0C - 20.0)),
    "T_lethal_double_k": _p("T_lethal_double_k", T0C - 20.0, "K", "-20 degC",
                            "parameters.md D3 (Gage & Baust 1998 [R]: classical lethal range -20..-50 degC, double "
                            "freeze-thaw)", False, (T0C - 50.0, T0C - 20.0)),
    "t_hold_s": _p("t_hold_s", 60.0, "s", "60 s",
                   "hypothesis: time below T_lethal needed for a single freeze to kill", True, (0.0, 300.0)),
    "T_solidus_k": _p("T_solidus_k", T0C - 8.0, "K", "-8 degC",
                      "parameters.md D3 (phase change between -1 and -8 degC, Micromachines 2025 [V])",
                      False, (T0C - 10.0, T0C - 2.0)),
    "T_liquidus_k": _p("T_liquidus_k", T0C - 1.0, "K", "-1 degC", "parameters.md D3 (same source)",
                       False, (T0C - 2.0, T0C)),
    "max_dT_sub_k": _p("max_dT_sub_k", 2.0, "K", "2 K",
                       "numerical: largest temperature change per Gauss-Legendre sub-interval", False, (0.5, 10.0)),
    "cem43_floor_k": _p("cem43_floor_k", T0C + 39.0, "K", "39 degC",
                        "numerical truncation: steps entirely at or below this temperature add no CEM43 "
                        "(< 0.0039 min/min, < 0.1 % of the 240 min threshold per hour); 0 K = exact",
                        False, (0.0, T0C + 40.0)),
}

PERFUSION_MODELS = ("exponential", "step")
LESION_DEFINITIONS = ("arrhenius", "cem43")


@dataclass(frozen=True)
class ThermalDamageParams:
    """Thermal-damage parameters (SI, temperatures in kelvin). Sources, units and ranges: ``TABLE``.

    ``perfusion_model``: "exponential" gives perfusion_factor = exp(-Omega_vessel), the surviving fraction of a
    first-order vessel-damage process (continuous damage-dependent perfusion, e.g. one of the models compared by
    Schutt DJ, Haemmerich D 2008 Med Phys 35:3462 [R]); "step" stops perfusion once Omega >= vessel_threshold
    (Chang & Nguyen 2004 [R] and many RFA models stop perfusion at Omega = 1 [R]). The default is the continuous
    form (no on/off switching in the heat solve); both are listed as a model choice in the results.
    ``lesion_definition``: "arrhenius" (default) or "cem43": which criterion ``coagulated()`` uses.
    """

    TABLE: ClassVar[dict[str, Param]] = _TABLE

    A_cell: float = _TABLE["A_cell"].value
    Ea_cell: float = _TABLE["Ea_cell"].value
    A_vessel: float = _TABLE["A_vessel"].value
    Ea_vessel: float = _TABLE["Ea_vessel"].value
    T_onset_k: float = _TABLE["T_onset_k"].value
    omega_threshold: float = _TABLE["omega_threshold"].value
    vessel_threshold: float = _TABLE["vessel_threshold"].value
    matrix_threshold: float = _TABLE["matrix_threshold"].value
    cem43_threshold_min: float = _TABLE["cem43_threshold_min"].value
    T_lethal_k: float = _TABLE["T_lethal_k"].value
    T_lethal_double_k: float = _TABLE["T_lethal_double_k"].value
    t_hold_s: float = _TABLE["t_hold_s"].value
    T_solidus_k: float = _TABLE["T_solidus_k"].value
    T_liquidus_k: float = _TABLE["T_liquidus_k"].value
    max_dT_sub_k: float = _TABLE["max_dT_sub_k"].value
    cem43_floor_k: float = _TABLE["cem43_floor_k"].value
    perfusion_model: str = "exponential"
    lesion_definition: str = "arrhenius"

    def __post_init__(self):
        for k in ("A_cell", "Ea_cell", "A_vessel", "Ea_vessel", "omega_threshold", "vessel_threshold",
                  "matrix_threshold", "cem43_threshold_min", "max_dT_sub_k"):
            if not getattr(self, k) > 0.0:
                raise ValueError(f"{k} must be > 0")
        if not self.t_hold_s >= 0.0:
            raise ValueError("t_hold_s must be >= 0")
        if not (self.T_onset_k >= 0.0 and self.cem43_floor_k >= 0.0):
            raise ValueError("T_onset_k and cem43_floor_k must be >= 0 K")
        if not (0.0 < self.T_solidus_k < self.T_liquidus_k):
            raise ValueError("need 0 K < T_solidus_k < T_liquidus_k")
        if not (0.0 < self.T_lethal_k and 0.0 < self.T_lethal_double_k):
            raise ValueError("lethal temperatures must be > 0 K")
        if self.perfusion_model not in PERFUSION_MODELS:
            raise ValueError(f"perfusion_model must be one of {PERFUSION_MODELS}")
        if self.lesion_definition not in LESION_DEFINITIONS:
            raise ValueError(f"lesion_definition must be one of {LESION_DEFINITIONS}")

    def hypotheses(self) -> list[dict]:
        """Rows for a results file (same format as :func:`tissuefate.parameters.module_hypotheses`)."""
        rows = table_hypotheses(self, self.TABLE)
        rows.append({"name": f"{type(self).__name__}.perfusion_model", "value": self.perfusion_model, "unit": "",
                     "range": list(PERFUSION_MODELS), "source": "model choice (see ThermalDamageParams docstring)"})
        return rows


# ---------------------------------------------------------------------------------------------- pure functions

def arrhenius_rate(A, Ea, T_k):
    """Arrhenius rate A exp(-Ea / (R T)) in 1/s (no onset cut-off)."""
    return np.asarray(A, dtype=float) * np.exp(-np.asarray(Ea, dtype=float) / (R_GAS * np.asarray(T_k, dtype=float)))


def arrhenius_time_to_omega(A, Ea, T_k, omega=1.0):
    """Isothermal time (s) to reach damage ``omega``: omega / (A exp(-Ea / (R T))).

    Pure Arrhenius (no T_onset cut-off; :class:`ThermalDamage` applies one, below which the time is infinite).
    """
    return np.asarray(omega, dtype=float) / arrhenius_rate(A, Ea, T_k)


def cem43_rate(T_c):
    """CEM43 accumulation rate (min per min) at ``T_c`` degC: 0.5^(43 - T) above 43 degC, 0.25^(43 - T) below."""
    T_c = np.asarray(T_c, dtype=float)
    return np.where(T_c >= 43.0, 0.5, 0.25) ** (43.0 - T_c)


def cem43_equivalent_time(cem_min, T_c):
    """Isothermal exposure time (s) at ``T_c`` degC that accumulates ``cem_min`` CEM43 minutes."""
    return 60.0 * np.asarray(cem_min, dtype=float) / cem43_rate(T_c)


# ------------------------------------------------------------------------------------------------- kernels

# 3-point Gauss-Legendre nodes on [-1, 1] and weights
_GL_X = math.sqrt(0.6)
_GL_W0 = 8.0 / 9.0
_GL_W1 = 5.0 / 9.0
_LN2 = math.log(2.0)
_LN4 = math.log(4.0)


@njit(cache=True, fastmath=_FASTMATH, inline="always")
def _arrhenius_pair(ta, tb, dt, A_c, Ea_c, A_v, Ea_v, T_on, max_dT):
    """Integrals over the step of the cell and vessel Arrhenius rates, T linear from ta to tb, zero below T_on."""
    hi = max(ta, tb)
    if hi <= T_on:
        return 0.0, 0.0
    lo = min(ta, tb)
    if lo < T_on:
        # keep only the part of the (linear) step above T_on; the integral does not depend on the direction
        dt = dt * (hi - T_on) / (hi - lo)
        ta = T_on
        tb = hi
    dT = tb - ta
    n = int(abs(dT) / max_dT) + 1
    h = 1.0 / n
    sc = 0.0
    sv = 0.0
    inv_r = 1.0 / R_GAS
    for m in range(n):
        c = (m + 0.5) * h
        for q in range(3):
            if q == 0:
                x, w = c, _GL_W0
            elif q == 1:
                x, w = c - 0.5 * h * _GL_X, _GL_W1
            else:
                x, w = c + 0.5 * h * _GL_X, _GL_W1
            e = inv_r / (ta + dT * x)
            sc += w * math.exp(-Ea_c * e)
            sv += w * math.exp(-Ea_v * e)
    f = 0.5 * h * dt
    return A_c * f * sc, A_v * f * sv


@njit(cache=True, fastmath=_FASTMATH, inline="always")
def _exp_linear_integral(za, zb, dt):
    """Integral over [0, dt] of exp(z(t)), z linear from za to zb: the logarithmic mean times dt."""
    dz = zb - za
    if abs(dz) < 1e-9:
        return dt * math.exp(za) * (1.0 + 0.5 * dz)
    return dt * math.exp(za) * math.expm1(dz) / dz


@njit(cache=True, fastmath=_FASTMATH, inline="always")
def _cem43_seconds(ta_c, tb_c, dt):
    """Exact integral of Rc^(43 - T) dt (s) for T linear in degC from ta_c to tb_c."""
    if (ta_c >= 43.0) == (tb_c >= 43.0):
        lr = _LN2 if ta_c >= 43.0 else _LN4            # Rc^(43 - T) = exp(-ln(1/Rc) (43 - T))
        return _exp_linear_integral(-lr * (43.0 - ta_c), -lr * (43.0 - tb_c), dt)
    t1 = dt * (43.0 - ta_c) / (tb_c - ta_c)             # time of the 43 degC crossing; Rc^0 = 1 there
    la = _LN2 if ta_c >= 43.0 else _LN4
    lb = _LN2 if tb_c >= 43.0 else _LN4
    return (_exp_linear_integral(-la * (43.0 - ta_c), 0.0, t1)
            + _exp_linear_integral(0.0, -lb * (43.0 - tb_c), dt - t1))


@njit(cache=True, fastmath=_FASTMATH, inline="always")
def _time_below(ta, tb, dt, T_lethal):
    """Time within the step with T < T_lethal (T linear)."""
    if ta < T_lethal and tb < T_lethal:
        return dt
    if ta >= T_lethal and tb >= T_lethal:
        return 0.0
    return dt * (T_lethal - min(ta, tb)) / abs(tb - ta)


@njit(cache=True, parallel=True, fastmath=_FASTMATH)
def _update_kernel(T0, T1, dt, A_c, sA, Ea_c, sE, A_v, Ea_v, T_on, max_dT, T_cem_floor, T_leth, T_sol, T_liq,
                   om_c, om_v, cem, tmin, tbelow, frozen, cycles):
    # stores only where a value changes: most voxels sit at body temperature, and the step is memory-bound
    for i in prange(T0.size):
        ta = T0[i]
        tb = T1[i]
        if max(ta, tb) > T_on:
            dc, dv = _arrhenius_pair(ta, tb, dt, A_c[i * sA], Ea_c[i * sE], A_v, Ea_v, T_on, max_dT)
            om_c[i] += dc
            om_v[i] += dv
        if max(ta, tb) > T_cem_floor:
            cem[i] += _cem43_seconds(ta - T0C, tb - T0C, dt) * (1.0 / 60.0)
        lo = min(ta, tb)
        if lo < tmin[i]:
            tmin[i] = lo
        if lo < T_leth:
            tbelow[i] += _time_below(ta, tb, dt, T_leth)
        # freeze / thaw with hysteresis; T is monotone within a step, so the end value decides
        if frozen[i]:
            if tb >= T_liq:
                frozen[i] = False
                if cycles[i] < 127:
                    cycles[i] += 1
        elif tb <= T_sol:
            frozen[i] = True


@njit(cache=True, parallel=True, fastmath=_FASTMATH)
def _perfusion_kernel(om_v, frozen, step, thr, out):
    for i in prange(om_v.size):
        if frozen[i]:
            out[i] = 0.0
        elif step:
            out[i] = 0.0 if om_v[i] >= thr else 1.0
        elif om_v[i] == 0.0:
            out[i] = 1.0
        else:
            out[i] = math.exp(-om_v[i])


# --------------------------------------------------------------------------------------------------- class

def _field_or_scalar(x, shape, name):
    a = np.ascontiguousarray(np.asarray(x, dtype=np.float64))
    if a.size == 1:
        return a.reshape(1), 0
    if a.shape != tuple(shape):
        raise ValueError(f"{name} must be a scalar or an array of shape {tuple(shape)}")
    return a.reshape(-1), 1


class ThermalDamage:
    """Per-voxel thermal-damage accumulators (see the module docstring for the equations).

    ``A_cell`` (1/s) and ``Ea_cell`` (J/mol) are per-voxel arrays (the caller builds them from the tissue
    library) or scalars; ``None`` takes the liver/tumour default of ``params``.
    """

    def __init__(self, shape, A_cell=None, Ea_cell=None, params: ThermalDamageParams | None = None):
        self.shape = tuple(int(n) for n in shape)
        self.params = params or ThermalDamageParams()
        p = self.params
        self._A, self._sA = _field_or_scalar(p.A_cell if A_cell is None else A_cell, self.shape, "A_cell")
        self._Ea, self._sE = _field_or_scalar(p.Ea_cell if Ea_cell is None else Ea_cell, self.shape, "Ea_cell")
        if not (np.all(self._A > 0) and np.all(self._Ea > 0)):
            raise ValueError("A_cell and Ea_cell must be > 0")
        self.omega_cell = np.zeros(self.shape)
        self.omega_vessel = np.zeros(self.shape)
        self.cem43_min = np.zeros(self.shape)
        self.t_min_k = np.full(self.shape, np.inf)
        self.time_below_lethal_s = np.zeros(self.shape)
        self.frozen = np.zeros(self.shape, dtype=np.bool_)
        self.freeze_thaw_cycles = np.zeros(self.shape, dtype=np.int8)

    def _flat(self, T, name):
        if not (isinstance(T, np.ndarray) and T.dtype == np.float64 and T.shape == self.shape
                and T.flags.c_contiguous):
            raise ValueError(f"{name} must be a C-contiguous float64 array of shape {self.shape}")
        return T.reshape(-1)

    def update(self, T_old_k, T_new_k, dt):
        """Accumulate one heat step of length ``dt`` (s), T linear from ``T_old_k`` to ``T_new_k`` (K)."""
        if not dt >= 0.0:
            raise ValueError("dt must be >= 0")
        p = self.params
        _update_kernel(self._flat(T_old_k, "T_old_k"), self._flat(T_new_k, "T_new_k"), float(dt),
                       self._A, self._sA, self._Ea, self._sE, p.A_vessel, p.Ea_vessel, p.T_onset_k,
                       p.max_dT_sub_k, p.cem43_floor_k, p.T_lethal_k, p.T_solidus_k, p.T_liquidus_k,
                       self.omega_cell.reshape(-1), self.omega_vessel.reshape(-1), self.cem43_min.reshape(-1),
                       self.t_min_k.reshape(-1), self.time_below_lethal_s.reshape(-1), self.frozen.reshape(-1),
                       self.freeze_thaw_cycles.reshape(-1))

    # ---------------------------------------------------------------------------------------- derived masks
    def coagulated(self) -> np.ndarray:
        """Thermally coagulated cells: Omega_cell >= omega_threshold (or CEM43 >= threshold if so chosen)."""
        if self.params.lesion_definition == "cem43":
            return self.cem43_lesion()
        return self.omega_cell >= self.params.omega_threshold

    def cem43_lesion(self) -> np.ndarray:
        """Alternative lesion definition (reported): CEM43 >= cem43_threshold_min."""
        return self.cem43_min >= self.params.cem43_threshold_min

    def microvessels_coagulated(self) -> np.ndarray:
        return self.omega_vessel >= self.params.vessel_threshold

    def matrix_fixed(self) -> np.ndarray:
        return self.omega_vessel >= self.params.matrix_threshold

    def frozen_dead(self) -> np.ndarray:
        """(T_min <= T_lethal and time below T_lethal >= t_hold) or (>= 2 cycles and T_min <= T_lethal_double)."""
        p = self.params
        single = (self.t_min_k <= p.T_lethal_k) & (self.time_below_lethal_s >= p.t_hold_s)
        double = (self.freeze_thaw_cycles >= 2) & (self.t_min_k <= p.T_lethal_double_k)
        return single | double

    def perfusion_factor(self, out: np.ndarray | None = None) -> np.ndarray:
        """Multiplier in [0, 1] of the baseline perfusion: vessel damage (``perfusion_model``), 0 where frozen."""
        if out is None:
            out = np.empty(self.shape)
        elif not (out.shape == self.shape and out.dtype == np.float64 and out.flags.c_contiguous):
            raise ValueError("out must be a C-contiguous float64 array of the grid shape")
        p = self.params
        _perfusion_kernel(self.omega_vessel.reshape(-1), self.frozen.reshape(-1), p.perfusion_model == "step",
                          p.vessel_threshold, out.reshape(-1))
        return out
