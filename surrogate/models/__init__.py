"""The surrogate model variants; each is a `Surrogate` (see `surrogate.models.base`)."""

from surrogate.models.base import Surrogate, SurrogateError, design_runs
from surrogate.models.limit_cycle import CYCLE_ALLOWANCE, LimitCycleSurrogate
from surrogate.models.windowed import PlainSurrogate, WindowedSurrogate

#: surrogate-file `kind` -> class
MODEL_KINDS = {cls.kind: cls for cls in (PlainSurrogate, WindowedSurrogate, LimitCycleSurrogate)}

__all__ = ["CYCLE_ALLOWANCE", "LimitCycleSurrogate", "MODEL_KINDS", "PlainSurrogate", "Surrogate",
           "SurrogateError", "WindowedSurrogate", "design_runs"]
