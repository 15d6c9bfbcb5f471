"""Plots and tables from saved run files."""
