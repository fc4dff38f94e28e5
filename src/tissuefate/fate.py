"""After the kill: water, collapse or swelling, separation, demarcation and detachment (Phases II-III).

Runs after a course's sessions on their final tissue-state map, on the course clock (t = 0 at the first
session's start), for every modality with the same processes and parameters
(:mod:`tissuefate.physics.fate_parameters`); a voxel's processes start at its death time. One step (Lie
splitting, adaptive dt growing from 1 min to ``fate.max_dt`` and hitting every output time):

1. events: vaporised water leaves at the end of a thermal session; an injection's remaining dilation is handed
   over to the water model when its session ends (until then the injection mechanics owns it);
2. release of cell water from dead cells (:mod:`.physics.water`);
3. inflammatory cells at the interface (:mod:`.physics.inflammation`), then protease digestion of the matrix
   (:mod:`.physics.integrity`);
4. Darcy flow, Starling/lymph drainage and inflammatory edema (:mod:`.physics.water`);
5. separation by digestion; movement and detachment of free masses (:mod:`.physics.detachment`).

At the output times the elasticity problem is solved (:mod:`.physics.tissue_mechanics`) with the volume change
(water + injection dilation) as eigenstrain; separation by stress is checked there.

Known simplifications (docs/fate_model.md): no new deaths after the sessions' own follow-up; opened interfaces
do not change the stress field; the sessions run first and the post-kill model afterwards, so with several
sessions the later ones do not yet see the earlier ones' edema or integrity (the healing work will couple them).
"""
from __future__ import annotations

import time as _time

import numpy as np

from .physics import fate_parameters as fp
from .physics.detachment import Detachment
from .physics.inflammation import Inflammation
from .physics.integrity import MatrixIntegrity
from .physics.tissue_mechanics import TissueMechanics, effective_modulus
from .physics.tissue_mechanics import aggregate_modulus as _aggregate_modulus
from .physics.water import WaterModel
from .tissue_state import DEAD_STATES, TissueState

DAY = 86400.0

#: tissue-state code -> index into fate_parameters.DEATH_MODES
MODE_OF_STATE = {int(TissueState.OXIDATIVE_NECROSIS): 0, int(TissueState.CHEMICAL_NECROSIS): 1,
                 int(TissueState.COAGULATED): 2, int(TissueState.FROZEN_DEAD): 3, int(TissueState.ISCHEMIC_NECROSIS): 4}


def death_mode(state: np.ndarray) -> np.ndarray:
    mode = np.full(state.shape, -1, dtype=np.int8)
    for code, k in MODE_OF_STATE.items():
        mode[state == code] = k
    return mode


