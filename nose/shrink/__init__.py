"""Annealed healing, weight folding and export to the serving format (DESIGN.md)."""
