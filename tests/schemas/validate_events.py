#!/usr/bin/env python3
"""Validate NDJSON events against OCSF (1.5.0 by default) or ECS field definitions.

OCSF: schema = the official schema.ocsf.io export bundled in PyPI `ocsf-json-schema`
      (ocsf_json_schema/ocsf/<version>.json). Per event: class picked by class_uid,
      profiles from metadata.profiles, class turned into a JSON Schema (2020-12) by
      ocsf_json_schema.OcsfJsonSchemaEmbedded and checked with `jsonschema`
      (unknown attributes, types/regex of scalar types, required attributes, enum ids,
      at_least_one/just_one constraints, nested objects), plus extra invariants
      (type_uid = class_uid*100+activity_id, category_uid, metadata.version).
ECS:  field definitions = EcsFlat from npm `@elastic/ecs` (ecs_flat.yml as JS),
      exported once to JSON (see --ecs-flat). Per event: every leaf field must be an
      ECS field (or lie under an allowed custom namespace / an open ECS object), its
      value must match the ECS type, and allowed_values are enforced.

Usage:
  validate_events.py ocsf EVENTS.ndjson [--ocsf-version 1.5.0] [--strict-version]
  validate_events.py ecs  EVENTS.ndjson --ecs-flat ecs_flat.json|NODE_PKG_DIR
                          [--custom NS ...] [--no-required]
Exit status: 0 = all valid, 1 = at least one problem, 2 = usage/IO error.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import re
import subprocess
import sys
from pathlib import Path


# ----------------------------------------------------------------------------- OCSF
class OcsfValidator:
    def __init__(self, version: str, strict_version: bool):
        try:
            import jsonschema
            from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema
        except ImportError as e:  # pragma: no cover
            sys.exit(f"error: {e}; pip install ocsf-json-schema==1.2.0 jsonschema")
        self.jsonschema = jsonschema
        self.raw = get_ocsf_schema(version)  # bundled file, no network
        self.version = self.raw["version"]
        self.emb = OcsfJsonSchemaEmbedded(self.raw)
        self.strict_version = strict_version
        self.by_uid = {c["uid"]: c for c in self.raw["classes"].values()}
        self.cache: dict = {}

    def validator_for(self, cls: dict, profiles: tuple[str, ...]):
        key = (cls["name"], profiles)
        if key not in self.cache:
            schema = self.emb.get_class_schema(cls["name"], list(profiles))
            self.cache[key] = self.jsonschema.Draft202012Validator(schema)
        return self.cache[key]

    def check(self, ev) -> list[str]:
        if not isinstance(ev, dict):
            return ["event is not a JSON object"]
        uid = ev.get("class_uid")
        if isinstance(uid, bool) or not isinstance(uid, int):
            return [f"class_uid: missing or not an integer ({uid!r})"]
        cls = self.by_uid.get(uid)
        if cls is None:
            return [f"class_uid: {uid} is not a class in OCSF {self.version}"]
        probs: list[str] = []
        md = ev.get("metadata") if isinstance(ev.get("metadata"), dict) else {}
        wanted = md.get("profiles") or []
        wanted = [p for p in wanted if isinstance(p, str)]
        known = set(cls.get("profiles") or [])
        for p in wanted:
            if p not in known:
                probs.append(f"metadata.profiles: {p!r} is not a profile of {cls['caption']}")
        profiles = tuple(sorted(p for p in wanted if p in known))
        v = self.validator_for(cls, profiles)
        for err in sorted(v.iter_errors(ev), key=lambda e: list(map(str, e.absolute_path))):
            path = ".".join(str(p) for p in err.absolute_path) or "<event>"
            msg = err.message
            subs = err.schema.get(err.validator) if err.validator in ("anyOf", "oneOf") else None
            if subs and all(set(x) == {"required"} for x in subs):
                names = [x["required"][0] for x in subs]
                msg = ("needs at least one of " if err.validator == "anyOf" else "needs exactly one of ") + str(names)
            elif err.validator == "pattern":
                msg = f"{err.instance!r} does not match the OCSF type's regex"
            if len(msg) > 200:
                msg = msg[:200] + "..."
            probs.append(f"{path}: {msg}")
        # invariants JSON Schema can't express
        act = ev.get("activity_id")
        if isinstance(act, int) and isinstance(ev.get("type_uid"), int) and ev["type_uid"] != uid * 100 + act:
            probs.append(f"type_uid: {ev['type_uid']} != class_uid*100+activity_id = {uid * 100 + act}")
        if "class_name" in ev and ev["class_name"] != cls["caption"]:
            probs.append(f"class_name: {ev['class_name']!r} != {cls['caption']!r}")
        mv = md.get("version")
        if self.strict_version and isinstance(mv, str) and mv != self.version:
            probs.append(f"metadata.version: {mv!r} != {self.version!r}")
        return probs


# ----------------------------------------------------------------------------- ECS
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})?)?$")
STRING_TYPES = {"keyword", "constant_keyword", "wildcard", "match_only_text", "text"}
INT_TYPES = {"long", "integer", "short", "byte", "unsigned_long"}
FLOAT_TYPES = {"float", "double", "scaled_float", "half_float"}


def load_ecs_flat(spec: str) -> dict:
    p = Path(spec)
    if p.is_file():
        return json.loads(p.read_text())
    # a directory holding node_modules/@elastic/ecs, or the package dir itself
    js = ("const m=require(process.argv[1]);"
          "process.stdout.write(JSON.stringify({version:m.EcsVersion,fields:m.EcsFlat}))")
    pkg = p / "node_modules" / "@elastic" / "ecs" if (p / "node_modules").is_dir() else p
    out = subprocess.run(["node", "-e", js, str(pkg.resolve())], check=True, capture_output=True, text=True).stdout
    return json.loads(out)["fields"]


class EcsValidator:
    def __init__(self, flat: dict, custom: list[str], required: bool):
        self.f = flat
        self.custom = [c.rstrip(".") for c in custom]
        self.required = required
        self.prefixes = set()
        for name in flat:
            parts = name.split(".")
            for i in range(1, len(parts)):
                self.prefixes.add(".".join(parts[:i]))

    def has_children(self, name: str) -> bool:
        return name in self.prefixes

    def is_custom(self, name: str) -> bool:
        return any(name == c or name.startswith(c + ".") for c in self.custom)

    def type_ok(self, t: str, v) -> str | None:
        """Return None if v fits ECS type t, else a short reason."""
        if isinstance(v, list):
            for x in v:
                r = self.type_ok(t, x)
                if r:
                    return r
            return None
        if v is None:
            return None  # null == absent for Elasticsearch
        if t in STRING_TYPES:
            return None if isinstance(v, str) else f"expected string ({t})"
        if t in INT_TYPES:
            return None if isinstance(v, int) and not isinstance(v, bool) else f"expected integer ({t})"
        if t in FLOAT_TYPES:
            return None if isinstance(v, (int, float)) and not isinstance(v, bool) else f"expected number ({t})"
        if t == "boolean":
            return None if isinstance(v, bool) else "expected boolean"
        if t == "date":
            if isinstance(v, int) and not isinstance(v, bool):
                return None  # epoch millis
            return None if isinstance(v, str) and DATE_RE.match(v) else "expected ISO-8601 date string or epoch millis"
        if t == "ip":
            try:
                ipaddress.ip_address(v if isinstance(v, str) else "x")
                return None
            except ValueError:
                return "expected IPv4/IPv6 address string"
        if t == "geo_point":
            if isinstance(v, dict) and set(v) >= {"lat", "lon"}:
                return None
            if isinstance(v, str) and (re.match(r"^\s*-?[\d.]+\s*,\s*-?[\d.]+\s*$", v) or v.upper().startswith("POINT")):
                return None
            return "expected geo_point ({lat,lon}, 'lat,lon', [lon,lat] or WKT POINT)"
        if t in ("object", "nested"):
            return None if isinstance(v, dict) else f"expected object ({t})"
        if t == "flattened":
            return None
        return None  # unknown type: don't complain

    def check(self, ev) -> list[str]:
        if not isinstance(ev, dict):
            return ["event is not a JSON object"]
        probs: list[str] = []
        seen: set[str] = set()
        self._walk(ev, "", probs, seen)
        if self.required:
            for name, d in self.f.items():
                if d.get("required") and name not in seen:
                    probs.append(f"{name}: required ECS field missing")
        return probs

    def _walk(self, obj: dict, prefix: str, probs: list[str], seen: set[str]):
        for k, v in obj.items():
            name = f"{prefix}.{k}" if prefix else k  # dotted keys are fine: "event.kind": ...
            self._field(name, v, probs, seen)

    def _field(self, name: str, v, probs: list[str], seen: set[str]):
        seen.add(name)
        d = self.f.get(name)
        if d is None:
            if self.is_custom(name):
                return
            owner = self._open_owner(name)
            if owner is not None:  # child of an ECS object/flattened field without defined sub-fields
                ot = self.f[owner].get("object_type")
                if ot and not isinstance(v, dict):
                    r = self.type_ok(ot, v)
                    if r:
                        probs.append(f"{name}: {r} (object_type of {owner}); got {v!r}"[:300])
                elif isinstance(v, dict) and ot:
                    probs.append(f"{name}: {owner} holds flat {ot} values, got an object")
                return
            if isinstance(v, dict) and self.has_children(name):
                self._walk(v, name, probs, seen)
                return
            if isinstance(v, list) and v and all(isinstance(x, dict) for x in v) and self.has_children(name):
                for x in v:
                    self._walk(x, name, probs, seen)
                return
            if self.has_children(name):
                probs.append(f"{name}: is an ECS field set; expected an object, got {type(v).__name__}")
            else:
                top = name.split(".")[0]
                hint = "" if (top in self.prefixes or top in self.f) else f" (custom namespace? --custom {top})"
                probs.append(f"{name}: not an ECS field{hint}")
            return
        t = d.get("type", "")
        if t in ("object", "nested") and (isinstance(v, dict) or (isinstance(v, list) and all(isinstance(x, dict) for x in v))):
            for x in (v if isinstance(v, list) else [v]):
                self._walk(x, name, probs, seen)
            return
        if t == "flattened":
            return
        r = self.type_ok(t, v)
        if r:
            probs.append(f"{name}: {r}; got {json.dumps(v)[:80]}")
            return
        allowed = d.get("allowed_values")
        if allowed:
            names = {a["name"] for a in allowed}
            for x in (v if isinstance(v, list) else [v]):
                if x is not None and x not in names:
                    probs.append(f"{name}: {x!r} not in allowed values {sorted(names)}")

    def _open_owner(self, name: str) -> str | None:
        """Nearest ancestor that is an ECS object/flattened field with no defined sub-fields
        (e.g. labels, container.labels, *.entity.raw) or flattened; unknown children are allowed there."""
        parts = name.split(".")
        for i in range(len(parts) - 1, 0, -1):
            anc = ".".join(parts[:i])
            d = self.f.get(anc)
            if d is None:
                continue
            if d.get("type") == "flattened":
                return anc
            if d.get("type") == "object" and not self.has_children(anc):
                return anc
            return None
        return None


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["ocsf", "ecs"])
    ap.add_argument("events", help="NDJSON file ('-' for stdin)")
    ap.add_argument("--ocsf-version", default="1.5.0")
    ap.add_argument("--strict-version", action="store_true", help="OCSF: metadata.version must equal --ocsf-version")
    ap.add_argument("--ecs-flat", help="ECS: ecs_flat JSON file, or dir with node_modules/@elastic/ecs")
    ap.add_argument("--custom", action="append", default=[], help="ECS: allowed custom namespace (repeatable)")
    ap.add_argument("--no-required", action="store_true", help="ECS: don't require @timestamp/ecs.version")
    a = ap.parse_args(argv)

    if a.mode == "ocsf":
        val = OcsfValidator(a.ocsf_version, a.strict_version)
    else:
        if not a.ecs_flat:
            ap.error("ecs mode needs --ecs-flat")
        val = EcsValidator(load_ecs_flat(a.ecs_flat), a.custom, not a.no_required)

    fh = sys.stdin if a.events == "-" else open(a.events, encoding="utf-8")
    n_bad = n = 0
    for lineno, line in enumerate(fh, 1):
        if not line.strip():
            continue
        n += 1
        try:
            ev = json.loads(line)
        except json.JSONDecodeError as e:
            print(f"{a.events}:{lineno}: invalid JSON: {e}")
            n_bad += 1
            continue
        probs = val.check(ev)
        if probs:
            n_bad += 1
            for p in probs:
                print(f"{a.events}:{lineno}: {p}")
    print(f"{a.mode}: {n} events, {n - n_bad} valid, {n_bad} invalid", file=sys.stderr)
    return 1 if n_bad else 0


if __name__ == "__main__":
    sys.exit(main())