class FateRunner:
    """The post-kill follow-up of one course (see module docstring).

    Inputs are plain arrays on the model grid, so tests can drive it with synthetic states:
    ``state`` final tissue-state codes; ``death_time`` s since course start (NaN alive); ``microvessels`` surviving
    microvessel fraction; ``slow_oxidised`` oxidised fraction of the slow reductive pool; ``shrink_omega`` thermal
    shrinkage integral; ``events``: list of (t, kind, field) with kind "vapour" (vapour fraction) or "handover"
    (injection dilation + cavity fraction); ``injection_fluid``: list of (t, field) of the injection's dilation
    before its handover (for the volume change at those output times).
    """

    def __init__(self, model, fate_cfg, params: dict, state, death_time, microvessels, slow_oxidised, shrink_omega,
                 events=(), injection_fluid=(), progress=None):
        self.model, self.cfg, self.p = model, fate_cfg, params
        g = model.grid
        self.grid, self.dV = g, g.dV
        self.tissue = model.tissue.copy()
        self.air = model.air.copy()
        self.tumor = model.mask("tumor")
        self.state = state.copy()
        self.mode = death_mode(self.state)
        dead_codes = [int(s) for s in DEAD_STATES]
        self.dead_final = np.isin(self.state, dead_codes) & self.tissue
        dt_ = np.where(self.dead_final & ~np.isfinite(death_time), 0.0, death_time)
        self.death_time = np.where(self.dead_final, dt_, np.inf)
        self.microvessels = np.clip(np.where(self.tissue, microvessels, 0.0), 0.0, 1.0)
        self.slow_oxidised = slow_oxidised
        self.events = sorted(events, key=lambda e: e[0])
        self.injection_fluid = sorted(injection_fluid, key=lambda e: e[0])
        self.progress = progress
        pr = model.props
        self.E = np.where(self.tissue, pr["drained_youngs_modulus"], 1e4)
        self.nu = np.where(self.tissue, pr["poisson_ratio"], 0.3)
        phi0 = np.where(self.tissue, pr["interstitial_fraction"], 0.0)
        cw0 = params["cell_water_fraction"] * np.clip(1.0 - phi0 - params["matrix_solid_fraction"], 0.0, 1.0)
        on_tissue = lambda name: np.where(self.tissue, pr[name], 0.0)  # noqa: E731
        self.water = WaterModel(g.spacing, self.tissue.copy(), phi0, cw0, on_tissue("hydraulic_conductivity"),
                                _aggregate_modulus(self.E, self.nu), on_tissue("vascular_conductance"),
                                on_tissue("lymphatic_conductance"))
        # cell water each dead voxel relaxes to, and how fast
        frac = np.zeros(g.shape)
        tau = np.ones(g.shape)
        for k, name in enumerate(fp.DEATH_MODES):
            m = self.mode == k
            frac[m] = params[f"release_fraction_{name}"]
            tau[m] = params[f"release_time_{name}"]
        coag = self.mode == fp.DEATH_MODES.index("coagulated")
        frac[coag] *= -np.expm1(-np.asarray(shrink_omega)[coag])
        self.release_target = cw0 * (1.0 - frac)
        self.release_tau = tau
        self.inflammation = Inflammation(g.spacing, self.tissue, params)
        self.integrity = MatrixIntegrity(g.shape, params)
        self.detachment = Detachment(g.spacing, params)
        self.mechanics = None
        self.timeseries: dict[str, list] = {}
        self.snapshots: list[tuple[float, dict]] = []
        self.surface_profiles: list[tuple[float, np.ndarray, np.ndarray]] = []
        self.detached = np.zeros(g.shape, dtype=bool)
        self.tumor_volume0 = float(np.count_nonzero(self.tumor)) * self.dV
        self._dead_seen = np.zeros(g.shape, dtype=bool)
        self.sep_max, self.t_first_separation = 0.0, None
        self.wall = {"water": 0.0, "inflammation": 0.0, "mechanics": 0.0, "other": 0.0}

    # ------------------------------------------------------------------ helpers
    def dead_at(self, t: float) -> np.ndarray:
        return self.dead_final & (self.death_time <= t) & self.tissue

    def _injection_dilation(self, t: float) -> np.ndarray | None:
        """The injection's own dilation at an output time before its handover (None if not recorded)."""
        for tt, fld in self.injection_fluid:
            if abs(tt - t) < 1e-6:
                return fld
        return None

    def _moduli(self, dead):
        E = effective_modulus(self.E, dead, self.mode, self.integrity.s, self.p)
        return E, _aggregate_modulus(E, self.nu)

    # ------------------------------------------------------------------ loop
    def run(self) -> None:
        wall0 = _time.time()
        cfg = self.cfg
        outputs = sorted({t for t in list(cfg.outputs) + [3600.0, DAY] if 0 < t <= cfg.until} | {cfg.until})
        marks = sorted(set(outputs) | {e[0] for e in self.events if 0 < e[0] < cfg.until})
        t, dt = 0.0, 60.0
        ev = list(self.events)
        self._output(0.0)
        while t < cfg.until - 1e-6:
            while ev and ev[0][0] <= t + 1e-9:
                self._event(*ev.pop(0))
            nxt = min(m for m in marks if m > t + 1e-6)
            dt = min(dt, cfg.max_dt)
            if t + dt > nxt - 1e-6 or nxt - (t + dt) < 0.2 * dt:
                dt = nxt - t
            self._step(t, dt)
            t += dt
            if any(abs(t - o) < 1e-6 for o in outputs):
                while ev and ev[0][0] <= t + 1e-9:
                    self._event(*ev.pop(0))
                self._output(t)
            dt = min(dt * 1.3, cfg.max_dt)
            if self.progress:
                self.progress(min(np.log1p(t / 3600.0) / np.log1p(cfg.until / 3600.0), 1.0), f"day {t / DAY:.1f}")
        self.wall["total"] = _time.time() - wall0

    def _event(self, t, kind, fld) -> None:
        if kind == "vapour":
            self.water.remove_vapour(fld)
        elif kind == "handover":
            self.water.hand_over(fld)
            self.injection_fluid = [(tt, f) for tt, f in self.injection_fluid if tt > t + 1e-6]

    def _step(self, t: float, dt: float) -> None:
        w0 = _time.time()
        p = self.p
        dead = self.dead_at(t + dt) & ~self.detached
        new = dead & ~self._dead_seen
        if new.any():
            self.integrity.on_death(new, self.mode, self.slow_oxidised)
            self._dead_seen |= new
        self.water.release(dt, self.release_target, self.release_tau, dead)
        w1 = _time.time()
        living = self.tissue & ~dead & ~self.detached
        self.inflammation.step(t, dt, dead, self.death_time, self.microvessels * living)
        self.integrity.digest(dt, dead, self.mode, self.inflammation.I)
        w2 = _time.time()
        E, H_A = self._moduli(dead)
        K = np.where(dead, self.water.K * p["necrotic_conductivity_factor"], self.water.K)
        lymph = np.where(dead, self.water.lymph * p["lymph_function_dead"], self.water.lymph)
        vascular = self.water.LpSV * self.microvessels
        source = p["edema_rate"] * self.inflammation.I * self.microvessels * living
        self.water.transport(dt, K, H_A, vascular, lymph, source)
        w3 = _time.time()
        self.integrity.update_separation(dead, living)
        self._track_separation(t + dt, dead, living)
        self.detachment.find_free_masses(t + dt, dead, living, self.air | self.detached, self.integrity)
        for m in self.detachment.advance(t, dt, self.inflammation.G, living):
            self._detach(m.voxels)
        self.wall["water"] += (w1 - w0) + (w3 - w2)
        self.wall["inflammation"] += w2 - w1
        self.wall["other"] += _time.time() - w3

    def _track_separation(self, t: float, dead, living) -> None:
        """The largest separated share and the first separation time, at every step (not only at outputs)."""
        f = self.integrity.separated_fraction(dead, living, self.grid.spacing)
        self.sep_max = max(self.sep_max, f)
        if f > 0 and self.t_first_separation is None:
            self.t_first_separation = t

    def _detach(self, voxels: np.ndarray) -> None:
        self.mechanics = None
        self.water.detach(voxels)
        self.detached |= voxels
        self.tissue = self.tissue & ~voxels
        self.inflammation.tissue = self.tissue
        self.inflammation.I[voxels] = 0.0

    # ------------------------------------------------------------------ outputs
    def volume_change(self, t: float) -> np.ndarray:
        dv = self.water.volume_change()
        inj = self._injection_dilation(t)
        if inj is not None:
            dv = dv + np.where(self.tissue, inj, 0.0)
        return np.where(self.tissue, dv, 0.0)

    def _output(self, t: float) -> None:
        w0 = _time.time()
        dead = self.dead_at(t) & ~self.detached
        living = self.tissue & ~dead
        dv = self.volume_change(t)
        E, _ = self._moduli(dead)
        row = {"t_s": t}
        tumor_now = self.tumor & self.tissue
        if self.mechanics is None:       # (re)built after a detachment: the crater is void
            body = self.model.tissue | self.model.vessel
            self.mechanics = TissueMechanics(self.grid.spacing, body & ~self.detached, self.air, body=body)
        solid = self.mechanics.solid
        if t > 0 and np.any(dv[solid] != 0):
            mech = self.mechanics
            # large-vessel lumen: blood-filled, compliant (1/1000 of the tissue modulus)
            mech.solve(np.where(self.tissue, E, self.E * 1e-3), self.nu, np.where(solid, dv, 0.0))
            vol = mech.deformed_volume(tumor_now)
            self.integrity.update_separation(dead, living, mech.normal_stresses())
            self._track_separation(t, dead, living)
            prof = self._surface(mech)
            bstress = mech.boundary_stress(self.tumor)
            u = mech.last.voxel_displacement()
            iters = int(getattr(mech.last, "iterations", 0))
        else:
            vol = float(np.count_nonzero(tumor_now)) * self.dV
            prof, bstress, u, iters = None, {"normal_pa": 0.0, "von_mises_pa": 0.0}, None, 0
        self.wall["mechanics"] += _time.time() - w0
        surf = None if prof is None else prof[1]
        row.update({
            "tumor_volume_ml": vol * 1e6,
            "tumor_volume_change": vol / self.tumor_volume0 - 1.0 if self.tumor_volume0 > 0 else 0.0,
            "surface_displacement_mm": surf,
            "separated_boundary_fraction": self.integrity.separated_fraction(dead, living, self.grid.spacing),
            "demarcation_rim_mm": self.inflammation.rim_thickness(dead) * 1e3,
            "dead_ml": float(np.count_nonzero(dead)) * self.dV * 1e6,
            "detached_ml": float(np.count_nonzero(self.detached)) * self.dV * 1e6,
            "water_excess_ml": float(np.sum(self.water.excess[self.tissue])) * self.dV * 1e6,
            "tumor_boundary_normal_stress_kpa": bstress["normal_pa"] / 1e3,
            "tumor_boundary_von_mises_kpa": bstress["von_mises_pa"] / 1e3,
            "mechanics_iterations": iters,
        })
        for k, v in row.items():
            self.timeseries.setdefault(k, []).append(v)
        sep_vox = np.zeros(self.grid.shape, dtype=bool)
        for ax in range(3):
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[ax], hi[ax] = slice(0, -1), slice(1, None)
            sep_vox[tuple(lo)] |= self.integrity.separated[ax]
            sep_vox[tuple(hi)] |= self.integrity.separated[ax]
        state = self.state.copy()
        state[self.detached] = int(TissueState.NO_TISSUE)
        state[self.dead_final & ~dead & ~self.detached] = int(TissueState.VIABLE)
        snap = {
            "tissue_state": state,
            "volume_change": dv.astype(np.float32),
            "matrix_integrity": np.where(self.model.tissue, self.integrity.s, np.nan).astype(np.float32),
            "inflammation": self.inflammation.I.astype(np.float32),
            "granulation": self.inflammation.G.astype(np.float32),
            "separation": (sep_vox & (dead | living)).astype(np.int8),
            "detached": self.detached.astype(np.int8),
        }
        if u is not None:
            for a, name in enumerate("xyz"):
                snap[f"displacement_{name}"] = (u[a] * 1e3).astype(np.float32)
        self.snapshots.append((t, snap))
        if prof is not None:
            self.surface_profiles.append((t, prof[2], prof[3]))

    def _surface(self, mech):
        """(x index positions, u_z centre value mm, positions mm, profile mm) over the tumour centroid, or None."""
        if not self.tumor.any():
            return None
        c = np.argwhere(self.tumor).mean(axis=0)
        col = (int(round(c[0])), int(round(c[1])))
        prof = mech.surface_profile(col, axis=0, present=self.tissue)
        if prof is None:
            return None
        pos, uz = prof
        k = int(np.argmin(np.abs(pos - col[0])))
        if abs(pos[k] - col[0]) > 1:
            return None
        x_mm = self.grid.axis(0)[pos] * 1e3
        return pos, float(uz[k]) * 1e3, x_mm, uz * 1e3

    # ------------------------------------------------------------------ results
    def metrics(self) -> dict:
        ts = self.timeseries

        def at(name, t):
            for tt, v in zip(ts["t_s"], ts[name]):
                if abs(tt - t) < 1e-6:
                    return v
            return None

        det = [m for m in self.detachment.masses if m.detached_at is not None]
        bal = self.water.balance()
        first_sep = self.t_first_separation
        return {
            "tumor_volume_change_1h": at("tumor_volume_change", 3600.0),
            "tumor_volume_change_24h": at("tumor_volume_change", DAY),
            "surface_displacement_mm": at("surface_displacement_mm", 3600.0),
            "surface_displacement_24h_mm": at("surface_displacement_mm", DAY),
            # the largest reached (after a detachment the dead boundary is gone); the time course is in fate_timeseries
            "separated_boundary_fraction": max(self.sep_max, max(ts["separated_boundary_fraction"])),
            "first_separation_day": None if first_sep is None else first_sep / DAY,
            "demarcation_rim_mm": max(ts["demarcation_rim_mm"]),
            "detached_ml": float(np.count_nonzero(self.detached)) * self.dV * 1e6,
            "detachment_day": min(m.detached_at for m in det) / DAY if det else None,
            "free_masses": [{"volume_ml": m.volume_voxels * self.dV * 1e6, "free_day": m.t_free / DAY,
                             "tissue_in_front_mm": m.h0 * 1e3, "moved_mm": m.moved * 1e3,
                             "detachment_day": None if m.detached_at is None else m.detached_at / DAY}
                            for m in self.detachment.masses],
            "fate_water_ledger_ml": {k: v * 1e6 for k, v in bal.items() if k != "rel_error"},
            "fate_water_rel_error": bal["rel_error"],
            "fate_follow_up_days": self.cfg.until / DAY,
            "fate_wall_s": dict(self.wall),
            "fate_timeseries": ts,
            "surface_profiles_mm": [{"t_s": t, "x_mm": list(map(float, x)), "u_z_mm": list(map(float, u))}
                                    for t, x, u in self.surface_profiles],
        }



