"""The local stack ("devstack"): a real kube-apiserver, etcd and Prometheus on loopback.

Everything coalmine does talks to a Kubernetes API server and a Prometheus server; tests and
the demo use real ones started from here instead of mocks. `stack` is the Python API, `cli`
the `coalmine devstack` subcommand, `binaries` finds the executables.
"""
