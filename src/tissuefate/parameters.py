"""Model parameters that are not tissue properties (solutes, procedures), with units and sources.

Same conventions as the tissue library: SI values, a source key into ../shared/science/ or a
``hypothesis`` flag with a plausible range (SI). Results list the hypotheses they depend on.
"""
from __future__ import annotations

from .tissue import Param


def _p(name, value, unit, source, hypothesis=False, range=None):
    return Param(name, float(value), unit, f"{value} {unit}", source, hypothesis, range)


SOLUTE_DIFFUSIVITY = {
    # free-water diffusivities at 37 degC; the tissue hindrance factor is a tissue property
    "clo2": _p("D_clo2", 2.5e-9, "m^2/s", "parameters.md A2 (Wilke-Chang estimate at 37 degC [D]; 1.5e-9 used by Noszticzius [R])",
               True, (1.5e-9, 2.5e-9)),
    "chlorite": _p("D_chlorite", 1.4e-9, "m^2/s", "hypothesis (small anion, ~ chloride-like)", True, (1.0e-9, 2.0e-9)),
    "hocl": _p("D_hocl", 1.5e-9, "m^2/s", "hypothesis (small neutral molecule)", True, (1.0e-9, 2.0e-9)),
    "ethanol": _p("D_ethanol", 1.2e-9, "m^2/s", "injection.md §5 (ethanol in water ~1.2e-9 at 25 degC [R]; tissue 5e-10 [V-code])"),
    "injectate": _p("D_injectate", 2.3e-9, "m^2/s", "hypothesis (self-diffusion of water, mixing of injected and interstitial water)",
                    True, (1.0e-9, 3.0e-9)),
}

PROCEDURE = {
    "hemostasis_time": _p("hemostasis_time", 600.0, "s", "hypothesis: temporary (not sealing) hemostasis of the needle track",
                          True, (120.0, 1800.0)),
    "perfusion_territory": _p("perfusion_territory", 1.0e-3, "m",
                              "hypothesis: perfusion of a voxel follows the vessel integrity within this distance "
                              "(feeding vessels), which lets vessel damage cause ischemia beyond the oxidised zone",
                              True, (0.0, 3.0e-3)),
    "track_seal_factor": _p("track_seal_factor", 1.0, "1", "injection.md §6.4 (sigma_s = 1 G, range 0-3 G)", True, (0.0, 3.0)),
    "chlorite_washout_partition": _p("washout_partition", 1.0, "1",
                                     "hypothesis: perfusion removes dissolved species at their interstitial concentration",
                                     True, (0.3, 1.0)),
}


def hypotheses_of(params) -> list[dict]:
    rows = []
    for p in params:
        if p.hypothesis:
            rows.append({"name": p.name, "value": p.value, "unit": p.unit, "range": list(p.range) if p.range else None,
                         "source": p.source})
    return rows