# ----------------------------------------------------------------------------- course integration

def run_fate(model, sc, st, runners, progress=None) -> tuple[FateRunner, dict]:
    """Gather what the sessions left (death times, vapour, shrinkage, injection fluid) and run the post-kill
    follow-up; returns the runner and its metrics, with the water balance over the whole course."""
    f = st.f
    events, inj_fluid, budgets = [], [], []
    for r in runners:
        day0 = r.session.day * DAY
        if hasattr(r, "fluid_at"):            # injection session: its mechanics owned the injected liquid
            inj_fluid += [(t + day0, fld) for t, fld in r.fluid_at if t < r.t_end - 1e-6]
            events.append((r.t_end + day0, "handover", f["dilation"] + f["cavity_fraction"]))
            budgets.append(r.mech.volume_budget())
        else:                                  # thermal session: vapour leaves when the heating ends
            events.append((r.heating_end + day0, "vapour", f["vapour_fraction"].copy()))
    slow0 = f["R_slow0"]
    slow_ox = np.divide(slow0 - f["R_slow"], slow0, out=np.zeros_like(slow0), where=slow0 > 0)
    params = fp.fate_parameters((sc.model or {}).get("fate"))
    runner = FateRunner(model, sc.fate, params, f["state"], f["death_time"], f["vessel_integrity"], slow_ox,
                        f["shrink_omega"], events, inj_fluid, progress)
    runner.run()
    m = runner.metrics()
    m["water_balance"] = course_water_balance(runner, budgets)
    m["water_balance_rel_error"] = m["water_balance"]["rel_error"]
    m["hypotheses"] = fp.fate_hypotheses(params)
    return runner, m


