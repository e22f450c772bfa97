"""Handler tests through Flask's test client (no server process)."""

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from arith_svc.app import MAX_ABS_OPERAND, create_app
from arith_svc.faults import FaultState

EXECUTE = "/api/v1/execute"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("l=1&r=2", 3),
        ("l=-5&r=3", -2),
        ("l=%2B7&r=0", 7),  # "+7": a literal + would decode to a space
        ("l=007&r=1", 8),
        ("l=-0&r=0", 0),
        (f"l=-{'0' * 5000}1&r=1", 0),  # leading zeros do not count toward the range
        (f"l={MAX_ABS_OPERAND}&r={MAX_ABS_OPERAND}", 2 * MAX_ABS_OPERAND),
        (f"l=-{MAX_ABS_OPERAND}&r=-{MAX_ABS_OPERAND}", -2 * MAX_ABS_OPERAND),
    ],
)
def test_add(add_client, query, expected):
    response = add_client.get(f"{EXECUTE}?{query}")
    assert response.status_code == 200
    assert response.get_json() == {"result": expected, "instance": "add-test-1"}
    assert response.headers["X-Instance-Id"] == "add-test-1"


@pytest.mark.parametrize(
    ("query", "expected"),
    [("l=1&r=2", -1), ("l=10&r=-5", 15), (f"l=-{MAX_ABS_OPERAND}&r={MAX_ABS_OPERAND}", -2 * MAX_ABS_OPERAND)],
)
def test_sub(sub_client, query, expected):
    response = sub_client.get(f"{EXECUTE}?{query}")
    assert response.status_code == 200
    assert response.get_json() == {"result": expected, "instance": "sub-test-1"}
    assert response.headers["X-Instance-Id"] == "sub-test-1"


@pytest.mark.parametrize(
    ("query", "param", "reason"),
    [
        ("r=1", "l", "missing"),
        ("l=1", "r", "missing"),
        ("", "l", "missing"),
        ("l=1.5&r=1", "l", "must be an integer"),
        ("l=1&r=abc", "r", "must be an integer"),
        ("l=&r=1", "l", "must be an integer"),
        ("l=1&r=", "r", "must be an integer"),
        ("l=%D9%A1%D9%A2&r=1", "l", "must be an integer"),  # Arabic-Indic "١٢"
        ("l=1&r=%C2%B2", "r", "must be an integer"),  # superscript "²"
        ("l=%EF%BC%91&r=1", "l", "must be an integer"),  # fullwidth "１"
        ("l=1e3&r=1", "l", "must be an integer"),
        ("l=0x10&r=1", "l", "must be an integer"),
        ("l=%201&r=1", "l", "must be an integer"),  # leading space
        ("l=1%0A&r=1", "l", "must be an integer"),  # trailing newline
        ("l=--1&r=1", "l", "must be an integer"),
        ("l=-&r=1", "l", "must be an integer"),
        ("l=1_000&r=1", "l", "must be an integer"),
        (f"l={MAX_ABS_OPERAND + 1}&r=1", "l", "out of range"),
        (f"l=1&r=-{MAX_ABS_OPERAND + 1}", "r", "out of range"),
        (f"l={'9' * 5000}&r=1", "l", "out of range"),
        ("l=1&l=2&r=1", "l", "given once"),
        ("l=1&r=2&r=2", "r", "given once"),
    ],
)
@pytest.mark.parametrize("op", ["add", "sub"])
def test_bad_input_is_400_json_naming_the_parameter(op, query, param, reason):
    response = create_app(op, "t").test_client().get(f"{EXECUTE}?{query}")
    assert response.status_code == 400
    assert response.is_json
    error = response.get_json()["error"]
    assert f"'{param}'" in error
    assert reason in error


def test_health(add_client, sub_client):
    for client, op in ((add_client, "add"), (sub_client, "sub")):
        response = client.get("/health")
        assert response.status_code == 200
        assert response.get_json() == {"status": "ok", "instance": f"{op}-test-1", "op": op,
                                       "faults": {"latency_ms": 0, "latency_jitter_ms": 0, "error_rate": 0, "abort_rate": 0}}


