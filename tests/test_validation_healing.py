"""The healing validation table (docs/validation_healing.md), re-run on 2 mm voxels in CI.

Every case uses the default parameter set. The test checks that each case yields a finite remaining fraction
in [0, 1.05] (contraction can only shrink a zone; a little growth is granulation overfilling at the rim), that
the cases recorded as within tolerance in the documented 1 mm table stay within it, and that the documented
failures are still failures: if a model change makes one of them pass, the table in docs must be updated.
"""
import math

import pytest

from tissuefate.validation_healing import CASES, markdown_table, remaining_fraction, run_case

EXPECTED_WITHIN = {"f5_rfa_pig_liver_3wk", "f6_infarct_4mo", "f6_infarct_14mo"}
EXPECTED_FAIL = {"f5_ire_pig_liver_3wk", "f4_rfa_breast_fibroadenoma_1mo", "f4_rfa_breast_fibroadenoma_3mo"}
FAST = [c for c in CASES if c.day <= 120 and c.compare_diameter_mm is None]


@pytest.mark.parametrize("case", FAST, ids=[c.id for c in FAST])
def test_healing_validation_case(case):
    row = run_case(case, voxel_mm=2.0)
    print(markdown_table([row]))
    assert math.isfinite(row["simulated"])
    assert 0.0 <= row["simulated"] <= 1.05
    if case.id in EXPECTED_WITHIN:
        assert row["within_tolerance"], row
    if case.id in EXPECTED_FAIL:
        assert not row["within_tolerance"], row


def test_zone_volume_is_conserved_without_healing_rates():
    """With every healing rate zero the zone volume stays exactly what was killed."""
    zero = {k: "0 1/d" for k in ("phagocyte_recruitment_rate", "clearance_rate", "organisation_rate",
                                  "granulation_rate", "collagen_rate", "angiogenesis_rate")}
    (left,) = remaining_fraction("coagulated", "liver", 10.0, [10.0], voxel_mm=2.0, overrides=zero)
    assert abs(left - 1.0) < 1e-12
