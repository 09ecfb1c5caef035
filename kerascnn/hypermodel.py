"""`kerascnn.hypermodel.CNNHyperModel`, kept importable from here.

The hypermodel is defined in `kerascnn.tuning.hypermodel`; the search space it
declares (`SearchSpace`, `DEFAULT_SPACE`, ...) in the pure module
`kerascnn.search_space`.
"""

from kerascnn.search_space import (DEFAULT_SPACE, HYPERPARAMETERS, Param, SearchSpace,
                                   parse_param, scale_augmentation, values_key)
from kerascnn.tuning.hypermodel import CNNHyperModel

__all__ = ["CNNHyperModel", "DEFAULT_SPACE", "HYPERPARAMETERS", "Param", "SearchSpace",
           "parse_param", "scale_augmentation", "values_key"]
