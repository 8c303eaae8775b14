"""Microsoft's own client libraries against the xdrsync emulator, unchanged.

Usage: python interop.py EMULATOR_JSON

Each case obtains a token over TLS with MSAL Python or azure-identity and lists incidents
with it, or drives the Graph security API with msgraph-sdk (Microsoft's generated Python SDK,
whose models are built from Graph's schema): `$select`, `$filter` with `or`, PATCH with every
determination of the SDK's enum, each 429 shape through the SDK's retry handler, JSON
batching; and the SDK models check the documented-resource corpus (tests/corpus). Prints one line per case and a closing "N passed, M failed" line; exits 1 on failure.
"""
import asyncio
import inspect
import json
import re
import os
import sys
import tempfile
import traceback
from urllib.parse import urlparse

import msal
import requests
from azure.identity import CertificateCredential, ClientSecretCredential
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.api_error import APIError
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.security.alert_classification import AlertClassification
from msgraph.generated.models.security.alert_determination import AlertDetermination
from msgraph.generated.models.security.alert_severity import AlertSeverity
from msgraph.generated.models.security.incident import Incident
from msgraph.generated.security.alerts_v2.alerts_v2_request_builder import Alerts_v2RequestBuilder
from msgraph.generated.security.incidents.incidents_request_builder import IncidentsRequestBuilder
from kiota_serialization_json.json_parse_node import JsonParseNode
from msgraph.generated.models.security.alert import Alert
from msgraph_core import GraphClientFactory
from msgraph_core.requests.batch_request_content import BatchRequestContent
from msgraph_core.requests.batch_request_item import BatchRequestItem
import httpx

contract = json.load(open(sys.argv[1]))
BASE = contract["base_url"]
CA = contract["ca_cert"]
# How requests-based libraries are told to trust a private CA (MSAL's authority discovery
# does not see the per-app `verify` setting).
os.environ["REQUESTS_CA_BUNDLE"] = CA
APP = contract["apps"][0]
TENANT = next(t for t in contract["tenants"] if t["name"] == "Contoso")
OTHER = next(t for t in contract["tenants"] if t["name"] == "Fabrikam")
GRAPH = "https://graph.microsoft.com/.default"
XDR = "https://api.security.microsoft.com/.default"
CERT = APP["certificate"]
KEY_PEM = open(CERT["key_pem"]).read()
CERT_PEM = open(CERT["cert_pem"]).read()


def list_incidents(token, api="graph"):
    path = "/v1.0/security/incidents?$top=5" if api == "graph" else "/api/incidents?$top=5"
    r = requests.get(BASE + path, headers={"Authorization": "Bearer " + token}, verify=CA, timeout=30)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    items = r.json()["value"]
    assert len(items) == 5, len(items)
    return items


def msal_app(credential, tenant=TENANT["id"], discovery=True):
    return msal.ConfidentialClientApplication(
        APP["client_id"],
        client_credential=credential,
        authority=f"{BASE}/{tenant}",
        # A non-Microsoft host: point MSAL's authority validation at the emulator's own
        # instance-discovery endpoint instead of turning validation off. After a *failed*
        # token request MSAL also looks up aliases at login.microsoftonline.com itself, which
        # only `instance_discovery=False` prevents (entra-oauth.md §3.4), so error cases use it.
        instance_discovery=f"{BASE}/common/discovery/instance" if discovery else False,
        verify=CA,
    )


def case_msal_secret():
    result = msal_app(APP["secret"]).acquire_token_for_client(scopes=[GRAPH])
    assert "access_token" in result, result
    list_incidents(result["access_token"])


def case_msal_secret_xdr_scope():
    result = msal_app(APP["secret"]).acquire_token_for_client(scopes=[XDR])
    assert "access_token" in result, result
    items = list_incidents(result["access_token"], api="xdr")
    assert isinstance(items[0]["incidentId"], int)


def case_msal_certificate_rs256_x5t():
    cred = {"private_key": KEY_PEM, "thumbprint": CERT["thumbprint_sha1"]}
    result = msal_app(cred).acquire_token_for_client(scopes=[GRAPH])
    assert "access_token" in result, result
    list_incidents(result["access_token"])


