"""Rolling updates on the systemd scheduler: which instances restart together, in which order.

A workloads.yml run writes each node's units; an instance whose app or sidecar unit changed (new code: its
MESH_APP_REVISION; new settings: its environment or argv) restarts, a new one just starts. ``batches`` orders the
restarts: service by service in catalog order (the callers last, so that they meet upstreams already updated),
at most the service's ``max_parallel`` instances at a time, over the whole lab. Each batch is drained (Consul
maintenance mode, then the model's ``rollout.drain_s``), restarted, and must answer its health path and pass
its checks again before the next one starts (roles/scheduler_systemd/tasks/roll.yml), so at no moment are fewer
than ``instances - max_parallel`` instances of a service in service.
"""


def batches(model, units):
    """The rolling update of the instances whose `units` (unit file names, any node) changed: a list of batches,
    each a list of {id, service, node, units, port, health_path, token_file}; units not of an instance are left
    out (removed instances are not restarted: they are drained and stopped)."""
    units = set(units)
    plan = []
    for svc in model["services"]:
        todo = []
        for inst in model["instances"]:
            if inst["service"] != svc["name"]:
                continue
            changed = [u for u in (inst["units"]["app"], inst["units"]["sidecar"]) if u in units]
            if changed:
                todo.append({"id": inst["id"], "service": inst["service"], "node": inst["node"], "units": changed,
                             "port": inst["port"], "health_path": inst["health_path"],
                             "token_file": inst["token_file"]})
        step = svc["max_parallel"]
        plan += [todo[n:n + step] for n in range(0, len(todo), step)]
    return plan
