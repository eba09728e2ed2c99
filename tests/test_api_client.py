"""The schema says everything: it passes openapi-spec-validator, a client generated from it by
openapi-python-client has a type for every documented field, and mypy checks a script that
runs a custom sweep end to end with that client against a real `lab serve`.

The docs' five-line script (docs/api.md) is run too, as written."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from apiutil import make_settings

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]

SCRIPT = '''
"""A custom sweep through the generated client, every value typed."""
import sys

from lab_client import AuthenticatedClient
from lab_client.api.results import results_csv
from lab_client.api.sweeps import get_sweep, start_custom_sweep, sweep_results
from lab_client.models import (
    ClientId, Problem, RowStats, RunStatus, SweepGrid, SweepOfGrid, SweepOut, SweepRowsOut, SweepServerFields,
    ZeroMode,
)


def main(base: str) -> int:
    # writes carry the bearer token (empty: the service runs without LAB_TOKEN); reads need none
    client = AuthenticatedClient(base_url=base, token=sys.argv[2] if len(sys.argv) > 2 else "",
                                 raise_on_unexpected_status=True, timeout=None)
    body = SweepOfGrid(
        grid=SweepGrid(client=[ClientId.QEMU_IMG, ClientId.QEMU_4_2], zeromode=[ZeroMode.PLUGIN, ZeroMode.NONE]),
        server=SweepServerFields(size="8M", delay_write="1ms", delay_zero=1), repeats=2, name="typed")
    sweep = start_custom_sweep.sync(client=client, body=body, idempotency_key="typed-sweep-1")
    if isinstance(sweep, Problem) or sweep is None:
        print(sweep)
        return 2
    done: SweepOut | Problem | None = sweep
    while isinstance(done, SweepOut) and done.status in (RunStatus.QUEUED, RunStatus.RUNNING):
        got = get_sweep.sync(sweep.id, client=client, wait=30.0)
        done = got if isinstance(got, SweepOut | Problem) else None
    if not isinstance(done, SweepOut):
        return 2
    rows = sweep_results.sync(sweep.id, client=client)
    assert isinstance(rows, SweepRowsOut)
    for row in rows.rows:
        stats = row.stats.duration_s
        median = stats.p50 if isinstance(stats, RowStats) else float("nan")
        print(f"{row.key}: {row.succeeded}/{row.runs} median {median:.3f} s")
    csv = results_csv.sync(client=client, sweep_id=sweep.id, limit=100)
    assert isinstance(csv, str)
    print(csv.splitlines()[0])
    return 0 if done.status == RunStatus.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
'''


TOKENLESS = '''
"""One run through the generated client, with no token at all (a plain Client): the service has none."""
import sys

from lab_client import Client
from lab_client.api.runs import get_run, start_run
from lab_client.models import ClientId, NbdkitMemoryServer, Problem, RunOnNewServer, RunOut, RunStatus, ZeroMode


def main(base: str) -> int:
    client = Client(base_url=base, raise_on_unexpected_status=True, timeout=None)
    body = RunOnNewServer(client=ClientId.QEMU_4_2, label="tokenless",
                          server=NbdkitMemoryServer(zeromode=ZeroMode.PLUGIN, size="8M", delay_write="1ms",
                                                    delay_zero=1))
    run = start_run.sync(client=client, body=body)
    if not isinstance(run, RunOut):
        print(run)
        return 2
    done: RunOut | Problem | None = run
    while isinstance(done, RunOut) and done.status in (RunStatus.QUEUED, RunStatus.RUNNING):
        done = get_run.sync(run.id, client=client, wait=30.0)
    if not isinstance(done, RunOut):
        return 2
    print(f"{done.id} {done.status.value} {done.duration_s}")
    return 0 if done.status == RunStatus.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
'''


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> dict:
    from app.main import create_app

    return create_app(make_settings(tmp_path_factory.mktemp("spec") / "data")).openapi()


def test_the_document_passes_openapi_spec_validator(spec):
    from openapi_spec_validator import validate

    validate(spec)
    assert spec["openapi"].startswith("3.1")
    ops = [op for path in spec["paths"].values() for op in path.values()]
    assert all(re.fullmatch(r"[a-z_]+", op["operationId"]) for op in ops), "explicit snake_case operation ids"
    assert not any("_api_" in op["operationId"] for op in ops), "no FastAPI default ids"
    for op in ops:
        for code, resp in op["responses"].items():
            if code.startswith(("4", "5")):
                assert list(resp["content"]) == ["application/problem+json"], (op["operationId"], code)
    assert spec["paths"]["/api/v1/runs"]["post"]["responses"]["202"]["headers"]["Location"]
    assert spec["paths"]["/api/v1/runs"]["post"]["responses"]["429"]["headers"]["Retry-After"]
    assert spec["paths"]["/api/v1/runs/{run_id}"]["get"]["responses"]["200"]["headers"]["ETag"]
    assert spec["security"] == [{}, {"bearer": []}], "anonymous or bearer, for the whole document"
    assert not [op["operationId"] for op in ops if "security" in op], "no operation demands a token of its own"
    assert spec["components"]["schemas"]["RunCreate"]["oneOf"], "server and server_id exclude each other"
    assert len(spec["components"]["schemas"]["ServerFields"]["oneOf"]) >= 4, "a server is a union keyed on kind"


def _validator(spec: dict, schema: dict):
    """A validator of `schema` whose #/components/... refs resolve in the document."""
    from openapi_schema_validator import OAS31Validator

    return OAS31Validator({"components": spec["components"], "allOf": [schema]})


