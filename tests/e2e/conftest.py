"""Fixtures for the end-to-end tests: the pinned Helm binary (shared with the chart tests)."""

from tests.chart.conftest import helm

__all__ = ["helm"]
