"""Device families; importing this package registers all built-in devices."""

from circuits.devices import bjt, diode, ferro, mosfet, passive, resistor_model, sources, switch, urc  # noqa: F401  (registration)
from circuits.devices import vdmos  # noqa: F401  (registration)
from circuits.devices.base import (Device, DeviceEval, device_for_letter, device_for_model_type,
                                   known_model_types, register)

__all__ = ["Device", "DeviceEval", "register", "device_for_letter", "device_for_model_type",
           "known_model_types"]
