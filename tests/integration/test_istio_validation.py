"""Istio's own validation judges every VirtualService and DestinationRule write on the stack, as istiod's
webhook does in a cluster: what Istio refuses is refused with Istio's message, the rest passes."""

from __future__ import annotations

import json
import ssl
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from coalmine_dev.devstack import binaries
from coalmine_dev.devstack import stack as devstack

pytestmark = pytest.mark.integration

ISTIO = ("networking.istio.io", "v1")
DENIED = 'admission webhook "validation.istio.io" denied the request: '


def vs(route: list[dict[str, Any]], **http: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews"},
        "spec": {"hosts": ["reviews"], "http": [{"name": "primary", "route": route, **http}]},
    }


def to(subset: str, weight: int | None = None, host: str | None = "reviews") -> dict[str, Any]:
    destination: dict[str, Any] = {"subset": subset} | ({"host": host} if host is not None else {})
    return {"destination": destination} | ({} if weight is None else {"weight": weight})


def refusal(api_client: client.ApiClient, namespace: str, plural: str, body: dict[str, Any]) -> str:
    """Create `body`, expect the API server to refuse it, return the message (and check nothing was stored)."""
    custom = client.CustomObjectsApi(api_client)
    with pytest.raises(ApiException) as caught:
        custom.create_namespaced_custom_object(*ISTIO, namespace, plural, body)
    assert caught.value.status == 400, caught.value.body
    assert custom.list_namespaced_custom_object(*ISTIO, namespace, plural)["items"] == []
    return str(json.loads(caught.value.body)["message"])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(vs([to("v1", -10), to("v2", 110)]), "configuration is invalid: weight -10 < 0", id="negative"),
        pytest.param(
            vs([to("v1", 0), to("v2", 0)]), "configuration is invalid: total destination weight = 0", id="total-0"
        ),
        pytest.param(
            vs([to("v1", host="")]), "configuration is invalid: empty domain name not allowed", id="empty-host"
        ),
        pytest.param(vs([to("v1", host="*")]), "configuration is invalid: invalid destination host *", id="host-*"),
        pytest.param(
            vs([to("v1")], retries={"attempts": -1}), "attempts cannot be negative", id="negative-retry-attempts"
        ),
    ],
)
def test_istio_refuses_bad_virtual_services_with_its_message(
    api_client: client.ApiClient, namespace: str, body: dict[str, Any], message: str
) -> None:
    refused = refusal(api_client, namespace, "virtualservices", body)
    assert refused.startswith(DENIED), refused
    assert message in refused


def test_a_destination_without_host_is_refused_by_istios_crd_schema_already(
    api_client: client.ApiClient, namespace: str
) -> None:
    """Istio's CRD marks `destination.host` required, so the API server refuses (422) before any webhook."""
    custom = client.CustomObjectsApi(api_client)
    with pytest.raises(ApiException) as caught:
        custom.create_namespaced_custom_object(*ISTIO, namespace, "virtualservices", vs([to("v1", host=None)]))
    assert caught.value.status == 422
    causes = json.loads(caught.value.body)["details"]["causes"]
    assert {
        "reason": "FieldValueRequired",
        "message": "Required value",
        "field": "spec.http[0].route[0].destination.host",
    } in causes


def test_istio_refuses_a_bad_destination_rule(api_client: client.ApiClient, namespace: str) -> None:
    rule = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "reviews"},
        "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v1"}]},
    }
    refused = refusal(api_client, namespace, "destinationrules", rule)
    assert refused.startswith(DENIED + "configuration is invalid: "), refused
    assert "duplicate subset names: v1" in refused


