"""Progressive canary (`make rollout`): the edge's share for the exposed service's canary version steps up, and
before each next step Prometheus' figures of the canary are judged against the baseline's; a breach puts the
edge back on the baseline at once.

``plan(model, options)`` checks the options against the model (the service must be the one the edge serves, with
two or more versions: the last is the canary, the others the baseline) and returns what the role canary does;
``queries(plan, window_s, since_s)`` are the PromQL expressions of one analysis, ``query`` the same as one
expression (one request); ``verdict(answer, plan)`` judges Prometheus' answer to it. Every error is a sentence saying what to change.

The figures are the apps' own (every catalog app exports ``http_requests_total`` and
``http_request_duration_seconds`` by route and status; Prometheus labels the series with service and version),
on every route but the health, metrics and admin paths (what callers ask, not Consul's and HAProxy's checks):

    canary 5xx ratio   5xx answers / answers of the canary over the step      <= max_error_ratio
    canary p99         over the step, against the baseline's p99 since the    <= baseline p99 + max_p99_increase_ms
                       rollout began (at 100 % the baseline gets no traffic)
    canary mean        the same for the mean (exact: the histogram's sum /     <= baseline mean + max_mean_increase_ms
                       count; its p99 is interpolated inside a bucket, and a
                       step's few canary answers make it noisy)
    canary traffic     answers of the canary over the step                    >= min_requests (no traffic: no proof)
"""

import math

DEFAULTS = {
    "steps": [10, 25, 50, 100],  # the canary's share at each step, %
    "step_s": 30,  # how long each step runs before it is judged
    "max_error_ratio": 0.05,
    "max_p99_increase_ms": 200,
    "max_mean_increase_ms": 100,
    "min_requests": 10,
    "job": "mesh",  # Prometheus' job of the catalog's services (meshlab/metrics.py)
    "scheduler": "systemd",
}
REQUESTS = "http_requests_total"
DURATION = "http_request_duration_seconds"


class CanaryError(ValueError):
    """The rollout's options do not fit the model; the message says what to change."""


