"""Run a scenario: sessions of injection (ClO2 or ethanol) followed by hours of follow-up.

One session is an operator-split loop (Lie splitting, in this order) with adaptive steps:

1. injection mechanics (implicit: dilation, cavity, track backflow) -> volumetric fluxes
2. advection of every mobile species with those fluxes (conservative, flux-limited, sub-cycled to the
   positivity limit), needle/cavity sources and vessel/lymph sinks
3. implicit LOD diffusion of every mobile species
4. per-voxel reactions (ClO2 chemistry exactly/implicitly per voxel; ethanol dose)
5. vessel damage -> perfusion (with the perfusion territory and temporary track hemostasis)
6. death: oxidative / chemical commitment and regulated-necrosis delay, ischemic death

Steps are ``solver.injection_dt`` while injecting and grow geometrically (``solver.dt_growth``) up to
``solver.max_dt`` during follow-up, hitting every snapshot time and injection end exactly.
Every transported amount is booked in the ledger (oxidant, ethanol, injectate, fluid volume).
"""
from __future__ import annotations

import datetime as _dt
import time as _time
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from pathlib import Path

import numpy as np
import xarray as xr
from scipy import ndimage

from . import metrics as M
from .applicators import Needle, make_needle
from .errors import ScenarioError
from .io.provenance import provenance
from .ledger import Ledger
from .model import TissueModel, build_model
from .parameters import PROCEDURE, SOLUTE_DIFFUSIVITY, hypotheses_of, model_parameters, module_hypotheses
from .physics import death as death_mod
from .physics import ethanol as eth_mod
from .physics import oxidant as ox_mod
from .physics import vessels as ves_mod
from .physics.injection import InjectionMechanics, MechanicsTissue, NeedleTrack
from .physics.tissue_mechanics import aggregate_modulus as _aggregate_modulus
from .result import Result
from .scenario import THERMAL_MODALITIES, Scenario, Session, load_raw, validate
from .tissue_state import TissueState
from .transport import advect_with_flow, diffuse

K_MAX = 1e-9  # m^2/(Pa s): numerical cap on dilated-tissue conductivity (injection.md §6.4)


# ------------------------------------------------------------------------------------------- state

@dataclass
class SimState:
    """Named per-voxel fields of one tissue at one moment, plus the conservation ledger."""
    t: float
    f: dict[str, np.ndarray]
    ledger: Ledger = field(default_factory=Ledger)
    death: "death_mod.DeathFields | None" = None

    @classmethod
    def initial(cls, model: TissueModel) -> "SimState":
        p, tm = model.props, model.tissue
        z = model.grid.zeros
        state = np.full(model.grid.shape, int(TissueState.NO_TISSUE), dtype=np.int8)
        state[tm] = int(TissueState.VIABLE)
        f = {
            "phi0": np.where(tm, p["interstitial_fraction"], 0.0),
            "R_fast": np.where(tm, p["reductive_fast"], 0.0), "R_slow": np.where(tm, p["reductive_slow"], 0.0),
            "N_clo2": z(), "N_chlorite": z(), "N_hocl": z(), "N_ethanol": z(), "N_injectate": z(),
            "oxidant_exposure": z(), "ethanol_dose": z(),
            "vessel_integrity": np.where(tm, 1.0, 0.0), "perfusion0": np.where(tm, p["perfusion"], 0.0),
            "state": state, "pressure": z(), "dilation": z(), "cavity_fraction": z(),
        }
        f["theta"] = f["phi0"].copy()
        f["R_fast0"], f["R_slow0"] = f["R_fast"].copy(), f["R_slow"].copy()
        f["perfusion"] = f["perfusion0"].copy()
        # what the post-kill (fate) model reads: death time since course start, s; water vaporised (largest
        # vapour fraction reached); Arrhenius integral of thermal shrinkage
        f["death_time"] = np.full(model.grid.shape, np.nan)
        f["vapour_fraction"] = z()
        f["shrink_omega"] = z()
        return cls(0.0, f, death=death_mod.DeathFields.zeros(model.grid.shape))


# ------------------------------------------------------------------------------------------- helpers

def _mechanics_tissue(model: TissueModel, st: SimState) -> MechanicsTissue:
    p = model.props
    tm = model.tissue
    # non-tissue voxels are masked out of the mechanics; give them harmless finite moduli
    E = np.where(tm, p["drained_youngs_modulus"], 1e4)
    nu = np.where(tm, p["poisson_ratio"], 0.3)
    return MechanicsTissue(
        K0=np.where(tm, p["hydraulic_conductivity"], 0.0), M=p["permeability_exponent"].copy(),
        K_max=np.full(model.grid.shape, K_MAX),
        H_A=_aggregate_modulus(E, nu), E_d=E, nu=nu, G_c=np.where(tm, p["fracture_energy"], 100.0),
        LpSV=p["vascular_conductance"] * st.f["vessel_integrity"], lymph=p["lymphatic_conductance"].copy(),
        weak=np.where(tm, p["weak_plane_factor"], 1.0), phi0=st.f["phi0"].copy(),
        tissue_mask=tm.copy(), sink_mask=(model.vessel | model.air).copy())


def _needles(model: TissueModel, session: Session, si: int) -> list[Needle]:
    return [make_needle(model.grid, model.tissue, inj.tip, inj.direction, inj.gauge,
                        f"course.sessions[{si}].injections[{j}]") for j, inj in enumerate(session.injections)]


