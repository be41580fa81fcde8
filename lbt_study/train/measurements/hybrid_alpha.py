"""The learnt mix of hybrid norm layers at the end (column ``hybrid_alpha``): the mean of
alpha = sigmoid(theta) over the model's ``HybridNorm`` layers (1: batch statistics, 0:
layer statistics); NaN for a model without them."""

from __future__ import annotations

import math

from torch import nn

from lbt_study.train.measurements.contract import Measurement, Row
from lbt_study.train.norms import HybridNorm, hybrid_alpha
from lbt_study.train.setup import Parts


class HybridAlpha(Measurement):
    """Reads alpha from the final model (SWA's average under SWA)."""

    @classmethod
    def build(cls, parts: Parts) -> HybridAlpha | None:
        if not any(isinstance(m, HybridNorm) for m in parts.model.modules()):
            return None
        return cls()

    @classmethod
    def final_when_off(cls) -> Row:
        return {"hybrid_alpha": math.nan}

    def final(self, model: nn.Module) -> Row:
        return {"hybrid_alpha": hybrid_alpha(model)}
