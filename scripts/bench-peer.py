"""The plain script a user would write instead of xdrsync, for scripts/bench-pull to race.

Usage: python bench-peer.py EMULATOR_JSON OUT.ndjson LOOKBACK_HOURS

What Microsoft's "Hello World" sample does, for every tenant at once: MSAL (client
credentials) for a Graph token per tenant, then `requests` paging
`/security/incidents?$filter=lastUpdateDateTime ge …&$expand=alerts` by `@odata.nextLink`,
one thread per tenant, each incident written as one NDJSON line. No store, no normalization,
no change detection, no retry: the floor of what moving incidents costs in Python.
Prints "peer: N incidents in S s".
"""
import datetime
import json
import os
import sys
import threading
import time

import msal
import requests

contract = json.load(open(sys.argv[1]))
out_path = sys.argv[2]
lookback = float(sys.argv[3])
BASE = contract["base_url"]
CA = contract["ca_cert"]
# MSAL's authority discovery does not see the per-app `verify` setting.
os.environ["REQUESTS_CA_BUNDLE"] = CA
APP = contract["apps"][0]
SECRET = APP["secret"]
GRAPH = "https://graph.microsoft.com/.default"

since = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=lookback))
since = since.strftime("%Y-%m-%dT%H:%M:%SZ")
lock = threading.Lock()
counts = {}
errors = []


def pull(tenant, out):
    try:
        app = msal.ConfidentialClientApplication(
            APP["client_id"],
            client_credential=SECRET,
            authority=f"{BASE}/{tenant['id']}",
            instance_discovery=f"{BASE}/common/discovery/instance",
            verify=CA,
        )
        token = app.acquire_token_for_client(scopes=[GRAPH])["access_token"]
        session = requests.Session()
        session.headers["Authorization"] = "Bearer " + token
        session.verify = CA
        # Graph refuses `$skip` above 500, so following `@odata.nextLink` alone stalls at 550;
        # the documented workaround (defender-api.md, Elastic's fix): ascending order, and
        # when the next link would pass 500, move the filter to the newest time seen (ids
        # already written at that instant are skipped).
        cursor, skip_ids, n = since, set(), 0
        while True:
            url = (f"{BASE}/v1.0/security/incidents?$filter=lastUpdateDateTime ge {cursor}"
                   "&$orderby=lastUpdateDateTime asc&$top=50&$expand=alerts")
            newest, at_newest, more = cursor, set(skip_ids), False
            while url:
                r = session.get(url, timeout=60)
                r.raise_for_status()
                body = r.json()
                page = [i for i in body["value"] if i["id"] not in skip_ids]
                lines = "".join(json.dumps(i) + "\n" for i in page)
                with lock:
                    out.write(lines)
                n += len(page)
                for i in body["value"]:
                    t = i["lastUpdateDateTime"]
                    if t > newest:
                        newest, at_newest = t, {i["id"]}
                    elif t == newest:
                        at_newest.add(i["id"])
                url = body.get("@odata.nextLink")
                if url and int(url.rsplit("$skip=", 1)[-1].split("&")[0]) > 500:
                    more = True
                    break
            if not more:
                break
            if newest == cursor and at_newest == skip_ids:
                raise RuntimeError(f"more than 500 incidents at {cursor}: cannot page on")
            cursor, skip_ids = newest, at_newest
        counts[tenant["name"]] = n
    except Exception as e:  # a failed tenant is reported, not hidden
        errors.append(f"{tenant['name']}: {e!r}")


started = time.monotonic()
with open(out_path, "w") as out:
    threads = [threading.Thread(target=pull, args=(t, out)) for t in contract["tenants"]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
elapsed = time.monotonic() - started
if errors:
    print("peer failed: " + "; ".join(errors), file=sys.stderr)
    sys.exit(1)
print(f"peer: {sum(counts.values())} incidents in {elapsed:.3f} s")