def _time_plan(session: Session, sc: Scenario) -> tuple[float, list[float]]:
    t_inj_end = max(inj.start + inj.volume / inj.rate for inj in session.injections)
    t_end = t_inj_end + session.follow_up
    marks = {t_inj_end, t_end}
    for inj in session.injections:
        marks.update({inj.start, inj.start + inj.volume / inj.rate})
    marks.update(s for s in sc.outputs.snapshots if 0 < s < t_end)
    marks.update(s for s in fate_times(sc, session) if 0 < s < t_end)
    return t_inj_end, sorted(m for m in marks if m > 0)


def fate_times(sc: Scenario, session) -> list[float]:
    """The post-kill output times in the session's own clock (1 h and 24 h always included)."""
    if not sc.fate.enabled:
        return []
    day0 = session.day * 86400.0
    return sorted({t - day0 for t in list(sc.fate.outputs) + [3600.0, 86400.0] if t - day0 > 0})


def _delivered(inj, t0: float, t1: float) -> float:
    """Injected volume of one injection in [t0, t1]."""
    a, b = max(t0, inj.start), min(t1, inj.start + inj.volume / inj.rate)
    return max(b - a, 0.0) * inj.rate


# ------------------------------------------------------------------------------------------- session

class SessionRunner:
    def __init__(self, model: TissueModel, sc: Scenario, session: Session, si: int, st: SimState, progress=None,
                 progress_span=(0.0, 1.0)):
        self.model, self.sc, self.session, self.si, self.st = model, sc, session, si, st
        self.grid = model.grid
        self.progress, self.span = progress, progress_span
        self.needles = _needles(model, session, si)
        self.mp = model_parameters(sc.model)
        self.procedure = self.mp["procedure"]
        self.modality = session.modality
        agent = session.agent
        if self.modality == "clo2":
            if not hasattr(agent, "concentration"):
                raise ScenarioError(f"course.sessions[{si}].agent", agent, "{concentration: ... ppm} for modality clo2")
            self.c_in = {"N_clo2": agent.concentration, "N_chlorite": 0.0, "N_hocl": 0.0, "N_injectate": 1.0}
            self.mu = agent.viscosity
            self.ox_params = self.mp["oxidant"]
        else:
            if not hasattr(agent, "formulation"):
                raise ScenarioError(f"course.sessions[{si}].agent", agent, "{formulation: ethanol|ec6|ec12} for modality ethanol")
            self.formulation = eth_mod.formulation(agent.formulation)
            frac = agent.ethanol_fraction if agent.ethanol_fraction is not None else self.formulation.ethanol_fraction
            self.c_in = {"N_ethanol": frac, "N_injectate": 1.0}
            self.mu = self.formulation.viscosity
            self.eth_params = self.mp["ethanol_kill"]
        self.tumor = model.mask("tumor")
        self.vessel_params = self.mp["vessels"]
        self.death_params = dc_replace(self.mp["death"],
            fast_pool_threshold=np.where(model.tissue, model.props["oxidative_death_threshold"], 1.0),
            ischemia_tolerance=np.where(model.tissue, model.props["ischemic_tolerance"], np.inf))
        self.D = {"N_clo2": SOLUTE_DIFFUSIVITY["clo2"].value, "N_chlorite": SOLUTE_DIFFUSIVITY["chlorite"].value,
                  "N_hocl": SOLUTE_DIFFUSIVITY["hocl"].value, "N_injectate": SOLUTE_DIFFUSIVITY["injectate"].value,
                  "N_ethanol": SOLUTE_DIFFUSIVITY["ethanol"].value}
        G = model.props["drained_youngs_modulus"] / (2 * (1 + np.where(model.tissue, model.props["poisson_ratio"], 0.3)))
        seal = self.procedure["track_seal_factor"]
        tracks = []
        for n in self.needles:
            g_track = float(np.mean([G[v] for v in n.track]))
            tracks.append(NeedleTrack(tip_index=n.tip_index, track=list(n.track), r_n=n.outer_radius,
                                      sigma_s=seal * g_track, shear_modulus=g_track))
        mt = _mechanics_tissue(model, st)
        self.LpSV0 = np.where(model.tissue, model.props["vascular_conductance"], 0.0)
        self.mech = InjectionMechanics(self.grid, mt, tracks, self.mu)
        self.track_mask = np.zeros(self.grid.shape, dtype=bool)
        for n in self.needles:
            for v in n.track:
                self.track_mask[v] = True
        self.dV = self.grid.dV
        self.track_amount = [{name: 0.0 for name in self.c_in} for _ in self.needles]
        self.track_volume = [0.0 for _ in self.needles]
        self.track_inflow = 0.0   # m^3 of liquid that flowed from the cavity back into the needle tracks
        self.timeseries: dict[str, list] = {}
        self.snapshots: list[tuple[float, dict]] = []

    # --------------------------------------------------------------------- one step
    def step(self, t: float, dt: float) -> None:
        st, f, L, dV = self.st, self.st.f, self.st.ledger, self.dV
        q = [_delivered(inj, t, t + dt) / dt for inj in self.session.injections]
        vol_in = sum(q) * dt
        theta_old = f["theta"].copy()
        flow = self.mech.step(dt, q)
        f["theta"] = theta_old + flow.theta_change
        f["pressure"][...] = self.mech.p
        f["dilation"][...] = self.mech.e
        f["cavity_fraction"][...] = self.mech.cavity_fraction
        # 2. advection, sources and sinks; the needle track is a small well-mixed compartment per needle
        s_in = np.maximum(flow.source, 0.0)
        s_out = flow.sink + np.maximum(-flow.source, 0.0)
        routes = self._track_routes(flow, dt)
        for name, c_in in self.c_in.items():
            qty = _quantity(name)
            L.add_source(qty, "injected", vol_in * c_in)
            src_amount = np.zeros(self.grid.shape)
            for m, nd in enumerate(self.needles):
                src_amount[nd.tip_index] += q[m] * c_in
            released = []
            for m, rt in enumerate(routes):
                A = self.track_amount[m][name]
                O = A * rt["release_fraction"]
                released.append(O)
                for flat, share in rt["to_voxels"]:
                    src_amount.flat[flat] += O * share / dt
                L.add_sink(qty, "backflow", O * rt["to_exit"])
            moved = advect_with_flow(f[name], theta_old, flow, dV, src_amount, s_in, s_out)
            sink_amount = moved["sink_amount"]
            into_tracks = 0.0
            for m, rt in enumerate(routes):
                I = 0.0
                for flat, vol_rate in rt["from_voxels"]:
                    so = s_out.flat[flat]
                    if so > 0:
                        I += sink_amount.flat[flat] * min(vol_rate / so, 1.0)
                self.track_amount[m][name] += I - released[m]
                into_tracks += I
            L.add_sink(qty, "vessels_lymph", float(np.sum(sink_amount)) - into_tracks)
            L.add_sink(qty, "boundary", moved["boundary"])
        # 3. diffusion
        hind = self.model.props["diffusion_hindrance"]
        for name in self.c_in:   # every mobile species, products (chlorite, HOCl) included, once per step
            diffuse(f[name], f["theta"], f["phi0"], hind, self._diffusivity(name), dt, self.grid.spacing)
        # 4. reactions (washout by perfusion: loss rate perfusion * c per tissue volume)
        wash = f["perfusion"] * self.procedure["washout_partition"]
        if self.modality == "clo2":
            expo_before = f["oxidant_exposure"].copy()
            b = ox_mod.react_oxidant(f["N_clo2"], f["N_chlorite"], f["N_hocl"], f["R_fast"], f["R_slow"],
                                     f["theta"], wash, dt, self.ox_params, exposure=f["oxidant_exposure"])
            L.add_sink("oxidant", "consumed_fast", b["clo2_consumed_fast"] * dV)
            L.add_sink("oxidant", "consumed_slow", b["clo2_consumed_slow"] * dV)
            L.add_sink("oxidant", "decayed", b["clo2_decayed"] * dV)
            L.add_sink("oxidant", "washed_out", b["clo2_washout"] * dV)
            for sp in ("chlorite", "hocl"):
                L.add_source(sp, "produced", b[f"{sp}_produced"] * dV)
                L.add_sink(sp, "consumed_fast", b[f"{sp}_consumed_fast"] * dV)
                L.add_sink(sp, "consumed_slow", b[f"{sp}_consumed_slow"] * dV)
                L.add_sink(sp, "washed_out", b[f"{sp}_washout"] * dV)
            ves_mod.update_vessels(f["vessel_integrity"], f["oxidant_exposure"] - expo_before, 0.0, self.tumor,
                                   self.vessel_params)
        else:
            dose_before = f["ethanol_dose"].copy()
            b = eth_mod.react_ethanol(f["N_ethanol"], f["theta"], wash, f["ethanol_dose"], dt, self.eth_params)
            L.add_sink("ethanol", "washed_out", b["ethanol_washout"] * dV)
            ves_mod.update_vessels(f["vessel_integrity"], 0.0, f["ethanol_dose"] - dose_before, self.tumor,
                                   self.vessel_params)
        # 5. perfusion (the perfusion that holds during the next step), vascular leak follows the vessels
        perf_step = f["perfusion"].copy()
        self._update_perfusion(t + dt)
        # microvascular filtration is lost where vessels are destroyed (the solver's hierarchy is reused)
        self.mech.tis.LpSV = self.LpSV0 * f["vessel_integrity"]
        # 6. death
        death_mod.update_death(f["state"], st.death, t, dt, self.death_params,
                               R_f=f["R_fast"], R_f0=f["R_fast0"], R_s=f["R_slow"], R_s0=f["R_slow0"],
                               omega=f["ethanol_dose"] if self.modality == "ethanol" else None,
                               perfusion=perf_step, perfusion0=f["perfusion0"])

    def _track_routes(self, flow, dt: float) -> list[dict]:
        """Where the liquid of each needle track goes this step (from the FlowStep's track nodes).

        Liquid enters the track at the cavity end (withdrawn as a sink from the first host voxel) and where
        tissue drains into an open track (negative leak); it leaves into host voxels (positive leak), out
        through the skin (exit) and back into the cavity voxel (negative entry flow). Solute leaves with the
        track's content at the start of the step, in proportion to the volume that left (a one-step lag on
        a microlitre compartment, exactly conservative and positive).
        """
        routes = []
        for m, tr in enumerate(flow.track):
            hosts = np.asarray(tr["host"], dtype=np.int64)
            leak = np.asarray(tr["leak"], dtype=float)
            qseg = np.asarray(tr["q"], dtype=float)
            q0 = float(qseg[0]) if qseg.size else 0.0
            self.track_inflow += max(q0, 0.0) * dt
            exit_q = max(float(qseg[-1]), 0.0) if qseg.size else 0.0
            V_old = self.track_volume[m]
            V_new = float(np.sum(np.maximum(np.asarray(tr["volume"], dtype=float), 0.0)))
            self.track_volume[m] = V_new
            to_vox = [(int(hf), lk) for hf, lk in zip(hosts, leak) if lk > 0]
            if q0 < 0 and hosts.size:
                to_vox.append((int(hosts[0]), -q0))
            from_vox = [(int(hf), -lk) for hf, lk in zip(hosts, leak) if lk < 0]
            if q0 > 0:
                # withdrawn from this needle's cavity voxels (where the cavity meets the track); a cavity
                # that also touches an open sink shares its voxels' outflow in proportion to volume
                cav = np.flatnonzero((self.mech.owner.ravel() == m) & (flow.sink.ravel() > 0))
                if cav.size == 0:
                    cav = np.array([int(hosts[0])] if hosts.size else [], dtype=np.int64)
                tot = float(np.sum(flow.sink.ravel()[cav])) if cav.size else 0.0
                scale = min(q0 / tot, 1.0) if tot > 0 else 0.0
                from_vox.extend((int(v), float(flow.sink.flat[v]) * scale) for v in cav)
            out_vol = (sum(v for _, v in to_vox) + exit_q) * dt
            in_vol = sum(v for _, v in from_vox) * dt
            frac = min(1.0, out_vol / (V_old + in_vol)) if V_old + in_vol > 0 else 0.0
            routes.append({"release_fraction": frac,
                           "to_voxels": [(hf, v * dt / out_vol) for hf, v in to_vox] if out_vol > 0 else [],
                           "to_exit": exit_q * dt / out_vol if out_vol > 0 else 0.0,
                           "from_voxels": from_vox})
        return routes

    def _diffusivity(self, name: str):
        if name == "N_ethanol" and np.isfinite(self.formulation.gel_threshold):
            f = self.st.f
            theta = np.maximum(f["theta"], 1e-30)
            injectate = f["N_injectate"] / theta
            water = 1.0 - f["N_ethanol"] / theta
            gel = (injectate > 0.05) & (water >= self.formulation.gel_threshold)
            return np.where(gel, self.formulation.D_gel, self.D[name])
        return self.D[name]

    def _update_perfusion(self, t: float) -> None:
        f = self.st.f
        ell = self.procedure["perfusion_territory"]
        v = f["vessel_integrity"]
        if ell > 0 and np.any(v < 1.0):
            sig = [ell / h for h in self.grid.spacing]
            w = ndimage.gaussian_filter(self.model.tissue.astype(float), sig, mode="nearest")
            vs = ndimage.gaussian_filter(v * self.model.tissue, sig, mode="nearest")
            v = np.divide(vs, w, out=np.zeros_like(vs), where=w > 1e-12)
        f["perfusion"] = ves_mod.perfusion_field(f["perfusion0"], np.clip(v, 0.0, 1.0), self.track_mask, t, 0.0,
                                                 self.vessel_params)

    # --------------------------------------------------------------------- loop
    def run(self) -> None:
        sc, session = self.sc, self.session
        t_inj_end, marks = _time_plan(session, sc)
        self.t_inj_end = t_inj_end
        t_end = marks[-1]
        t, dt = 0.0, sc.solver.injection_dt
        self._record(0.0)
        self._snapshot(0.0)
        snaps = sorted({s for s in sc.outputs.snapshots if 0 < s <= t_end} | {t_end})
        self._fate_times = fate_times(sc, session)
        self.fluid_at = []      # (session time, injection dilation + cavity fraction) at the post-kill output times
        wall0 = _time.time()
        while t < t_end - 1e-9:
            injecting = t < t_inj_end - 1e-9
            if injecting:
                dt = sc.solver.injection_dt
            else:
                dt = min(dt * sc.solver.dt_growth, sc.solver.max_dt)
            nxt = min(m for m in marks if m > t + 1e-9)
            if t + dt > nxt - 1e-9 or nxt - (t + dt) < 0.2 * dt:
                dt = nxt - t
            self.step(t, dt)
            t += dt
            self.st.t = t
            self._record(t)
            if any(abs(t - s) < 1e-6 for s in snaps):
                self._snapshot(t)
            if any(abs(t - s) < 1e-6 for s in self._fate_times):
                self.fluid_at.append((t, self.st.f["dilation"] + self.st.f["cavity_fraction"]))
            if self.progress:
                frac = np.log1p(t / 60.0) / np.log1p(t_end / 60.0)
                a, b = self.span
                self.progress(a + (b - a) * frac, f"t = {t / 3600:.2f} h")
        self.wall = _time.time() - wall0
        self.t_end = t_end
        d = self.st.death.death_time
        stamp = np.isnan(self.st.f["death_time"]) & np.isfinite(d)
        self.st.f["death_time"][stamp] = d[stamp] + session.day * 86400.0

    # --------------------------------------------------------------------- records
    def _record(self, t: float) -> None:
        f, dV, m = self.st.f, self.dV, self.model
        tumor = m.mask("tumor")
        dead = M.dead_mask(f["state"])
        ts = self.timeseries
        budget = self.mech.volume_budget()
        row = {
            "t_s": t,
            "peak_pressure_kpa": float(np.max(f["pressure"])) / 1e3 if t > 0 else 0.0,
            "necrotic_tumor_ml": M.volume_ml(tumor & dead, dV),
            "viable_tumor_ml": M.viable_tumor_ml(tumor, f["state"], dV),
            "normal_tissue_necrosis_ml": M.normal_tissue_necrosis_ml(m.tissue, tumor, f["state"], dV),
            "committed_ml": M.committed_ml(self.st.death.commit_time, f["state"], dV),
            "oxidant_free_mmol": float(np.sum(f["N_clo2"])) * dV * 1e3,
        }
        for k, v in budget.items():
            if k not in ("injected", "residual", "rel_error"):
                row[f"volume_{k}"] = float(v) * 1e6
        for k, v in row.items():
            ts.setdefault(k, []).append(v)

    def _snapshot(self, t: float) -> None:
        f = self.st.f
        R0 = f["R_fast0"] + f["R_slow0"]
        snap = {
            "tissue_state": f["state"].copy(),
            "injected_liquid": f["N_injectate"].astype(np.float32),
            "pressure": f["pressure"].astype(np.float32),
            "dilation": f["dilation"].astype(np.float32),
            "cavity_fraction": f["cavity_fraction"].astype(np.float32),
            "vessel_integrity": f["vessel_integrity"].astype(np.float32),
            "perfusion": f["perfusion"].astype(np.float32),
        }
        if self.modality == "clo2":
            snap["oxidant"] = np.divide(f["N_clo2"], f["theta"], out=np.zeros_like(R0), where=f["theta"] > 0).astype(np.float32)
            snap["chlorite"] = np.divide(f["N_chlorite"], f["theta"], out=np.zeros_like(R0), where=f["theta"] > 0).astype(np.float32)
            snap["oxidant_exposure"] = f["oxidant_exposure"].astype(np.float32)
            snap["reductive_fast_left"] = np.divide(f["R_fast"], f["R_fast0"], out=np.ones_like(R0), where=f["R_fast0"] > 0).astype(np.float32)
            snap["reductive_total_left"] = np.divide(f["R_fast"] + f["R_slow"], R0, out=np.ones_like(R0), where=R0 > 0).astype(np.float32)
        else:
            snap["ethanol"] = np.divide(f["N_ethanol"], f["theta"], out=np.zeros_like(R0), where=f["theta"] > 0).astype(np.float32)
            snap["ethanol_dose"] = f["ethanol_dose"].astype(np.float32)
        self.snapshots.append((t, snap))


