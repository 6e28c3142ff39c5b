"""Every line a process writes is one JSON object (telemetry.py's formatter and set-up), and
its metrics page is the exposition format."""

from __future__ import annotations

import gc
import io
import logging

import orjson
from prometheus_client import Counter

from ordertrack import telemetry


def formatted(record_args: dict, exc: bool = False) -> dict:
    logger = logging.getLogger("ordertrack.test_telemetry")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(telemetry.JsonFormatter())
    logger.addHandler(handler)
    logger.propagate = False
    try:
        if exc:
            try:
                raise ValueError("boom")
            except ValueError:
                logger.exception("failed %s", "here", **record_args)
        else:
            logger.warning("hello %s", "world", **record_args)
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1  # one line, even with a traceback in it
    return orjson.loads(lines[0])


def test_a_line_is_one_json_object_with_its_fields():
    line = formatted({"extra": {"fields": {"order_id": "ord_1", "count": 3, "odd": {1, 2}}}})
    assert line["level"] == "warning" and line["logger"] == "ordertrack.test_telemetry"
    assert line["msg"] == "hello world"
    assert line["order_id"] == "ord_1" and line["count"] == 3
    assert isinstance(line["odd"], str)  # what JSON cannot hold is written as text
    assert line["ts"].endswith("Z") and len(line["ts"]) == len("2025-10-03T14:00:00.000Z")


def test_an_exception_is_a_field_of_the_same_line():
    line = formatted({}, exc=True)
    assert line["level"] == "error" and line["msg"] == "failed here"
    assert "ValueError: boom" in line["exc"]


def test_setup_logging_writes_json_to_stdout_and_quiets_chatty_libraries(capsys):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        telemetry.setup_logging("debug")
        logging.getLogger("ordertrack.x").info("up", extra={"fields": {"port": 1}})
        logging.getLogger("picows.server").info("accepted")  # below its WARNING level
        out = capsys.readouterr().out.splitlines()
        assert [orjson.loads(line)["msg"] for line in out] == ["up"]
        assert root.level == logging.DEBUG
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


def test_a_process_registry_exports_its_own_metrics_and_gc_pauses():
    registry = telemetry.metrics_registry()
    Counter("ordertrack_test_total", "A test's counter", registry=registry).inc(2)
    gc.collect()
    body, content_type = telemetry.metrics_page(registry)
    text = body.decode()
    assert content_type.startswith("text/plain")
    assert "ordertrack_test_total 2.0" in text
    assert 'ordertrack_gc_pause_seconds_count{generation="2"}' in text
    assert "process_resident_memory_bytes" in text
