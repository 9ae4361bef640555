"""PINN surrogates of circuits: `load_surrogate(path)` gives a trained one (see surrogate.api)."""

from surrogate.api import Surrogate, SurrogateError, load_surrogate, save_surrogate

__all__ = ["Surrogate", "SurrogateError", "load_surrogate", "save_surrogate"]
