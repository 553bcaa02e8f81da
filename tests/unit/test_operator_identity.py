"""The operator runs as a UID with no passwd entry (the image's 65532): nothing may look the user up.

kopf names itself after ``getpass.getuser()`` unless given an identity; in the image that lookup
raises ``KeyError: 'getpwuid(): uid not found: 65532'`` (found by the node tier, on a real kubelet).
"""

from __future__ import annotations

import getpass
import logging
import pwd
from typing import Any

import kopf
import pytest

from webrelease.operator import main
from webrelease.operator.settings import OperatorSettings


def test_kopf_gets_the_pod_name_as_its_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(name, raising=False)

    def no_entry(uid: int) -> Any:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    with pytest.raises(KeyError):
        getpass.getuser()  # what kopf would call without an identity
    monkeypatch.setenv("POD_NAME", "wr-webrelease-7f9c6d-x2x7q")
    monkeypatch.setenv("WEBRELEASE_LEADER_ELECTION", "false")
    monkeypatch.setenv("WEBRELEASE_METRICS_PORT", "0")
    seen: dict[str, Any] = {}
    monkeypatch.setattr(kopf, "run", lambda **kwargs: seen.update(kwargs))
    try:
        assert main.run_operator(main.OperatorOptions(log_format="plain")) == 0
    finally:
        logging.getLogger().handlers.clear()
    assert seen["identity"] == "wr-webrelease-7f9c6d-x2x7q"
    assert main.own_identity(OperatorSettings.from_env({"POD_NAME": "p-1"})) == "p-1"
