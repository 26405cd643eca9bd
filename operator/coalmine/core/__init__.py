"""The functional core: the Rollout's data (models), what its references resolve to (validation), the
canary analysis (analysis), the VirtualService patch (virtualservice) and the step machine (plan).

Pure functions of (spec, status, observations, now): no I/O, no clock, no kopf, no clients. Who
imports whom inside: plan -> analysis, virtualservice -> validation -> models.
"""
