"""A treatment course: sessions on days, the healing model between them, the healed tissue as the next material.

The course clock starts at day 0. For each session, in order of its day:

1. heal from the previous session's end to this session's day (:mod:`.physics.healing`);
2. turn the healing state into the tissue this session sees (:class:`CourseTissue`): every property is the
   volume-fraction mix of the voxel's components (viable tumour, host, debris of each death mode, cleared fluid,
   granulation, scar; library rows ``granulation``, ``scar``, ``wound_fluid``), perfusion-like properties scaled
   by the regrown microvessels, and the reductive pool of debris is what its killing session left; the label (for
   the heat materials) is the dominant component; a voxel holding at least ``living_code_fraction`` of living
   cells counts as living;
3. place the applicators: as planned, or for ``target: remaining_viable_tumor`` the plan (written for the
   original tumour) moved by the vector from the original tumour's centroid to each of the largest remaining
   visible components (needles: one per component, ``targeting.max_needles``; the volume ``volume_ratio`` x
   the component volume when given; thermal applicators: the largest component);
4. run the session (injection or thermal runner), then book what it killed as debris of its death mode;
5. with ``course.predictability``, run the same placed plan in untreated tissue: the session's predictability is
   its coverage of the target in the healed tissue divided by that reference coverage.

After the last session the healing runs to ``course.follow_up``. Course metrics (``metrics.json`` key
``course``) are read from the healing state; the per-session keys of the top level describe the sessions.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .model import TissueModel
from .physics.fate_parameters import fate_parameters, per_mode
from .physics.healing import COMPONENTS, DEBRIS, IDX, HealingModel, HealingState
from .physics.healing_parameters import healing_hypotheses, healing_parameters
from .scenario import THERMAL_MODALITIES
from .tissue import property_fields
from .tissue_state import TissueState

DAY = 86400.0
HEALING_TISSUES = ("granulation", "scar", "wound_fluid")
MODE_OF_CODE = {int(TissueState.OXIDATIVE_NECROSIS): "oxidative", int(TissueState.CHEMICAL_NECROSIS): "chemical",
                int(TissueState.COAGULATED): "coagulated", int(TissueState.FROZEN_DEAD): "frozen",
                int(TissueState.ISCHEMIC_NECROSIS): "ischemic"}
CODE_OF_MODE = {m: c for c, m in MODE_OF_CODE.items()}
#: properties mixed geometrically (they span decades); all others arithmetically by volume fraction
GEOMETRIC = ("hydraulic_conductivity", "arrhenius_frequency_factor")
#: properties carried by microvessels: scaled by the regrown fraction of the vessels a voxel should have
VASCULAR = ("perfusion", "vascular_conductance", "lymphatic_conductance")
#: fields a session's state carries over from the previous session
CARRY = ("N_clo2", "N_chlorite", "N_hocl", "N_ethanol", "N_injectate", "oxidant_exposure", "ethanol_dose",
         "death_time", "vapour_fraction", "shrink_omega")


def host_label_map(model: TissueModel) -> np.ndarray:
    """Label of the host tissue of every voxel: its own, or for tumour voxels the nearest non-tumour tissue's."""
    tumor = model.mask("tumor")
    labels = model.labels.copy()
    host_ok = model.tissue & ~tumor
    if tumor.any() and host_ok.any():
        _, idx = ndimage.distance_transform_edt(~host_ok, return_indices=True)
        near = labels[tuple(idx)]
        labels[tumor] = near[tumor]
    return labels


