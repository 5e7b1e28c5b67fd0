"""Simulator teachers: no learned weights; the labels come from numerically solving an equation.

Each is a callable class configured in __init__ and called on a numpy batch of parameters, with a `version`
string recorded in fingerprints (bump it when the numerics change)."""

from teachers.simulators.burgers import Burgers

__all__ = ["Burgers"]