def _number(value, low, high, whole=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return low <= value <= high and (not whole or float(value).is_integer())


def plan(model, options=None):
    """What one rollout does, or CanaryError naming the option to fix."""
    opts = {**DEFAULTS, **{k: v for k, v in (options or {}).items() if v not in (None, "")}}
    exposed = next((s for s in model["services"] if s["expose"]), None)
    name = opts.get("service") or (exposed or {}).get("name")
    svc = next((s for s in model["services"] if s["name"] == name), None)
    if svc is None:
        raise CanaryError(f"canary_service {name!r} is not a catalog service: the rollout steps the edge's split of "
                          f"the exposed service ({(exposed or {}).get('name', 'none in this catalog')})")
    if not svc["expose"]:
        raise CanaryError(f"canary_service {name!r} is not exposed: the edge splits only the exposed service "
                          f"({(exposed or {}).get('name', 'none in this catalog')}); internal calls go through "
                          "Consul 1.8's L4 proxies, which cannot split by weight")
    names = [v["name"] for v in svc["versions"] if v["name"]]
    if len(names) < 2:
        raise CanaryError(f"{name} has no canary: give it two or more versions in mesh_catalog (the last is the canary)")
    if opts.get("scheduler", "systemd") != "systemd":
        raise CanaryError(f"make rollout steps the edge's split between version tags, which only the systemd scheduler "
                          f"registers; this lab runs {opts['scheduler']}: use its own canary deployments (docs/shipping.md)")
    if not model.get("metrics"):
        raise CanaryError("the rollout judges each step on Prometheus' figures: it needs mesh_metrics_enabled true")
    steps = opts["steps"]
    if isinstance(steps, str):
        steps = [int(s) for s in steps.split(",") if s.strip().isdigit()] if steps.replace(",", "").isdigit() else steps
    if (not isinstance(steps, list) or not steps or not all(_number(s, 1, 100, whole=True) for s in steps)
            or steps != sorted(set(steps))):
        raise CanaryError(f"canary_steps {opts['steps']!r}: give rising whole percentages from 1 to 100, e.g. [10, 25, 50, 100]")
    steps = [int(s) for s in steps]
    checks = {"step_s": (5, 3600, True), "max_error_ratio": (0, 1, False), "max_p99_increase_ms": (0, 60000, False),
              "max_mean_increase_ms": (0, 60000, False),
              "min_requests": (1, 1000000, True)}
    for key, (low, high, whole) in checks.items():
        value = opts[key]
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if not _number(value, low, high, whole):
            raise CanaryError(f"canary_{key} {opts[key]!r} must be a {'whole ' if whole else ''}number from {low} to {high}")
        opts[key] = int(value) if whole else float(value)
    skip = sorted({p for p in (svc.get("health_path"), svc.get("metrics_path")) if p})
    return {
        "service": name, "canary": names[-1], "baseline": names[:-1], "steps": steps, "step_s": opts["step_s"],
        "max_error_ratio": opts["max_error_ratio"], "max_p99_increase_ms": opts["max_p99_increase_ms"],
        "max_mean_increase_ms": opts["max_mean_increase_ms"],
        "min_requests": opts["min_requests"], "job": opts["job"],
        # Callers' routes only: not the checks' and scrapes' paths, nor the admin endpoint.
        "route_skip": "|".join(skip + ["/admin/.*"]),
    }


def _selector(plan, versions, errors=False):
    version = versions[0] if len(versions) == 1 else "|".join(versions)
    match = "=" if len(versions) == 1 else "=~"
    labels = [f'job="{plan["job"]}"', f'service="{plan["service"]}"', f'version{match}"{version}"',
              f'route!~"{plan["route_skip"]}"']
    if errors:
        labels.append('status=~"5.."')
    return "{" + ",".join(labels) + "}"


def queries(plan, window_s, since_s):
    """One analysis: the canary's answers, 5xx answers, p99 and mean over the last `window_s` seconds, and the
    baseline's p99 and mean over the last `since_s` (the time since the rollout began)."""
    window_s, since_s = int(window_s), max(int(window_s), int(since_s))
    canary, baseline = [plan["canary"]], plan["baseline"]
    p99 = "histogram_quantile(0.99, sum by (le) (rate({metric}_bucket{sel}[{w}s])))"
    mean = "sum(rate({metric}_sum{sel}[{w}s])) / sum(rate({metric}_count{sel}[{w}s]))"
    return {
        "canary_requests": f"sum(increase({REQUESTS}{_selector(plan, canary)}[{window_s}s]))",
        "canary_errors": f"sum(increase({REQUESTS}{_selector(plan, canary, errors=True)}[{window_s}s]))",
        "canary_p99": p99.format(metric=DURATION, sel=_selector(plan, canary), w=window_s),
        "baseline_p99": p99.format(metric=DURATION, sel=_selector(plan, baseline), w=since_s),
        "canary_mean": mean.format(metric=DURATION, sel=_selector(plan, canary), w=window_s),
        "baseline_mean": mean.format(metric=DURATION, sel=_selector(plan, baseline), w=since_s),
    }


FIGURE = "figure"  # the label that names each figure in query()'s answer


def query(plan, window_s, since_s):
    """queries() as ONE PromQL expression (one request per analysis, the rollback comes sooner): each figure a
    sample labelled figure=<its name>; a figure with no data is absent."""
    return " or ".join(f'label_replace({expr}, "{FIGURE}", "{name}", "", "")'
                       for name, expr in queries(plan, window_s, since_s).items())


def _figures(answer):
    """{figure name: number} from Prometheus' /api/v1/query JSON answer to query(); NaN and infinities left out."""
    found = {}
    for sample in ((answer or {}).get("data") or {}).get("result") or []:
        value = float(sample["value"][1])
        if not (math.isnan(value) or math.isinf(value)):
            found[sample["metric"].get(FIGURE)] = value
    return found


def verdict(answer, plan):
    """Judge one analysis: `answer` is Prometheus' JSON answer to query(). Returns {ok, figures, checks: [{check,
    value, threshold, ok}], failed: [the checks that failed], text: one line}."""
    found = _figures(answer)
    fig = {name: found.get(name) for name in ("canary_requests", "canary_errors", "canary_p99", "baseline_p99",
                                              "canary_mean", "baseline_mean")}
    requests = fig["canary_requests"] or 0.0
    errors = fig["canary_errors"] or 0.0
    ratio = errors / requests if requests else None
    ms = {k: None if fig[k] is None else 1000 * fig[k] for k in ("canary_p99", "baseline_p99", "canary_mean", "baseline_mean")}

    def latency(name, increase):
        value, base = ms[f"canary_{name}"], ms[f"baseline_{name}"]
        limit = (base or 0.0) + plan[increase]
        return {"check": f"canary {name} ms", "value": None if value is None else round(value, 1),
                "threshold": f"<= {round(limit, 1)} (baseline {name} {'n/a' if base is None else round(base, 1)} "
                             f"+ {plan[increase]:g})",
                "ok": value is not None and value <= limit}

    checks = [
        {"check": "canary traffic (answers in the step)", "value": round(requests, 1),
         "threshold": f">= {plan['min_requests']}", "ok": requests >= plan["min_requests"]},
        {"check": "canary 5xx ratio", "value": None if ratio is None else round(ratio, 4),
         "threshold": f"<= {plan['max_error_ratio']}", "ok": ratio is not None and ratio <= plan["max_error_ratio"]},
        latency("p99", "max_p99_increase_ms"),
        latency("mean", "max_mean_increase_ms"),
    ]
    failed = [c for c in checks if not c["ok"]]
    text = "; ".join(f"{c['check']} {c['value']} {c['threshold']}: {'ok' if c['ok'] else 'FAILED'}" for c in checks)
    return {"ok": not failed, "figures": fig, "checks": checks, "failed": failed, "text": text}