def test_every_request_body_has_examples_the_schema_accepts(spec):
    from jsonschema.exceptions import ValidationError

    bodies = [(op["operationId"], op["requestBody"]["content"]["application/json"])
              for path in spec["paths"].values() for op in path.values() if "requestBody" in op]
    assert bodies
    for op_id, media in bodies:
        assert media.get("examples"), f"{op_id} has no example body"
        validator = _validator(spec, media["schema"])
        for name, example in media["examples"].items():
            try:
                validator.validate(example["value"])
            except ValidationError as e:
                pytest.fail(f"{op_id} example {name!r} does not fit its schema: {e.message}")


@pytest.mark.parametrize(("body", "variant"), [
    ({}, "NbdkitMemoryServer"), ({"plugin": "file", "disk_init": "data"}, "NbdkitFileServer"),
    ({"kind": "qemu-nbd", "disk_format": "qcow2"}, "QemuNbdQcow2Server"),
    ({"kind": "nbd-server", "disk_init": "data"}, "NbdServerServer"),
    ({"target": "/run/x.sock"}, None), ({"disk_init": "data"}, None), ({"kind": "qemu-nbd", "disk_format": "qcow2",
                                                                       "disk_init": "data"}, None),
    ({"storage": "tmpfs"}, None), ({"destructive": True}, None),
])
def test_the_server_union_states_the_rules_between_fields(spec, body, variant):
    """The rules kind_problems checks, as the schema says them: exactly one variant fits a body the
    service takes; none fits one it refuses (target without kind external, data on a memory disk...)."""
    from jsonschema.exceptions import ValidationError

    from lab.domain.spec import SpecError, build_spec

    fits = []
    for ref in spec["components"]["schemas"]["ServerFields"]["oneOf"]:
        try:
            _validator(spec, ref).validate(body)
            fits.append(ref["$ref"].rsplit("/", 1)[1])
        except ValidationError:
            pass
    assert fits == ([variant] if variant else []), fits
    try:
        build_spec(body)
        accepted = True
    except SpecError:
        accepted = False
    assert accepted == (variant is not None), "the schema and the validator agree"


