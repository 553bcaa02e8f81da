"""Leader election without a cluster: the decision (a pure function of the Lease, the time, the
identity and when this replica first saw the Lease), the Lease specs written, and the settings.
The API side runs against a real apiserver in tests/cluster/test_leader_election.py."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from webrelease.operator.leader import (
    ElectionConfig,
    LeaseAction,
    LeaseRecord,
    decide_lease,
    format_time,
    holding_spec,
    new_lease,
    parse_time,
    released_spec,
    with_spec,
)
from webrelease.operator.main import election_config
from webrelease.operator.metrics import OperatorMetrics
from webrelease.operator.settings import OperatorSettings, SettingsError

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def lease(
    holder: str | None = "a",
    *,
    renewed: datetime | None = T0,
    duration: int = 15,
    transitions: int = 0,
    rv: str = "100",
) -> LeaseRecord:
    spec: dict[str, Any] = {"leaseDurationSeconds": duration, "leaseTransitions": transitions}
    if holder is not None:
        spec["holderIdentity"] = holder
    if renewed is not None:
        spec["renewTime"] = format_time(renewed)
        spec["acquireTime"] = format_time(renewed - timedelta(minutes=5))
    return LeaseRecord.from_k8s({"metadata": {"resourceVersion": rv}, "spec": spec})


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- decide_lease ------------------------------------------------------------------------------------------


def test_no_lease_is_created() -> None:
    assert decide_lease(None, identity="b", now=T0).action is LeaseAction.CREATE


def test_the_holder_renews_even_after_expiry() -> None:
    # a restarted replica with the same identity (a pod's name): the old process is gone
    assert decide_lease(lease("a"), identity="a", now=at(1)).action is LeaseAction.RENEW
    assert decide_lease(lease("a"), identity="a", now=at(3600)).action is LeaseAction.RENEW


@pytest.mark.parametrize("holder", [None, ""])
def test_a_released_lease_is_taken_at_once(holder: str | None) -> None:
    decision = decide_lease(lease(holder), identity="b", now=at(0.1), observed_at=at(0.1))
    assert decision.action is LeaseAction.ACQUIRE


def test_a_valid_lease_of_another_is_waited_for_until_it_expires() -> None:
    held = lease("a", renewed=T0)
    waiting = decide_lease(held, identity="b", now=at(14.999), observed_at=T0)
    assert waiting.action is LeaseAction.WAIT
    assert waiting.expires == at(15)
    assert decide_lease(held, identity="b", now=at(15), observed_at=T0).action is LeaseAction.ACQUIRE
    assert decide_lease(held, identity="b", now=at(40), observed_at=T0).action is LeaseAction.ACQUIRE


def test_renew_time_plus_duration_against_now_when_never_seen_before() -> None:
    held = lease("a", renewed=T0, duration=15)
    assert decide_lease(held, identity="b", now=at(10)).action is LeaseAction.WAIT
    assert decide_lease(held, identity="b", now=at(16)).action is LeaseAction.ACQUIRE


def test_a_holder_whose_clock_runs_behind_is_not_taken_over_early() -> None:
    # renewTime says 100 s ago (the holder's clock is behind), but this replica saw that renewal
    # only 5 s ago: a full duration from then
    held = lease("a", renewed=at(-100))
    decision = decide_lease(held, identity="b", now=at(5), observed_at=T0)
    assert decision.action is LeaseAction.WAIT
    assert decision.expires == at(15)
    assert decide_lease(held, identity="b", now=at(15), observed_at=T0).action is LeaseAction.ACQUIRE


def test_a_lease_renewed_after_it_was_first_seen_counts_from_the_renewal() -> None:
    held = lease("a", renewed=at(10))
    assert decide_lease(held, identity="b", now=at(20), observed_at=T0).action is LeaseAction.WAIT
    assert decide_lease(held, identity="b", now=at(25), observed_at=T0).action is LeaseAction.ACQUIRE


def test_a_held_lease_never_renewed_gets_a_full_duration() -> None:
    held = lease("a", renewed=None)
    assert decide_lease(held, identity="b", now=at(0)).action is LeaseAction.WAIT
    assert decide_lease(held, identity="b", now=at(14), observed_at=T0).action is LeaseAction.WAIT
    assert decide_lease(held, identity="b", now=at(15), observed_at=T0).action is LeaseAction.ACQUIRE


# -- what is written ------------------------------------------------------------------------------


def test_a_created_lease_holds_the_identity_with_no_transition() -> None:
    body = new_lease("ops", "webrelease-operator", holding_spec("b", T0, 15, None))
    assert body["apiVersion"] == "coordination.k8s.io/v1" and body["kind"] == "Lease"
    assert body["metadata"]["namespace"] == "ops" and body["metadata"]["name"] == "webrelease-operator"
    assert body["spec"] == {
        "holderIdentity": "b",
        "leaseDurationSeconds": 15,
        "acquireTime": "2026-03-01T12:00:00.000000Z",
        "renewTime": "2026-03-01T12:00:00.000000Z",
        "leaseTransitions": 0,
    }
    written = LeaseRecord.from_k8s(body)
    assert decide_lease(written, identity="b", now=at(1)).action is LeaseAction.RENEW
    assert decide_lease(written, identity="c", now=at(1), observed_at=at(1)).action is LeaseAction.WAIT


def test_taking_over_counts_a_transition_and_renewing_keeps_the_acquire_time() -> None:
    taken = holding_spec("b", at(20), 15, lease("a", transitions=4))
    assert taken["holderIdentity"] == "b"
    assert taken["leaseTransitions"] == 5
    assert taken["acquireTime"] == taken["renewTime"] == format_time(at(20))
    renewed = holding_spec("b", at(25), 15, LeaseRecord.from_k8s({"metadata": {}, "spec": taken}))
    assert renewed["leaseTransitions"] == 5
    assert renewed["acquireTime"] == format_time(at(20))
    assert renewed["renewTime"] == format_time(at(25))


def test_a_released_lease_has_no_holder_and_keeps_its_history() -> None:
    spec = released_spec(at(30), lease("a", transitions=3))
    assert "holderIdentity" not in spec
    assert spec["leaseTransitions"] == 3
    released = LeaseRecord.from_k8s({"metadata": {"resourceVersion": "7"}, "spec": spec})
    assert released.holder == ""
    assert decide_lease(released, identity="b", now=at(30), observed_at=at(30)).action is LeaseAction.ACQUIRE


def test_a_replacement_keeps_the_metadata_it_read() -> None:
    read = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "l", "namespace": "ops", "resourceVersion": "41", "labels": {"team": "web"}},
        "spec": {"holderIdentity": "a"},
    }
    out = with_spec(read, {"holderIdentity": "b"})
    assert out["metadata"] == read["metadata"]  # the resourceVersion makes the write conditional
    assert out["spec"] == {"holderIdentity": "b"}
    assert read["spec"] == {"holderIdentity": "a"}, "the read copy is left alone"


def test_micro_times_round_trip() -> None:
    moment = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert format_time(moment) == "2026-03-01T12:00:00.123456Z"
    assert parse_time(format_time(moment)) == moment
    assert parse_time("2026-03-01T12:00:00Z") == datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert parse_time("yesterday") is None
    assert parse_time(None) is None


def test_timings_must_let_the_leader_give_up_before_a_standby_takes_over() -> None:
    ElectionConfig(
        "ops", "l", "a", lease_duration_seconds=15, renew_deadline_seconds=10, renew_period_seconds=5
    )
    for renew, deadline, duration in ((5, 15, 15), (10, 10, 15), (0, 1, 2)):
        with pytest.raises(ValueError, match="renew deadline"):
            ElectionConfig("ops", "l", "a", duration, deadline, renew)


# -- settings ---------------------------------------------------------------------------------------


def test_settings_default_to_leader_election_on() -> None:
    s = OperatorSettings.from_env({})
    assert s.leader_election is True
    assert s.leader_election_lease_name == "webrelease-operator"
    assert (
        s.leader_election_lease_duration_seconds,
        s.leader_election_renew_deadline_seconds,
        s.leader_election_renew_period_seconds,
    ) == (15, 10.0, 5.0)
    assert s.pod_namespace is None and s.pod_name is None


def test_settings_read_the_downward_api_and_the_election_variables() -> None:
    s = OperatorSettings.from_env(
        {
            "POD_NAMESPACE": "webrelease-system",
            "POD_NAME": "webrelease-7d9f-abcde",
            "WEBRELEASE_LEADER_ELECTION": "false",
            "WEBRELEASE_LEADER_ELECTION_LEASE_NAME": "wr-webrelease",
            "WEBRELEASE_LEADER_ELECTION_LEASE_DURATION_SECONDS": "30",
            "WEBRELEASE_LEADER_ELECTION_RENEW_DEADLINE_SECONDS": "20",
            "WEBRELEASE_LEADER_ELECTION_RENEW_PERIOD_SECONDS": "2.5",
            "WEBRELEASE_POD_NAME": "not-this-one",
        }
    )
    assert s.leader_election is False
    assert (s.pod_namespace, s.pod_name) == ("webrelease-system", "webrelease-7d9f-abcde")
    assert s.leader_election_lease_name == "wr-webrelease"
    assert (s.leader_election_lease_duration_seconds, s.leader_election_renew_period_seconds) == (30, 2.5)


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"WEBRELEASE_LEADER_ELECTION": "sometimes"}, "WEBRELEASE_LEADER_ELECTION:"),
        ({"WEBRELEASE_LEADER_ELECTION_LEASE_NAME": "Not A Name"}, "WEBRELEASE_LEADER_ELECTION_LEASE_NAME:"),
        ({"POD_NAMESPACE": "Kube_System"}, "POD_NAMESPACE:"),
        (
            {"WEBRELEASE_LEADER_ELECTION_LEASE_DURATION_SECONDS": "1.5"},
            "WEBRELEASE_LEADER_ELECTION_LEASE_DURATION_SECONDS:",
        ),
        (
            {"WEBRELEASE_LEADER_ELECTION_RENEW_PERIOD_SECONDS": "12"},
            "WEBRELEASE_LEADER_ELECTION_RENEW_PERIOD_SECONDS (12) < "
            "WEBRELEASE_LEADER_ELECTION_RENEW_DEADLINE_SECONDS (10) < "
            "WEBRELEASE_LEADER_ELECTION_LEASE_DURATION_SECONDS (15) does not hold",
        ),
        (
            {"WEBRELEASE_LEADER_ELECTION_LEASE_DURATION_SECONDS": "10"},
            "a leader must give up before a standby may take its Lease over",
        ),
    ],
)
def test_bad_election_settings_are_refused_naming_the_variable(env: dict[str, str], complaint: str) -> None:
    with pytest.raises(SettingsError) as caught:
        OperatorSettings.from_env(env)
    assert complaint in str(caught.value)


def test_the_election_config_prefers_explicit_settings_then_the_pod() -> None:
    pod = {"POD_NAMESPACE": "webrelease-system", "POD_NAME": "webrelease-5c9d8-x2x7q"}
    cfg = election_config(OperatorSettings.from_env(pod))
    assert (cfg.namespace, cfg.name, cfg.identity) == (
        "webrelease-system",
        "webrelease-operator",
        "webrelease-5c9d8-x2x7q",
    )
    explicit = {
        **pod,
        "WEBRELEASE_LEADER_ELECTION_NAMESPACE": "ops",
        "WEBRELEASE_LEADER_ELECTION_IDENTITY": "replica-1",
    }
    cfg = election_config(OperatorSettings.from_env(explicit))
    assert (cfg.namespace, cfg.identity) == ("ops", "replica-1")
    local = election_config(OperatorSettings.from_env({"WEBRELEASE_LEADER_ELECTION_NAMESPACE": "dev"}))
    assert local.identity == f"{socket.gethostname()}-{os.getpid()}", "a process on a laptop"


def test_the_leader_gauge_says_which_replica_acts() -> None:
    metrics = OperatorMetrics(process_collectors=False)

    def gauge() -> float:
        (value,) = [
            s.value
            for family in text_string_to_metric_families(metrics.render().decode())
            for s in family.samples
            if s.name == "webrelease_leader"
        ]
        return float(value)

    assert gauge() == 0.0, "a replica starts as a standby"
    metrics.set_leader(True)
    assert gauge() == 1.0
    metrics.set_leader(False)
    assert gauge() == 0.0
