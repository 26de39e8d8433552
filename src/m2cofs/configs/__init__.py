"""Preset YAML files (paper, lite)."""
