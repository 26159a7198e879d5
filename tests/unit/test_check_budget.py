"""How much of Envoy's deadline a check may spend before it must answer."""

import pytest

from extauthz_server.edges.grpc_service import check_budget


def test_without_a_deadline_the_provider_timeout_is_the_budget() -> None:
    assert check_budget(None, 2.0) == 2.0


def test_the_provider_timeout_bounds_a_generous_deadline() -> None:
    assert check_budget(10.0, 2.0) == 2.0


@pytest.mark.parametrize(
    ("remaining_s", "expected_budget_s"),
    [
        (0.05, 0.04),  # margin never below 10 ms
        (0.3, 0.27),  # a tenth of the deadline
        (1.5, 1.4),  # margin never above 100 ms
    ],
)
def test_a_margin_is_kept_back_to_answer_before_envoy_gives_up(
    remaining_s: float, expected_budget_s: float
) -> None:
    assert check_budget(remaining_s, 5.0) == pytest.approx(expected_budget_s)


@pytest.mark.parametrize("remaining_s", [0.005, 0.0, -1.0])
def test_an_exhausted_deadline_still_leaves_a_positive_budget(remaining_s: float) -> None:
    assert 0 < check_budget(remaining_s, 2.0) <= 0.001
