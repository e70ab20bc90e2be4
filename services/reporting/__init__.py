"""Turns the registry's events into the yearly report to the préfet (R241-17) and a
préfecture's table over its communes."""