def _quantity(species: str) -> str:
    return {"N_clo2": "oxidant", "N_chlorite": "chlorite", "N_hocl": "hocl", "N_ethanol": "ethanol",
            "N_injectate": "injectate"}[species]


# ------------------------------------------------------------------------------------------- results

FIELD_ATTRS = {
    "labels": ("1", "tissue label (see label_table attribute)"),
    "tissue_state": ("1", "tissue state code: " + ", ".join(f"{s.value}={s.name.lower()}" for s in TissueState)),
    "injected_liquid": ("m3/m3", "injected liquid volume per tissue volume"),
    "pressure": ("Pa", "interstitial/cavity pressure above baseline"),
    "dilation": ("1", "tissue volumetric dilation e"),
    "cavity_fraction": ("1", "fraction of the voxel opened as injection cavity"),
    "vessel_integrity": ("1", "microvessel integrity (1 intact, 0 destroyed)"),
    "perfusion": ("s-1", "blood perfusion"),
    "oxidant": ("mol m-3", "ClO2 concentration in tissue liquid"),
    "chlorite": ("mol m-3", "chlorite concentration in tissue liquid"),
    "oxidant_exposure": ("mol s m-3", "time integral of ClO2 liquid concentration"),
    "reductive_fast_left": ("1", "fast reductive pool left, fraction of initial"),
    "reductive_total_left": ("1", "total reductive capacity left, fraction of initial"),
    "ethanol": ("1", "ethanol volume fraction in tissue liquid"),
    "ethanol_dose": ("1", "ethanol kill dose Omega (necrosis at 1)"),
    "temperature": ("degC", "tissue temperature"),
    "temperature_max": ("degC", "highest temperature reached so far"),
    "temperature_min": ("degC", "lowest temperature reached so far"),
    "damage_omega": ("1", "Arrhenius cell-death integral Omega (coagulation at 1)"),
    "cem43": ("min", "cumulative equivalent minutes at 43 degC"),
    "perfusion_factor": ("1", "perfusion left after microvessel coagulation / freezing (1 intact)"),
    "volume_change": ("1", "local volume change J - 1 from water and injection (eigenstrain x 3)"),
    "matrix_integrity": ("1", "matrix integrity (1 intact; digested toward 0)"),
    "inflammation": ("1", "inflammatory-cell density, normalised to saturation"),
    "granulation": ("1", "granulation maturity (0 none, 1 mature)"),
    "separation": ("1", "1 where a voxel touches a separated necrotic-living interface"),
    "detached": ("1", "1 where tissue has detached (left the body)"),
    "displacement_x": ("mm", "displacement x (voxel mean of its corners)"),
    "displacement_y": ("mm", "displacement y (voxel mean of its corners)"),
    "displacement_z": ("mm", "displacement z (voxel mean of its corners)"),
}


