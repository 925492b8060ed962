import io

import orjson

from kubefence.common.logs import DECISION_KEYS, configure_logging, decision_fields, get_logger


def test_logs_logger_created_before_configuration_writes_json():
    log = get_logger("kubefence.test")
    raw = io.BytesIO()
    configure_logging("info", stream=io.TextIOWrapper(raw))
    log.info("started", port=8443)
    line = orjson.loads(raw.getvalue().splitlines()[-1])
    assert line["logger"] == "kubefence.test"
    assert line["event"] == "started"
    assert line["port"] == 8443
    assert line["level"] == "info"


def test_logs_decision_fields_fill_every_key():
    fields = decision_fields(decision="skip", reason="not-opted-in")
    assert tuple(fields) == DECISION_KEYS
    assert fields["pod"] == ""


def test_logs_decision_fields_reject_unknown_key():
    import pytest

    with pytest.raises(TypeError):
        decision_fields(decision="skip", podname="x")
    with pytest.raises(ValueError):
        decision_fields(decision="allow")