class CourseTissue:
    """Turns a :class:`HealingState` into the tissue model and tissue-state map a session runs on."""

    def __init__(self, base: TissueModel, hparams: dict):
        self.base = base
        self.hp = hparams
        lib = base.library
        self.table = dict(base.label_table)
        nxt = max(self.table) + 1
        self.label_of = {}
        for name in HEALING_TISSUES:
            self.table[nxt] = name
            self.label_of[name] = nxt
            nxt += 1
        self.host_label = host_label_map(base)
        self.host_props = property_fields(lib, self.host_label, self.table)
        tumor_name = "tumor"
        self.tumor_label = next((k for k, v in base.label_table.items() if v == tumor_name), None)
        self.const = {name: {p: lib.value(name, p) for p in lib.properties} for name in (*HEALING_TISSUES, tumor_name)}
        self.regeneration = np.where(base.tissue, self.host_props["regeneration_rate"], 0.0)

    def vascular_ratio(self, hs: HealingState) -> np.ndarray:
        """Regrown fraction (0..1) of the microvessels the voxel's living components should have."""
        f, p = hs.frac, self.hp
        target = (f[IDX["tumor"]] + f[IDX["host"]] + p["vascular_density_granulation"] * f[IDX["granulation"]]
                  + p["vascular_density_scar"] * f[IDX["scar"]])
        return np.clip(np.divide(hs.vascular, target, out=np.zeros_like(target), where=target > 1e-12), 0.0, 1.0)

    def model_for(self, hs: HealingState, debris_R: dict[str, np.ndarray]) -> TissueModel:
        """The tissue as it is on the healing state's day (properties mixed by volume fraction)."""
        base, f = self.base, hs.frac
        tissue = base.tissue
        ratio = self.vascular_ratio(hs)
        debris = f[DEBRIS].sum(axis=0)
        total = np.where(tissue, f.sum(axis=0), 1.0)   # 1 to round-off; dividing keeps bounded properties bounded
        props = {}
        for name, base_arr in base.props.items():
            parts = [(f[IDX["tumor"]], self.const["tumor"][name]), (f[IDX["host"]], self.host_props[name]),
                     (debris, base_arr), (f[IDX["fluid"]], self.const["wound_fluid"][name]),
                     (f[IDX["granulation"]], self.const["granulation"][name]), (f[IDX["scar"]], self.const["scar"][name])]
            if name in VASCULAR:
                parts[2] = (debris, 0.0)     # dead microvessels
                mixed = sum(w * v for w, v in parts) / total * ratio
            elif name in ("reductive_fast", "reductive_slow"):
                parts[2] = (debris, debris_R[name])
                mixed = sum(w * v for w, v in parts) / total
            elif name in GEOMETRIC:
                logs = sum(w * np.log(np.maximum(v, 1e-300)) for w, v in parts) / total
                mixed = np.exp(logs)
            else:
                mixed = sum(w * v for w, v in parts) / total
                lo, hi = min(np.min(v) for _, v in parts), max(np.max(v) for _, v in parts)
                mixed = np.clip(mixed, lo, hi)
            props[name] = np.where(tissue, mixed, base_arr)
        labels = self.dominant_labels(hs)
        return TissueModel(base.grid, labels, self.table, base.landmarks, base.library, props, tissue, base.vessel,
                           base.air)

    def dominant_labels(self, hs: HealingState) -> np.ndarray:
        f = hs.frac
        groups = np.stack([f[IDX["tumor"]], f[IDX["host"]], f[DEBRIS].sum(axis=0), f[IDX["fluid"]],
                           f[IDX["granulation"]], f[IDX["scar"]]])
        which = np.argmax(groups, axis=0)
        labels = self.base.labels.copy()
        tissue = self.base.tissue
        if self.tumor_label is not None:
            labels[tissue & (which == 0)] = self.tumor_label
        sel = tissue & (which == 1)
        labels[sel] = self.host_label[sel]
        for k, name in ((3, "wound_fluid"), (4, "granulation"), (5, "scar")):
            labels[tissue & (which == k)] = self.label_of[name]
        return labels

    def state_codes(self, hs: HealingState) -> np.ndarray:
        """Tissue-state map: living where enough living cells remain, else the dominant non-living component."""
        f = hs.frac
        codes = np.full(f.shape[1:], int(TissueState.NO_TISSUE), dtype=np.int8)
        tissue = self.base.tissue
        others = [CODE_OF_MODE[c.removeprefix("debris_")] for c in COMPONENTS[DEBRIS]] + [
            int(TissueState.CLEARED), int(TissueState.SCAR)]
        stack = np.concatenate([f[DEBRIS], f[[IDX["fluid"]]], f[[IDX["scar"]]]])
        dead_code = np.asarray(others, dtype=np.int8)[np.argmax(stack, axis=0)]
        living = hs.living >= self.hp["living_code_fraction"]
        codes[tissue] = np.where(living, int(TissueState.VIABLE), dead_code)[tissue]
        return codes


