"""`server.workers: auto` counts the CPUs a container is given, not the host's cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from extauthz_server.config.cpus import available_cpus, cpu_quota
from extauthz_server.config.model import parse_config
from tests.unit.test_config import PROVIDER, ROLES, config_error

ROUTES = "routes:\n  - {name: a, path_prefix: /a}\n"
AFFINITY = len(os.sched_getaffinity(0))


def cgroup(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return tmp_path


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "200000 100000"}, 2.0),
        ({"cpu.max": "150000 100000"}, 1.5),
        ({"cpu.max": "max 100000"}, None),
        ({"cpu/cpu.cfs_quota_us": "50000", "cpu/cpu.cfs_period_us": "100000"}, 0.5),
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),
        ({}, None),
        ({"cpu.max": "garbage"}, None),
    ],
    ids=["v2-two", "v2-one-and-a-half", "v2-unlimited", "v1-half", "v1-unlimited", "none", "bad"],
)
def test_the_quota_is_read_from_cgroup_v2_or_v1(
    tmp_path: Path, files: dict[str, str], quota: float | None
) -> None:
    assert cpu_quota(cgroup(tmp_path, files)) == quota


def test_a_quota_caps_the_cpus_and_rounds_up(tmp_path: Path) -> None:
    half = cgroup(tmp_path / "half", {"cpu.max": "50000 100000"})
    assert available_cpus(half) == 1
    one_and_a_half = cgroup(tmp_path / "more", {"cpu.max": "150000 100000"})
    assert available_cpus(one_and_a_half) == min(2, AFFINITY)
    unlimited = cgroup(tmp_path / "free", {"cpu.max": "max 100000"})
    assert available_cpus(unlimited) == AFFINITY


def test_auto_in_the_configuration_is_a_number_of_workers() -> None:
    text = PROVIDER + ROLES + ROUTES + "server: {workers: auto}\n"
    assert parse_config(text, {}).server.workers == available_cpus()


def test_a_word_other_than_auto_names_the_key() -> None:
    error = config_error(PROVIDER + ROLES + ROUTES + "server: {workers: all}\n")
    assert error.key_path == "server.workers"
    assert "auto" in error.problem
