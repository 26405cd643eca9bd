"""coalmine: progressive canary rollouts on Istio, judged by Prometheus."""

__version__ = "0.1.0"