def case_msal_certificate_ps256_x5t_s256():
    cred = {"private_key": KEY_PEM, "thumbprint": CERT["thumbprint_sha1"], "public_certificate": CERT_PEM}
    result = msal_app(cred).acquire_token_for_client(scopes=[GRAPH])
    assert "access_token" in result, result
    list_incidents(result["access_token"])


def case_msal_wrong_secret_is_aadsts7000215():
    result = msal_app("not-the-secret", discovery=False).acquire_token_for_client(scopes=[GRAPH])
    assert result.get("error") == "invalid_client", result
    assert 7000215 in result.get("error_codes", []), result


def case_msal_unconsented_tenant_is_aadsts700016():
    result = msal_app(APP["secret"], tenant=OTHER["id"], discovery=False).acquire_token_for_client(scopes=[GRAPH])
    assert result.get("error") == "unauthorized_client", result
    assert 700016 in result.get("error_codes", []), result


def authority_host():
    u = urlparse(BASE)
    return f"{u.hostname}:{u.port}"


def case_azure_identity_client_secret():
    cred = ClientSecretCredential(
        TENANT["id"], APP["client_id"], APP["secret"],
        authority=authority_host(), disable_instance_discovery=True, connection_verify=CA,
    )
    token = cred.get_token(GRAPH)
    list_incidents(token.token)


def case_azure_identity_certificate():
    with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as f:
        f.write(KEY_PEM + CERT_PEM)
        path = f.name
    try:
        cred = CertificateCredential(
            TENANT["id"], APP["client_id"], certificate_path=path,
            authority=authority_host(), disable_instance_discovery=True, connection_verify=CA,
        )
        token = cred.get_token(XDR)
        list_incidents(token.token, api="xdr")
    finally:
        os.unlink(path)


class RecordingSession(requests.Session):
    """An MSAL `http_client` that keeps every token request's headers and its answer's."""

    def __init__(self):
        super().__init__()
        self.verify = CA
        self.exchanges = []

    def request(self, method, url, **kwargs):
        resp = super().request(method, url, **kwargs)
        self.exchanges.append((resp.request.headers, resp.headers))
        return resp


def case_msal_client_request_id_round_trip():
    # MSAL sends a correlation id as `client-request-id`; Entra echoes it (MSAL.NET checks).
    session = RecordingSession()
    app = msal.ConfidentialClientApplication(
        APP["client_id"], client_credential=APP["secret"], authority=f"{BASE}/{TENANT['id']}",
        instance_discovery=f"{BASE}/common/discovery/instance", http_client=session,
    )
    result = app.acquire_token_for_client(scopes=[GRAPH])
    assert "access_token" in result, result
    token_calls = [(q, a) for q, a in session.exchanges if "client-request-id" in q]
    assert token_calls, [dict(q) for q, _ in session.exchanges]
    for sent, answered in token_calls:
        assert answered.get("client-request-id") == sent["client-request-id"], (dict(sent), dict(answered))
    # And Graph echoes one sent to it.
    r = requests.get(BASE + "/v1.0/security/incidents?$top=1", verify=CA, timeout=30, headers={
        "Authorization": "Bearer " + result["access_token"], "client-request-id": "b0f3c7de-1111-4c2a-9d3e-000000000001"})
    assert r.headers.get("client-request-id") == "b0f3c7de-1111-4c2a-9d3e-000000000001", dict(r.headers)
    assert r.headers.get("request-id"), dict(r.headers)


def graph_client():
    """msgraph-sdk as shipped (default middleware: retry, redirect, telemetry), pointed at the
    emulator: only the base URL, the CA and the allowed host differ from production."""
    cred = ClientSecretCredential(
        TENANT["id"], APP["client_id"], APP["secret"],
        authority=authority_host(), disable_instance_discovery=True, connection_verify=CA,
    )
    auth = AzureIdentityAuthenticationProvider(cred, scopes=[GRAPH], allowed_hosts=[urlparse(BASE).hostname])
    http = GraphClientFactory.create_with_default_middleware(client=httpx.AsyncClient(verify=CA, timeout=60))
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = BASE + "/v1.0"
    return GraphServiceClient(request_adapter=adapter)


def run(coro):
    return asyncio.run(coro)


