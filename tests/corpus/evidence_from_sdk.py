"""Writes graph_evidence.json: one item of every v1.0 evidence type of msgraph-sdk's models,
with every property the model declares (nested complex types filled the same way), so the
client's normalizer meets every type with every documented property.

Usage: python evidence_from_sdk.py > graph_evidence.json   (in a venv with msgraph-sdk)

The models are generated from Graph's schema; the property names and kinds are read from each
model's own deserializers. Values are made up, but each has the property's type, and every
enum takes a real member. The interop test parses the file back with the SDK and checks that
nothing is unknown to it and nothing it declares is missing.
"""
import datetime
import enum
import inspect
import json
import pkgutil
import re
import importlib

import msgraph.generated.models.security as sec
from msgraph.generated.models.security.alert_evidence import AlertEvidence

CALL = re.compile(r"n\.(\w+)\(([^)]*)\)")


def closure_class(fn, name):
    for cell_name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        if cell_name == name:
            return cell.cell_contents
    return fn.__globals__.get(name)


def member(e):
    names = [m.value for m in e]
    for m in names:
        if m not in ("unknown", "unknownFutureValue", "none"):
            return m
    return names[0]


def text_for(owner, prop):
    p = prop.lower()
    if p.endswith("url") or p in ("url", "baseurl", "weburl"):
        return f"https://{owner.lower()}.example.com/{prop}"
    if "ipaddress" in p or p == "address":
        return "203.0.113.7"
    if p in ("sha1",):
        return "a" * 40
    if p in ("sha256",):
        return "b" * 64
    return f"{owner}.{prop}"


def value(owner, prop, fn, depth):
    src = inspect.getsource(fn)
    m = CALL.search(src[src.index("lambda"):])
    kind, arg = m.group(1), m.group(2).strip()
    if kind == "get_str_value":
        return text_for(owner, prop)
    if kind == "get_datetime_value":
        return "2026-11-30T10:15:30.1234567Z"
    if kind in ("get_int_value",):
        return 7
    if kind == "get_float_value":
        return 1.5
    if kind == "get_bool_value":
        return True
    if kind == "get_uuid_value":
        return "8d2c4f1e-5b6a-4c3d-9e8f-0a1b2c3d4e5f"
    if kind == "get_enum_value":
        return member(closure_class(fn, arg))
    if kind == "get_collection_of_enum_values":
        return [member(closure_class(fn, arg))]
    if kind == "get_collection_of_primitive_values":
        return {"str": [f"{owner}.{prop}"], "int": [7]}.get(arg, [f"{owner}.{prop}"])
    if kind in ("get_object_value", "get_collection_of_object_values"):
        cls = closure_class(fn, arg)
        many = kind.startswith("get_collection")
        if arg == "Dictionary":
            obj = {"key": "value"}
        elif cls is None or depth >= 2:
            # Evidence nests evidence (a pod's containers, a domain's trusted domains): two
            # levels are filled, deeper ones are empty as they often are.
            return [] if many else None
        else:
            obj = complete(cls, depth + 1, nested=True)
        return [obj] if many else obj
    raise SystemExit(f"{owner}.{prop}: unhandled {kind}")


def complete(cls, depth=0, nested=False):
    owner = cls.__name__
    out = {}
    for prop, fn in cls().get_field_deserializers().items():
        if prop == "@odata.type":
            if not nested:
                out[prop] = "#microsoft.graph.security." + owner[0].lower() + owner[1:]
            continue
        out[prop] = value(owner, prop, fn, depth)
    return out


types = []
for info in pkgutil.iter_modules(sec.__path__):
    mod = importlib.import_module(f"{sec.__name__}.{info.name}")
    for _, cls in inspect.getmembers(mod, inspect.isclass):
        if cls is not AlertEvidence and issubclass(cls, AlertEvidence) and cls.__module__ == mod.__name__:
            types.append(cls)
items = [complete(c) for c in sorted(types, key=lambda c: c.__name__)]
print(json.dumps(items, indent=1, sort_keys=True))
