import pytest
from hypothesis import given
from hypothesis import strategies as st

from ortgate.stats import distribution


def test_distribution_of_known_values():
    d = distribution([1, 2, 3, 4, 5])
    assert d == {"count": 5, "mean": 3.0, "std": pytest.approx(1.5811, abs=1e-4), "min": 1.0, "q1": 2.0,
                 "median": 3.0, "q3": 4.0, "max": 5.0}
    assert distribution([7.0])["std"] == 0.0
    with pytest.raises(ValueError):
        distribution([])


@given(st.lists(st.floats(0.1, 1e4), min_size=1, max_size=50))
def test_order_statistics_are_ordered(values):
    d = distribution(values)
    assert d["min"] <= d["q1"] <= d["median"] <= d["q3"] <= d["max"]
    assert d["min"] - 1e-9 <= d["mean"] <= d["max"] + 1e-9 and d["std"] >= 0
