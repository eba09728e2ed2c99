"""Security: argv lists only, no user-supplied paths, private sockets, loopback by default,
the token on every mutating route (even one added later), and the token in no log."""

from __future__ import annotations

import ast
import os
import re
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from apiutil import FAST, client_for, wait_for
from fastapi import APIRouter

from lab.domain.spec import build_spec
from lab.host import images, procs
from lab.host.places import Places
from lab.nbd.servers import Server
from testkit import REPO, cmdline, descendants, environ

SCANNED = ["lab", "app", "scripts", "bench"]
TOKEN = "tok-3f9c2a7e51d84b06-presenter"


# -- no shell ---------------------------------------------------------------------------------------
# ruff's flake8-bandit rules (pyproject.toml: S602 S604 S605 S606 S609 ...) catch shell=True, os.system,
# os.popen, subprocess.getoutput, os.exec*/spawn* on every file; test_ruff_refuses_a_shell proves they
# are on. What ruff cannot see is checked here: the shell starters it does not know, and a command
# string handed to a process start (an argv list is the house rule, shell or not).

SHELL_CALLS = {("asyncio", "create_subprocess_shell"), ("pty", "spawn")}
PROCESS_CALLS = {"Popen", "run", "call", "check_call", "check_output", "spawn", "create_subprocess_exec"}


def _python_files() -> list[Path]:
    return sorted(p for d in SCANNED for p in (REPO / d).rglob("*.py") if "__pycache__" not in p.parts)


def _dotted(node: ast.AST) -> tuple[str, ...]:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return tuple(reversed(parts))


def _stringy(node: ast.AST) -> bool:
    """A str literal, an f-string, or str concatenation/formatting: a command line, not an argv."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
        return _stringy(node.left) or _stringy(node.right)
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("format", "join")


def _problems(tree: ast.AST, where: str) -> tuple[list[str], int]:
    """(problems, process starts inspected) in one module."""
    problems, inspected = [], 0
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and any((node.module, a.name) in SHELL_CALLS for a in node.names):
            problems.append(f"{where}:{node.lineno}: from {node.module} import a shell starter")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name[-2:] in SHELL_CALLS:
            problems.append(f"{where}:{node.lineno}: {'.'.join(name)}")
        owner = name[-2] if len(name) > 1 else None
        spawns = bool(name) and name[-1] in PROCESS_CALLS and (
            owner in ("subprocess", "procs", "asyncio") or (owner is None and name[0] != "run"))
        inspected += spawns
        if spawns and node.args and _stringy(node.args[0]):
            problems.append(f"{where}:{node.lineno}: {'.'.join(name)} given a command string: "
                            f"{ast.unparse(node.args[0])[:60]}")
    return problems, inspected


def test_no_shell_anywhere():
    problems, inspected = [], 0
    files = _python_files()
    assert len(files) > 30
    for path in files:
        found, n = _problems(ast.parse(path.read_text(), str(path)), str(path.relative_to(REPO)))
        problems += found
        inspected += n
    assert not problems, "\n".join(problems)
    assert inspected >= 10, "the scan saw the process starts it is meant to check"


def test_the_scan_would_catch_what_ruff_cannot():
    bad = ('import asyncio, pty, subprocess\nfrom lab import procs\nasyncio.create_subprocess_shell(cmd)\n'
           'pty.spawn("sh")\nsubprocess.run(f"nbdkit {x}")\nprocs.spawn("nbdkit " + x)\n')
    problems, inspected = _problems(ast.parse(bad), "bad.py")
    assert len(problems) == 4 and inspected == 2, problems
    with pytest.raises(TypeError):
        procs.spawn("nbdkit --version")  # type: ignore[arg-type]


def test_ruff_refuses_a_shell():
    """The project's ruff configuration has the flake8-bandit shell rules on, for every file."""
    bad = ('import os, subprocess\nfrom os import system\nos.system(cmd)\nsystem(cmd)\nos.popen(cmd)\n'
           'subprocess.run(cmd, shell=True)\nsubprocess.getoutput(cmd)\nos.execlp("x", "x")\nf(cmd, shell=True)\n')
    ruff = Path(sys.executable).with_name("ruff")
    for name in ("lab/nbd/probe.py", "tests/probe.py", "bench/probe.py"):
        out = subprocess.run([str(ruff), "check", "--stdin-filename", name, "--output-format", "concise", "-"],
                             input=bad, capture_output=True, text=True, cwd=REPO).stdout
        codes = re.findall(r": (S\d+) ", out)
        assert sorted(codes) == ["S602", "S604", "S605", "S605", "S605", "S605", "S606"], (name, out)


