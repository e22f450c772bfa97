"""The whole lab powered off and on (`vagrant halt && vagrant up` without provisioning; here every node's
container stopped, then all started at once): it comes back by itself, with the same secrets on every node,
and the edge answers the seed within a bound; the time is printed."""

import json
import subprocess
import time

from testkit.lab import wait_until

# Measured on this machine (2026-12-03): see the printed figure; the bound leaves room for a slower CI machine.
BACK_BOUND_S = 240
SECRET_FILES = "/etc/consul.d/secrets.hcl /etc/consul.d/tls/* /etc/consul-ops/agent.token /etc/mesh/tokens/*"


def _fingerprints(cluster):
    return {n: cluster.run(n, f"sha256sum {SECRET_FILES}").stdout for n in cluster.names}


def _seed_through_edge(cluster, seed):
    """The seed's answer through each node's edge, from the controller (None where it fails)."""
    answers = {}
    for node in cluster.names:
        res = subprocess.run(["curl", "-s", "-m", "5", "-H", "Content-Type: application/json", "-d",
                              json.dumps(seed["body"]), cluster.edge_url(node)], capture_output=True, text=True)
        try:
            answers[node] = json.loads(res.stdout).get("result")
        except ValueError:
            answers[node] = None
    return answers


def test_the_lab_comes_back_by_itself_after_a_power_cycle(cluster, seed):
    before = _fingerprints(cluster)
    assert all(before.values())
    subprocess.run(["podman", "stop", "-t", "30", *cluster.names], check=True, capture_output=True)
    stopped = time.monotonic()
    subprocess.run(["podman", "start", *cluster.names], check=True, capture_output=True)
    started = time.monotonic()
    answers = {}

    def every_edge_answers():
        answers.update(_seed_through_edge(cluster, seed))
        return set(answers.values()) == {seed["result"]}

    assert wait_until(every_edge_answers, BACK_BOUND_S, f"{seed['result']} through every edge", interval=1), \
        f"the edges answer {answers} {BACK_BOUND_S} s after the start"
    serving = time.monotonic() - started
    healthy = cluster.wait_healthy(timeout=BACK_BOUND_S)
    after = _fingerprints(cluster)
    print(f"every node stopped in {started - stopped:.1f} s and started; every edge answers {seed['result']} "
          f"{serving:.1f} s after the start; every instance passing {time.monotonic() - started:.1f} s after it "
          f"(wait_healthy {healthy:.0f} s); secret files unchanged on {sum(after[n] == before[n] for n in cluster.names)} "
          f"of {len(cluster.names)} nodes")
    assert after == before