def course_water_balance(runner: FateRunner, injection_budgets: list[dict]) -> dict:
    """``initial + injected + filtered = final + drained + leaked`` over the whole course, mL.

    The injection mechanics books the injected liquid until its session ends (its stored dilation and cavity are
    then handed to the water model); liquid left in the needle track stays there (counted in ``final``)."""
    b = runner.water.balance()
    inj = {k: sum(bb.get(k, 0.0) for bb in injection_budgets) for k in
           ("injected", "track", "backflow_out", "vascular", "lymph", "sinks", "boundary")}
    initial = b["initial"]
    injected = inj["injected"]
    filtered = b["filtered"]
    final = b["final"] + inj["track"]
    drained = b["drained"] + inj["vascular"] + inj["lymph"] + inj["sinks"]
    leaked = b["leaked"] + inj["backflow_out"] + inj["boundary"]
    residual = initial + injected + filtered - final - drained - leaked
    # relative to what moved (not to the tissue's whole water, which would hide errors)
    scale = max(injected + filtered + abs(drained) + leaked + runner.water.moved_scale(), 1e-30)
    ml = 1e6
    return {"initial_ml": initial * ml, "injected_ml": injected * ml, "filtered_from_blood_ml": filtered * ml,
            "final_ml": final * ml, "drained_ml": drained * ml, "leaked_ml": leaked * ml,
            "of_which_vapour_ml": runner.water.ledger["vapour"] * ml,
            "of_which_detached_ml": runner.water.ledger["detached"] * ml,
            "residual_ml": residual * ml, "rel_error": abs(residual) / scale}
