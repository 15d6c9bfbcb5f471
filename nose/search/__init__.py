"""Entropy statistics, calibration and the NOSE greedy search."""

from nose.search.calibration import CalibrationSet, build_calibration
from nose.search.entropy import MomentStats, entropy_from_moments
from nose.search.greedy import SearchConfig, nose_search
from nose.search.record import read_record

__all__ = ["CalibrationSet", "build_calibration", "MomentStats", "entropy_from_moments", "SearchConfig",
           "nose_search", "read_record"]