def case_msgraph_sdk_incidents_select_and_or_filter():
    async def go():
        client = graph_client()
        q = IncidentsRequestBuilder.IncidentsRequestBuilderGetQueryParameters(
            select=["id", "severity", "status"],
            filter="severity eq 'high' or severity eq 'medium'",
            top=50,
        )
        page = await client.security.incidents.get(request_configuration=RequestConfiguration(query_parameters=q))
        assert page.value, "no incident is high or medium"
        for i in page.value:
            assert i.severity in (AlertSeverity.High, AlertSeverity.Medium), i.severity
            assert i.id and i.status is not None, i
            assert i.display_name is None and i.created_date_time is None, "not selected, yet returned"
        # `or` is a union: it returns what the two filters return apart.
        counts = []
        for f in ("severity eq 'high'", "severity eq 'medium'"):
            q = IncidentsRequestBuilder.IncidentsRequestBuilderGetQueryParameters(select=["id"], filter=f, top=50)
            counts.append(len((await client.security.incidents.get(
                request_configuration=RequestConfiguration(query_parameters=q))).value))
        assert len(page.value) == min(50, sum(counts)), (len(page.value), counts)
    run(go())


def case_msgraph_sdk_alerts_v2_select():
    async def go():
        client = graph_client()
        q = Alerts_v2RequestBuilder.Alerts_v2RequestBuilderGetQueryParameters(
            select=["id", "title", "severity"], filter="severity ge 'medium'", top=20)
        page = await client.security.alerts_v2.get(request_configuration=RequestConfiguration(query_parameters=q))
        assert page.value, "no alert"
        for a in page.value:
            assert a.title and a.severity in (AlertSeverity.High, AlertSeverity.Medium), (a.title, a.severity)
            assert a.evidence is None and a.incident_id is None, "not selected, yet returned"
    run(go())


# The classification each determination belongs to (the incident-classification guidance).
CLASS_OF = {
    "unknown": AlertClassification.Unknown,
    "notMalicious": AlertClassification.FalsePositive,
    "notEnoughDataToValidate": AlertClassification.FalsePositive,
    "securityPersonnel": AlertClassification.InformationalExpectedActivity,
    "securityTesting": AlertClassification.InformationalExpectedActivity,
    "confirmedActivity": AlertClassification.InformationalExpectedActivity,
    "lineOfBusinessApplication": AlertClassification.InformationalExpectedActivity,
}


def case_msgraph_sdk_patches_every_determination():
    async def go():
        client = graph_client()
        first = (await client.security.incidents.get(request_configuration=RequestConfiguration(
            query_parameters=IncidentsRequestBuilder.IncidentsRequestBuilderGetQueryParameters(top=1)))).value[0]
        done = []
        for d in AlertDetermination:
            body = Incident(classification=CLASS_OF.get(d.value, AlertClassification.TruePositive), determination=d)
            if d is AlertDetermination.UnknownFutureValue:
                # The evolvable-enum sentinel is not a value to set.
                try:
                    await client.security.incidents.by_incident_id(first.id).patch(body)
                    raise AssertionError("unknownFutureValue was accepted")
                except APIError as e:
                    assert e.response_status_code == 400, e
                continue
            got = await client.security.incidents.by_incident_id(first.id).patch(body)
            assert got.determination == d, (d, got.determination)
            again = await client.security.incidents.by_incident_id(first.id).get()
            assert again.determination == d and again.classification == body.classification, (d, again.determination)
            done.append(d.value)
        assert len(done) == 15, done
    run(go())


def add_fault(rule):
    r = requests.post(BASE + "/_emulator/faults", json=rule, verify=CA, timeout=30)
    assert r.status_code == 201, (r.status_code, r.text)


def faults_injected():
    return requests.get(BASE + "/_emulator/stats", verify=CA, timeout=30).json()["faults_injected"]


def case_msgraph_sdk_retry_handler_waits_out_every_429_shape():
    async def go():
        client = graph_client()
        params = RequestConfiguration(
            query_parameters=IncidentsRequestBuilder.IncidentsRequestBuilderGetQueryParameters(top=3))
        for shape in ("too_many_requests", "activity_limit_reached", "unknown_error"):
            before = faults_injected()
            add_fault({"route": "GET /v1.0/security/incidents", "sequence": [
                {"type": "throttle", "shape": shape, "retry_after_secs": 1}, {"type": "ok"}]})
            page = await client.security.incidents.get(request_configuration=params)
            assert len(page.value) == 3, shape
            assert faults_injected() == before + 1, f"{shape}: the 429 was not served"
    run(go())


