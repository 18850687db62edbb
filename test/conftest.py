"""Integration-test harness: node executables as real processes, talking over
real ROS 2 topics on loopback with an rclpy test node (helpers in
scripts/va_harness.py, shared with the demo and benchmarks).

Each test gets its own ROS_DOMAIN_ID, so tests (and parallel runs) never hear
each other. Nothing sleeps-and-hopes: helpers wait for publisher/subscriber
matching and for messages, with timeouts.
"""
import sys
from pathlib import Path

import pytest

# the tests import their helpers from scripts/va_harness.py
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from va_harness import Harness, pick_domain  # noqa: E402


@pytest.fixture
def ros(tmp_path):
    h = Harness(pick_domain(), tmp_path)
    yield h
    h.close()