@pytest.fixture(scope="module")
def client_dir(spec, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("client")
    doc = out / "openapi.json"
    doc.write_text(json.dumps(spec))
    p = subprocess.run([str(BIN / "openapi-python-client"), "generate", "--path", str(doc), "--output-path",
                        str(out / "lab_client"), "--meta", "none"], capture_output=True, text=True, timeout=300,
                       cwd=out)
    assert (out / "lab_client" / "models").is_dir(), p.stdout + p.stderr
    return out


def test_the_generated_client_has_no_untyped_dict(client_dir):
    models = client_dir / "lab_client" / "models"
    untyped = []
    for f in sorted(models.glob("*.py")):
        text = f.read_text()
        fields = re.findall(r"^    ([a-z_0-9]+): (.+?)(?: = .*)?$", text, re.M)
        declared = [(n, t) for n, t in fields if n != "additional_properties"]
        if "additional_properties: dict[str, Any]" in text and not declared:
            untyped.append(f"{f.stem} (an object with no declared fields)")
        untyped += [f"{f.stem}.{n}: {t}" for n, t in declared if "dict[str, Any]" in t]
    assert not untyped, untyped
    bodies = [line for f in (client_dir / "lab_client" / "api").rglob("*.py")
              for line in f.read_text().splitlines() if line.startswith("    body: ")]
    assert bodies and not any("Any" in b for b in bodies), bodies


def test_mypy_checks_a_custom_sweep_script_that_runs_end_to_end(client_dir, live_service, no_leftovers):
    script = client_dir / "sweep_script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    p = subprocess.run([str(BIN / "mypy"), "--strict", "--no-incremental", "--cache-dir", str(client_dir / ".mypy"),
                        str(script), "lab_client"], capture_output=True, text=True, timeout=300, cwd=client_dir)
    assert p.returncode == 0, p.stdout[-4000:]
    svc = live_service(LAB_WORKERS="1", token="s3cret")
    run = subprocess.run([sys.executable, str(script), svc.base, "s3cret"], capture_output=True, text=True,
                         timeout=300, cwd=client_dir)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "qemu-4.2/none: 2/2" in run.stdout and "backend.write_ops" in run.stdout


def test_a_client_without_a_token_starts_a_run_on_a_tokenless_service(client_dir, live_service, no_leftovers):
    """Anonymous or bearer: a plain Client (no token configured) is what every operation takes."""
    script = client_dir / "tokenless.py"
    script.write_text(textwrap.dedent(TOKENLESS))
    p = subprocess.run([str(BIN / "mypy"), "--strict", "--no-incremental", "--cache-dir", str(client_dir / ".mypy2"),
                        str(script), "lab_client"], capture_output=True, text=True, timeout=300, cwd=client_dir)
    assert p.returncode == 0, p.stdout[-4000:]
    svc = live_service(LAB_WORKERS="1")
    run = subprocess.run([sys.executable, str(script), svc.base], capture_output=True, text=True, timeout=300,
                         cwd=client_dir)
    assert run.returncode == 0, run.stdout + run.stderr
    assert " succeeded " in run.stdout


def test_the_docs_five_line_script(live_service, no_leftovers):
    text = (ROOT / "docs" / "api.md").read_text()
    block = text.split("## A script: sweep a grid, wait, fetch the latest results as CSV", 1)[1]
    code = block.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) == 5
    svc = live_service(LAB_WORKERS="1", LAB_MAX_DELAY_MS="20")
    code = code.replace("http://127.0.0.1:8000", svc.base)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert lines[0].startswith("client,server.zeromode,") and len(lines) == 5, p.stdout[:2000]


def test_the_docs_sse_helper_follows_a_run(client_dir, live_service, no_leftovers):
    """docs/api.md's `follow()` (httpx-sse on the generated client's httpx client), as written."""
    text = (ROOT / "docs" / "api.md").read_text()
    block = text.split("### Following a stream from a generated client", 1)[1]
    code = block.split("```python\n", 1)[1].split("```", 1)[0]
    svc = live_service(LAB_WORKERS="1")
    script = client_dir / "follow.py"
    script.write_text(code + textwrap.dedent(f"""
        import sys
        from lab_client import Client
        from lab_client.api.runs import start_run
        from lab_client.models import NbdkitMemoryServer, RunOnNewServer

        client = Client(base_url={svc.base!r})
        run = start_run.sync(client=client, body=RunOnNewServer(server=NbdkitMemoryServer(size="8M",
                             delay_write="1ms", delay_zero=1)))
        done = follow(client, run.id)
        print("final", done["status"])
        """))
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=client_dir)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "final succeeded" in p.stdout and "100%" in p.stdout
