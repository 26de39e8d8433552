"""Fusion and segmentation metrics."""