def _dataset(model: TissueModel, snaps: list[tuple[float, dict]], sc: Scenario, t_offset: float) -> xr.Dataset:
    g = model.grid
    coords = {"time": ("time", np.array([t + t_offset for t, _ in snaps]), {"units": "s", "long_name": "time since course start"}),
              "x": ("x", g.axis(0) * 1e3, {"units": "mm"}), "y": ("y", g.axis(1) * 1e3, {"units": "mm"}),
              "z": ("z", g.axis(2) * 1e3, {"units": "mm", "long_name": "height (0 = tissue surface for phantoms)"})}
    data = {"labels": (("x", "y", "z"), model.labels.astype(np.uint8))}
    names = list(dict.fromkeys(k for _, s in snaps for k in s))
    for name in names:
        ref = next(s[name] for _, s in snaps if name in s)
        fill = np.full(ref.shape, np.nan, dtype=np.float32) if ref.dtype.kind == "f" else np.full(ref.shape, -1, ref.dtype)
        data[name] = (("time", "x", "y", "z"), np.stack([s.get(name, fill) for _, s in snaps]))
    ds = xr.Dataset(data, coords=coords)
    for name, (unit, long) in FIELD_ATTRS.items():
        if name in ds:
            ds[name].attrs.update(units=unit, long_name=long)
    ds.attrs.update(scenario=sc.name, spacing_mm=[h * 1e3 for h in g.spacing], origin_mm=[o * 1e3 for o in g.origin],
                    affine_mm=np.asarray(g.affine_mm).ravel().tolist(),
                    label_table=str({int(k): v for k, v in model.label_table.items()}),
                    disclaimer="Research software, not a medical device; no dosing advice.")
    return ds