def case_msgraph_sdk_json_batch():
    async def go():
        client = graph_client()
        listed = (await client.security.incidents.get(request_configuration=RequestConfiguration(
            query_parameters=IncidentsRequestBuilder.IncidentsRequestBuilderGetQueryParameters(top=5)))).value
        items = [BatchRequestItem(request_information=client.security.incidents.by_incident_id(i.id)
                                  .to_get_request_information()) for i in listed]
        answer = await client.batch.post(batch_request_content=BatchRequestContent({it.id: it for it in items}))
        for it, inc in zip(items, listed):
            r = answer.get_response_by_id(it.id)
            assert r is not None and r.status == 200, (it.id, r and r.status)
            assert r.content_type.startswith("application/json"), r.content_type
            # Graph answers a JSON body as a JSON object inside the batch (as the emulator
            # does); this SDK drops such bodies (kiota-python#737: `get_bytes_value()` takes
            # only strings), so the body itself is checked by the Rust tests, not here.
        assert len(answer.responses) == len(items), answer.responses
    run(go())


CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")
SETATTR = re.compile(r"setattr\(self, '(\w+)'")


def sdk_complete(obj, raw, path, problems):
    """`raw` parsed by the SDK as `obj`: no property the model does not declare (they would
    land in `additional_data`), and every property it declares present; nested objects too."""
    # `additionalData` and `customDetails` are open dictionaries by definition.
    if getattr(obj, "additional_data", None) and type(obj).__name__ != "Dictionary":
        problems.append(f"{path}: unknown to the SDK: {sorted(obj.additional_data)}")
    fields = obj.get_field_deserializers()
    missing = set(fields) - set(raw) - {"@odata.type"}
    if missing:
        problems.append(f"{path}: missing {sorted(missing)}")
    for key, fn in fields.items():
        value = raw.get(key)
        m = SETATTR.search(inspect.getsource(fn))
        child = getattr(obj, m.group(1), None) if m else None
        if isinstance(value, dict) and hasattr(child, "get_field_deserializers"):
            sdk_complete(child, value, f"{path}.{key}", problems)
        elif isinstance(value, list) and isinstance(child, list):
            for i, (v, c) in enumerate(zip(value, child)):
                if isinstance(v, dict) and hasattr(c, "get_field_deserializers"):
                    sdk_complete(c, v, f"{path}.{key}[{i}]", problems)


def case_corpus_is_complete_for_the_sdk_models():
    # The hand-written corpus the Rust normalizer tests read: every property msgraph-sdk's
    # models declare for incident, alert and each evidence type is there, none it does not.
    problems = []
    for name, model in (("graph_incident.json", Incident), ("graph_alert.json", Alert)):
        raw = json.load(open(os.path.join(CORPUS, name)))
        sdk_complete(JsonParseNode(raw).get_object_value(model), raw, name, problems)
    evidence = json.load(open(os.path.join(CORPUS, "graph_evidence.json")))
    parsed = JsonParseNode({"evidence": evidence}).get_object_value(Alert).evidence
    assert len(parsed) == len(evidence) >= 48, len(parsed)
    for raw, obj in zip(evidence, parsed):
        assert type(obj).__name__[0].lower() + type(obj).__name__[1:] == raw["@odata.type"].rsplit(".", 1)[1], raw["@odata.type"]
        sdk_complete(obj, raw, raw["@odata.type"], problems)
    assert not problems, "\n".join(problems)


CASES = [v for k, v in sorted(globals().items()) if k.startswith("case_")]
passed = failed = 0
for case in CASES:
    try:
        case()
        print(f"PASS {case.__name__}")
        passed += 1
    except Exception as e:
        print(f"FAIL {case.__name__}: {type(e).__name__}: {str(e)[:4000]}")
        if os.environ.get("INTEROP_VERBOSE"):
            traceback.print_exc()
        failed += 1
print(f"interop: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
