"""Entropy statistics, calibration and the NOSE greedy search."""

from nose.data.calibration import CalibrationSet, build_calibration
from nose.search.entropy import MomentStats, entropy_from_moments
from nose.search.config import SearchConfig
from nose.search.criteria import CRITERIA, Criterion
from nose.search.record import read_record
from nose.search.run import run_search

__all__ = ["CalibrationSet", "build_calibration", "MomentStats", "entropy_from_moments", "SearchConfig",
           "CRITERIA", "Criterion", "run_search", "read_record"]
