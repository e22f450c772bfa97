"""Node loss under load: a workload node is killed (podman kill, no goodbye) while a frontend on another
node serves a fixed load; after the detection window no request fails, the dead node's instances are
critical, and when the node comes back its instances pass again and get traffic."""

import time
from collections import Counter

from conftest import DETECTION_WINDOW_S, DURATION_S, RATE
from testkit.lab import BoundedLoad, load_summary
from testkit.load import overload_summary

KILL_AT_S = 10  # seconds of load before the kill


def _choose(cluster):
    """A victim that is not the Raft leader (that is the next test) and hosts add/sub instances,
    and a frontend on another node."""
    leader = cluster.leader_node(cluster.names[0])
    for victim in cluster.names:
        hosted = [i for i in cluster.instances(node=victim) if i["service"] in ("add-svc", "sub-svc")]
        front = [i for i in cluster.instances("frontend") if i["node"] != victim]
        if victim != leader and hosted and front:
            return victim, hosted, front[0]
    raise AssertionError("no node fits the test")


def test_node_loss_under_load(cluster, seed, restore):
    victim, hosted, front = _choose(cluster)
    survivor = front["node"]
    print(f"load: {RATE}/s for {DURATION_S} s on {front['id']} ({survivor}); kill {victim} (hosts "
          f"{', '.join(i['id'] for i in hosted)}) after {KILL_AT_S} s; detection window {DETECTION_WINDOW_S} s")
    load = cluster.load(front["id"], seed["body"], RATE, DURATION_S).start()
    while load.elapsed() < KILL_AT_S:
        time.sleep(0.05)
    killed_at = load.elapsed()
    cluster.kill(victim)

    detected_at = None
    while load.elapsed() < DURATION_S:
        if detected_at is None and not set(cluster.passing(survivor, "add-svc") + cluster.passing(survivor, "sub-svc")) \
                & {i["id"] for i in hosted}:
            detected_at = load.elapsed()
        time.sleep(0.25)
    records = load.join()

    def ok(r):
        return r["status"] == 200 and r["body"]["result"] == seed["result"]

    before = [r for r in records if r["t"] < killed_at]
    window = [r for r in records if killed_at <= r["t"] < killed_at + DETECTION_WINDOW_S]
    after = [r for r in records if r["t"] >= killed_at + DETECTION_WINDOW_S]
    print(f"the dead node's instances left the pool {detected_at - killed_at:.1f} s after the kill" if detected_at
          else "the dead node's instances never left the pool")
    for name, part in (("before the kill", before), ("inside the window", window), ("after the window", after)):
        print(f"{name}: {load_summary(part, ok)}")
    failures = [r for r in window if not ok(r)]
    print("failures inside the window: " + ", ".join(f"{r['t'] - killed_at:.1f}s {r['status'] or r['error'][:40]}"
                                                      for r in failures))
    assert len(records) == RATE * DURATION_S
    assert all(ok(r) for r in before)
    assert detected_at is not None and detected_at - killed_at <= DETECTION_WINDOW_S
    assert all(ok(r) for r in after), [r for r in after if not ok(r)][:3]
    answered = {c["instance"] for r in after for c in r["body"]["calls"]}
    assert not answered & {i["id"] for i in hosted}

    # The node comes back: it rejoins, its instances pass again and get traffic.
    cluster.start(victim)
    took = cluster.wait_healthy()
    print(f"{victim} rejoined and all its instances pass {took:.0f} s after its restart")
    back = cluster.load(front["id"], seed["body"], RATE, 5).start().join()
    calls = Counter(c["instance"] for r in back if r["body"] for c in r["body"].get("calls", []))
    print(f"after the rejoin: {load_summary(back, ok)}; calls {dict(calls)}")
    assert all(ok(r) for r in back)
    assert {i["id"] for i in hosted} <= set(calls)

    # Right after the rejoin, the README's `make hammer` through the rejoined node's edge (from the controller, twice
    # the rate limit): every request the edge admits succeeds (issue 24: 19 of 227 did on the three-node lab).
    burst = BoundedLoad(cluster.edge_url(victim), seed["body"], 100, 5, timeout=10).start().join()
    step = overload_summary(100, 5, burst, ok)
    print(f"make hammer through {victim}'s edge after the rejoin: {step}")
    # What the edge sheds (503, Retry-After) is not admitted: three nodes on two cores carry less than one.
    assert step["limited"] > 0 and step["failed_inside"] == 0, step