# -- no user-supplied paths ------------------------------------------------------------------------

PATHY = re.compile(r"path|file|dir|sock|uri|url|cmd|command|argv|exec|script|host|log", re.I)


# A request field whose value may name a place on the host, and the allow-list that guards it (empty by
# default: nothing is reachable until the operator lists it). A server's own fields are a union keyed on kind
# whose external variant exists only on an instance with LAB_EXTERNAL_TARGETS set (here: none, so no variant).
GUARDED = {
    "SweepGrid.target": "LAB_EXTERNAL_TARGETS", "SweepServerFields.target": "LAB_EXTERNAL_TARGETS",
    "AuditServer.target": "LAB_EXTERNAL_TARGETS",
    "AuditServer.storage": "LAB_AUDIT_PATHS (path:/DIR), LAB_AUDIT_DEVICES (dev:/dev/X, with destructive)",
}
# Free text that may contain a slash but is never opened: labels, names, ids looked up in the database.
TEXT = {"RunOnServer.label", "RunOnNewServer.label", "RunFilter.label", "RunOnServer.server_id",
        "RunFilter.server_id", "RunFilter.sweep_id", "RunFilter.student", "RunOnServer.student",
        "RunOnNewServer.student", "SweepCreate.student", "SweepCreate.only", "SweepOfGrid.name", "SweepOfRows.name",
        "SweepRowIn.key", "GuessCreate.student", "GuessCreate.target", "JoinCreate.name", "JoinCreate.code"}
HOST_PATHS = ["/etc/passwd", "../../etc/passwd", "path:/etc", "dev:/dev/sda"]


def _refs(node: object) -> set[str]:
    if isinstance(node, dict):
        own = {node["$ref"].rsplit("/", 1)[-1]} if "$ref" in node else set()
        return own.union(*(_refs(v) for v in node.values()))
    return set().union(*(_refs(v) for v in node)) if isinstance(node, list) else set()


def _request_models(spec: dict) -> set[str]:
    """Every schema a request body reaches ($ref by $ref): a nested model added later is seen too."""
    schemas, todo, seen = spec["components"]["schemas"], [], set()
    for ops in spec["paths"].values():
        todo += [m for op in ops.values() if "requestBody" in op for m in _refs(op["requestBody"])]
    while todo:
        if (m := todo.pop()) not in seen:
            seen.add(m)
            todo += _refs(schemas[m])
    return seen


def _string_forms(prop: dict) -> list[dict]:
    """The string schemas a property admits (itself, a union's members, a list's items; $refs aside)."""
    out = []
    for alt in prop.get("anyOf") or prop.get("oneOf") or [prop]:
        if alt.get("type") == "string":
            out.append(alt)
        elif alt.get("type") == "array":
            out += _string_forms(alt.get("items", {}))
    return out


def _admits_a_path(form: dict) -> bool:
    if "enum" in form or "const" in form:
        return any(p in form.get("enum", [form.get("const")]) for p in HOST_PATHS)
    return any(re.search(form.get("pattern", ""), p) for p in HOST_PATHS)


def test_no_request_field_or_parameter_is_a_path(tmp_path):
    """Nothing a client sends names a file, a directory, a socket or a command: no field or parameter is
    named so, and no field takes a path as its value, but the GUARDED ones, each behind an allow-list the
    operator fills (tests/test_external.py for targets, test_audit_places_are_only_the_listed_ones below).

    Every field a request body reaches is decided here: a new one that admits a slash-path is either text
    never opened (TEXT) or a guarded place (GUARDED); the test fails until someone says which."""
    with client_for(tmp_path / "data") as api:
        spec = api.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    models = _request_models(spec)
    assert {"RunCreate", "ServerFields", "SweepServerFields", "AuditCreate", "AuditServer"} <= models, models
    props = {f"{m}.{f}": p for m in models for f, p in schemas[m].get("properties", {}).items()}
    params = {f"{path} {p['name']}" for path, ops in spec["paths"].items() for op in ops.values()
              for p in op.get("parameters", [])}
    named = [f for f in set(props) - set(GUARDED) | params if PATHY.search(f.rsplit(" ", 1)[-1].split(".")[-1])]
    assert not named, named
    takes_a_path = {f for f, p in props.items() if any(_admits_a_path(s) for s in _string_forms(p))}
    assert takes_a_path - TEXT == set(GUARDED), sorted(takes_a_path - TEXT)
    assert takes_a_path >= TEXT, TEXT - takes_a_path  # the list holds no field that went away or got an enum
    assert schemas["SweepServerFields"]["properties"]["plugin"]["anyOf"][0]["$ref"].endswith("/Plugin")
    assert schemas["Plugin"]["enum"] == ["memory", "file"], "a plugin name, never a path"


