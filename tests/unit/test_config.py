"""Operator configuration from the environment, and the redaction that keeps storage URLs out of output."""

from __future__ import annotations

import logging

import pytest
from hpo_operator.config import DEFAULT_LIVENESS_ENDPOINT, ConfigError, OperatorConfig
from hpo_operator.shell import redact


def test_defaults() -> None:
    c = OperatorConfig.from_env({})
    assert c == OperatorConfig()
    assert (c.default_storage_url, c.trial_image, c.watch_namespaces) == (None, None, ())
    assert (c.metrics_port, c.reconcile_interval, c.liveness_endpoint) == (
        8000,
        5.0,
        DEFAULT_LIVENESS_ENDPOINT,
    )


def test_every_variable_is_read() -> None:
    c = OperatorConfig.from_env(
        {
            "HPO_DEFAULT_STORAGE_URL": "postgresql://u:pw@db/hpo",
            "HPO_TRIAL_IMAGE": "ghcr.io/hpo-dev/hpo-trial:0.1.0",
            "HPO_WATCH_NAMESPACES": "team-a, team-b,,",
            "HPO_METRICS_PORT": "0",
            "HPO_RECONCILE_INTERVAL": "2.5",
            "HPO_LIVENESS_ENDPOINT": "",
        }
    )
    assert c.default_storage_url == "postgresql://u:pw@db/hpo"
    assert c.trial_image == "ghcr.io/hpo-dev/hpo-trial:0.1.0"
    assert c.watch_namespaces == ("team-a", "team-b")
    assert (c.metrics_port, c.reconcile_interval, c.liveness_endpoint) == (0, 2.5, None)
    assert "pw" not in repr(c)  # the URL is not in the config's repr


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"HPO_METRICS_PORT": "eighty"}, "HPO_METRICS_PORT"),
        ({"HPO_METRICS_PORT": "70000"}, "HPO_METRICS_PORT"),
        ({"HPO_RECONCILE_INTERVAL": "0"}, "HPO_RECONCILE_INTERVAL"),
        ({"HPO_RECONCILE_INTERVAL": "soon"}, "HPO_RECONCILE_INTERVAL"),
        ({"HPO_WATCH_NAMESPACES": "Team_A"}, "HPO_WATCH_NAMESPACES"),
        ({"HPO_LIVENESS_ENDPOINT": "0.0.0.0:8080"}, "HPO_LIVENESS_ENDPOINT"),
        ({"HPO_DEFAULT_STORAGE_URL": "db.example.com"}, "HPO_DEFAULT_STORAGE_URL"),
        ({"HPO_REPORT_PORT": "8090"}, "HPO_REPORT_URL"),
        ({"HPO_REPORT_URL": "http://op:8090"}, "HPO_REPORT_URL"),
        ({"HPO_REPORT_PORT": "8090", "HPO_REPORT_URL": "op:8090"}, "HPO_REPORT_URL"),
        ({"HPO_REPORT_PORT": "-1", "HPO_REPORT_URL": "http://op"}, "HPO_REPORT_PORT"),
    ],
)
def test_a_bad_variable_is_named(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        OperatorConfig.from_env(env)
    assert str(info.value).startswith(variable)
    assert "db.example.com" not in str(info.value)


def test_registered_urls_and_passwords_are_redacted_everywhere(caplog: pytest.LogCaptureFixture) -> None:
    url = "postgresql+psycopg2://hpo:Sup3r-Secret@db.example:5432/optuna"
    redact.register(url)
    assert redact.redact(f"cannot connect to {url}") == f"cannot connect to {redact.URL_MASK}"
    assert (
        redact.redact("password authentication failed: Sup3r-Secret") == "password authentication failed: ***"
    )
    nested = {"a": [f"x {url}", {"b": "Sup3r-Secret"}], "n": 1}
    assert redact.redact(nested) == {"a": [f"x {redact.URL_MASK}", {"b": "***"}], "n": 1}

    redact.install_log_redaction()
    logger = logging.getLogger("hpo_operator.test")
    with caplog.at_level(logging.INFO, logger="hpo_operator.test"):
        logger.info("opening %s", url)
        try:
            raise RuntimeError(f"connection to {url} refused")
        except RuntimeError:
            logger.exception("storage failed")
    text = caplog.text
    assert "Sup3r-Secret" not in text and url not in text
    assert f"opening {redact.URL_MASK}" in text and "connection to <storage-url> refused" in text


def test_the_default_device_class_of_gpu_claims() -> None:
    assert OperatorConfig.from_env({}).gpu_device_class == "gpu.nvidia.com"
    config = OperatorConfig.from_env({"HPO_GPU_DEVICE_CLASS": "mig-1g.10gb.nvidia.com"})
    assert config.gpu_device_class == "mig-1g.10gb.nvidia.com"
    with pytest.raises(ConfigError, match="HPO_GPU_DEVICE_CLASS"):
        OperatorConfig.from_env({"HPO_GPU_DEVICE_CLASS": "Not A Class"})


def test_the_report_endpoint_is_off_unless_configured() -> None:
    assert OperatorConfig.from_env({}).report_port == 0
    config = OperatorConfig.from_env({"HPO_REPORT_PORT": "8090", "HPO_REPORT_URL": "http://op.hpo:8090"})
    assert (config.report_port, config.report_url, config.report_host) == (
        8090,
        "http://op.hpo:8090",
        "",  # every address
    )
