"""Per-tensor metrics on values where the answer is known."""
from __future__ import annotations

import math

import numpy as np

from xputools.accuracy.metrics import MAX_SQNR_DB, error_histogram, mean, tensor_metrics, worst


def test_known_values():
    ref = np.array([3.0, 4.0], np.float32)  # norm 5
    m = tensor_metrics(ref + np.array([0.3, 0.4], np.float32), ref)
    assert math.isclose(m["sqnr_db"], 20 * math.log10(5 / 0.5), rel_tol=1e-5)
    assert math.isclose(m["cosine"], 1.0, rel_tol=1e-6) and math.isclose(m["max_abs"], 0.4, rel_tol=1e-5)
    assert tensor_metrics(ref, ref)["sqnr_db"] == MAX_SQNR_DB


def test_relative_error_has_an_absolute_floor_near_zero():
    ref = np.array([1.0, 1e-9], np.float32)
    x = np.array([1.0, 2e-9], np.float32)
    m = tensor_metrics(x, ref)
    assert m["max_rel"] < 1e-5  # not (2e-9 - 1e-9) / 1e-9 = 1


def test_non_finite_values_are_counted_not_averaged():
    ref = np.ones(4, np.float32)
    x = np.array([1.0, np.nan, np.inf, 1.0], np.float32)
    m = tensor_metrics(x, ref)
    assert (m["nan"], m["inf"], m["ref_nan"]) == (1, 1, 0)
    assert m["sqnr_db"] == MAX_SQNR_DB and m["beyond_tol"] == 0.5


def test_aggregation_and_histogram():
    a, b = {"sqnr_db": 10.0, "max_abs": 1.0}, {"sqnr_db": 20.0, "max_abs": 3.0}
    assert worst([a, b]) == {"sqnr_db": 10.0, "max_abs": 3.0}
    assert mean([a, b]) == {"sqnr_db": 15.0, "max_abs": 2.0}
    counts = error_histogram(np.array([1.0, 1.001, 2.0], np.float32), np.ones(3, np.float32))
    assert counts.sum() == 3 and counts[0] == 1


def test_huge_values_do_not_overflow():
    ref = np.array([1e30, -1e30], np.float32)
    m = tensor_metrics(ref * np.float32(1.001), ref)
    assert math.isclose(m["sqnr_db"], 60.0, abs_tol=0.1) and math.isclose(m["cosine"], 1.0)
