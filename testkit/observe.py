"""Looking at the lab from the controller: Prometheus' and Zipkin's APIs, a trace as a tree, and the dashboard, the
Consul UI and Zipkin's UI in a headless browser.

The metrics and tracing tests (molecule/*/tests) and `make screenshots` / `make dashboard` / `make trace`
(scripts/lab) use it. Only for
the lab's own nodes and loopback. The browser is Debian's Chromium driven by Playwright (its Python package,
pinned in requirements.txt; it never downloads a browser of its own here).
"""

import json
import os
import secrets
import time
from datetime import datetime
import urllib.error
import urllib.parse
import urllib.request

CHROMIUM = os.environ.get("MESH_CHROMIUM", "/usr/bin/chromium")
# What Chromium needs in a container or CI machine without a screen and with a closed network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DASHBOARD_PATH = "/consoles/mesh.html"


class Prometheus:
    """Prometheus' HTTP API at `url` (http://<node>:<port>)."""

    def __init__(self, url):
        self.url = url.rstrip("/")

    def _get(self, path, **params):
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as resp:
            answer = json.load(resp)
        if answer.get("status") != "success":
            raise RuntimeError(f"Prometheus {path}: {answer}")
        return answer["data"]

    def targets(self):
        """[{job, instance, health, last_scrape (s since epoch), error, labels}] of the active targets."""
        found = []
        for t in self._get("/api/v1/targets", state="active")["activeTargets"]:
            scraped = t.get("lastScrape", "")
            found.append({"job": t["labels"].get("job"), "instance": t["labels"].get("instance"), "health": t["health"],
                          "last_scrape": _epoch(scraped), "error": t.get("lastError", ""), "labels": t["labels"],
                          "url": t.get("scrapeUrl", "")})
        return found

    def query(self, expr):
        """{labels-tuple: value} of an instant vector (labels as sorted (name, value) pairs)."""
        result = self._get("/api/v1/query", query=expr)["result"]
        return {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in result}

    def value(self, expr):
        """The sum of an instant vector (0 when it is empty)."""
        return sum(self.query(expr).values())

    def wait_for_scrapes_after(self, moment, jobs, timeout=30.0):
        """Wait until every target of `jobs` has been scraped after `moment` (time.time()), and Prometheus has the
        samples; returns the targets."""
        deadline = time.time() + timeout
        while True:
            targets = [t for t in self.targets() if t["job"] in jobs]
            if targets and all(t["last_scrape"] > moment for t in targets):
                time.sleep(1.0)  # the scrape that started after `moment` has been appended
                return targets
            if time.time() > deadline:
                raise AssertionError(f"targets of {jobs} not scraped after {moment:.1f}: "
                                     f"{[(t['instance'], t['last_scrape']) for t in targets]}")
            time.sleep(0.5)


class Zipkin:
    """Zipkin's HTTP API at `url` (http://<node>:<port>): traces as lists of Zipkin v2 spans."""

    def __init__(self, url):
        self.url = url.rstrip("/")

    def trace(self, trace_id):
        """The spans Zipkin has of `trace_id` ([] when it has none)."""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v2/trace/{trace_id}", timeout=10) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return []
            raise

    def wait_trace(self, trace_id, spans=1, timeout=20.0, settle=1.5):
        """The trace once it has at least `spans` spans and no new one came for `settle` seconds (the apps send
        their batches every half second), or what Zipkin has at the timeout."""
        deadline = time.time() + timeout
        found, since = [], time.time()
        while time.time() < deadline:
            now = self.trace(trace_id)
            if len(now) != len(found):
                found, since = now, time.time()
            elif len(found) >= spans and time.time() - since >= settle:
                return found
            time.sleep(0.25)
        return found

    def ui_url(self, trace_id=None):
        return f"{self.url}/zipkin/" + (f"traces/{trace_id}" if trace_id else "")


def sampled_traceparent():
    """(trace id, headers) asking for a trace: a new W3C trace context with the sampled flag, which the apps' parent-
    based samplers follow whatever their ratio (`make trace`, the tests)."""
    trace_id = secrets.token_hex(16)
    return trace_id, {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}


def span_instance(span):
    """The instance id a span carries (the resource's service.instance.id, or mesh.instance)."""
    tags = span.get("tags") or {}
    return tags.get("service.instance.id") or tags.get("mesh.instance")


def span_failed(span):
    """Whether the span ended in error (OpenTelemetry's status, as Zipkin's exporters tag it)."""
    tags = span.get("tags") or {}
    return "error" in tags or tags.get("otel.status_code") == "ERROR"


