"""The per-voxel tissue-state map shared by every modality.

One int8 code per voxel. How a voxel died is kept (not collapsed into "dead") because later
processes (digestibility, matrix fixation, inflammation, healing) depend on it.
"""
from enum import IntEnum


class TissueState(IntEnum):
    VIABLE = 0
    OXIDATIVE_NECROSIS = 1   # reductive pool exhausted by ClO2 and its products (regulated necrosis completed)
    ISCHEMIC_NECROSIS = 2    # sustained loss of perfusion after vessel damage
    CHEMICAL_NECROSIS = 3    # ethanol (PEI) dehydration / protein denaturation
    COAGULATED = 4           # thermal coagulation (filled by the thermal work)
    FROZEN_DEAD = 5          # lethal freezing (filled by the cryo work)
    CLEARED = 6              # debris removed (healing work)
    REGENERATING = 7
    SCAR = 8
    NO_TISSUE = 9            # outside the body (air) or blood lumen


DEAD_STATES = (
    TissueState.OXIDATIVE_NECROSIS,
    TissueState.ISCHEMIC_NECROSIS,
    TissueState.CHEMICAL_NECROSIS,
    TissueState.COAGULATED,
    TissueState.FROZEN_DEAD,
)
