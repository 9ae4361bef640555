"""Inverse design: objectives from waveform measurements, gradient search through the surrogate (or the
differentiable reference solver), an Optuna TPE baseline on a real simulator, and verification of every
proposed design with the reference solver and ngspice.  Entry point: `optimize.run.run_optimize`."""