def test_unknown_path_is_404_json(add_client):
    response = add_client.get("/api/v1/nope")
    assert response.status_code == 404
    assert response.is_json and "error" in response.get_json()
    assert response.headers["X-Instance-Id"] == "add-test-1"


@pytest.mark.parametrize("path", [EXECUTE + "?l=1&r=2", "/health"])
def test_wrong_method_is_405_json(add_client, path):
    response = add_client.post(path)
    assert response.status_code == 405
    assert response.is_json and "error" in response.get_json()
    assert "GET" in response.headers["Allow"]


def test_unexpected_exception_is_500_json_without_traceback(capsys):
    app = create_app("add", "t")

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret detail")

    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.get_json() == {"error": "internal error"}
    assert b"secret detail" not in response.data and b"Traceback" not in response.data
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["status"] == 500


def test_one_json_access_log_line_per_request(add_client, capsys):
    add_client.get(f"{EXECUTE}?l=1&r=2")
    add_client.get("/missing")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    records = [json.loads(line) for line in lines]
    assert [(r["method"], r["path"], r["status"]) for r in records] == [
        ("GET", EXECUTE, 200),
        ("GET", "/missing", 404),
    ]
    for record in records:
        assert set(record) == {"instance", "method", "path", "status", "duration_ms"}
        assert record["instance"] == "add-test-1"
        assert record["duration_ms"] >= 0


@pytest.mark.parametrize("mode, logged", [("all", [200, 400, 404]), ("errors", [400, 404]), ("off", [])])
def test_access_log_modes(capsys, mode, logged):
    client = create_app("add", "t", access_log=mode).test_client()
    for query in ("l=1&r=2", "l=x&r=2"):
        client.get(f"{EXECUTE}?{query}")
    client.get("/missing")
    assert [json.loads(line)["status"] for line in capsys.readouterr().out.splitlines()] == logged


def test_unknown_access_log_mode_is_rejected():
    with pytest.raises(ValueError):
        create_app("add", "t", access_log="some")


def test_unknown_op_is_rejected():
    with pytest.raises(ValueError):
        create_app("mul", "t")


def _samples(client, name):
    """{(route, method, status): value} of one metric family on GET /metrics, every sample's instance_id checked."""
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    found = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            if sample.name == name:
                assert sample.labels["instance_id"] == "add-test-1"
                found[(sample.labels["route"], sample.labels["method"], sample.labels["status"])] = sample.value
    return found


def test_metrics_count_every_request_by_route_method_and_status(add_client):
    for query in ("l=1&r=2", "l=3&r=4", "l=x&r=2"):
        add_client.get(f"{EXECUTE}?{query}")
    add_client.get("/health")
    add_client.get("/missing")
    add_client.post(EXECUTE)
    counts = _samples(add_client, "http_requests_total")
    # The scrape itself is counted after it is answered: it shows in the next one.
    assert counts == {(EXECUTE, "GET", "200"): 2, (EXECUTE, "GET", "400"): 1, ("/health", "GET", "200"): 1,
                      ("other", "GET", "404"): 1, (EXECUTE, "POST", "405"): 1}
    assert _samples(add_client, "http_requests_total")[("/metrics", "GET", "200")] == 1
    # The histogram saw the same requests; a fault's delay shows in its sum.
    assert _samples(add_client, "http_request_duration_seconds_count")[(EXECUTE, "GET", "200")] == 2


def test_latency_histogram_sees_an_injected_delay():
    client = create_app("add", "add-test-1", faults=FaultState(None, {"latency_ms": 50})).test_client()
    client.get(f"{EXECUTE}?l=1&r=2")
    assert 0.05 <= _samples(client, "http_request_duration_seconds_sum")[(EXECUTE, "GET", "200")] < 1.0
    buckets = {}
    for family in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True)):
        for sample in family.samples:
            if sample.name == "http_request_duration_seconds_bucket" and sample.labels["route"] == EXECUTE:
                buckets[float(sample.labels["le"])] = sample.value
    assert buckets[0.025] == 0 and buckets[0.1] == 1


def test_metrics_are_not_served_on_the_admin_port():
    client = create_app("add", "add-test-1", admin_port=19001).test_client()
    assert client.get("/metrics", environ_overrides={"SERVER_PORT": "19001"}).status_code == 404
    assert client.get("/metrics").status_code == 200
