"""`coalmine demo`: the seed scenario end to end on the local stack, in a couple of minutes.

A healthy canary (v2) is promoted 10 → 30 → 50 → 100; a canary that starts failing part-way (v3)
is rolled back to 0. The modules split the work: `scenario` (pure: the objects, the checks, the
summary), `timeline` (pure data assembly from Rollout status and Prometheus, plus the PNG),
`runner` (the imperative shell: processes, API calls, waiting) and `cli` (flags).
"""
