"""A freshly started lab serves its first burst (issue 24): the first test of the verify step, so the lab was
converged moments before (the default scenario has no idempotence step), and nothing has warmed it but the
deployment itself.

The README's `make hammer`: 100 computes/s for 5 s from the controller through the edge, twice its rate limit.
What the edge admits (neither 429 nor shed by its admission control) must all succeed, and the split between the
versions must follow the weights.
"""

from collections import Counter

from conftest import binomial_bounds, systemd_only
from testkit.lab import BoundedLoad
from testkit.load import overload_summary

pytestmark = systemd_only


def test_the_first_burst_through_the_edge_succeeds_for_every_admitted_request(edge, model, seed):
    rate, seconds = 100, 5
    records = BoundedLoad(f"{edge['url']}/api/v1/compute", {"expression": seed["expression"]}, rate, seconds,
                          timeout=10).start().join()
    ok = lambda r: r["status"] == 200 and (r["body"] or {}).get("result") == seed["result"]  # noqa: E731
    step = overload_summary(rate, seconds, records, ok)
    weights = {v["name"]: v["weight"] for v in next(s for s in model["catalog"] if s["name"] == "frontend")["versions"]}
    versions = Counter((r["body"] or {}).get("version") for r in records if ok(r))
    low, high = binomial_bounds(step["succeeded"], weights["v2"] / 100)
    print(f"first burst, {rate}/s for {seconds} s: {step}; versions {dict(versions)} (v2 expected within [{low}, {high}])")
    assert step["limited"] > 0  # control: the burst is above the rate limit
    assert step["failed_inside"] == 0, step
    # What passed the rate limit (its 50/s for 5 s, give or take its window) was served, but for at most 30 % that
    # the edge shed (the 2-core lab with the load's client on it runs near its capacity at 50 computes/s; fresh labs
    # on 2026-12-03 shed 17, 49 and 82 of about 250: the bound was a fifth until the last of them).
    passed = step["offered"] - step["limited"]
    assert passed >= 200 and step["shed"] <= 0.3 * passed, step
    assert low <= versions["v2"] <= high and versions["v1"] + versions["v2"] == step["succeeded"], versions
