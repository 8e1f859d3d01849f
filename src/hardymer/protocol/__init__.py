"""Missing-modality conditions and folds."""
from .conditions import (INCOMPLETE_CONDITIONS, STANDARD_CONDITIONS, Condition,
                         all_fixed_conditions, parse_condition)
from .splits import Fold, make_folds

__all__ = ["Condition", "parse_condition", "all_fixed_conditions", "STANDARD_CONDITIONS",
           "INCOMPLETE_CONDITIONS", "Fold", "make_folds"]
