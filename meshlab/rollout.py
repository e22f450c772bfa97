"""Rolling updates on the systemd scheduler: which instances restart together, in which order.

A workloads.yml run writes each node's units; an instance whose app or sidecar unit changed (new code: its
MESH_APP_REVISION; new settings: its environment or argv) restarts, a new one just starts. ``batches`` orders the
restarts in tiers of the call graph: the services that call no other service of the catalog first, then their
callers, and so on (so that callers meet upstreams already updated). Inside a tier the services roll side by side:
a batch holds the next at most ``max_parallel`` instances of each of them, over the whole lab. Each batch is drained
(Consul maintenance mode, then the model's ``rollout.drain_s``), restarted, and must answer its health path and pass
its checks again before the next one starts (roles/scheduler_systemd/tasks/roll.yml), so at no moment are fewer
than ``instances - max_parallel`` instances of a service in service.
"""


def tiers(services):
    """The catalog's services (model["services"], catalog order) in tiers of the call graph: [[service, ...], ...],
    tier 0 calling no service of the catalog, tier n calling only services of tiers below n."""
    by_name = {s["name"]: s for s in services}
    depth = {}

    def tier(name):
        if name not in depth:
            depth[name] = 0  # while its upstreams are looked at: a call cycle ends here instead of recursing forever
            ups = [u["service"] for u in by_name[name].get("upstreams") or [] if u["service"] in by_name]
            depth[name] = 1 + max(map(tier, ups), default=-1)
        return depth[name]

    levels = [tier(s["name"]) for s in services]
    return [[s for s, level in zip(services, levels) if level == n] for n in range(max(levels, default=-1) + 1)]


def batches(model, units):
    """The rolling update of the instances whose `units` (unit file names, any node) changed: a list of batches,
    each a list of {id, service, node, units, port, health_path, token_file}; units not of an instance are left
    out (removed instances are not restarted: they are drained and stopped)."""
    units = set(units)
    plan = []
    for level in tiers(model["services"]):
        slices = []
        for svc in level:
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
            slices.append([todo[n:n + step] for n in range(0, len(todo), step)])
        plan += [[inst for s in slices if n < len(s) for inst in s[n]] for n in range(max(map(len, slices), default=0))]
    return plan
