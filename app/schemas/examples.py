"""An example of every request body, by operation id, written into the OpenAPI document (each
media type's `examples`): what /docs shows, what a generated client's author copies, and what
schemathesis sends first. Each fits an instance with the default limits and a small queue."""

from __future__ import annotations

from typing import Any

A = {"zeromode": "plugin", "fastzeromode": "default", "size": "16M", "delay_write": "5ms", "delay_zero": "1ms"}
B = {**A, "zeromode": "emulate"}

EXAMPLES: dict[str, dict[str, dict[str, Any]]] = {
    "validate": {
        "server A": {"summary": "the case study's server A, small", "value": A},
        "a file-backed disk": {"summary": "plugin file, a disk whose every byte is written first",
                               "value": {"plugin": "file", "disk_init": "data", "size": "16M"}},
    },
    "create_server": {
        "server B for ten minutes": {"summary": "a long-lived server B runs may target (server_id)",
                                     "value": {**B, "ttl_s": 600}},
    },
    "create_probe": {
        "fast zero on a file": {"summary": "what a file-backed nbdkit answers to each kind of zero",
                                "value": {"server": {"plugin": "file"}, "length": "16M"}},
    },
    "start_run": {
        "qemu 4.2 on server A": {"summary": "a run on a fresh server",
                                 "value": {"client": "qemu-4.2", "server": A, "label": "try-A"}},
        "a guess first": {"summary": "a student's run with their guess beside it",
                          "value": {"client": "qemu-2.8", "server": B, "student": "Ana",
                                    "prediction": {"duration_s": 2.5, "write_ops": 32}}},
        "on a long-lived server": {"summary": "server_id from POST /api/v1/servers",
                                   "value": {"client": "nbdcopy", "server_id": "0123456789ab"}},
    },
    "cancel_runs": {
        "one sweep's": {"summary": "every queued or running run of a sweep", "value": {"sweep_id": "0123456789ab"}},
        "everything queued": {"summary": "the queue emptied; running runs go on", "value": {"status": "queued"}},
    },
    "start_custom_sweep": {
        "fast zero on A and B": {"summary": "a grid: one row per zero mode, each run twice",
                                 "value": {"name": "fast zero on A and B", "grid": {"zeromode": ["plugin", "emulate"]},
                                           "server": {k: v for k, v in A.items() if k != "zeromode"}, "repeats": 2,
                                           "parallelism": 1}},
        "two rows": {"summary": "rows of your own, keyed as you like",
                     "value": {"rows": [{"key": "old", "client": "qemu-2.7", "server": A},
                                        {"key": "new", "client": "qemu-4.2", "server": A}]}},
    },
    "start_sweep": {
        "two rows, smaller": {"summary": "some rows of a scenario at another geometry",
                              "value": {"only": ["ref-none", "ref-plugin-default"], "server": {"size": "16M"}}},
    },
    "join": {"a student": {"summary": "the code the teacher shows on /class", "value": {"code": "K7P2QX",
                                                                                      "name": "Ana"}}},
    "add_guess": {"act 1": {"summary": "a guess before the act runs (a joined student's key names them; in an "
                                       "open lab they name themselves)",
                            "value": {"student": "Ana", "target": "act1-baseline", "prediction": {"duration_s": 8}}}},
    "show": {"act 2": {"summary": "the presenter moves the audience's screens to act 2",
                       "value": {"act": "write-zeroes"}}},
    "create_audit": {"a quick audit": {"summary": "nbdkit's file plugin, the short list of sizes",
                                       "value": {"server": {"kind": "nbdkit", "plugin": "file"}, "quick": True}}},
}


def install(schema: dict[str, Any]) -> None:
    """Put each operation's examples on its JSON request body; an operation with a body and none here
    gets flagged by tests/test_api_client.py."""
    for ops in schema.get("paths", {}).values():
        for op in ops.values():
            media = op.get("requestBody", {}).get("content", {}).get("application/json")
            if media is not None and op.get("operationId") in EXAMPLES:
                media["examples"] = EXAMPLES[op["operationId"]]
