"""A whole server's fields as a union keyed on `kind` (and plugin, disk format): the rules between
the backend fields (lab.domain.spec.kind_problems) written where JSON Schema can state them.

    NbdkitMemoryServer   kind nbdkit (or none), plugin memory (or none): no storage, no disk data
    NbdkitFileServer     kind nbdkit (or none), plugin file: storage, disk_init sparse or data
    QemuNbdRawServer     kind qemu-nbd, disk_format raw (or none): storage, disk_init sparse or data
    QemuNbdQcow2Server   kind qemu-nbd, disk_format qcow2: storage but blockdev, disk_init sparse
    NbdServerServer      kind nbd-server: storage, disk_init sparse or data
    ExternalServer       kind external, one of LAB_EXTERNAL_TARGETS as target, destructive true:
                         no storage, disk_init sparse (only when targets are listed)

`target` and `destructive: true` belong to ExternalServer only; `disk_init: data` to a raw
file-backed disk. The variants exclude one another (oneOf), and a field that is absent or null
takes its default, as the service reads it. Kinds and storages this machine lacks are left out
(when the document is made by a running service, which knows). A sweep's `server` and a row's
are parts merged into one server, so they keep the plain object (SweepServerFields).
"""

from __future__ import annotations

import copy
from typing import Any

from lab.domain.spec import FILE_KINDS, SERVER_FIELDS, enum_of

NULL: dict[str, Any] = {"type": "null"}
BACKEND = ("kind", "plugin", "storage", "disk_format", "disk_init", "target", "destructive")


def _one_of(*values: Any) -> dict[str, Any]:
    """Exactly these values (null among them: the field may be left to its default). Written as a
    const or a string enum, with null apart, as generated clients (openapi-python-client) read it."""
    given = [v for v in values if v is not None]
    schema: dict[str, Any] = {"const": given[0]} if len(given) == 1 else {"type": "string", "enum": given}
    return {"anyOf": [schema, NULL]} if None in values else schema


def _choice(field: str, allowed: list[str]) -> dict[str, Any]:
    """A choice field (or null) limited to `allowed`: the field's own enum component when that is
    all of its choices (one type in a generated client), else the values themselves."""
    if list(allowed) == list(SERVER_FIELDS[field].choices):
        return {"anyOf": [{"$ref": f"#/components/schemas/{enum_of(field).__name__}"}, NULL]}
    return _one_of(*allowed, None)


def variants(storages: list[str], kinds: list[str], targets: list[str]) -> dict[str, dict[str, Any]]:
    """Each variant: its title -> the backend fields' schemas and which of them it requires."""
    store = _choice("storage", storages)
    any_init = _choice("disk_init", ["sparse", "data"])
    out: dict[str, dict[str, Any]] = {}
    no_target = {"target": NULL, "destructive": _one_of(False, None)}
    if "nbdkit" in kinds:
        out["NbdkitMemoryServer"] = {"kind": _one_of("nbdkit", None), "plugin": _one_of("memory", None),
                                     "storage": NULL, "disk_format": _one_of("raw", None),
                                     "disk_init": _one_of("sparse", None), **no_target}
        out["NbdkitFileServer"] = {"kind": _one_of("nbdkit", None), "plugin": {"const": "file"}, "storage": store,
                                   "disk_format": _one_of("raw", None), "disk_init": any_init, **no_target,
                                   "required": ["plugin"]}
    for kind in FILE_KINDS:
        if kind not in kinds:
            continue
        name = "QemuNbdRawServer" if kind == "qemu-nbd" else "NbdServerServer"
        out[name] = {"kind": {"const": kind}, "plugin": _one_of("memory", None), "storage": store,
                     "disk_format": _one_of("raw", None), "disk_init": any_init, **no_target, "required": ["kind"]}
        if kind == "qemu-nbd":
            out["QemuNbdQcow2Server"] = {
                "kind": {"const": kind}, "plugin": _one_of("memory", None),
                "storage": _choice("storage", [s for s in storages if s != "blockdev"]),
                "disk_format": {"const": "qcow2"}, "disk_init": _one_of("sparse", None), **no_target,
                "required": ["kind", "disk_format"]}
    if "external" in kinds and targets:
        out["ExternalServer"] = {"kind": {"const": "external"}, "plugin": _one_of("memory", None), "storage": NULL,
                                 "disk_format": _one_of("raw", None), "disk_init": _one_of("sparse", None),
                                 "target": _one_of(*targets), "destructive": {"const": True},
                                 "required": ["kind", "target", "destructive"]}
    return out


def split(components: dict[str, Any], name: str, suffix: str, storages: list[str], kinds: list[str],
          targets: list[str]) -> None:
    """Replace component `name` (an object with every server field) by a oneOf of the variants,
    each keeping the other properties (and their descriptions) as they were."""
    whole = components.get(name)
    if whole is None or "properties" not in whole:
        return
    refs = []
    for title, backend in variants(storages, kinds, targets).items():
        v = copy.deepcopy(whole)
        required = [*backend.pop("required", [])]
        for field, schema in backend.items():
            if field in v["properties"]:
                keep = {k: v["properties"][field][k] for k in ("title", "description") if k in v["properties"][field]}
                v["properties"][field] = {**schema, **keep}
        v["title"] = title + suffix
        v["additionalProperties"] = False
        if required:
            v["required"] = required
        components[title + suffix] = v
        refs.append({"$ref": f"#/components/schemas/{title + suffix}"})
    components[name] = {"oneOf": refs, "title": name, "description": whole.get("description", "")}


def parts(schema: dict[str, Any], holders: tuple[str, ...]) -> None:
    """The sweep's base `server` and a row's `server` are parts of one server: they point at a
    copy of the plain object (SweepServerFields) before ServerFields becomes the union."""
    components = schema["components"]["schemas"]
    plain = copy.deepcopy(components["ServerFields"])
    plain["title"] = "SweepServerFields"
    plain["description"] = ("Server fields a sweep's rows start from, or one row's: merged into each row's "
                            "server, whose fields then follow the rules of ServerFields (kind, target, disk_init).")
    components["SweepServerFields"] = plain
    old, new = "#/components/schemas/ServerFields", "#/components/schemas/SweepServerFields"
    for holder in holders:
        _repoint(components.get(holder), old, new)


def _repoint(node: Any, old: str, new: str) -> None:
    if isinstance(node, dict):
        if node.get("$ref") == old:
            node["$ref"] = new
        for v in node.values():
            _repoint(v, old, new)
    elif isinstance(node, list):
        for v in node:
            _repoint(v, old, new)
