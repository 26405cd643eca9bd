"""meshsim: a simulator of Istio's request telemetry, for tests and the demo.

Why it exists: coalmine judges canaries from Istio's standard metrics, and this machine
has no mesh. meshsim watches the real VirtualServices and DestinationRules in the API
server, invents requests (seeded Poisson arrivals) that are split the way Istio would split
them, and exports `istio_requests_total` / `istio_request_duration_milliseconds` with Istio's
names, labels and buckets for Prometheus to scrape.

What it must not be mistaken for: it is NOT a proxy. No request is ever sent anywhere, no
pod is contacted, and only the parts of Istio routing the operator relies on are modelled
(see `routing.py` for exactly which).

Layout (functional core, imperative shell):
- `routing.py`  pure: VirtualService/DestinationRule dicts + request attributes -> destination.
- `traffic.py`  pure: seeded arrivals, request mix, errors and latency -> request records.
- `runtime.py`  shell: API-server watches, the tick loop, Prometheus metrics, HTTP control API.
- `client.py`   a small httpx client for the control API (tests and the demo use it).
- `cli.py`      the `coalmine meshsim` subcommand.
"""
