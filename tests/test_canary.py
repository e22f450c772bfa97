"""The progressive canary (meshlab/canary.py): its plan for the lab's catalog, the PromQL it asks, the verdict on
Prometheus' answers (a breach of each threshold fails, figures inside pass), and bad options refused with what
to change."""

import copy

import pytest

from meshlab import canary


def answer(**figures):
    """Prometheus' /api/v1/query JSON answer to canary.query(): one sample per figure, labelled with its name (a
    figure None is absent, as for a series with no data)."""
    result = [{"metric": {"figure": name}, "value": [1733600000.0, str(value)]}
              for name, value in figures.items() if value is not None]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def answers(requests=40, errors=0, p99=0.08, baseline=0.07, mean=0.03, baseline_mean=0.025):
    return answer(canary_requests=requests, canary_errors=errors, canary_p99=p99, baseline_p99=baseline,
                  canary_mean=mean, baseline_mean=baseline_mean)


@pytest.fixture(scope="module")
def plan(model):
    return canary.plan(model)


def test_the_plan_steps_the_exposed_services_last_version(plan):
    assert (plan["service"], plan["canary"], plan["baseline"]) == ("frontend", "v2", ["v1"])
    assert plan["steps"] == [10, 25, 50, 100] and plan["step_s"] == 30
    assert plan["route_skip"] == "/health|/metrics|/admin/.*"


def test_the_queries_ask_for_the_canarys_step_and_the_baselines_whole_rollout(plan):
    q = canary.queries(plan, 30, 95.4)
    sel = 'job="mesh",service="frontend",version="v2",route!~"/health|/metrics|/admin/.*"'
    assert q["canary_requests"] == f"sum(increase(http_requests_total{{{sel}}}[30s]))"
    assert q["canary_errors"] == f'sum(increase(http_requests_total{{{sel},status=~"5.."}}[30s]))'
    assert q["canary_p99"] == f"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{{{sel}}}[30s])))"
    assert q["canary_mean"] == (f"sum(rate(http_request_duration_seconds_sum{{{sel}}}[30s])) / "
                                f"sum(rate(http_request_duration_seconds_count{{{sel}}}[30s]))")
    assert 'version="v1"' in q["baseline_mean"] and q["baseline_mean"].endswith("[95s]))")
    assert 'version="v1"' in q["baseline_p99"] and q["baseline_p99"].endswith("[95s])))")
    # Never a window shorter than the step (the first analysis: the rollout began one step ago).
    assert canary.queries(plan, 30, 3)["baseline_p99"].endswith("[30s])))")


@pytest.mark.parametrize("figures, failed", [
    ({}, []),
    ({"errors": 2}, []),  # 5 % of 40: at the threshold
    ({"errors": 12}, ["canary 5xx ratio"]),  # 30 %
    ({"p99": 0.2699}, []),  # the limit: the baseline's 70 ms + 200
    ({"p99": 0.2701}, ["canary p99 ms"]),
    ({"p99": 0.4975, "mean": 0.33}, ["canary p99 ms", "canary mean ms"]),  # +300 ms on every answer
    ({"p99": 0.595, "baseline": 0.466, "mean": 0.36}, ["canary mean ms"]),  # the same in a loaded lab: p99 hides it
    ({"mean": 0.1249}, []),  # the limit: the baseline's 25 ms + 100
    ({"requests": 4, "errors": 0}, ["canary traffic (answers in the step)"]),
    ({"requests": 0, "errors": 0, "p99": None, "mean": None},
     ["canary traffic (answers in the step)", "canary 5xx ratio", "canary p99 ms", "canary mean ms"]),
    ({"p99": 0.25, "baseline": None}, ["canary p99 ms"]),  # no baseline figure: the increase counts from 0
])
def test_the_verdict_fails_exactly_the_breached_checks(plan, figures, failed):
    got = canary.verdict(answers(**figures), plan)
    names = [c["check"] for c in got["failed"]]
    assert names == failed, got["text"]
    assert got["ok"] == (not failed)
    assert ("FAILED" in got["text"]) == bool(failed)


def test_the_one_query_labels_each_figure(plan):
    one = canary.query(plan, 30, 95)
    for name, expr in canary.queries(plan, 30, 95).items():
        assert f'label_replace({expr}, "figure", "{name}", "", "")' in one
    assert one.count(" or ") == 5


def test_nan_from_prometheus_is_no_figure(plan):
    got = canary.verdict(answers(p99="NaN"), plan)
    assert got["figures"]["canary_p99"] is None and [c["check"] for c in got["failed"]] == ["canary p99 ms"]


@pytest.mark.parametrize("options, words", [
    ({"service": "add-svc"}, "not exposed"),
    ({"service": "nope"}, "not a catalog service"),
    ({"steps": [50, 10]}, "rising whole percentages"),
    ({"steps": [0, 100]}, "rising whole percentages"),
    ({"steps": "10,50,100"}, None),
    ({"step_s": 2}, "canary_step_s 2 must be a whole number from 5"),
    ({"max_error_ratio": 1.5}, "canary_max_error_ratio"),
    ({"min_requests": "0"}, "canary_min_requests"),
    ({"scheduler": "nomad"}, "only the systemd scheduler"),
])
def test_bad_options_are_refused_with_what_to_change(model, options, words):
    if words is None:
        assert canary.plan(model, options)["steps"] == [10, 50, 100]
        return
    with pytest.raises(canary.CanaryError, match=words):
        canary.plan(model, options)


def test_a_service_without_versions_or_without_prometheus_has_no_rollout(model):
    single = copy.deepcopy(model)
    front = next(s for s in single["services"] if s["expose"])
    front["versions"] = [{"name": None, "instances": 3, "weight": 100}]
    with pytest.raises(canary.CanaryError, match="no canary"):
        canary.plan(single)
    with pytest.raises(canary.CanaryError, match="Prometheus"):
        canary.plan({**model, "metrics": {}})
