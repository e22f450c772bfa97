"""double-svc: the lab's example of a service added to the catalog (README, "Add a service").

GET /api/v1/double?x=N answers {"result": 2N, "via": <add-svc instance>}: it asks
add-svc, its one upstream, for N + N through its Connect sidecar (ADD_SVC_URL,
which the lab model sets to the sidecar's local listener). Standard library only.
"""
