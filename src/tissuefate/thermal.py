"""Thermal ablation sessions (RFA, MWA, cryo): applicators, generator and probe histories around the heat solver.

One session is: build the heat materials from the tissue model (and the current tissue state), place the
applicator, then step the enthalpy Pennes solver (:mod:`tissuefate.physics.bioheat`) with

* RFA: Joule heating from the quasi-static potential (:mod:`tissuefate.physics.rf`), sigma(T, damage, water),
  re-solved when sigma has drifted; the generator (constant power, temperature or impedance control) sets
  the voltage; a cooled electrode is held at its coolant temperature;
* MWA: the approximate SAR model (:mod:`tissuefate.physics.microwave`), re-evaluated as the tissue dries;
* cryo: probe surface temperature histories (freeze: exponential approach to the probe's minimum; passive
  or active thaw), through a stiff sink on the probe voxels;

with damage integrated every step (:mod:`tissuefate.physics.thermal_damage`), perfusion following microvessel
coagulation (and stopped in frozen tissue), and large-vessel lumens held at blood temperature. After the
applicator stops the solver runs on with growing steps until the tissue is back near body temperature;
for the rest of the follow-up, tissue whose microvessels were coagulated dies of ischaemia after its
tolerance (the same ischaemic rule as the injection sessions).
"""
from __future__ import annotations

import time as _time
from dataclasses import dataclass

import numpy as np

from .errors import ScenarioError
from .model import TissueModel
from .parameters import _p, hypotheses_of
from .physics import bioheat as bh
from .physics.bioheat import T0C, HeatProperties, HeatSolver, PhaseParams, SparseSinks
from .physics.fate_parameters import fate_parameters
from .physics.water import shrinkage_rate
from .physics.thermal_damage import ThermalDamage, ThermalDamageParams
from .tissue_state import TissueState

# Blood in large-vessel lumens: IT'IS tissue database [R]; electrical conductivity of blood at ~500 kHz [R]
BLOOD = {"density": 1050.0, "heat_capacity": 3617.0, "thermal_conductivity": 0.52, "electrical_conductivity": 0.7}

THERMAL_PROCEDURE = {
    "arterial_temperature": _p("arterial_temperature", T0C + 37.0, "K", "Pennes 1948 (parameters.md D5)"),
    "blood_heat_capacity": _p("rho_c_blood", 1000.0 * 4180.0, "J/(m^3 K)", "parameters.md D1 (rho_b c_b, Tungjitkusolmun 2002 [R])"),
    "holding_coefficient": _p("holding_coefficient", 1.0e9, "W/(m^3 K)",
                              "numerical: stiff coupling that holds applicator and vessel-lumen voxels at their set "
                              "temperature (a Dirichlet condition)"),
    "surface_heat_transfer": _p("surface_heat_transfer", 10.0, "W/(m^2 K)",
                                "hypothesis: natural convection of skin to room air", True, (5.0, 25.0)),
    "room_temperature": _p("room_temperature", T0C + 22.0, "K", "hypothesis: operating room", True, (T0C + 18, T0C + 25)),
    "cryo_probe_min_temperature": _p("cryo_probe_min_temperature", T0C - 150.0, "K",
                                     "hypothesis: argon probe surface (Joule-Thomson) reaches about -140 to -170 degC [R]",
                                     True, (T0C - 185.0, T0C - 100.0)),
    "cryo_cooldown_time": _p("cryo_cooldown_time", 30.0, "s", "hypothesis: probe surface time constant", True, (5.0, 90.0)),
    "cryo_active_thaw_temperature": _p("cryo_active_thaw_temperature", T0C + 20.0, "K",
                                       "hypothesis: helium/electric active thaw", True, (T0C + 0.0, T0C + 40.0)),
    "mw_coolant_temperature": _p("mw_coolant_temperature", T0C + 20.0, "K",
                                 "hypothesis: water-cooled MW antenna shaft", True, (T0C + 5.0, T0C + 30.0)),
    "rf_series_resistance": _p("rf_series_resistance", 20.0, "ohm",
                               "hypothesis: body outside the domain, dispersive pads and cables", True, (0.0, 60.0)),
    "rf_resolve_sigma_change": _p("rf_resolve_sigma_change", 0.05, "1",
                                  "numerical: the potential is re-solved when sigma has changed by this fraction "
                                  "since the last solve (power-weighted mean over the tissue)"),
    "max_linearization_error": _p("max_linearization_error", 10.0, "K",
                                  "numerical: a heat step is halved when a voxel's enthalpy update leaves its "
                                  "phase branch by more than this"),
    "rf_potential_coarsening": _p("rf_potential_coarsening", 1.0, "1",
                                  "numerical: solve the RF potential on a grid coarser by this factor (1 or 2); "
                                  "the heating of a coarse voxel is shared among its children by sigma"),
    "cool_down_band": _p("cool_down_band", 1.0, "K",
                         "numerical: the heat solver stops once all tissue is within this of its resting temperature"),
}