# ------------------------------------------------------------------------------------------- targeting

def visible_components(u: np.ndarray, tissue: np.ndarray, spacing, visible_fraction: float, detection_size: float):
    """Connected visible-tumour components (u >= visible_fraction, face-connected) at least ``detection_size``
    in equivalent diameter, largest first: list of (volume m^3, centroid index (3,), voxel mask)."""
    lab, n = ndimage.label((u >= visible_fraction) & tissue)
    if n == 0:
        return []
    dV = float(np.prod(spacing))
    vols = ndimage.sum_labels(u, lab, index=np.arange(1, n + 1)) * dV
    counts = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    out = []
    for k in np.argsort(-vols):
        d_eq = (6.0 * counts[k] * dV / np.pi) ** (1.0 / 3.0)
        if d_eq + 1e-12 < detection_size:
            continue
        mask = lab == k + 1
        out.append((float(vols[k]), np.array(ndimage.center_of_mass(mask)), mask))
    return out


def _world(grid, index) -> np.ndarray:
    return np.asarray(grid.origin) + np.asarray(grid.spacing) * np.asarray(index, dtype=float)


def place_session(session, components, grid, tumor_centroid_m, tissue):
    """The session with its applicators moved onto the remaining components (see the module docstring)."""
    if not components:
        return None
    if session.modality in THERMAL_MODALITIES:
        shift = _world(grid, components[0][1]) - tumor_centroid_m
        dev = session.device
        if session.modality == "cryo":
            probes = [p.model_copy(update={"tip": tuple(np.asarray(p.tip) + shift)}) for p in dev.probes]
            dev = dev.model_copy(update={"probes": probes})
        else:
            dev = dev.model_copy(update={"tip": tuple(np.asarray(dev.tip) + shift)})
        return session.model_copy(update={"device": dev})
    plan = session.injections[0]
    tg = session.targeting
    injections = []
    for vol, centroid, mask in components[:tg.max_needles]:
        tip = np.asarray(plan.tip) + _world(grid, centroid) - tumor_centroid_m
        idx = grid.index_of(tip)
        if not (all(0 <= idx[a] < grid.shape[a] for a in range(3)) and tissue[idx]):
            # the moved tip left the tissue: the component voxel nearest its centroid
            pts = np.argwhere(mask)
            tip = _world(grid, pts[np.argmin(((pts - centroid) ** 2).sum(axis=1))])
        volume = plan.volume if tg.volume_ratio is None else float(np.clip(tg.volume_ratio * vol, tg.min_volume,
                                                                           tg.max_volume))
        injections.append(plan.model_copy(update={"tip": tuple(float(x) for x in tip), "volume": volume}))
    return session.model_copy(update={"injections": injections})


def applicator_summary(session) -> list[dict]:
    if session.modality in THERMAL_MODALITIES:
        tips = [p.tip for p in session.device.probes] if session.modality == "cryo" else [session.device.tip]
        d = session.device.probes[0].direction if session.modality == "cryo" else session.device.direction
        return [{"tip_mm": [1e3 * x for x in t], "direction": list(d)} for t in tips]
    return [{"tip_mm": [1e3 * x for x in inj.tip], "direction": list(inj.direction), "volume_ml": inj.volume * 1e6}
            for inj in session.injections]


# ------------------------------------------------------------------------------------------- the course

def _runner(model, sc, session, si, st, progress=None, span=(0.0, 1.0)):
    if session.modality in THERMAL_MODALITIES:
        from .thermal import ThermalSessionRunner
        return ThermalSessionRunner(model, sc, session, si, st, progress, span)
    from .simulation import SessionRunner
    return SessionRunner(model, sc, session, si, st, progress, span)


