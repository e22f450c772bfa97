"""Tracing (arith_svc/tracing.py): the real Zipkin exporter against a small Zipkin stand-in on 127.0.0.1 that takes
JSON v2 POSTs, through Flask's test client and through the real server (granian, several workers)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from arith_svc.app import create_app
from test_server import PROJECT_DIR, free_port, wait_for_health

EXECUTE = "/api/v1/execute?l=1&r=2"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


def traceparent(trace_id=TRACE_ID, parent_id=PARENT_ID, sampled=True):
    return f"00-{trace_id}-{parent_id}-{'01' if sampled else '00'}"


class Zipkin:
    """A Zipkin collector stand-in: POST /api/v2/spans. `mode`: "ok" (202), "error" (503) or "hang" (no answer
    until release() or the test's end)."""

    def __init__(self, mode="ok"):
        self.mode = mode
        self.spans = []
        self.posts = 0
        self.hanging = threading.Event()  # a POST is waiting for its answer
        self.released = threading.Event()
        zipkin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                assert self.path == "/api/v2/spans" and self.headers["Content-Type"] == "application/json"
                zipkin.posts += 1
                if zipkin.mode == "hang":
                    zipkin.hanging.set()
                    zipkin.released.wait(30)
                    return
                if zipkin.mode == "ok":
                    zipkin.spans.extend(json.loads(body))
                self.send_response(202 if zipkin.mode == "ok" else 503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format, *args):  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v2/spans"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def release(self):
        self.released.set()

    def close(self):
        self.release()
        self.server.shutdown()
        self.server.server_close()

    def wait_for_spans(self, count, timeout=10.0):
        deadline = time.monotonic() + timeout
        while len(self.spans) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.spans


@pytest.fixture
def zipkin():
    instances = []

    def start(mode="ok"):
        instances.append(Zipkin(mode))
        return instances[-1]

    yield start
    for instance in instances:
        instance.close()


def dead_endpoint():
    """A URL on a port where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{free_port()}/api/v2/spans"


@pytest.fixture(autouse=True)
def no_otel_env(monkeypatch):
    """Each test sets the OTEL_* variables it wants, whatever the environment running the tests has."""
    for name in list(os.environ):
        if name.startswith("OTEL_") or name in ("APP_VERSION", "PROMETHEUS_MULTIPROC_DIR"):
            monkeypatch.delenv(name)


@pytest.fixture
def traced_app(monkeypatch):
    """create_app with tracing asked for, after setting the lab's variables (and `env`); shut down at the end."""
    apps = []

    def make(endpoint, op="add", instance_id="add-svc-1", admin_port=0, **env):
        variables = {
            "OTEL_SERVICE_NAME": f"{op}-svc",
            "OTEL_RESOURCE_ATTRIBUTES": f"service.instance.id={instance_id},service.version=v2",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "1.0",
            "OTEL_BSP_MAX_QUEUE_SIZE": "2048",
            "OTEL_BSP_SCHEDULE_DELAY": "60000",  # the tests flush; a long delay keeps the thread out of their way
            "OTEL_BSP_EXPORT_TIMEOUT": "2000",
            **env,
        }
        if endpoint is not None:
            variables["OTEL_EXPORTER_ZIPKIN_ENDPOINT"] = endpoint
        for name, value in variables.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        app = create_app(op, instance_id, admin_port=admin_port, tracing=True)
        apps.append(app)
        return app

    yield make
    for app in apps:
        if "tracing" in app.extensions:
            app.extensions["tracing"].provider.shutdown()


def flush(app):
    assert app.extensions["tracing"].provider.force_flush()


def tracing_samples(text):
    """{(name, reason or None): value} of the tracing_* counters in a /metrics text, summed over the other labels."""
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in ("tracing_spans_exported_total", "tracing_spans_dropped_total"):
                key = (sample.name, sample.labels.get("reason"))
                values[key] = values.get(key, 0) + sample.value
    return values


def app_counts(client):
    return tracing_samples(client.get("/metrics").get_data(as_text=True))


def test_request_span_continues_the_callers_trace(zipkin, traced_app):
    collector = zipkin()
    client = traced_app(collector.url).test_client()
    response = client.get(EXECUTE, headers={"traceparent": traceparent()})
    assert response.status_code == 200 and response.get_json()["result"] == 3
    flush(client.application)

    [span] = collector.spans
    assert span["traceId"] == TRACE_ID and span["parentId"] == PARENT_ID
    assert span["kind"] == "SERVER" and span["name"] == "GET /api/v1/execute"
    assert span["localEndpoint"]["serviceName"] == "add-svc"
    tags = span["tags"]
    assert tags["mesh.instance"] == "add-svc-1"
    assert tags["service.name"] == "add-svc" and tags["service.instance.id"] == "add-svc-1"
    assert tags["service.version"] == "v2"
    assert tags["http.route"] == "/api/v1/execute" and tags["http.request.method"] == "GET"
    assert tags["http.response.status_code"] == "200"
    assert "otel.status_code" not in tags and "error" not in tags
    counts = app_counts(client)
    assert counts[("tracing_spans_exported_total", None)] == 1
    assert sum(v for (name, _), v in counts.items() if name == "tracing_spans_dropped_total") == 0


def test_request_without_traceparent_starts_a_trace_and_errors_are_marked(zipkin, traced_app):
    collector = zipkin()
    client = traced_app(collector.url, op="sub", instance_id="sub-svc-2").test_client()
    assert client.get("/api/v1/execute?l=x&r=1").status_code == 400
    assert client.get("/nowhere").status_code == 404
    flush(client.application)

    bad, unknown = collector.spans
    assert "parentId" not in bad and len(bad["traceId"]) == 32 and bad["traceId"] != TRACE_ID
    assert bad["tags"]["http.response.status_code"] == "400" and bad["tags"]["mesh.instance"] == "sub-svc-2"
    assert bad["localEndpoint"]["serviceName"] == "sub-svc" and bad["kind"] == "SERVER"
    assert "error" not in bad["tags"]  # a 4xx is the client's error, not the server span's
    assert unknown["name"] == "GET" and unknown["tags"]["http.response.status_code"] == "404"
    assert "http.route" not in unknown["tags"] and unknown["tags"]["mesh.instance"] == "sub-svc-2"


def test_requests_refused_by_the_apps_own_hooks_get_a_span(zipkin, traced_app):
    """The span starts before the app's before_request hooks: the 404 of /admin/faults asked on the service port
    has a span too."""
    collector = zipkin()
    client = traced_app(collector.url).test_client()
    response = client.get("/admin/faults", headers={"traceparent": traceparent()})
    assert response.status_code == 404
    flush(client.application)
    [span] = collector.spans
    assert span["name"] == "GET /admin/faults" and span["parentId"] == PARENT_ID
    assert span["tags"]["http.response.status_code"] == "404"


def test_injected_faults_and_unhandled_exceptions_are_errors(zipkin, traced_app):
    """The fault switch (the admin endpoint): an injected 500 and an abort are spans in error, with the injected
    latency inside them; an exception no route expects too."""
    collector = zipkin()
    app = traced_app(collector.url, admin_port=19001)

    @app.get("/boom")
    def boom():
        raise ZeroDivisionError("no")

    client = app.test_client()
    admin = "http://localhost:19001"
    assert client.put("/admin/faults", json={"error_rate": 1, "latency_ms": 50}, base_url=admin).status_code == 200
    response = client.get(EXECUTE, headers={"traceparent": traceparent()})
    assert response.status_code == 500 and response.get_json()["error"] == "injected fault: error"
    assert client.put("/admin/faults", json={"abort_rate": 1}, base_url=admin).status_code == 200
    assert client.get(EXECUTE).status_code == 500
    assert client.delete("/admin/faults", base_url=admin).status_code == 200
    assert client.get("/boom").status_code == 500
    flush(app)

    spans = {span["name"]: span for span in collector.spans if span["name"] != "PUT /admin/faults"}
    error = [s for s in collector.spans if s["name"] == "GET /api/v1/execute"]
    assert len(error) == 2
    injected, aborted = error
    assert injected["parentId"] == PARENT_ID and injected["kind"] == "SERVER"
    assert injected["tags"]["otel.status_code"] == "ERROR" and injected["tags"]["error"] == "injected fault: error"
    assert injected["tags"]["http.response.status_code"] == "500" and injected["tags"]["mesh.instance"] == "add-svc-1"
    assert injected["duration"] >= 50_000  # µs: the injected latency is inside the span
    assert aborted["tags"]["error"] == "injected fault: abort" and aborted["tags"]["http.response.status_code"] == "500"
    assert spans["GET /boom"]["tags"]["error"] == "unhandled ZeroDivisionError"
    # The admin requests (admin port) are traced like any other, and not in error.
    admin_spans = [s for s in collector.spans if s["name"].endswith(" /admin/faults")]
    assert len(admin_spans) == 3 and not any("error" in s["tags"] for s in admin_spans)


def test_exception_flask_lets_through_ends_the_span_in_error(zipkin, traced_app):
    """With PROPAGATE_EXCEPTIONS (Flask's testing mode), an exception in a hook leaves the app: the span still ends,
    in error, and the exception goes on to the server."""
    collector = zipkin()
    app = traced_app(collector.url)
    app.config["PROPAGATE_EXCEPTIONS"] = True

    @app.after_request
    def broken(response):
        raise RuntimeError("broken hook")

    with pytest.raises(RuntimeError):
        app.test_client().get(EXECUTE, headers={"traceparent": traceparent()})
    flush(app)
    [span] = collector.spans
    assert span["name"] == "GET" and span["parentId"] == PARENT_ID  # no answer: the route is not known
    assert span["tags"]["error"] == "unhandled RuntimeError" and span["tags"]["otel.status_code"] == "ERROR"
    assert span["tags"]["http.response.status_code"] == "500"


def test_unsampled_parent_exports_nothing(zipkin, traced_app):
    """The caller left its trace out (flag 00): the sampler follows it (ratio 1.0 for new traces), no span is exported
    and nothing is counted; the next sampled request is exported."""
    collector = zipkin()
    client = traced_app(collector.url).test_client()
    for _ in range(5):
        response = client.get(EXECUTE, headers={"traceparent": traceparent(sampled=False)})
        assert response.status_code == 200 and response.get_json()["result"] == 3
    assert client.get("/api/v1/execute?l=x&r=1", headers={"traceparent": traceparent(sampled=False)}).status_code == 400
    flush(client.application)
    assert collector.posts == 0 and collector.spans == []
    counts = app_counts(client)
    assert counts[("tracing_spans_exported_total", None)] == 0
    assert sum(v for (name, _), v in counts.items() if name == "tracing_spans_dropped_total") == 0

    assert client.get(EXECUTE, headers={"traceparent": traceparent()}).status_code == 200
    flush(client.application)
    assert [(span["traceId"], span["parentId"]) for span in collector.spans] == [(TRACE_ID, PARENT_ID)]


def test_tracestate_and_bad_traceparents(zipkin, traced_app):
    """The caller's tracestate is kept; a malformed traceparent starts a new trace (never an error)."""
    collector = zipkin()
    client = traced_app(collector.url).test_client()
    assert client.get(EXECUTE, headers={"traceparent": traceparent(), "tracestate": "vendor=x"}).status_code == 200
    assert client.get(EXECUTE, headers={"traceparent": "00-zz-b7ad6b7169203331-01"}).status_code == 200
    flush(client.application)
    kept, fresh = collector.spans
    assert kept["traceId"] == TRACE_ID and kept["parentId"] == PARENT_ID
    assert fresh["traceId"] != TRACE_ID and "parentId" not in fresh


def test_health_and_metrics_are_not_traced(zipkin, traced_app):
    collector = zipkin()
    client = traced_app(collector.url).test_client()
    for path in ("/health", "/metrics", "/health?full=1"):
        assert client.get(path, headers={"traceparent": traceparent()}).status_code == 200
    assert client.post("/health", headers={"traceparent": traceparent()}).status_code == 405
    assert client.get(EXECUTE + "&why=health").status_code == 200  # "health" elsewhere in the URL: traced
    flush(client.application)
    assert [span["name"] for span in collector.spans] == ["GET /api/v1/execute"]


def test_resource_falls_back_to_the_instances_own_values(zipkin, traced_app, monkeypatch):
    monkeypatch.setenv("APP_VERSION", "v7")
    collector = zipkin()
    client = traced_app(collector.url, op="sub", instance_id="sub-9",
                        OTEL_SERVICE_NAME=None, OTEL_RESOURCE_ATTRIBUTES=None).test_client()
    client.get(EXECUTE)
    flush(client.application)
    [span] = collector.spans
    assert span["localEndpoint"]["serviceName"] == "sub-svc"
    assert span["tags"]["service.instance.id"] == "sub-9" and span["tags"]["service.version"] == "v7"
    assert span["tags"]["process.pid"] == str(os.getpid())


def test_sampler_ratio_zero_exports_no_new_trace(zipkin, traced_app):
    """parentbased_traceidratio with 0: no request starts a trace, nor continues an unsampled one; a request whose
    caller sampled its trace still belongs to it (the caller decides)."""
    collector = zipkin()
    client = traced_app(collector.url, OTEL_TRACES_SAMPLER_ARG="0").test_client()
    for _ in range(5):
        assert client.get(EXECUTE).status_code == 200
    assert client.get(EXECUTE, headers={"traceparent": traceparent(sampled=False)}).status_code == 200
    flush(client.application)
    assert collector.posts == 0 and collector.spans == []
    assert app_counts(client)[("tracing_spans_exported_total", None)] == 0

    assert client.get(EXECUTE, headers={"traceparent": traceparent()}).status_code == 200
    flush(client.application)
    assert [span["traceId"] for span in collector.spans] == [TRACE_ID]


def test_without_endpoint_nothing_is_traced(traced_app):
    app = traced_app(None)  # every other OTEL_* variable set
    client = app.test_client()
    assert client.get(EXECUTE, headers={"traceparent": traceparent()}).status_code == 200
    assert "tracing" not in app.extensions
    assert "wsgi_app" not in vars(app)  # Flask's own, not wrapped
    assert "tracing_" not in client.get("/metrics").get_data(as_text=True)


def test_tracing_only_when_asked_for(zipkin, monkeypatch):
    """create_app without tracing=True (the tests' apps) ignores the endpoint."""
    monkeypatch.setenv("OTEL_EXPORTER_ZIPKIN_ENDPOINT", zipkin().url)
    app = create_app("add", "add-1")
    assert "tracing" not in app.extensions and "wsgi_app" not in vars(app)


def test_untraced_instance_never_imports_opentelemetry():
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    code = ("import sys; from arith_svc.app import create_app; create_app('add', 'a', tracing=True)"
            ".test_client().get('/api/v1/execute?l=1&r=1'); "
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize("collector_state", ["dead", "error"])
def test_failed_exports_drop_and_count_spans_never_requests(zipkin, traced_app, collector_state):
    endpoint = dead_endpoint() if collector_state == "dead" else zipkin("error").url
    client = traced_app(endpoint).test_client()
    slowest = 0.0
    for i in range(20):
        started = time.monotonic()
        response = client.get(f"/api/v1/execute?l={i}&r=1", headers={"traceparent": traceparent()})
        slowest = max(slowest, time.monotonic() - started)
        assert response.status_code == 200 and response.get_json()["result"] == i + 1
    assert slowest < 0.5
    flush(client.application)  # the export, here in the test's thread
    counts = app_counts(client)
    assert counts[("tracing_spans_dropped_total", "export_failed")] == 20
    assert counts[("tracing_spans_exported_total", None)] == 0


def test_slow_collector_never_slows_requests(zipkin, traced_app):
    """Zipkin takes the connection and never answers: the export thread waits for the export timeout (300 ms here),
    the requests do not wait for it; the batch's spans count as export_timeout."""
    collector = zipkin("hang")
    client = traced_app(collector.url, OTEL_BSP_SCHEDULE_DELAY="20", OTEL_BSP_EXPORT_TIMEOUT="300").test_client()
    assert client.get(EXECUTE).status_code == 200
    assert collector.hanging.wait(5), "the export thread never sent its batch"
    slowest, deadline = 0.0, time.monotonic() + 0.6  # requests while an export hangs, past its timeout
    while time.monotonic() < deadline:
        started = time.monotonic()
        assert client.get(EXECUTE).status_code == 200
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.01)
    assert slowest < 0.2
    deadline = time.monotonic() + 10
    while app_counts(client)[("tracing_spans_dropped_total", "export_timeout")] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert app_counts(client)[("tracing_spans_dropped_total", "export_timeout")] >= 1
    collector.release()


def test_full_queue_drops_and_counts_spans(zipkin, traced_app):
    """A queue of 4 (and no batch size set: the batch becomes 4 too, the SDK's 512 would not fit): the first 4 spans
    go into a batch whose export hangs; of the next 10, the queue keeps 4 and drops the oldest 6."""
    collector = zipkin("hang")
    app = traced_app(collector.url, OTEL_BSP_MAX_QUEUE_SIZE="4", OTEL_BSP_EXPORT_TIMEOUT="10000")
    client = app.test_client()
    try:
        for _ in range(4):
            assert client.get(EXECUTE).status_code == 200
        assert collector.hanging.wait(5), "a full batch did not wake the export thread"
        for _ in range(10):
            assert client.get(EXECUTE).status_code == 200
        assert app_counts(client)[("tracing_spans_dropped_total", "queue_full")] == 6
    finally:
        collector.release()


def test_spans_ending_after_shutdown_are_counted(zipkin, traced_app):
    collector = zipkin()
    app = traced_app(collector.url)
    app.extensions["tracing"].provider.shutdown()
    client = app.test_client()
    assert client.get(EXECUTE).status_code == 200
    assert app_counts(client)[("tracing_spans_dropped_total", "shutdown")] == 1


# --- The real server: granian's workers, each with its own tracer -----------------------------------------------


def start_server(tmp_path, endpoint, workers, **env):
    port = free_port()
    variables = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    variables.update({
        "APP_BIND": "127.0.0.1", "APP_PORT": str(port), "INSTANCE_ID": "add-e2e", "TMPDIR": str(tmp_path),
        "ACCESS_LOG": "off", "OTEL_EXPORTER_ZIPKIN_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": "add-svc",
        "OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=add-e2e", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "1.0", "OTEL_BSP_MAX_QUEUE_SIZE": "2048", "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_BSP_EXPORT_TIMEOUT": "2000", **env,
    })
    process = subprocess.Popen([sys.executable, "-m", "arith_svc", "--op", "add", "--workers", str(workers)],
                               cwd=PROJECT_DIR, env=variables, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(f"{base}/health", process)
    except AssertionError:
        process.kill()
        raise AssertionError(process.communicate(timeout=10)[1]) from None
    return process, base


def server_counts(base):
    return tracing_samples(requests.get(f"{base}/metrics", timeout=5).text)


def wait_for_counts(base, key, value, timeout=10.0):
    """Until /metrics shows `value` for `key` on 5 answers in a row (new connections: any worker may answer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(server_counts(base).get(key) == value for _ in range(5)):
            return True
        time.sleep(0.1)
    return False


def test_real_server_traces_in_every_worker(zipkin, tmp_path):
    collector = zipkin()
    process, base = start_server(tmp_path, collector.url, workers=2)
    try:
        sent = {}
        for i in range(60):  # a new connection each: the kernel deals them to both workers
            trace_id, parent_id = f"{i + 1:032x}", f"{i + 1:016x}"
            sent[trace_id] = parent_id
            response = requests.get(f"{base}/api/v1/execute", params={"l": i, "r": 1}, timeout=5,
                                    headers={"traceparent": traceparent(trace_id, parent_id)})
            assert response.status_code == 200
            assert requests.get(f"{base}/health", timeout=5).status_code == 200
        spans = collector.wait_for_spans(60)
        assert {span["traceId"]: span["parentId"] for span in spans} == sent
        assert len(spans) == 60  # /health not traced, no span twice
        assert {(s["name"], s["kind"], s["tags"]["mesh.instance"], s["tags"]["service.instance.id"],
                 s["localEndpoint"]["serviceName"]) for s in spans} == {
            ("GET /api/v1/execute", "SERVER", "add-e2e", "add-e2e", "add-svc")}
        pids = {span["tags"]["process.pid"] for span in spans}
        print(f"spans from {len(pids)} worker(s): {sorted(pids)}")
        assert len(pids) == 2 and str(process.pid) not in pids
        # Each worker counts its own spans, /metrics (multi-process mode) adds them up whichever worker answers.
        assert wait_for_counts(base, ("tracing_spans_exported_total", None), 60)
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert stdout == ""  # stdout is the access log (off here): tracing writes nothing there


def test_real_server_sends_queued_spans_when_stopping(zipkin, tmp_path):
    """A batch delay of a minute: the spans leave only with the worker's graceful stop (SIGTERM)."""
    collector = zipkin()
    process, base = start_server(tmp_path, collector.url, workers=1, OTEL_BSP_SCHEDULE_DELAY="60000")
    try:
        for _ in range(3):
            assert requests.get(f"{base}/api/v1/execute?l=1&r=2", timeout=5).status_code == 200
        time.sleep(0.3)
        assert collector.spans == []
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert len(collector.spans) == 3


def test_real_server_with_dead_collector_answers_and_counts_drops(tmp_path):
    process, base = start_server(tmp_path, dead_endpoint(), workers=2)
    try:
        slowest = 0.0
        for i in range(30):
            started = time.monotonic()
            response = requests.get(f"{base}/api/v1/execute", params={"l": i, "r": 1}, timeout=5,
                                    headers={"traceparent": traceparent()})
            slowest = max(slowest, time.monotonic() - started)
            assert response.status_code == 200 and response.json()["result"] == i + 1
        assert slowest < 0.5
        assert wait_for_counts(base, ("tracing_spans_dropped_total", "export_failed"), 30)
        assert server_counts(base)[("tracing_spans_exported_total", None)] == 0
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    # One message per worker at most (once a minute), not one per failed batch.
    assert 1 <= stderr.count("cannot send spans to Zipkin") <= 2, stderr
