"""The functional core: the Rollout's data (models), the route objects as read (routes), what its references
resolve to (validation), the canary analysis (analysis), the routers' weight patches (virtualservice,
httproute) behind one interface (routers), the ambient preflight (preflight) and the step machine (plan).

Pure functions of (spec, status, observations, now): no I/O, no clock, no kopf, no clients. Who
imports whom inside: plan, routers -> analysis, virtualservice, httproute, preflight -> validation -> routes -> models.
"""
