"""Microsoft's own client libraries against the xdrsync emulator, unchanged.

Usage: python interop.py EMULATOR_JSON

Each case obtains a token over TLS with MSAL Python or azure-identity and lists incidents
with it. Prints one line per case and a closing "N passed, M failed" line; exits 1 on failure.
"""
import json
import os
import sys
import tempfile
import traceback
from urllib.parse import urlparse

import msal
import requests
from azure.identity import CertificateCredential, ClientSecretCredential

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


CASES = [v for k, v in sorted(globals().items()) if k.startswith("case_")]
passed = failed = 0
for case in CASES:
    try:
        case()
        print(f"PASS {case.__name__}")
        passed += 1
    except Exception as e:
        print(f"FAIL {case.__name__}: {type(e).__name__}: {str(e)[:400]}")
        if os.environ.get("INTEROP_VERBOSE"):
            traceback.print_exc()
        failed += 1
print(f"interop: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