def _killed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    dead_codes = list(MODE_OF_CODE)
    return (before == int(TissueState.VIABLE)) & np.isin(after, dead_codes)


class CourseRunner:
    """Runs the sessions of a scenario's course with healing between them (module docstring)."""

    def __init__(self, model: TissueModel, sc, progress=None, check_fractions: bool = False):
        self.base, self.sc, self.progress = model, sc, progress
        self.hp = healing_parameters((sc.model or {}).get("healing"))
        self.fate_p = fate_parameters((sc.model or {}).get("fate"))
        self.tissue = CourseTissue(model, self.hp)
        tumor = model.mask("tumor")
        self.hs = HealingState.from_labels(tumor, model.tissue)
        self.healer = HealingModel(self.hp, per_mode(self.fate_p, "digestibility"), model.tissue,
                                   self.tissue.regeneration, model.grid.spacing, check=check_fractions)
        self.dV = model.grid.dV
        self.host0_ml = float(self.hs["host"].sum()) * self.dV * 1e6
        self.tumor_centroid = (_world(model.grid, ndimage.center_of_mass(tumor)) if tumor.any()
                               else np.asarray(model.landmarks.get("tumor_center", np.zeros(3)), dtype=float))
        self.debris_R = {"reductive_fast": model.props["reductive_fast"].copy(),
                         "reductive_slow": model.props["reductive_slow"].copy()}
        self.runners, self.sessions_run, self.session_records = [], [], []
        self.records: list[dict] = []
        self.field_snaps: list[tuple[float, dict]] = []
        self.host_destroyed_ml = 0.0
        self.st = None
        self.healing_wall = 0.0
        self.healing_steps = 0

    # ------------------------------------------------------------------ records
    def _visible(self):
        return visible_components(self.hs["tumor"], self.base.tissue, self.base.grid.spacing,
                                  self.hp["visible_tumor_fraction"], self.sc.course.detection_size)

    def record(self) -> None:
        hs, dV = self.hs, self.dV
        f = hs.frac
        row = {"day": hs.t / DAY,
               "viable_tumor_ml": float(f[IDX["tumor"]].sum()) * dV * 1e6,
               "debris_ml": float(f[DEBRIS].sum()) * dV * 1e6,
               "fluid_ml": float(f[IDX["fluid"]].sum()) * dV * 1e6,
               "granulation_ml": float(f[IDX["granulation"]].sum()) * dV * 1e6,
               "scar_ml": float(f[IDX["scar"]].sum()) * dV * 1e6,
               "normal_tissue_lost_ml": self.host0_ml - float(f[IDX["host"]].sum()) * dV * 1e6,
               "phagocytes_ml": float(hs.phagocytes.sum()) * dV * 1e6,
               "scar_contraction_ml": float(hs.contraction.sum()) * dV * 1e6,
               "visible_components": len(self._visible())}
        for j, c in enumerate(COMPONENTS[DEBRIS]):
            row[f"{c}_ml"] = float(f[DEBRIS.start + j].sum()) * dV * 1e6
        if self.records and abs(self.records[-1]["day"] - row["day"]) < 1e-9:
            self.records[-1] = row
        else:
            self.records.append(row)

    def snapshot(self) -> None:
        f, hs = self.hs.frac, self.hs
        snap = {"tumor_fraction": f[IDX["tumor"]], "host_fraction": f[IDX["host"]],
                "debris_fraction": f[DEBRIS].sum(axis=0), "fluid_fraction": f[IDX["fluid"]],
                "granulation_fraction": f[IDX["granulation"]], "scar_fraction": f[IDX["scar"]],
                "phagocytes": hs.phagocytes, "fibroblasts": hs.fibroblasts, "vascular_density": hs.vascular,
                "scar_contraction": hs.contraction}
        snap = {k: np.asarray(v, dtype=np.float32).copy() for k, v in snap.items()}
        if self.field_snaps and abs(self.field_snaps[-1][0] - hs.t) < 1e-6:
            self.field_snaps[-1] = (hs.t, snap)
        else:
            self.field_snaps.append((hs.t, snap))

    # ------------------------------------------------------------------ healing
    def heal_to(self, t_end: float) -> None:
        if not self.sc.course.healing or t_end <= self.hs.t + 1e-6:
            self.hs.t = max(self.hs.t, t_end)
            return
        import time as _time
        wall0 = _time.time()
        outs = sorted({t for t in self.sc.course.outputs if self.hs.t + 1e-6 < t < t_end - 1e-6})
        next_day = [np.floor(self.hs.t / DAY + 1e-9) * DAY + DAY]

        def on_step(s):
            if s.t >= next_day[0] - 1e-6:
                self.record()
                next_day[0] = np.floor(s.t / DAY + 1e-9) * DAY + DAY

        for stop in [*outs, t_end]:
            self.healing_steps += self.healer.advance(self.hs, stop, self.sc.solver.healing_dt, on_step)
            self.record()
            self.snapshot()
        self.healing_wall += _time.time() - wall0

    # ------------------------------------------------------------------ sessions
    def _session_state(self, model: TissueModel):
        from .simulation import SimState
        st = SimState.initial(model)
        codes = self.tissue.state_codes(self.hs)
        st.f["state"][:] = codes
        if self.st is not None:
            st.ledger = self.st.ledger
            for k in CARRY:
                st.f[k] = self.st.f[k].copy()
            for k in ("matrix_fixed", "microvessels_coagulated"):
                if k in self.st.f:
                    st.f[k] = np.asarray(self.st.f[k]).copy()
        st.f["death_time"][codes == int(TissueState.VIABLE)] = np.nan
        return st

    def _coverage(self, target_u: np.ndarray, killed: np.ndarray) -> float | None:
        tot = float(target_u.sum())
        return float(target_u[killed].sum()) / tot if tot > 0 else None

    def run(self) -> None:
        sc, n = self.sc, len(self.sc.course.sessions)
        self.record()
        self.snapshot()
        for si, planned in enumerate(sc.course.sessions):
            day0 = planned.day * DAY
            self.heal_to(day0)
            components = self._visible()
            untreated = not self.runners
            model = self.base if untreated else self.tissue.model_for(self.hs, self.debris_R)
            if planned.target == "remaining_viable_tumor":
                session = place_session(planned, components, self.base.grid, self.tumor_centroid, self.base.tissue)
                targets = components[:planned.targeting.max_needles] if planned.modality not in THERMAL_MODALITIES \
                    else components[:1]
            else:
                session, targets = planned, components
            rec = {"index": si, "day": planned.day, "modality": planned.modality,
                   "targeted": planned.target == "remaining_viable_tumor"}
            if session is None:
                rec.update({"skipped": True, "reason": "no visible tumour left to target"})
                self.session_records.append(rec)
                continue
            target_mask = np.zeros(self.base.grid.shape, bool)
            for _, _, mask in targets:
                target_mask |= mask
            target_u = np.where(target_mask, self.hs["tumor"], 0.0)
            st = self._session_state(model)
            before = st.f["state"].copy()
            r = _runner(model, sc, session, si, st, self.progress, (si / n, (si + 1) / n))
            r.run()
            self.runners.append(r)
            self.sessions_run.append(session)
            self.st = st
            killed = _killed(before, st.f["state"])
            tumor_killed = float(self.hs["tumor"][killed].sum()) * self.dV * 1e6
            host_killed_ml = 0.0
            for code, mode in MODE_OF_CODE.items():
                sel = killed & (st.f["state"] == code)
                if sel.any():
                    host_killed_ml += self.hs.kill(sel, mode) * self.dV * 1e6
                    self.debris_R["reductive_fast"][sel] = st.f["R_fast"][sel]
                    self.debris_R["reductive_slow"][sel] = st.f["R_slow"][sel]
            self.hs.vascular *= np.clip(st.f["vessel_integrity"], 0.0, 1.0)
            self.hs.vascular[killed] = 0.0
            self.host_destroyed_ml += host_killed_ml
            cov = self._coverage(target_u, killed)
            rec.update({"applicators": applicator_summary(session), "killed_ml": float(killed.sum()) * self.dV * 1e6,
                        "tumor_killed_ml": tumor_killed, "normal_tissue_destroyed_ml": host_killed_ml,
                        "target_ml": float(target_u.sum()) * self.dV * 1e6, "coverage": cov})
            rec.update(self._predictability(session, si, untreated, target_u, killed, cov))
            self.session_records.append(rec)
            self.hs.t = max(self.hs.t, day0 + r.t_end)
            self.record()
            self.snapshot()
        self.heal_to(max(sc.course.follow_up, self.hs.t))

    def _predictability(self, session, si, untreated, target_u, killed, cov) -> dict:
        f = self.hs.frac
        if untreated:
            zone = killed | (target_u > 0)
            return {"reference_coverage": cov, "predictability": 1.0 if cov is not None else None,
                    "scar_fraction_of_target": 0.0 if zone.any() else None}
        if not self.sc.course.predictability:
            zone = killed | (target_u > 0)
            return {"reference_coverage": None, "predictability": None,
                    "scar_fraction_of_target": float(f[IDX["scar"]][zone].mean()) if zone.any() else None}
        from .simulation import SimState
        st = SimState.initial(self.base)
        before = st.f["state"].copy()
        r = _runner(self.base, self.sc, session, si, st)
        r.run()
        ref_killed = _killed(before, st.f["state"])
        ref_cov = self._coverage(target_u, ref_killed)
        zone = ref_killed | (target_u > 0)
        pred = cov / ref_cov if (cov is not None and ref_cov) else None
        return {"reference_coverage": ref_cov, "predictability": pred,
                "scar_fraction_of_target": float(f[IDX["scar"]][zone].mean()) if zone.any() else None}

    # ------------------------------------------------------------------ results
    def metrics(self) -> dict:
        rows = self.records
        by_day = {k: [r[k] for r in rows] for k in rows[0]} if rows else {}
        first = self.sc.course.sessions[0].day
        clear_day = None
        started = False
        for r in rows:
            if r["day"] > first + 1e-9 and self.runners:
                started = True
            if started and r["visible_components"] == 0:
                clear_day = r["day"]
                break
        # a later visible component means the tumour came back: "no visible tumour" must hold to the end
        if clear_day is not None and any(r["visible_components"] > 0 for r in rows if r["day"] > clear_day):
            clear_day_final = None
        else:
            clear_day_final = clear_day
        last = rows[-1] if rows else {}
        return {
            "follow_up_day": self.hs.t / DAY,
            "detection_size_mm": self.sc.course.detection_size * 1e3,
            "day_no_visible_tumor": clear_day,
            "no_visible_tumor_at_end": bool(rows) and last.get("visible_components", 1) == 0,
            "day_no_visible_tumor_to_end": clear_day_final,
            "viable_tumor_ml": last.get("viable_tumor_ml"),
            "normal_tissue_destroyed_ml": self.host_destroyed_ml,
            "normal_tissue_lost_ml": last.get("normal_tissue_lost_ml"),
            "scar_ml": last.get("scar_ml"),
            "debris_ml": last.get("debris_ml"),
            "scar_contraction_ml": last.get("scar_contraction_ml"),
            "tumor_crowded_out_ml": self.hs.crowded_out * 1e6,
            "by_day": by_day,
            "debris_by_mode_ml": {c.removeprefix("debris_"): by_day.get(f"{c}_ml", []) for c in COMPONENTS[DEBRIS]},
            "sessions": self.session_records,
            "healing_fraction_sum_error": self.healer.max_sum_error,
            "healing_wall_s": self.healing_wall,
            "healing_steps": self.healing_steps,
            "hypotheses": [h["name"] for h in healing_hypotheses(self.hp)],
        }

    def hypotheses(self) -> list[dict]:
        return healing_hypotheses(self.hp) if self.sc.course.healing else []
