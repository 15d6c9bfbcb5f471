"""Serving engines nose drives: fetched, built and run from the nose cache."""