def test_audit_places_are_only_the_listed_ones(tmp_path):
    """AuditServer.storage's path:/DIR and dev:/dev/X: refused unless below LAB_AUDIT_PATHS or listed in
    LAB_AUDIT_DEVICES, a symlink or `..` out of a listed directory too; a listed directory works and is left
    as it was."""
    allowed, other = tmp_path / "allowed", tmp_path / "other"
    allowed.mkdir()
    other.mkdir()
    (allowed / "out").symlink_to(other)
    small = {"sizes": ["4K"], "flags": ["none"], "disks": ["dirty"], "inflight": 1}
    with client_for(tmp_path / "data", audit_paths=str(allowed)) as api:
        for place in (f"path:{other}", f"path:{allowed}/out", f"path:{allowed}/../other", "path:/etc",
                      "dev:/dev/null", "dev:/dev/sda"):
            r = api.post("/api/v1/audits", json={"server": {"storage": place, "destructive": True}, **small})
            assert r.status_code == 422, (place, r.text)
            assert r.json()["errors"][0]["loc"] == ["body", "server", "storage"], (place, r.text)
        assert api.get("/api/v1/audits").json() == {"audits": []}
        r = api.post("/api/v1/audits", json={"server": {"storage": f"path:{allowed}"}, **small})
        assert r.status_code == 202, r.text
        done = wait_for(lambda: (a := api.get(f"/api/v1/audits/{r.json()['id']}").json())["status"] not in (
            "queued", "running") and a, 120)
        assert done["status"] == "done", done
    assert sorted(p.name for p in allowed.iterdir()) == ["out"] and not any(other.iterdir())


@pytest.mark.parametrize("pattern", ["../../etc/passwd", "/etc/passwd", "alternate:1M/../../x", "..", "a\x00b",
                                     "%2e%2e%2f", "C:\\Windows"])
def test_a_pattern_never_becomes_a_path(tmp_path, pattern):
    key = images._key(4 << 20, pattern)
    assert "/" not in key and "\\" not in key and "\x00" not in key and key not in (".", "..")
    assert (tmp_path / key).resolve().parent == tmp_path.resolve()


@pytest.mark.parametrize("plugin", ["memory", "file"])
def test_sockets_and_disks_live_in_private_dirs(tmp_path, plugin):
    where = Places.under(tmp_path)  # handed down, as the drivers do with LAB_RUNTIME_DIR
    root = procs.runtime_root(where)
    srv = Server(build_spec({**FAST, "plugin": plugin}), places=where).start()
    try:
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
        assert srv.dir is not None and srv.dir.parent == root
        assert stat.S_IMODE(srv.dir.stat().st_mode) == 0o700 and srv.dir.stat().st_uid == os.getuid()
        assert stat.S_ISSOCK(srv.socket.stat().st_mode)
        argv = cmdline(srv.proc.pid)
        assert argv[argv.index("-U") + 1] == str(srv.socket)
        files = [a for a in argv if a.startswith(("file=", "logfile=", "statsfile="))]
        assert files and all(Path(a.split("=", 1)[1]).parent == srv.dir for a in files)
        if plugin == "file":  # the disk is a private temp file of the server, never a user's path
            assert "file=" + str(srv.dir / "disk.img") in argv
    finally:
        srv.stop()
    assert not srv.dir.exists()


def test_default_bind_is_loopback():
    from lab.cli.commands import _parser

    assert _parser().parse_args(["serve"]).host == "127.0.0.1"
    assert '"${LAB_HOST:-127.0.0.1}"' in (REPO / "scripts" / "run.sh").read_text()


