"""Balancing: over 100 compute calls every add-svc and sub-svc instance answers at least 25% of its service's calls.

Consul's built-in proxy picks an instance per connection; the frontend's bounded
connection pool (apps/README.md) is what spreads requests while keeping keep-alive.
"""

from collections import Counter

from conftest import instances_of


def test_load_is_spread_over_every_instance_of_each_upstream(mesh, model):
    results = mesh.compute_many(100)
    assert all(status == 200 for status, _ in results), [r for r in results if r[0] != 200][:3]
    counts = Counter(call["instance"] for _, body in results for call in body["calls"])
    for name in ("add-svc", "sub-svc"):
        per_instance = {i["id"]: counts[i["id"]] for i in instances_of(model, name)}
        total = sum(per_instance.values())
        assert total > 0
        for iid, n in per_instance.items():
            share = n / total
            print(f"{iid}: {n}/{total} calls ({share:.0%})")
            assert share >= 0.25, f"{iid} answered {n} of {total} {name} calls: {per_instance}"
