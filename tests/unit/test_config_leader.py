"""The leader-election part of the operator's configuration (``HPO_LEADER_ELECTION`` and the Lease)."""

from __future__ import annotations

import pytest
from hpo_operator.config import ConfigError, LeaderElection, OperatorConfig

ON = {"HPO_LEADER_ELECTION": "true", "HPO_LEADER_ELECTION_LEASE": "hpo-system/hpo-operator-leader"}


def test_off_by_default_so_one_replica_needs_no_lease() -> None:
    assert OperatorConfig.from_env({}).leader_election is None
    assert OperatorConfig.from_env({"HPO_LEADER_ELECTION": "false"}).leader_election is None
    # The timings alone do not turn it on.
    assert OperatorConfig.from_env({"HPO_LEASE_DURATION": "30"}).leader_election is None


def test_on_with_a_lease_and_client_go_default_timings() -> None:
    c = OperatorConfig.from_env({**ON, "HPO_IDENTITY": "hpo-operator-7d9f-abcde"})
    assert c.leader_election == LeaderElection("hpo-system", "hpo-operator-leader", 15, 10.0, 2.0)
    assert c.identity == "hpo-operator-7d9f-abcde"
    quick = {
        **ON,
        "HPO_LEASE_DURATION": "6",
        "HPO_LEASE_RENEW_DEADLINE": "4",
        "HPO_LEASE_RETRY_PERIOD": "0.5",
    }
    assert OperatorConfig.from_env(quick).leader_election == LeaderElection(
        "hpo-system", "hpo-operator-leader", 6, 4.0, 0.5
    )


@pytest.mark.parametrize(
    ("env", "starts"),
    [
        ({"HPO_LEADER_ELECTION": "yes"}, "HPO_LEADER_ELECTION must be true or false"),
        ({"HPO_LEADER_ELECTION": "true"}, "HPO_LEADER_ELECTION_LEASE is required"),
        (
            {**ON, "HPO_LEADER_ELECTION_LEASE": "just-a-name"},
            "HPO_LEADER_ELECTION_LEASE must be namespace/name",
        ),
        ({**ON, "HPO_LEADER_ELECTION_LEASE": "Team_A/x"}, "HPO_LEADER_ELECTION_LEASE must be namespace/name"),
        ({**ON, "HPO_LEASE_DURATION": "7.5"}, "HPO_LEASE_DURATION must be an integer"),
        ({**ON, "HPO_LEASE_RETRY_PERIOD": "0"}, "HPO_LEASE_RETRY_PERIOD must be a positive"),
        ({**ON, "HPO_LEASE_RENEW_DEADLINE": "1"}, "HPO_LEASE_RENEW_DEADLINE (1) must be longer"),
        ({**ON, "HPO_LEASE_DURATION": "10"}, "HPO_LEASE_DURATION (10) must be longer"),
    ],
)
def test_a_bad_setting_is_named(env: dict[str, str], starts: str) -> None:
    with pytest.raises(ConfigError) as info:
        OperatorConfig.from_env(env)
    assert str(info.value).startswith(starts), str(info.value)