def test_what_istio_accepts_passes_including_weights_not_summing_to_100(
    api_client: client.ApiClient, namespace: str
) -> None:
    """Istio's weights are relative: 80 + 10 is valid for Istio (the operator's own validation wants 100)."""
    custom = client.CustomObjectsApi(api_client)
    created = custom.create_namespaced_custom_object(
        *ISTIO, namespace, "virtualservices", vs([to("v1", 80), to("v2", 10)], retries={"attempts": 3})
    )
    assert [d["weight"] for d in created["spec"]["http"][0]["route"]] == [80, 10]
    # An update is judged too: a negative weight on the stored object is refused, the stored one stays.
    created["spec"]["http"][0]["route"][1]["weight"] = -1
    with pytest.raises(ApiException) as caught:
        custom.replace_namespaced_custom_object(*ISTIO, namespace, "virtualservices", "reviews", created)
    assert "weight -1 < 0" in json.loads(caught.value.body)["message"]
    stored = custom.get_namespaced_custom_object(*ISTIO, namespace, "virtualservices", "reviews")
    assert [d["weight"] for d in stored["spec"]["http"][0]["route"]] == [80, 10]
    # Deleting is not judged (as with istiod).
    custom.delete_namespaced_custom_object(*ISTIO, namespace, "virtualservices", "reviews")


def test_server_side_dry_run_is_judged_too(api_client: client.ApiClient, namespace: str) -> None:
    custom = client.CustomObjectsApi(api_client)
    with pytest.raises(ApiException) as caught:
        custom.create_namespaced_custom_object(
            *ISTIO, namespace, "virtualservices", vs([to("v1", 0), to("v2", 0)]), dry_run="All"
        )
    assert "total destination weight = 0" in json.loads(caught.value.body)["message"]


TYPO = vs([{"destination": {"host": "reviews", "subset": "v1"}, "wieght": 100}])


def test_unknown_field_is_refused_by_the_api_server_before_istio_sees_it(
    kubeconfig: Path, api_client: client.ApiClient, namespace: str
) -> None:
    """Istio's CRD schemas declare every field, so the API server handles an unknown one itself, as in a
    cluster with istiod: kubectl (strict field validation) is refused with the API server's message..."""
    done = subprocess.run(
        [str(binaries.kubectl()), "--kubeconfig", str(kubeconfig), "apply", "-n", namespace, "-f", "-"],
        input=yaml.safe_dump(TYPO),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert 'unknown field "spec.http[0].route[0].wieght"' in done.stderr, done.stderr
    custom = client.CustomObjectsApi(api_client)
    assert custom.list_namespaced_custom_object(*ISTIO, namespace, "virtualservices")["items"] == []
    # ...and a client that asks for no strictness (the default is Warn) has the field pruned, not stored.
    created = custom.create_namespaced_custom_object(*ISTIO, namespace, "virtualservices", TYPO)
    assert created["spec"]["http"][0]["route"][0] == {"destination": {"host": "reviews", "subset": "v1"}}


def review(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0f1e2d3c",
            "kind": {"group": "networking.istio.io", "version": "v1", "kind": obj["kind"]},
            "resource": {"group": "networking.istio.io", "version": "v1", "resource": "virtualservices"},
            "namespace": namespace,
            "name": obj["metadata"]["name"],
            "operation": "CREATE",
            "userInfo": {"username": "test"},
            "object": {**obj, "metadata": {**obj["metadata"], "namespace": namespace}},
        },
    }


def test_the_webhook_itself_decodes_strictly(stack: devstack.StackInfo) -> None:
    """Sent to the webhook directly (no API server pruning in between), an unknown field is refused by
    Istio's strict decoder; the same object without the typo is allowed."""
    tls = ssl.create_default_context(cafile=str(stack.state_dir / "istio-validation" / "ca.crt"))
    url = f"https://127.0.0.1:{stack.ports['istio-validation']}/validate"
    typo = httpx.post(url, json=review(TYPO, "ns"), verify=tls).json()["response"]
    assert typo["uid"] == "0f1e2d3c"
    assert not typo["allowed"]
    assert typo["status"]["message"] == (
        'error decoding configuration: unknown field "wieght" in istio.networking.v1alpha3.HTTPRouteDestination'
    )
    fixed = vs([to("v1", 100)])
    assert httpx.post(url, json=review(fixed, "ns"), verify=tls).json()["response"]["allowed"] is True


def test_the_webhook_is_registered_to_fail_closed(api_client: client.ApiClient) -> None:
    configs = client.AdmissionregistrationV1Api(api_client).list_validating_webhook_configuration().items
    (config,) = [c for c in configs if c.metadata.name == devstack.WEBHOOK_CONFIGURATION]
    (hook,) = config.webhooks
    assert hook.failure_policy == "Fail"
    assert hook.client_config.url.startswith("https://127.0.0.1:")