def procedure_value(name: str, overrides: dict | None = None) -> float:
    return float((overrides or {}).get(name, THERMAL_PROCEDURE[name].value))


# ---------------------------------------------------------------------------------------------- materials

@dataclass
class HeatMaterials:
    props: HeatProperties
    perfusion_beta0: np.ndarray      # w_b rho_b c_b at full perfusion, W/(m^3 K)
    sigma_ref: np.ndarray            # RF electrical conductivity at 37 degC, S/m (0 where not conducting)
    names: list[str]


def heat_materials(model: TissueModel, phase: PhaseParams, rho_c_blood: float) -> HeatMaterials:
    """One heat material per tissue label (and blood for vessel lumens); material 0 is air. Perfusion and the
    RF conductivity are per voxel (``model.props``); the heat capacities, conductivities and latent heats are the
    label's (in healed tissue: the voxel's dominant component)."""
    lib, labels = model.library, model.labels
    mat = np.zeros(labels.shape, dtype=np.uint8)
    rows = {k: [0.0] for k in ("C_f", "C_u", "L_f", "L_v", "k_u", "k_f")}
    names = ["air"]
    sigma_ref = np.zeros(labels.shape)
    for lab, tissue in sorted(model.label_table.items()):
        sel = labels == lab
        if not sel.any() or tissue == "air":
            continue
        m = len(names)
        names.append(tissue)
        mat[sel] = m
        if tissue == "vessel":
            rho, c, k = BLOOD["density"], BLOOD["heat_capacity"], BLOOD["thermal_conductivity"]
            rows["C_f"].append(rho * c)
            rows["C_u"].append(rho * c)
            rows["L_f"].append(0.0)
            rows["L_v"].append(rho * 0.8 * bh.LATENT_VAPORISATION_WATER)
            rows["k_u"].append(k)
            rows["k_f"].append(k)
            sigma_ref[sel] = BLOOD["electrical_conductivity"]
            continue
        v = lambda p: lib.value(tissue, p)  # noqa: E731
        rho, w = v("density"), v("water_content")
        L_f, L_v = bh.latent_heats(rho, w)
        rows["C_f"].append(rho * v("frozen_heat_capacity"))
        rows["C_u"].append(rho * v("heat_capacity"))
        rows["L_f"].append(float(L_f))
        rows["L_v"].append(float(L_v))
        rows["k_u"].append(v("thermal_conductivity"))
        rows["k_f"].append(v("frozen_thermal_conductivity"))
        sigma_ref[sel] = v("electrical_conductivity")
    props = HeatProperties(material=mat, phase=phase, **{k: np.array(r) for k, r in rows.items()})
    perf = np.where(model.tissue, model.props["perfusion"], 0.0) * rho_c_blood
    # per voxel from the property fields: in healed tissue (course.py) they are the mix of the voxel's components
    sigma_ref = np.where(model.tissue, model.props["electrical_conductivity"], sigma_ref)
    return HeatMaterials(props, perf, sigma_ref, names)


def _box_face_count(domain: np.ndarray) -> np.ndarray:
    """Number of faces of each domain voxel on the outer faces of the box (tissue continues beyond them)."""
    n = np.zeros(domain.shape)
    for ax in range(3):
        for end in (0, -1):
            sl = [slice(None)] * 3
            sl[ax] = end
            n[tuple(sl)] += domain[tuple(sl)]
    return n


