"""Integer arithmetic micro-services (add-svc and sub-svc) for the service-mesh lab.

One package serves both operations; the operation is chosen at start-up
(``python -m arith_svc --op add|sub``).
"""