def trace_tree(spans):
    """The trace as lines of an indented tree, children in start order: start offset from the root (ms), duration
    (ms), service, instance, span name, status (ok / error: its description / the HTTP status)."""
    if not spans:
        return []
    by_id = {s["id"]: s for s in spans}
    children = {}
    roots = []
    for s in sorted(spans, key=lambda s: s.get("timestamp", 0)):
        if s.get("parentId") in by_id:
            children.setdefault(s["parentId"], []).append(s)
        else:
            roots.append(s)
    start = min(s.get("timestamp", 0) for s in spans)
    lines = [f"{'offset':>8} {'duration':>9}  span (service, instance: name, status)"]

    def walk(span, depth):
        tags = span.get("tags") or {}
        status = "error" if span_failed(span) else "ok"
        if span_failed(span) and tags.get("error") not in (None, "", "true"):
            status += f": {tags['error']}"
        code = tags.get("http.response.status_code") or tags.get("http.status_code")
        if code:
            status += f" (HTTP {code})"
        who = (span.get("localEndpoint") or {}).get("serviceName", "?")
        attempt = f" #{tags['mesh.attempt']}" if "mesh.attempt" in tags else ""
        lines.append(f"{(span.get('timestamp', 0) - start) / 1000:>6.1f}ms {span.get('duration', 0) / 1000:>7.1f}ms  "
                     f"{'  ' * depth}{who}, {span_instance(span) or '?'}: {span.get('name', '?')}{attempt}, {status}")
        for child in children.get(span["id"], []):
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    return lines


def _epoch(rfc3339):
    """Seconds since the epoch of Prometheus' timestamps (2026-12-01T08:00:00.123456789Z); 0 for none."""
    if not rfc3339 or rfc3339.startswith("0001"):
        return 0.0
    text = rfc3339.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # at most microseconds for fromisoformat
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:min(digits, 6)]:0<6}{rest[digits:]}"
    return datetime.fromisoformat(text).timestamp()


def browser(playwright):
    """Debian's Chromium, headless, through Playwright."""
    if not os.path.exists(CHROMIUM):
        raise RuntimeError(f"{CHROMIUM} is missing: `make bootstrap` installs Debian's chromium package")
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


# Run in the page: each dashboard panel's title, its legend's series, and whether it shows an error instead.
_PANELS_JS = """() => [...document.querySelectorAll('.mesh-panel')].map(p => ({
  panel: p.dataset.panel,
  title: (p.querySelector('h3') || {}).textContent || '',
  series: [...p.querySelectorAll('.rickshaw_legend li .label')].map(l => l.textContent),
  paths: p.querySelectorAll('svg path').length,
  error: (p.querySelector('.prom_graph_error') || {}).textContent || '',
}))"""


def dashboard(page, url, timeout_s=30.0, window_s=None):
    """Open the dashboard at `url` (Prometheus' address) in `page`, over the last `window_s` seconds (default: the
    page's 15 minutes); wait until every panel has drawn its series or shown an error; returns
    [{panel, title, series, paths, error}]."""
    view = ""
    if window_s:  # the console's own time control reads its range from the address (#pctc{...})
        view = "#pctc" + urllib.parse.quote(json.dumps({"duration": int(window_s), "endTime": 0}))
    page.goto(url.rstrip("/") + DASHBOARD_PATH + view, wait_until="load")
    deadline = time.time() + timeout_s
    while True:
        panels = page.evaluate(_PANELS_JS)
        if panels and all(p["series"] or p["error"] for p in panels):
            return panels
        if time.time() > deadline:
            return panels
        page.wait_for_timeout(500)


def screenshot(page, path):
    """A full-page PNG of `page` at `path` (its directory made); the dashboard's time control, fixed at the bottom
    of the window, is put back in the page's flow so that it does not cover a panel."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    page.add_style_tag(content=".prom_graph_timecontrol { position: static !important; }")
    page.screenshot(path=path, full_page=True)
    return path


def consul_services(page, url, names, timeout_s=30.0):
    """Open the Consul UI's services page at `url` (https://<server>:<https port>) in `page`; wait until the list
    names every service in `names` (or the timeout); returns the service names the page lists."""
    page.goto(url.rstrip("/") + "/ui/", wait_until="load")
    deadline = time.time() + timeout_s
    listed = []
    while time.time() < deadline:
        listed = page.evaluate("""() => [...document.querySelectorAll(
            '[data-test-service-name], .consul-service-list li a, ul[data-test-list] li a, table tbody tr td:first-child a'
          )].map(e => e.textContent.trim().split(/\\s+/)[0]).filter(Boolean)""")
        if set(names) <= set(listed):
            break
        page.wait_for_timeout(500)
    return sorted(set(listed))


def zipkin_trace_page(page, zipkin, trace_id, names, timeout_s=30.0):
    """Open the trace in Zipkin's UI in `page`; wait until the page names every service in `names` (or the timeout);
    returns the page's text."""
    page.goto(zipkin.ui_url(trace_id), wait_until="load")
    deadline, text = time.time() + timeout_s, ""
    while time.time() < deadline:
        text = page.inner_text("body")
        if all(name in text for name in names):
            break
        page.wait_for_timeout(500)
    return text