COURSE_ATTRS = {
    "tumor_fraction": ("1", "viable tumour volume fraction"),
    "host_fraction": ("1", "viable host (normal) tissue volume fraction"),
    "debris_fraction": ("1", "necrotic debris volume fraction (all death modes)"),
    "fluid_fraction": ("1", "cleared space (fluid, fibrin) volume fraction"),
    "granulation_fraction": ("1", "granulation tissue volume fraction"),
    "scar_fraction": ("1", "scar (collagen) volume fraction"),
    "phagocytes": ("1", "phagocyte density relative to a saturated infiltrate"),
    "fibroblasts": ("1", "fibroblast density relative to saturation"),
    "vascular_density": ("1", "microvascular density relative to intact tissue"),
    "scar_contraction": ("1", "volume lost by scar contraction per tissue volume"),
}


def course_dataset(model: TissueModel, course) -> xr.Dataset:
    """The healing fields at the course's output days, dims (day, x, y, z)."""
    g = model.grid
    snaps = course.field_snaps
    coords = {"day": ("day", np.array([t / 86400.0 for t, _ in snaps]), {"units": "d", "long_name": "course day"}),
              "x": ("x", g.axis(0) * 1e3, {"units": "mm"}), "y": ("y", g.axis(1) * 1e3, {"units": "mm"}),
              "z": ("z", g.axis(2) * 1e3, {"units": "mm"})}
    data = {name: (("day", "x", "y", "z"), np.stack([s[name] for _, s in snaps])) for name in snaps[0][1]}
    ds = xr.Dataset(data, coords=coords)
    for name, (unit, long) in COURSE_ATTRS.items():
        if name in ds:
            ds[name].attrs.update(units=unit, long_name=long)
    tumor = model.mask("tumor")
    center = [int(round(c)) for c in ndimage.center_of_mass(tumor)] if tumor.any() else [n // 2 for n in g.shape]
    ds.attrs.update(scenario=course.sc.name, spacing_mm=[h * 1e3 for h in g.spacing],
                    origin_mm=[o * 1e3 for o in g.origin], tumor_center_index=center,
                    disclaimer="Research software, not a medical device; no dosing advice.")
    return ds


def _merge_snapshots(session_snaps, fate_snaps):
    """One list of (t, fields) sorted by time: post-kill fields at a session snapshot time join that snapshot
    (the session's own fields win)."""
    by_t = {}
    for t, snap in session_snaps:
        by_t.setdefault(round(t, 6), (t, {}))[1].update(snap)
    for t, snap in fate_snaps:
        key = round(t, 6)
        if key in by_t:
            merged = dict(snap)
            merged.update(by_t[key][1])
            by_t[key] = (by_t[key][0], merged)
        else:
            by_t[key] = (t, dict(snap))
    return [by_t[k] for k in sorted(by_t)]


def _stoichiometric_bound_ml(model: TissueModel, n_injected_mol: float, mp: dict) -> float:
    """Most tissue the injected oxidant could ever kill by exhausting the lethal part of its reductive pool."""
    lib = model.library
    names = [n for n in model.tissues_present() if n in lib.tissues]
    if not names:
        return 0.0
    lethal_f = [lib.value(n, "reductive_fast") for n in names]
    lethal_s = [lib.value(n, "reductive_slow") for n in names]
    thr = [lib.value(n, "oxidative_death_threshold") for n in names]
    lethal_per_m3 = death_mod.lethal_clo2_per_m3(np.asarray(lethal_f), np.asarray(lethal_s), dc_replace(
        mp["death"], fast_pool_threshold=np.asarray(thr)), mp["oxidant"])
    return death_mod.stoichiometric_bound_volume(n_injected_mol, lethal_per_m3) * 1e6


def run_scenario(scenario, out=None, progress=None, scenario_raw=None) -> Result:
    started = _dt.datetime.now(_dt.timezone.utc)
    wall0 = _time.time()
    if isinstance(scenario, (str, Path)) or scenario is None:
        raw, path = load_raw(scenario)
        sc = validate(raw, str(path))
    else:
        sc = scenario
        raw = scenario_raw if scenario_raw is not None else sc.model_dump(mode="json")
    np.random.seed(sc.seed)
    model = build_model(sc)
    from .course import CourseRunner
    course = CourseRunner(model, sc, progress)
    course.run()
    st, runners = course.st, course.runners
    all_snaps, ts_all = [], {}
    for r in runners:
        t_offset = sc.course.sessions[r.si].day * 86400.0
        all_snaps.extend((t + t_offset, snap) for t, snap in r.snapshots)
        length = len(ts_all.get("t_s", []))
        for k, v in r.timeseries.items():
            vals = [x + t_offset for x in v] if k == "t_s" else v
            col = ts_all.setdefault(k, [])
            col.extend([None] * (length - len(col)))
            col.extend(vals)
        length = len(ts_all["t_s"])
        for col in ts_all.values():
            col.extend([None] * (length - len(col)))
    fate_runner = fate_metrics = None
    if sc.fate.enabled:
        from .fate import run_fate
        fate_runner, fate_metrics = run_fate(model, sc, st, runners)
        all_snaps = _merge_snapshots(all_snaps, fate_runner.snapshots)
    metrics = compute_metrics(model, sc, st, runners, ts_all)
    if fate_metrics is not None:
        metrics["hypotheses"] += fate_metrics.pop("hypotheses")
        metrics.update(fate_metrics)
    if sc.course.healing:
        metrics["course"] = course.metrics()
        metrics["hypotheses"] += course.hypotheses()
    metrics["runtime_s"] = _time.time() - wall0
    ds = _dataset(model, all_snaps, sc, 0.0)
    course_ds = course_dataset(model, course) if sc.course.healing else None
    prov = provenance(sc.seed, metrics["runtime_s"], started)
    extras = {"label_table": {int(k): v for k, v in model.label_table.items()},
              "sessions_end_s": max(r.t_end + sc.course.sessions[r.si].day * 86400.0 for r in runners)}
    inj = [r for r in runners if isinstance(r, SessionRunner)]
    if inj:
        extras.update({"needle_tips_index": [list(nd.tip_index) for nd in inj[0].needles],
                       "injection_end_s": inj[0].t_inj_end + sc.course.sessions[inj[0].si].day * 86400.0})
    th = [r for r in runners if not isinstance(r, SessionRunner)]
    if th:
        r0 = th[0]
        day0 = sc.course.sessions[r0.si].day * 86400.0
        extras.update({"probe_tips_index": [list(model.grid.index_of(r0.probe_tip_m))],
                       "probe_direction": [-float(x) for x in r0.probe_dir],  # pointing: shaft -> tip
                       "heating_end_s": r0.heating_end + day0,
                       "modality": r0.modality})
        if r0.active_length_mm:
            extras["active_length_mm"] = r0.active_length_mm
    result = Result(raw, sc.model_dump(mode="json"), metrics, ds, prov, extras=extras, course=course_ds)
    if out is not None:
        from .io.run_folder import write_run
        write_run(result, Path(out), figures=sc.outputs.figures, vtk=sc.outputs.vtk)
    return result


def compute_metrics(model: TissueModel, sc: Scenario, st: SimState, runners, ts) -> dict:
    """Metrics with the same meaning for every modality; injection and thermal sessions add their own keys."""
    f, dV = st.f, model.grid.dV
    tumor = model.mask("tumor")
    state = f["state"]
    hyps = model.library.hypotheses(model.tissues_present())
    m = {
        "scenario": sc.name,
        "disclaimer": "Research software, not a medical device; no dosing advice.",
        "modalities": sorted({s.modality for s in sc.course.sessions}),
        "tumor_volume_ml": M.tumor_volume_ml(tumor, dV),
        "viable_tumor_ml": M.viable_tumor_ml(tumor, state, dV),
        "necrotic_tumor_fraction": M.necrotic_tumor_fraction(tumor, state),
        "normal_tissue_necrosis_ml": M.normal_tissue_necrosis_ml(model.tissue, tumor, state, dV),
        "necrosis_beyond_tumor_mm": M.necrosis_beyond_tumor_mm(tumor, state, model.grid.spacing),
        "necrosis_by_cause_ml": M.necrosis_by_cause_ml(state, dV),
        "committed_not_yet_necrotic_ml": M.committed_ml(st.death.commit_time, state, dV),
    }
    inj = [r for r in runners if isinstance(r, SessionRunner)]
    th = [r for r in runners if not isinstance(r, SessionRunner)]
    if inj:
        m.update(_injection_metrics(model, sc, st, inj, ts))
        hyps += m.pop("_hypotheses")
    if th:
        from .thermal_metrics import isotherm_volume_ml, zone_metrics
        r0 = th[0]
        # the ablation zone: tissue killed by heat or cold (Omega >= 1 / lethal freezing), as in the figures
        zone = np.isin(state, [int(TissueState.COAGULATED), int(TissueState.FROZEN_DEAD)]) & model.tissue
        zm = zone_metrics(zone, tumor, model.tissue, model.grid.spacing, model.grid.origin, r0.probe_tip_m, r0.probe_dir)
        bal = [r.heat.energy_balance() for r in th]
        led = {k: sum(b[k] for b in bal) for k in bal[0] if k != "rel_error"}
        scale = max(abs(led["delivered"]), abs(led["probe"]), abs(led["stored_change"]), 1e-30)
        # energy the applicators put into the tissue: RF/MW deposition; for cryo minus what the probes extracted
        applied = sum(r.heat.ledger["delivered"] - (r.heat.ledger["probe"] if r.modality == "cryo" else 0.0)
                      for r in th)
        t_max = np.maximum.reduce([r.T_max for r in th])
        t_min = np.minimum.reduce([r.T_min for r in th])
        m.update(zm)
        m.update({
            "energy_delivered_j": applied,
            "energy_balance_rel_error": abs(led["residual"]) / scale,
            "energy_ledger_j": led,
            "peak_temperature_c": float(t_max[model.tissue].max()) - 273.15,
            "min_temperature_c": float(t_min[model.tissue].min()) - 273.15,
            "coagulated_ml": M.volume_ml(state == int(TissueState.COAGULATED), dV),
            "frozen_dead_ml": M.volume_ml(state == int(TissueState.FROZEN_DEAD), dV),
            "ice_ball_ml": {f"{c} degC": isotherm_volume_ml(t_min, 273.15 + c, dV, within=model.tissue)
                            for c in (0, -20, -40)},
            "thermal_solver": {"rejected_substeps": sum(r.n_rejected for r in th),
                               "rf_potential_solves": sum(getattr(getattr(r, "driver", None), "solves", 0) for r in th)},
            "matrix_fixed_ml": M.volume_ml(np.asarray(f.get("matrix_fixed", np.zeros(1, bool))), dV),
            "microvessels_coagulated_ml": M.volume_ml(np.asarray(f.get("microvessels_coagulated", np.zeros(1, bool))), dV),
        })
        seen = set()
        for r in th:
            for row in r.hypotheses():
                if row["name"] not in seen:
                    seen.add(row["name"])
                    hyps.append(row)
    m["hypotheses"] = hyps
    m["grid"] = {"shape": list(model.grid.shape), "voxel_mm": [h * 1e3 for h in model.grid.spacing]}
    m["timeseries"] = ts
    return m


def _injection_metrics(model: TissueModel, sc: Scenario, st: SimState, runners, ts) -> dict:
    f, dV, L = st.f, model.grid.dV, st.ledger
    injected_ml = sum(inj.volume for r in runners for inj in r.session.injections) * 1e6
    # fluid (volume) balance from the mechanics' own ledger, summed over sessions
    fluid_in, fluid_res, budgets = 0.0, 0.0, []
    for r in runners:
        b = r.mech.volume_budget()
        budgets.append(b)
        dest = sum(v for k, v in b.items() if k != "injected")
        fluid_in += b["injected"]
        fluid_res += b["injected"] - dest
    stocks_track = {}
    for r in runners:
        for amounts in r.track_amount:
            for name, a in amounts.items():
                q = _quantity(name)
                stocks_track[q] = stocks_track.get(q, 0.0) + a
    balances = {}
    for name in ("N_clo2", "N_chlorite", "N_hocl", "N_ethanol", "N_injectate"):
        q = _quantity(name)
        if L.total_in(q) == 0 and L.total_out(q) == 0 and not np.any(f[name]):
            continue
        balances[q] = L.balance(q, {"free_in_tissue": float(np.sum(f[name])) * dV, "in_track": stocks_track.get(q, 0.0)})
    # produced species (chlorite, HOCl) have their production booked as a source by the kernel
    ox = balances.get("oxidant")
    n_ox_in = L.total_in("oxidant")
    consumed = sum(v for k, v in L.sinks["oxidant"].items() if k.startswith("consumed")) if ox else 0.0
    r0 = runners[0]
    hyps = hypotheses_of(list(PROCEDURE.values()) + list(SOLUTE_DIFFUSIVITY.values()),
                         {PROCEDURE[k].name: v for k, v in r0.procedure.items()})
    hyps += module_hypotheses(r0.death_params) + module_hypotheses(r0.vessel_params)
    if any(s.modality == "clo2" for s in sc.course.sessions):
        hyps += module_hypotheses(r0.mp["oxidant"])
    if any(s.modality == "ethanol" for s in sc.course.sessions):
        hyps += module_hypotheses(r0.mp["ethanol_kill"])
    return {
        "injected_ml": injected_ml,
        "peak_pressure_kpa": float(max(x for x in ts["peak_pressure_kpa"] if x is not None)),
        "backflow_ml": sum(r.track_inflow for r in runners) * 1e6,
        "backflow_out_of_skin_ml": sum(b.get("backflow_out", 0.0) for b in budgets) * 1e6,
        "oxidant_injected_mmol": n_ox_in * 1e3,
        "oxidant_consumed_mmol": consumed * 1e3,
        "oxidant_balance_rel_error": ox["rel_error"] if ox else 0.0,
        "fluid_balance_rel_error": abs(fluid_res) / fluid_in if fluid_in > 0 else 0.0,
        "stoichiometric_bound_ml": _stoichiometric_bound_ml(model, n_ox_in, runners[0].mp) if n_ox_in > 0 else 0.0,
        "volume_budget_ml": {k: float(v) * 1e6 for k, v in _sum_dicts(budgets).items()
                             if k not in ("residual", "rel_error")},
        "balances": balances,
        "_hypotheses": hyps,
    }


def _sum_dicts(ds):
    out = {}
    for d in ds:
        for k, v in d.items():
            out[k] = out.get(k, 0.0) + v
    return out