def surface_sink_mask(domain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Domain voxels with faces to air inside the grid, and their number of such faces."""
    n = bh.air_face_count(domain)
    return n > 0, n


def check_applicators(model: TissueModel, session, si: int) -> None:
    """Every applicator tip lies in tissue inside the domain (ScenarioError naming the field otherwise)."""
    g = model.grid
    if session.modality == "cryo":
        tips = [(f"device.probes[{j}].tip", p.tip) for j, p in enumerate(session.device.probes)]
    else:
        tips = [("device.tip", session.device.tip)]
    for where, tip in tips:
        tip = np.asarray(tip, dtype=float)
        if not g.contains(tip) or not model.tissue[g.index_of(tip)]:
            lo = np.asarray(g.origin) - 0.5 * np.asarray(g.spacing)
            hi = lo + np.asarray(g.extent)
            raise ScenarioError(f"course.sessions[{si}].{where}", f"({', '.join(f'{1e3 * v:g} mm' for v in tip)})",
                                "a point inside tissue (not air or a vessel lumen) within the domain: " +
                                ", ".join(f"{a} in [{1e3 * l:.3g}, {1e3 * h:.3g}] mm" for a, l, h in zip("xyz", lo, hi)))


# ---------------------------------------------------------------------------------------------- the session

class ThermalSessionRunner:
    """Runs one RFA / MWA / cryo session on the shared state ``st`` (tissue-state map ``st.f['state']``)."""

    def __init__(self, model: TissueModel, sc, session, si: int, st, progress=None, progress_span=(0.0, 1.0)):
        self.model, self.sc, self.session, self.si, self.st = model, sc, session, si, st
        self.grid = model.grid
        self.modality = session.modality
        self.progress, self.span = progress, progress_span
        self.field = f"course.sessions[{si}]"
        over = (sc.model or {}).get("thermal", {})
        unknown = set(over) - set(THERMAL_PROCEDURE)
        if unknown:
            raise ScenarioError(f"model.thermal.{sorted(unknown)[0]}", sorted(unknown)[0],
                                f"one of {sorted(THERMAL_PROCEDURE)}")
        from .parameters import _parse_model_value
        self.proc = {k: (_parse_model_value(over[k], p.unit, f"model.thermal.{k}") if k in over else p.value)
                     for k, p in THERMAL_PROCEDURE.items()}
        self.phase = PhaseParams()
        self.dmg_params = _damage_params(sc)
        self.fate_params = fate_parameters((sc.model or {}).get("fate"))
        self.mats = heat_materials(model, self.phase, self.proc["blood_heat_capacity"])
        self.heat = HeatSolver(self.mats.props, self.grid.spacing, self.proc["arterial_temperature"])
        self.domain = self.heat.domain
        A = np.where(model.tissue, model.props["arrhenius_frequency_factor"], 1e-300)   # no damage outside tissue
        Ea = np.where(model.tissue, model.props["arrhenius_activation_energy"], 1e6)
        self.damage = ThermalDamage(self.grid.shape, A, Ea, self.dmg_params)
        self.tumor = model.mask("tumor")
        self._build_applicator()
        self._build_sinks()
        self.timeseries: dict[str, list] = {}
        self.snapshots: list[tuple[float, dict]] = []
        self.T_max = self.heat.T.copy()
        self.T_min = self.heat.T.copy()
        self._h_ok = None           # last accepted sub-step when it was shorter than the step asked for
        self.n_rejected = 0

    # ------------------------------------------------------------------ applicators
    def _build_applicator(self):
        from . import thermal_applicators as ta
        g, s = self.grid, self.session
        tissue = self.model.tissue
        self.applicator_masks = []
        self.probe_tip_m = np.asarray(getattr(s.device, "tip", None) if self.modality != "cryo" else s.device.probes[0].tip,
                                      dtype=float)
        d = s.device.direction if self.modality != "cryo" else s.device.probes[0].direction
        self.probe_dir = np.asarray(d, dtype=float) / np.linalg.norm(d)
        check_applicators(self.model, s, self.si)
        self.active_length_mm = None
        if self.modality == "rfa":
            dev = s.device
            self.active_length_mm = dev.active_length * 1e3
            if dev.kind == "cooled_needle":
                probes = [ta.CylinderProbe(dev.tip, self.probe_dir, dev.diameter, dev.active_length, 0.2)]
            elif dev.kind == "cluster":
                probes = ta.cluster_of_three(dev.tip, self.probe_dir, dev.cluster_spacing, dev.diameter,
                                             dev.active_length, 0.2)
            else:
                probes = [ta.UmbrellaElectrode(dev.tip, self.probe_dir, dev.tines, dev.deployed_diameter,
                                               dev.tine_diameter, dev.diameter)]
            active = np.zeros(g.shape, bool)
            shaft = np.zeros(g.shape, bool)
            for p in probes:
                active |= p.active_mask(g)
                shaft |= p.shaft_mask(g)
            shaft &= ~active
            # sub-voxel electrode surface for the potential (the staircase alone is ~10 % off in impedance)
            self.electrode_distance = ta.union_signed_distance([p.active_signed_distance(g) for p in probes])
            self.rf_probes = probes
            self.electrode = active & self.domain
            self.shaft = shaft & self.domain
            self.held = self.electrode if dev.coolant_temperature is not None else np.zeros(g.shape, bool)
            self.held_temperature = dev.coolant_temperature
        elif self.modality == "mwa":
            dev = s.device
            ant = ta.CylinderProbe(dev.tip, self.probe_dir, dev.diameter, 0.04, 0.2)
            body = (ant.active_mask(g) | ant.shaft_mask(g)) & self.domain
            self.held = body if dev.shaft_cooling else np.zeros(g.shape, bool)
            self.held_temperature = self.proc["mw_coolant_temperature"]
            self.antenna_mask = body
        else:
            dev = s.device
            self.active_length_mm = dev.active_length * 1e3
            held = np.zeros(g.shape, bool)
            for p in dev.probes:
                pr = ta.CylinderProbe(p.tip, np.asarray(p.direction) / np.linalg.norm(p.direction), dev.diameter,
                                      dev.active_length, 0.2)
                held |= pr.active_mask(g)
            self.held = held & self.domain
            self.held_temperature = self.proc["arterial_temperature"]
        if self.modality in ("rfa", "cryo") and not self.held.any() and self.modality == "cryo":
            raise ScenarioError(f"{self.field}.device", "probe", "a probe that covers at least one tissue voxel "
                                "(refine the voxel size or lengthen the active part)")

    def _build_sinks(self):
        g, model = self.grid, self.model
        hold = self.proc["holding_coefficient"]
        surf_mask, n_faces = surface_sink_mask(self.domain)
        vessel = model.vessel & self.domain
        surf_mask &= ~vessel
        bnd_faces = _box_face_count(self.domain)
        bnd_mask = (bnd_faces > 0) & ~vessel
        k_u = self.mats.props.k_u[self.mats.props.material]
        channels = {
            "surface": (surf_mask, self.proc["surface_heat_transfer"] * n_faces / g.spacing[0],
                        self.proc["room_temperature"]),
            "boundary": (bnd_mask, 2.0 * k_u * bnd_faces / g.spacing[0] ** 2, self.proc["arterial_temperature"]),
            "vessel": (vessel, hold, self.proc["arterial_temperature"]),
            "probe": (self.held, 0.0, self.held_temperature),
        }
        self.sparse = SparseSinks.from_masks(g.shape, channels)
        self._probe_rows = self.sparse.rows(self.held)
        self._hold = hold

    def _set_probe(self, on: bool, temperature: float) -> None:
        c = bh.SPARSE_CHANNELS.index("probe")
        self.sparse.beta[self._probe_rows, c] = self._hold if on else 0.0
        self.sparse.t_ref[self._probe_rows, c] = temperature

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        wall0 = _time.time()
        s, sc = self.session, self.sc
        if self.modality == "cryo":
            phases = [(ph.phase, ph.duration, ph.active) for ph in s.protocol]
        else:
            phases = [("heat", s.duration, False)]
        self.heating_end = sum(d for _, d, _ in phases)
        t_total = self.heating_end + s.follow_up
        dt0 = sc.solver.heating_dt or (5.0 if self.modality == "cryo" else 2.0)
        self._equilibrate()
        driver = self.driver = self._driver()
        self._record(0.0, {})
        self._snapshot(0.0)
        t = 0.0
        probe_T = self.proc["arterial_temperature"]
        for name, dur, active in phases:
            t_phase0 = t
            while t < t_phase0 + dur - 1e-9:
                dt = min(dt0, t_phase0 + dur - t)
                if self.modality == "cryo":
                    if name == "freeze":
                        tau, Tmin = self.proc["cryo_cooldown_time"], self.proc["cryo_probe_min_temperature"]
                        probe_T = Tmin + (probe_T - Tmin) * np.exp(-dt / tau)
                        self._set_probe(True, probe_T)
                    elif active:
                        probe_T = self.proc["cryo_active_thaw_temperature"]
                        self._set_probe(True, probe_T)
                    else:
                        self._set_probe(False, probe_T)
                        probe_T = float(np.mean(self.heat.T.reshape(-1)[self.sparse.idx[self._probe_rows]])) \
                            if self._probe_rows.size else probe_T
                    q, info = None, {"probe_temperature_c": probe_T - T0C}
                else:
                    if self.held.any():
                        self._set_probe(True, self.held_temperature)
                    q, info = driver(t, dt)
                self._advance(dt, q)
                t += dt
                self._after_step(t, dt)
                self._record(t, info)
                self._report(t, t_total)
        self._set_probe(False, self.proc["arterial_temperature"])
        self._snapshot(t)
        # cool-down with growing steps until the tissue is back near body temperature
        dt = dt0
        t_end = t_total
        band = self.proc["cool_down_band"]
        while t < t_end - 1e-9:
            if float(np.max(np.abs(self.heat.T - self.T_base)[self.domain])) < band:
                break
            dt = min(dt * 1.3, 60.0, t_end - t)
            self._advance(dt, None)
            t += dt
            self._after_step(t, dt)
            self._record(t, {})
            self._report(t, t_total)
        self.t_heat_end = t
        self._finalise_state(t_end)
        self._record(t_end, {})
        self._snapshot(t_end)
        self.t_end = t_end
        self.wall = _time.time() - wall0

    def _equilibrate(self) -> None:
        """Resting temperature field before treatment (skin cooled by the room, perfusion at the arterial
        temperature): implicit steps to steady state, then the energy ledger starts from there."""
        for dt in [10.0, 30.0, 100.0] + [300.0] * 40:
            self.heat.step(dt, perfusion=self.mats.perfusion_beta0, t_arterial=self.proc["arterial_temperature"],
                           sparse=self.sparse)
        self.heat.set_temperature(self.heat.T.copy())
        self.T_base = self.heat.T.copy()
        self.T_max[...] = self.heat.T
        self.T_min[...] = self.heat.T

    # numerical: the LOD conduction step is split per axis, and next to thin held (stiff-sink) voxels its
    # splitting error grows with the diffusion number r = k (h/2) / (C dx^2) of their neighbours (a cryoprobe in
    # frozen tissue at 0.5 mm: r = 11 at 5 s, the heat extracted 30 % low; unfrozen tissue beside an RF
    # electrode: r = 0.6 at 2 s). Sub-steps are kept at r <= this (about 1 s in frozen tissue at 0.5 mm).
    _HELD_NEIGHBOUR_R_MAX = 2.5

    def _advance(self, dt: float, q) -> None:
        """Advance by dt in equal sub-steps no longer than :meth:`_substep_cap`. Each conduction half step is
        corrected locally where the linearised enthalpy update left a phase branch
        (``HeatSolver.step(nonlinear_correction=True)``); a sub-step whose remaining linearisation error still
        exceeds ``max_linearization_error`` is rejected and halved, and the next one is tried twice as long
        again (up to the cap), so the step grows back."""
        tol = self.proc["max_linearization_error"]
        cap = self._substep_cap()
        n = max(1, int(np.ceil(dt / cap - 1e-9)))
        h_max = dt / n
        remaining = dt
        h = h_max if self._h_ok is None else min(h_max, 2.0 * self._h_ok)
        beta0 = self.mats.perfusion_beta0
        pf, perf, saved = self._advance_buffers()
        while remaining > 1e-12:
            h = min(h, remaining)
            if remaining - h < 1e-9 * dt:
                h = remaining
            saved = self.heat.save(into=saved)
            T_old = saved[1]
            self.damage.perfusion_factor(out=pf)
            np.multiply(beta0, pf, out=perf)
            self.heat.step(h, q_ext=q, perfusion=perf, t_arterial=self.proc["arterial_temperature"],
                           sparse=self.sparse, nonlinear_correction=True)
            if self.heat.linearization_error > tol and h > 1e-3:
                self.heat.restore(saved)
                h *= 0.5
                self.n_rejected += 1
                continue
            self.damage.update(T_old, self.heat.T, h)
            np.maximum(self.T_max, self.heat.T, out=self.T_max)
            np.minimum(self.T_min, self.heat.T, out=self.T_min)
            remaining -= h
            self.n_substeps = getattr(self, "n_substeps", 0) + 1
            self._h_ok = h if h < h_max * (1.0 - 1e-9) else None
            h = min(2.0 * h, h_max)
        self._update_state()

    def _advance_buffers(self):
        """Work arrays of :meth:`_advance` (perfusion factor, perfusion coefficient, the saved heat state),
        allocated once."""
        buf = getattr(self, "_adv_buf", None)
        if buf is None:
            buf = self._adv_buf = (np.empty(self.grid.shape), np.empty(self.grid.shape), self.heat.save())
        return buf

    def _substep_cap(self) -> float:
        """Longest sub-step (s) with diffusion number <= _HELD_NEIGHBOUR_R_MAX in every domain voxel that shares
        a face with a voxel currently held by a stiff sink (probe or vessel lumen); inf when none is held."""
        nb = getattr(self, "_held_nbrs", None)
        if nb is None:
            from .physics.bioheat import STIFF_CHANNELS, SPARSE_CHANNELS
            idx = self.sparse.idx
            cols = [SPARSE_CHANNELS.index(c) for c in STIFF_CHANNELS]
            shape = self.grid.shape
            coords = np.unravel_index(idx, shape)
            rows, nbrs = [], []
            for ax in range(3):
                for sgn in (-1, 1):
                    c = [x.copy() for x in coords]
                    c[ax] = c[ax] + sgn
                    ok = (c[ax] >= 0) & (c[ax] < shape[ax])
                    j = np.ravel_multi_index(tuple(x[ok] for x in c), shape)
                    keep = self.domain.reshape(-1)[j]
                    rows.append(np.flatnonzero(ok)[keep])
                    nbrs.append(j[keep])
            nb = self._held_nbrs = (np.concatenate(rows), np.concatenate(nbrs), cols)
        rows, nbrs, cols = nb
        held = self.sparse.beta[rows][:, cols].max(axis=1) > 0.0
        if not held.any():
            return np.inf
        j = nbrs[held]
        k = self.heat.k.reshape(-1)[j]
        C = self.heat.C.reshape(-1)[j]
        dx2 = min(self.grid.spacing) ** 2
        r_per_s = float(np.max(0.5 * k / np.maximum(C, 1e-300) / dx2))
        return self._HELD_NEIGHBOUR_R_MAX / r_per_s if r_per_s > 0 else np.inf

    def _after_step(self, t: float, dt: float) -> None:
        """What the post-kill model needs from the heat history: death times, the water vaporised (largest vapour
        fraction reached) and the Arrhenius integral of thermal shrinkage (fate_parameters, Farina 2016)."""
        f = self.st.f
        day0 = self.session.day * 86400.0
        dead = np.isin(f["state"], [int(TissueState.COAGULATED), int(TissueState.FROZEN_DEAD)])
        stamp = dead & np.isnan(f["death_time"])
        f["death_time"][stamp] = t + day0
        _, vapour = self.heat.fractions()
        np.maximum(f["vapour_fraction"], vapour, out=f["vapour_fraction"])
        hot = self.heat.T > T0C + 45.0
        if hot.any():
            fp = self.fate_params
            f["shrink_omega"][hot] += dt * shrinkage_rate(self.heat.T[hot], fp["shrinkage_frequency_factor"],
                                                          fp["shrinkage_activation_energy"])

    def _update_state(self) -> None:
        state = self.st.f["state"]
        viable = state == int(TissueState.VIABLE)
        state[viable & self.damage.coagulated() & self.model.tissue] = int(TissueState.COAGULATED)
        state[(state == int(TissueState.VIABLE)) & self.damage.frozen_dead() & self.model.tissue] = int(TissueState.FROZEN_DEAD)

    def _finalise_state(self, t_end: float) -> None:
        """Secondary ischaemic death behind coagulated microvessels over the rest of the follow-up."""
        state = self.st.f["state"]
        pf = self.damage.perfusion_factor()
        deficit = (1.0 - pf) * max(t_end - self.heating_end, 0.0)
        tol = np.where(self.model.tissue, self.model.props["ischemic_tolerance"], np.inf)
        isch = (state == int(TissueState.VIABLE)) & self.model.tissue & (deficit >= tol)
        state[isch] = int(TissueState.ISCHEMIC_NECROSIS)
        # death when the perfusion deficit reached the tolerance
        rate = np.maximum(1.0 - pf[isch], 1e-30)
        self.st.f["death_time"][isch] = self.session.day * 86400.0 + self.heating_end + tol[isch] / rate
        self.st.f["vessel_integrity"] *= pf
        self.st.f["matrix_fixed"] = self.damage.matrix_fixed() | self.st.f.get("matrix_fixed", False)
        self.st.f["microvessels_coagulated"] = self.damage.microvessels_coagulated() | \
            self.st.f.get("microvessels_coagulated", False)

    def _report(self, t, t_total):
        if self.progress:
            a, b = self.span
            self.progress(a + (b - a) * min(t / t_total, 1.0), f"t = {t / 60:.1f} min")

    # ------------------------------------------------------------------ drivers
    def _driver(self):
        if self.modality == "rfa":
            return RFDriver(self)
        if self.modality == "mwa":
            return MWDriver(self)
        return None

    # ------------------------------------------------------------------ records
    def _record(self, t: float, info: dict) -> None:
        dV = self.grid.dV
        state = self.st.f["state"]
        T = self.heat.T
        row = {"t_s": t,
               "max_temperature_c": float(T[self.domain].max()) - T0C,
               "min_temperature_c": float(T[self.domain].min()) - T0C,
               "energy_delivered_j": self.heat.ledger["delivered"],
               "coagulated_ml": float(np.count_nonzero(state == int(TissueState.COAGULATED))) * dV * 1e6,
               "frozen_dead_ml": float(np.count_nonzero(state == int(TissueState.FROZEN_DEAD))) * dV * 1e6,
               "ice_ml": float(np.count_nonzero((T < T0C) & self.domain)) * dV * 1e6}
        keys = {"rfa": ("power_w", "impedance_ohm", "tip_temperature_c", "voltage_v"), "mwa": ("power_w",),
                "cryo": ("probe_temperature_c",)}[self.modality]
        for k in keys:
            row[k] = info.get(k, 0.0 if k in ("power_w", "voltage_v") else None)
        if self.modality == "rfa" and row["tip_temperature_c"] is None and hasattr(self, "_thermocouples"):
            row["tip_temperature_c"] = float(T.reshape(-1)[self._thermocouples].max()) - T0C
        for k, v in row.items():
            self.timeseries.setdefault(k, []).append(v)

    def _snapshot(self, t: float) -> None:
        self.snapshots.append((t, {
            "tissue_state": self.st.f["state"].copy(),
            "temperature": (self.heat.T - T0C).astype(np.float32),
            "temperature_max": (self.T_max - T0C).astype(np.float32),
            "temperature_min": (self.T_min - T0C).astype(np.float32),
            "damage_omega": self.damage.omega_cell.astype(np.float32),
            "cem43": np.minimum(self.damage.cem43_min, 1e30).astype(np.float32),   # float32-safe
            "perfusion_factor": self.damage.perfusion_factor().astype(np.float32),
        }))

    def hypotheses(self) -> list[dict]:
        rows = hypotheses_of(THERMAL_PROCEDURE.values(), {p.name: self.proc[k] for k, p in THERMAL_PROCEDURE.items()})
        rows += [{"name": "PhaseParams.k_slope", "value": self.phase.k_slope, "unit": "1/K", "range": [0.0, 3e-3],
                  "source": "hypothesis: k rises with T up to 99 degC (parameters.md D1, qualitative [V])"},
                 {"name": "PhaseParams.dry_capacity_factor", "value": self.phase.dry_capacity_factor, "unit": "1",
                  "range": [0.3, 1.0], "source": "hypothesis: heat capacity of desiccated tissue"}]
        rows += self.dmg_params.hypotheses()
        if self.modality == "rfa":
            rows += self._rf_driver_hypotheses
        if self.modality == "mwa":
            rows += self._mw_params.hypotheses()
        return rows


def _damage_params(sc) -> ThermalDamageParams:
    from dataclasses import fields, replace
    from .parameters import _parse_model_value
    over = (sc.model or {}).get("thermal_damage", {})
    p = ThermalDamageParams()
    names = {f.name for f in fields(p)}
    upd = {}
    for k, v in over.items():
        if k not in names:
            raise ScenarioError(f"model.thermal_damage.{k}", k, f"one of {sorted(names)}")
        upd[k] = v if isinstance(v, str) and k in ("perfusion_model", "lesion_definition") else \
            _parse_model_value(v, "1", f"model.thermal_damage.{k}")
    return replace(p, **upd) if upd else p


# ---------------------------------------------------------------------------------------------- RF driver

class RFDriver:
    """Potential solves, sigma(T) and the generator for an RFA session."""

    def __init__(self, runner: ThermalSessionRunner):
        from .physics import rf
        self.rf = rf
        self.r = runner
        g = runner.grid
        gen = runner.session.generator
        self.params = rf.RFConductivityParams()
        series = gen.series_resistance if gen.series_resistance is not None else runner.proc["rf_series_resistance"]
        if gen.mode == "constant_power":
            self.gen = rf.ConstantPower(gen.power, series_resistance_ohm=series)
        elif gen.mode == "temperature":
            self.gen = rf.TargetTemperature(gen.target_temperature, gen.power, series_resistance_ohm=series)
        else:
            kw = {"ramp_w_per_min": gen.ramp_per_min} if gen.ramp_per_min is not None else {}
            self.gen = rf.ImpedanceControl(gen.power, series_resistance_ohm=series, **kw)
        runner._rf_driver_hypotheses = _param_hypotheses(self.params) + _param_hypotheses(self.gen)
        conducting = runner.mats.sigma_ref > 0
        conducting &= ~runner.shaft
        self.factor = int(round(runner.proc["rf_potential_coarsening"]))
        if self.factor not in (1, 2):
            raise ScenarioError("model.thermal.rf_potential_coarsening", self.factor, "1 or 2")
        # rtol 1e-6: the heating is booked from the same potential that gives the conductance (sum q dV = G),
        # so the energy ledger stays exact whatever the tolerance; 1e-6 is far below the model's uncertainty
        if self.factor == 1:
            ground = _ground_mask(runner.domain & conducting) & ~runner.electrode
            self.solver = rf.ElectricSolver(g, runner.electrode, ground, conducting,
                                            electrode_distance=runner.electrode_distance, rtol=1e-6)
        else:
            from .geometry import Grid
            from . import thermal_applicators as ta
            self.shape_f = g.shape
            cshape = tuple(-(-n // 2) for n in g.shape)
            self.gc = Grid(cshape, tuple(2 * h for h in g.spacing), tuple(o + 0.5 * h for o, h in zip(g.origin, g.spacing)))
            self.conducting_f = conducting & ~runner.electrode     # the metal is not heated
            cond_c = self._coarsen(conducting.astype(float)) >= 0.5
            elec_c = np.zeros(cshape, bool)
            for p in runner.rf_probes:
                elec_c |= p.active_mask(self.gc)
            dist_c = ta.union_signed_distance([p.active_signed_distance(self.gc) for p in runner.rf_probes])
            ground_c = _ground_mask(cond_c) & ~elec_c
            self.solver = rf.ElectricSolver(self.gc, elec_c, ground_c, cond_c, electrode_distance=dist_c, rtol=1e-6)
        self.omega_sigma = np.zeros(g.shape)
        self.solves = 0
        self.sigma_solved = None
        self.sol = None
        self.thermocouples = _thermocouple_voxels(runner.electrode, runner.domain)
        runner._thermocouples = self.thermocouples

    def _coarsen(self, a):
        """Mean over the 2x2x2 children (the grid is padded by edge values to even sizes)."""
        pad = [(0, (-n) % 2) for n in a.shape]
        a = np.pad(a, pad, mode="edge")
        n0, n1, n2 = (n // 2 for n in a.shape)
        return a.reshape(n0, 2, n1, 2, n2, 2).mean(axis=(1, 3, 5))

    def _solve(self, sigma):
        """Heating per V^2 on the fine grid (W/m^3); on a coarsened grid the coarse voxel's heating is shared
        among its children in proportion to their sigma, so sum(q) dV still equals the conductance."""
        if self.factor == 1:
            return self.solver.solve(sigma).q_per_v2
        sig_f = np.where(self.conducting_f, sigma, 0.0)
        sig_c = self._coarsen(sig_f)
        sol = self.solver.solve(sig_c)
        qc = np.divide(sol.q_per_v2, sig_c, out=np.zeros_like(sig_c), where=sig_c > 0)
        q = np.repeat(np.repeat(np.repeat(qc, 2, 0), 2, 1), 2, 2)[tuple(slice(0, n) for n in self.shape_f)] * sig_f
        return q

    def sigma(self):
        liq, vap = self.r.heat.fractions()
        return self.rf.sigma_of_state(self.r.mats.sigma_ref, self.r.heat.T, self.omega_sigma, vap, self.params)

    def __call__(self, t, dt):
        r = self.r
        T = r.heat.T
        self.omega_sigma += self.rf.omega_sigma_rate(T, self.params) * dt
        sigma = self.sigma()
        # re-solve when sigma has drifted where the power is deposited (power-weighted mean relative change)
        if self.sigma_solved is None:
            change = np.inf
        else:
            w = self.q_solved
            change = float(np.sum(w * np.abs(sigma - self.sigma_solved) / np.maximum(self.sigma_solved, 1e-12))
                           / max(float(w.sum()), 1e-300))
        if change > r.proc["rf_resolve_sigma_change"]:
            self.q_solved = self._solve(sigma)
            self.sigma_solved = sigma
            self.solves += 1
        scale = np.divide(sigma, self.sigma_solved, out=np.zeros_like(sigma), where=self.sigma_solved > 0)
        q1 = self.q_solved * scale                         # W/m^3 at 1 V (local sigma drift only)
        G = float(q1.sum()) * r.grid.dV
        tip_T = float(T.reshape(-1)[self.thermocouples].max()) if self.thermocouples.size else float(T.max())
        meas = self.rf.RFMeasurement(conductance_s=G, tip_temperature_k=tip_T)
        V = float(self.gen.voltage(t, dt, meas))
        q = q1 * V * V
        P = G * V * V
        Z = (1.0 / G if G > 0 else np.inf) + self.gen.series_resistance_ohm
        return q, {"power_w": P, "impedance_ohm": Z, "tip_temperature_c": tip_T - T0C, "voltage_v": V}


def _param_hypotheses(obj) -> list[dict]:
    fn = getattr(obj, "hypotheses", None)
    return list(fn()) if callable(fn) else []


def _ground_mask(domain: np.ndarray) -> np.ndarray:
    """Dispersive-electrode ground: the conducting voxels on the domain faces (a far boundary)."""
    g = np.zeros(domain.shape, bool)
    g[0], g[-1] = domain[0], domain[-1]
    g[:, 0] |= domain[:, 0]
    g[:, -1] |= domain[:, -1]
    g[:, :, 0] |= domain[:, :, 0]
    g[:, :, -1] |= domain[:, :, -1]
    return g


def _thermocouple_voxels(electrode: np.ndarray, domain: np.ndarray) -> np.ndarray:
    """Flat indices of tissue voxels sharing a face with the electrode (where tip thermocouples read)."""
    from scipy import ndimage
    ring = ndimage.binary_dilation(electrode) & ~electrode & domain
    return np.flatnonzero(ring)


# ---------------------------------------------------------------------------------------------- MW driver

class MWDriver:
    """SAR of the MW antenna, re-evaluated as the tissue dries (every ``refresh`` seconds)."""

    refresh = 10.0

    def __init__(self, runner: ThermalSessionRunner):
        from .physics import microwave as mw
        self.mw = mw
        self.r = runner
        dev = runner.session.device
        self.f = dev.frequency
        tag = "915" if abs(self.f - 915e6) < 1e6 else "2450"
        props = runner.model.props
        self.eps = np.where(runner.model.tissue, props[f"permittivity_{tag}"], 1.0)
        self.sig = np.where(runner.model.tissue, props[f"conductivity_{tag}"], 0.0)
        self.mask = runner.model.tissue & ~runner.antenna_mask
        self.params = mw.MicrowaveParams()
        runner._mw_params = self.params
        self.P_abs = mw.absorbed_power_w(runner.session.power, self.params)
        self.t_last = -np.inf
        self.sar = None

    def __call__(self, t, dt):
        r = self.r
        if t - self.t_last >= self.refresh - 1e-9:
            _, vap = r.heat.fractions()
            dev = r.session.device
            self.sar = self.mw.sar_field(r.grid, np.asarray(dev.tip, float), r.probe_dir, self.f, dev.antenna,
                                         r.session.power, self.sig, self.eps, vapor_fraction=vap, mask=self.mask,
                                         params=self.params)
            self.t_last = t
        return self.sar, {"power_w": r.session.power}