# -- the token --------------------------------------------------------------------------------------


def test_a_route_added_later_is_guarded_too(tmp_path):
    """The guard is middleware, not a per-route dependency: a new POST cannot slip past."""
    with client_for(tmp_path / "data", token=TOKEN) as api:
        extra = APIRouter()

        @extra.post("/api/added-later")
        def added() -> dict[str, bool]:
            return {"reached": True}

        @extra.api_route("/api/added-later/{x}", methods=["PUT", "PATCH", "DELETE"])
        def added_more(x: str) -> dict[str, bool]:
            return {"reached": True}

        api.app.include_router(extra)
        for method, path in [("POST", "/api/added-later"), ("PUT", "/api/added-later/1"),
                             ("PATCH", "/api/added-later/1"), ("DELETE", "/api/added-later/1")]:
            assert api.request(method, path).status_code == 401
            r = api.request(method, path, headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 200 and r.json() == {"reached": True}


def _raw_get(base: str, target: str) -> tuple[int, bytes]:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


def test_live_service_keeps_the_token_and_the_files_to_itself(tmp_path, live_service):
    """`lab serve` with LAB_TOKEN and debug logging, exercised on every path that handles the
    token (401s, accepted writes, health, pages): the token is in no log line, no response, no
    database row, and in neither the command line nor the environment of any child process.
    Static files cannot be walked out of."""
    env = {"LAB_TOKEN": TOKEN, "LAB_LOG_LEVEL": "debug", "LAB_MAX_DELAY_MS": "1000"}
    seen_children = []
    svc = live_service(**env)
    with svc.http() as http:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        answers = []
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {TOKEN[:-1]}"},
                        {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}):
            r = http.post("/api/runs", json={"server": FAST}, headers=headers)
            assert r.status_code == 401
            answers.append(r.text + str(r.headers))
        run = http.post("/api/runs", json={"client": "qemu-4.2", "server": {**FAST, "delay_write": "300ms"}},
                        headers=auth)
        assert run.status_code == 202
        seen_children = wait_for(lambda: [p for p in descendants(svc.proc.pid)
                                          if p.name in ("nbdkit", "python")] or None, 30)
        wait_for(lambda: len({p.name for p in descendants(svc.proc.pid)} & {"nbdkit", "python"}) == 2, 30)
        children = descendants(svc.proc.pid)
        for p in children:
            seen = [*environ(p.pid).values(), *environ(p.pid), *cmdline(p.pid)]
            assert not any(TOKEN in text for text in seen), p
        assert not any(TOKEN in arg for arg in cmdline(svc.pid))
        assert http.post(f"/api/runs/{run.json()['id']}/cancel", headers=auth).status_code == 200
        srv = http.post("/api/servers", json=FAST, headers=auth)
        assert srv.status_code == 201
        assert http.delete(f"/api/servers/{srv.json()['id']}", headers=auth).status_code == 200
        for path in ("/api/health", "/openapi.json", "/", "/api/runs", "/api/results.csv", "/api/servers"):
            r = http.get(path)
            assert r.status_code == 200, path
            answers.append(r.text + str(r.headers))
        for target in ("/static/../../../../etc/passwd", "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                       "/static/..%2f..%2fpyproject.toml", "/static/js/../../pyproject.toml",
                       "/static/%2e%2e%2fapp%2fsettings.py", "/static//etc/passwd", "/static/js/%00.js"):
            code, body = _raw_get(svc.base, target)
            assert code in (400, 404) and b"unknown-host" not in body, (target, code, body[-300:])
            assert b"root:" not in body and b"[project]" not in body and b"BaseSettings" not in body
        svc.proc.send_signal(signal.SIGTERM)
        assert svc.proc.wait(30) in (0, -signal.SIGTERM)
    log = svc.log_text()
    assert '"POST /api/runs HTTP/1.1" 401' in log and '"POST /api/runs HTTP/1.1" 202' in log, "access log on"
    assert TOKEN not in log and TOKEN[:-1] not in log
    assert not any(TOKEN in a for a in answers)
    db = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("lab.sqlite3*"))
    assert TOKEN.encode() not in db
    assert seen_children
    out = subprocess.run([str(Path(sys.executable).with_name("lab")), "serve", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "--token" not in out, "the token never travels on a command line"
