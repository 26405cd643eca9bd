"""The local stack ("devstack"): a small real cluster and a real Prometheus on loopback.

Everything coalmine does talks to a Kubernetes API server and a Prometheus server; tests and
the demo use real ones started from here instead of mocks: etcd, kube-apiserver, Istio's
validating webhook, and (unless left out) kube-controller-manager, kube-scheduler and kwok's
fake nodes. `stack` is the Python API, `cli` the `coalmine devstack` subcommand, `binaries`
finds the executables.
"""
