"""NeuroSPICE circuits: netlists, devices, MNA assembly, reference solver and the ngspice bridge."""

from circuits.circuit import Circuit, load_circuit
from circuits.errors import ConfigError, ConvergenceError, NetlistError, NeuroSpiceError, NgspiceError
from circuits.params import Param, ParamSpace

__all__ = ["Circuit", "load_circuit", "simulate", "simulate_batch", "simulate_tensor", "run_ngspice",
           "assemble", "Param", "ParamSpace", "NeuroSpiceError", "NetlistError", "ConfigError",
           "NgspiceError", "ConvergenceError"]


def __getattr__(name: str):
    # heavier modules are imported lazily so `import circuits` stays cheap
    if name in ("simulate", "simulate_batch", "simulate_tensor"):
        from circuits import simulation as _sim
        return getattr(_sim, name)
    if name == "assemble":
        from circuits.dae import assemble
        return assemble
    if name == "run_ngspice":
        from circuits.ngspice import run_ngspice
        return run_ngspice
    raise AttributeError(name)
