"""`coalmine status`: the cluster admin's view of Rollouts, read from their status and Events.

`render` turns a Rollout object (a plain dict, as the API server returns it) and its Events into a
rich renderable or plain text lines, with no I/O; `cli` reads the cluster and draws. The demo
draws with the same `render`, so what it shows is what `coalmine status --watch` shows.
"""
