"""Preset YAML files (paper, lite, and tiny: lite shrunk for tests and smoke runs)."""
