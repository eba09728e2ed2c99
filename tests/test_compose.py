"""The classroom, for real: compose.yaml built and run on a Docker engine, as a teacher would.

A private dockerd (tests/dockerengine.py) gets the base image from scripts/docker-base.sh
(debootstrap + docker import, no registry), then Debian's docker-compose runs the shipped
compose.yaml from a copy of the build context with a teacher's `.env` beside it: build, up,
healthy, then what students and the teacher do. Every command and its wall time are written
to test-artifacts/compose/ (docs/classroom.md quotes them). Skipped, with the reason, where no
engine can start (not root, tools missing); LAB_SKIP_COMPOSE=1 skips it on purpose.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pagedata
import pytest
from dockerengine import COMPOSE, DOCKER, EngineError, PrivateDockerd, unavailable

from lab.domain.scenarios import REFERENCE_ROWS

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "compose"
CONTEXT = ["Dockerfile", "compose.yaml", ".dockerignore", "pyproject.toml", "README.md",
           "scripts", "lab", "app", "templates", "static"]
TOKEN = "teacher-secret-7"
FAST = {"size": "8M", "delay_write": "1ms", "delay_zero": "1ms"}

pytestmark = [pytest.mark.compose, pytest.mark.timeout(900)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


class Classroom:
    """The teacher's folder (a copy of the build context plus .env) and the commands run in it."""

    def __init__(self, engine: PrivateDockerd, folder: Path) -> None:
        self.engine = engine
        self.folder = folder
        self.port = _free_port()
        self.port2 = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.url2 = f"http://127.0.0.1:{self.port2}"
        self.timings: list[dict[str, Any]] = []
        self.auth = {"Authorization": f"Bearer {TOKEN}"}

    def write_env(self, **extra: str) -> None:
        env = {"LAB_TOKEN": TOKEN, "LAB_PORT": str(self.port), "LAB_GROUP2_PORT": str(self.port2),
               "LAB_GROUP2_TOKEN": "", **extra}
        (self.folder / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))

    def run(self, argv: list[str], what: str, timeout: float = 300, check: bool = True, record: bool = True,
            ) -> subprocess.CompletedProcess[str]:
        t0 = time.monotonic()
        r = subprocess.run(argv, cwd=self.folder, env=self.engine.env(), capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        took = time.monotonic() - t0
        shown = " ".join("docker" if a.endswith("/docker") else a for a in argv)
        if record:
            self.timings.append({"what": what, "command": shown, "seconds": round(took, 1), "exit": r.returncode})
        with open(ARTIFACTS / "commands.log", "a") as log:
            log.write(f"$ {shown}    # {what}: {took:.1f} s, exit {r.returncode}\n")
            log.write(f"{r.stdout[-3000:]}{r.stderr[-3000:]}\n")
        if check and r.returncode != 0:
            raise AssertionError(f"{shown}: exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        return r

    def compose(self, *args: str, what: str, timeout: float = 300, check: bool = True, record: bool = True,
                ) -> subprocess.CompletedProcess[str]:
        return self.run([COMPOSE, *args], what, timeout=timeout, check=check, record=record)

    def container(self, service: str) -> str:
        r = self.compose("ps", "-q", service, what=f"container of {service}", record=False)
        cid = r.stdout.strip()
        assert cid, f"no container for {service}"
        return cid

    def inspect(self, cid: str) -> dict[str, Any]:
        return json.loads(self.engine.docker("inspect", cid).stdout)[0]

    def wait_healthy(self, service: str, what: str, timeout: float = 120) -> float:
        t0 = time.monotonic()
        cid = self.container(service)
        deadline = t0 + timeout
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            state = self.inspect(cid)["State"]
            health = state.get("Health", {}).get("Status")
            if health == "healthy":
                took = time.monotonic() - t0
                with open(ARTIFACTS / "commands.log", "a") as log:  # each probe with its times and output
                    log.write(f"# {what}: {took:.1f} s; started {state.get('StartedAt')}; probes:\n")
                    for probe in state["Health"].get("Log", []):
                        log.write(f"#   {probe.get('Start')} -> exit {probe.get('ExitCode')}: "
                                  f"{(probe.get('Output') or '').strip()[-300:]}\n")
                    log.write("# service log:\n" + self.engine.docker("logs", "-t", cid, check=False).stderr[-3000:])
                self.timings.append({"what": what, "command": f"(docker inspect until healthy: {service})",
                                     "seconds": round(took, 1), "exit": 0})
                return took
            assert state.get("Running"), f"{service} stopped: {state}\n{self.engine.docker('logs', cid).stderr}"
            time.sleep(0.25)
        raise AssertionError(f"{service} not healthy after {timeout} s: {state.get('Health')}")

    def first_start(self, timeout: float = 600) -> None:
        """A new volume: the service answers at once and calibrates in the background, its pages say so;
        wait (recorded) until it is done, so the tests below measure a calibrated machine."""
        t0 = time.monotonic()
        health = httpx.get(f"{self.url}/api/v1/health", timeout=10).json()
        assert health["status"] in ("starting", "ok"), health
        if health["status"] == "starting":
            assert health["calibrating"]["steps"] > 0, health
            talk = httpx.get(f"{self.url}/talk", timeout=10)
            assert talk.status_code == 200 and 'id="banner-start"' in talk.text
        while health["status"] == "starting":
            assert time.monotonic() - t0 < timeout, health
            time.sleep(1)
            health = httpx.get(f"{self.url}/api/v1/health", timeout=10).json()
        self.timings.append({"what": "first start: healthy at once, calibrating in the background until ok",
                             "command": "(GET /api/v1/health until status ok)",
                             "seconds": round(time.monotonic() - t0, 1), "exit": 0})

    def processes(self, cid: str) -> list[dict[str, Any]]:
        """Every process in the container: pid, uid, capability sets, command (read from /proc inside)."""
        script = (
            "import json, os\n"
            "out = []\n"
            "for p in sorted(int(d) for d in os.listdir('/proc') if d.isdigit()):\n"
            "    if p == os.getpid():\n"
            "        continue\n"
            "    try:\n"
            "        st = dict(l.split(':', 1) for l in open(f'/proc/{p}/status').read().splitlines() if ':' in l)\n"
            "        cmd = open(f'/proc/{p}/cmdline', 'rb').read().replace(b'\\0', b' ').decode().strip()\n"
            "    except OSError:\n"
            "        continue\n"
            "    out.append({'pid': p, 'uid': st['Uid'].split(), 'cap_eff': st['CapEff'].strip(),\n"
            "                'cap_prm': st['CapPrm'].strip(), 'cap_bnd': st['CapBnd'].strip(),\n"
            "                'no_new_privs': st.get('NoNewPrivs', '').strip(), 'cmd': cmd})\n"
            "print(json.dumps(out))\n"
        )
        r = self.engine.docker("exec", cid, "/app/.venv/bin/python", "-I", "-c", script)
        return json.loads(r.stdout)


def _wait_run(base: str, run_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = httpx.get(f"{base}/api/v1/runs/{run_id}", timeout=10).json()
        if run["status"] not in ("queued", "running"):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} still going after {timeout} s")


@pytest.fixture(scope="module")
def classroom() -> Iterator[Classroom]:
    if os.environ.get("LAB_SKIP_COMPOSE") == "1":
        pytest.skip("LAB_SKIP_COMPOSE=1")
    why = unavailable()
    if why:
        pytest.skip(f"no private Docker engine here: {why}")
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    parent = Path(tempfile.mkdtemp(prefix="fzc-"))
    folder = parent / "fastzero-lab"  # compose's project name comes from the folder, as for a teacher
    folder.mkdir()
    for name in CONTEXT:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, folder / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, folder / name)
    engine = PrivateDockerd()
    room = Classroom(engine, folder)
    t_start = time.monotonic()
    try:
        try:
            t0 = time.monotonic()
            engine.start()
            room.timings.append({"what": "private dockerd answers", "command": "dockerd --data-root ... "
                                 "--iptables=false --bridge=none", "seconds": round(time.monotonic() - t0, 1),
                                 "exit": 0})
        except EngineError as e:
            pytest.skip(f"no private Docker engine could start here: {e}")
        room.run(["bash", str(ROOT / "scripts" / "docker-base.sh"), "--docker", f"/usr/bin/docker -H {engine.host}"],
                 "base image (debootstrap, cached per day) + docker import", timeout=600)
        room.write_env()
        room.compose("build", what="docker-compose build", timeout=900)
        size = engine.docker("image", "inspect", "-f", "{{.Size}}", "fastzero-lab:latest").stdout.strip()
        room.timings.append({"what": "image size", "command": "docker image inspect -f {{.Size}} fastzero-lab",
                             "seconds": 0, "bytes": int(size), "exit": 0})
        room.compose("up", "-d", what="docker-compose up -d")
        room.wait_healthy("lab", "up -d -> healthy")
        room.first_start()
        yield room
    finally:
        with contextlib.suppress(Exception):
            if engine.proc is not None and engine.proc.poll() is None:
                room.compose("--profile", "groups", "down", "-v", "--rmi", "all", what="docker-compose down -v",
                             check=False, timeout=180)
        forced = engine.close()
        room.timings.append({"what": "whole flow", "command": "", "seconds": round(time.monotonic() - t_start, 1),
                             "exit": 0})
        (ARTIFACTS / "timings.json").write_text(json.dumps(room.timings, indent=1))
        shutil.rmtree(parent, ignore_errors=True)
        assert not engine.dir.exists(), f"{engine.dir} left behind"
        assert not forced, f"cleanup had to force: {forced}"


def test_health_pages_and_offline_docs(classroom: Classroom) -> None:
    health = httpx.get(f"{classroom.url}/api/v1/health", timeout=10).json()
    assert health["status"] == "ok"
    assert health["versions"]["nbdkit"].startswith("1.") and "unavailable" not in health["versions"]["libnbd"]
    for path, marker in (("/", "fastzero-lab"), ("/results", "fastzero-lab"), ("/talk", "fastzero-lab"),
                         ("/docs", "/static-apidocs/swagger-ui-bundle.js"),
                         ("/redoc", "/static-apidocs/redoc.standalone.js")):
        r = httpx.get(f"{classroom.url}{path}", timeout=10)
        assert r.status_code == 200 and marker in r.text, path
        assert "cdn." not in r.text and "googleapis" not in r.text, path
    js = httpx.get(f"{classroom.url}/static-apidocs/swagger-ui-bundle.js", timeout=10)
    assert js.status_code == 200 and len(js.content) > 100_000


def test_token_guards_runs_and_a_run_is_followed_to_done(classroom: Classroom) -> None:
    body = {"client": "qemu-img", "server": {"zeromode": "plugin", **FAST}}
    assert httpx.post(f"{classroom.url}/api/v1/runs", json=body, timeout=10).status_code == 401
    r = httpx.post(f"{classroom.url}/api/v1/runs", json=body, headers=classroom.auth, timeout=10)
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]
    events: list[str] = []
    with httpx.stream("GET", f"{classroom.url}/api/v1/runs/{run_id}/events", timeout=60) as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                events.append(line.split(":", 1)[1].strip())
    assert events and events[-1] == "done", events
    run = httpx.get(f"{classroom.url}/api/v1/runs/{run_id}", timeout=10).json()
    assert run["status"] == "succeeded" and run["verified"] is True, run
    assert run["backend"]["write_ops"] == 16 and run["backend"]["zero_ops"] == 4, run["backend"]


def _reference_scenario(classroom: Classroom, what: str) -> list[dict[str, Any]]:
    """The reference scenario at the talk's geometry (100 MiB, alternating 1 MiB, 256k) with 1 ms delays,
    run to its end: its seven runs, each verified with the table's counts."""
    r = httpx.post(f"{classroom.url}/api/v1/scenarios/reference/runs", headers=classroom.auth, timeout=10,
                   json={"server": {"delay_write": "1ms", "delay_zero": "1ms"}})
    assert r.status_code == 202, r.text
    sweep_id = r.json()["id"]
    t0 = time.monotonic()
    while True:
        sweep = httpx.get(f"{classroom.url}/api/v1/sweeps/{sweep_id}", timeout=10).json()
        if sweep["status"] not in ("queued", "running"):
            break
        assert time.monotonic() - t0 < 240, sweep["counts"]
        time.sleep(0.5)
    classroom.timings.append({"what": what, "command": "POST /api/v1/scenarios/reference/runs",
                              "seconds": round(time.monotonic() - t0, 1), "exit": 0})
    assert sweep["status"] == "succeeded", sweep["counts"]
    runs = sweep["runs"]
    assert len(runs) == 7 == len(REFERENCE_ROWS)
    for row, run in zip(REFERENCE_ROWS, runs, strict=True):
        assert run["client"] == row.client and run["verified"] is True, run
        ref = row.reference or {}
        here = ref.get("nbdkit_1_32") or {}  # the image has bookworm's nbdkit 1.32
        want = (here.get("write_ops", ref["write_ops"]), here.get("zero_ops", ref["zero_ops"] or 0))
        assert (run["backend"]["write_ops"], run["backend"]["zero_ops"]) == want, (row.key, run["backend"])
    return runs


def test_reference_scenario_seven_rows_with_their_counts(classroom: Classroom) -> None:
    _reference_scenario(classroom, "reference scenario, 7 rows, 100 MiB at 1 ms")


def test_service_runs_as_uid_10001_without_capabilities(classroom: Classroom) -> None:
    cid = classroom.container("lab")
    procs = classroom.processes(cid)
    init = next(p for p in procs if p["pid"] == 1)
    assert "docker-init" in init["cmd"], procs
    lab = [p for p in procs if p["pid"] != 1 and "lab serve" in p["cmd"]]
    assert len(lab) == 1, procs
    (p,) = lab
    classroom.timings.append({"what": "PID of the lab in its container", "command": p["cmd"], "seconds": 0,
                              "pid": p["pid"], "exit": 0})
    assert set(p["uid"]) == {"10001"}, p
    assert p["cap_eff"] == p["cap_prm"] == p["cap_bnd"] == "0000000000000000", p
    assert p["no_new_privs"] == "1", p
    config = classroom.inspect(cid)["HostConfig"]
    assert config["CapDrop"] == ["ALL"] and not config["Privileged"]


def test_down_and_up_keep_the_history(classroom: Classroom) -> None:
    before = httpx.get(f"{classroom.url}/api/v1/runs", timeout=10).json()["total"]
    assert before >= 1
    classroom.compose("down", what="docker-compose down")
    classroom.compose("up", "-d", what="docker-compose up -d (again)")
    classroom.wait_healthy("lab", "up -d -> healthy (again)")
    assert httpx.get(f"{classroom.url}/api/v1/runs", timeout=10).json()["total"] == before


def test_stop_during_a_run_leaves_it_interrupted_and_nothing_running(classroom: Classroom) -> None:
    # The talk's baseline: 400 writes x 20 ms, about 8 s.
    r = httpx.post(f"{classroom.url}/api/v1/runs", headers=classroom.auth, timeout=10,
                   json={"client": "qemu-img", "server": {"zeromode": "none"}})
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]
    cid = classroom.container("lab")
    deadline = time.monotonic() + 60
    while True:  # until the copy is under way: nbdkit and qemu-img running inside
        run = httpx.get(f"{classroom.url}/api/v1/runs/{run_id}", timeout=10).json()
        names = " ".join(p["cmd"] for p in classroom.processes(cid))
        if run["status"] == "running" and "nbdkit" in names and "qemu-img" in names:
            break
        assert run["status"] in ("queued", "running") and time.monotonic() < deadline, run
        time.sleep(0.2)
    classroom.compose("stop", "lab", what="docker-compose stop lab (a run under way)")
    state = classroom.inspect(cid)["State"]
    assert not state["Running"] and state["ExitCode"] == 0, state  # a clean stop, not 143 or 137
    logs = classroom.engine.docker("logs", cid)
    assert "Shutting down" in logs.stdout + logs.stderr, logs.stderr[-2000:]
    classroom.compose("up", "-d", what="docker-compose up -d (after stop)")
    classroom.wait_healthy("lab", "up -d -> healthy (after stop)")
    run = httpx.get(f"{classroom.url}/api/v1/runs/{run_id}", timeout=10).json()
    assert run["status"] == "interrupted", run
    health = httpx.get(f"{classroom.url}/api/v1/health", timeout=10).json()
    assert (health["manager"]["running"], health["manager"]["queued"]) == (0, 0)
    left = [p["cmd"] for p in classroom.processes(classroom.container("lab"))
            if any(t in p["cmd"] for t in ("nbdkit", "qemu-img", "nbdcopy"))]
    assert not left, left


def test_groups_profile_second_instance_and_env_reaches_both(classroom: Classroom) -> None:
    # As the docs say: COMPOSE_PROFILES=groups in .env, then every command covers both instances.
    # The first start's calibration was seen above; the new volumes from here on skip it (time).
    classroom.write_env(COMPOSE_PROFILES="groups", LAB_WORKERS="3", LAB_AUTO_CALIBRATE="0")
    classroom.compose("up", "-d", what="docker-compose up -d (COMPOSE_PROFILES=groups, LAB_WORKERS=3, no calibration)")
    classroom.wait_healthy("lab-group2", "group 2 up -> healthy")
    classroom.wait_healthy("lab", "group 1 recreated -> healthy")
    for url in (classroom.url, classroom.url2):
        assert httpx.get(f"{url}/api/v1/health", timeout=10).json()["manager"]["workers"] == 3, url
    # Its own history and its own (empty) token: group 2 runs things itself.
    assert httpx.get(f"{classroom.url2}/api/v1/runs", timeout=10).json()["total"] == 0
    r = httpx.post(f"{classroom.url2}/api/v1/runs", json={"client": "qemu-img", "server": FAST}, timeout=10)
    assert r.status_code == 202, r.text
    assert _wait_run(classroom.url2, r.json()["id"])["status"] == "succeeded"
    assert httpx.post(f"{classroom.url}/api/v1/runs", json={"server": FAST}, timeout=10).status_code == 401
    volumes = classroom.engine.ids("volumes")
    assert {"fastzero-lab-data", "fastzero-lab-group2-data"} <= set(volumes), volumes  # fixed names


def test_what_an_unprivileged_container_can_and_cannot_do(classroom: Classroom) -> None:
    """Storage that needs mounts or loop devices is refused with the reason; the rest works."""
    info = httpx.get(f"{classroom.url}/api/v1/kinds", timeout=10).json()
    storages = info["storages"]
    (ARTIFACTS / "kinds.json").write_text(json.dumps(info, indent=1))
    assert storages["datadir"]["available"] is True and storages["shm"]["available"] is True, storages
    for name in ("tmpfs", "ext4", "xfs", "btrfs", "blockdev"):
        if name in storages:
            assert storages[name]["available"] is False and storages[name]["reason"], (name, storages[name])
    for kind, state in info["kinds"].items():  # every server program is in the image
        assert state.get("available", True) is True or "external" in kind, (kind, state)
    # the block-status act on what the container has: a tmpfs (its /dev/shm) and the /data volume's disk
    acts = httpx.get(f"{classroom.url}/api/v1/scenarios/acts", timeout=10).json()["acts"]
    bs = next(a for a in acts if a["key"] == "block-status")
    assert [(r["group"], r["server"]["storage"], r["available"]) for r in bs["rows"]] == \
        [(g, {"A": "shm", "B": "datadir"}[g], True) for _ in range(3) for g in "AB"], bs["rows"]
    today = httpx.get(f"{classroom.url}/api/v1/scenarios/today", timeout=10).json()["rows"]
    assert any(not r["available"] and "root" in r["reason"] for r in today)  # listed, with the reason


def test_every_page_and_its_data_requests_answer_in_the_container(classroom: Classroom) -> None:
    """As the image's unprivileged user: every page, every GET of the OpenAPI without a parameter, and
    every request the pages' scripts make (tests/pagedata.py) answers < 500."""
    spec = httpx.get(f"{classroom.url}/openapi.json", timeout=10).json()
    gets = [p for p, ops in spec["paths"].items() if "get" in ops and "{" not in p and not p.endswith("events")
            and not any(q.get("required") for q in ops["get"].get("parameters", []))]
    runs = httpx.get(f"{classroom.url}/api/v1/runs?limit=1", timeout=10).json()["runs"]
    run_id = runs[0]["id"] if runs else "0" * 12
    names = [s["name"] for s in httpx.get(f"{classroom.url}/api/v1/scenarios", timeout=30).json()["scenarios"]]
    values = {"id": [run_id], "run.id": [run_id], "name": names, "perRow": ["3"], "LIMIT": ["20"],
              "lastEventId": ["0"], "params": [""], "act.key": ["baseline"]}
    bad = []
    for path in [*pagedata.PAGES, *gets, *pagedata.paths(values)]:
        if "/events" in path:
            continue
        r = httpx.get(f"{classroom.url}{path}", timeout=60)
        if r.status_code >= 500:
            bad.append(f"GET {path} -> {r.status_code}")
    assert not bad, bad


def test_the_talk_in_chromium_runs_act_one_in_the_container(classroom: Classroom) -> None:
    """The presenter's /talk against the container, in Debian's Chromium: it leaves "Loading the story",
    shows every act (2b on the container's storages), and act 1 runs to its outcome (a person's keys)."""
    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("/usr/bin/chromium is not installed (scripts/install.sh --dev installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        try:
            page = browser.new_context(viewport={"width": 1024, "height": 576}).new_page()
            page.set_default_timeout(30_000)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("response", lambda r: errors.append(f"{r.url} {r.status}") if r.status >= 500 else None)
            page.goto(f"{classroom.url}/talk?presenter#baseline")
            page.locator("#token-input").click()  # the sign-in dialog ?presenter opens: typed as a person does
            page.keyboard.type(TOKEN, delay=20)
            page.keyboard.press("Enter")
            page.wait_for_selector("#token-dialog", state="hidden")
            page.wait_for_function("document.querySelector('#act-title').textContent.indexOf('Loading') < 0")
            assert page.locator("#act-dots button").count() >= 7  # six acts (2b too) and the summary
            page.wait_for_selector("#act-run:not([disabled])")
            page.keyboard.press("Enter")  # Enter runs the act on screen
            # the outcome box is there from the start (an earlier test's result may show in it): its state
            # says when this run has begun and when it has ended
            page.wait_for_selector("#outcome[data-state='running']")
            page.wait_for_selector("#outcome[data-state='done'], #outcome[data-state='failed']", timeout=180_000)
            outcome = page.inner_text("#outcome")
            page.screenshot(path=str(ARTIFACTS / "talk-act1-1024x576.png"))
            assert "failed" not in outcome.lower(), outcome
            assert page.locator(".lane").first.get_attribute("data-state") == "done"
            assert not errors, errors
        finally:
            browser.close()


def test_stop_with_twenty_queued_runs_then_start_runs_them_all(classroom: Classroom) -> None:
    """`docker-compose stop` with 20 runs waiting, then `start`: the 20 run to the end (only the runs that
    were running end `interrupted`)."""
    slow = {"client": "qemu-img", "server": {"zeromode": "none", "size": "8M", "delay_write": "200ms"}}  # ~6.4 s
    workers = httpx.get(f"{classroom.url}/api/v1/health", timeout=10).json()["manager"]["workers"]
    busy = [httpx.post(f"{classroom.url}/api/v1/runs", json=slow, headers=classroom.auth, timeout=10).json()["id"]
            for _ in range(workers)]
    # every worker busy before the 20 are queued (a qemu-img starts 1 s after another: a slow run not yet
    # started at the stop would be kept queued, and run again, as the 20 are)
    deadline = time.monotonic() + 30
    while any(httpx.get(f"{classroom.url}/api/v1/runs/{b}", timeout=10).json()["status"] != "running" for b in busy):
        assert time.monotonic() < deadline, "the slow runs did not all start"
        time.sleep(0.1)
    queued = []
    for i in range(20):
        r = httpx.post(f"{classroom.url}/api/v1/runs", headers=classroom.auth, timeout=10,
                       json={"client": "qemu-img", "server": FAST, "label": f"queued-{i}"})
        assert r.status_code == 202, r.text
        queued.append(r.json()["id"])
    assert all(httpx.get(f"{classroom.url}/api/v1/runs/{q}", timeout=10).json()["status"] == "queued"
               for q in queued)
    classroom.compose("stop", "lab", what="docker-compose stop lab (20 runs queued)")
    classroom.compose("start", "lab", what="docker-compose start lab")
    classroom.wait_healthy("lab", "start -> healthy (queue kept)")
    ends = [_wait_run(classroom.url, q, timeout=300) for q in queued]
    assert [e["status"] for e in ends] == ["succeeded"] * 20, [(e["label"], e["status"], e.get("error")) for e in ends]
    assert [httpx.get(f"{classroom.url}/api/v1/runs/{b}", timeout=10).json()["status"] for b in busy] == [
        "interrupted"] * len(busy)


def test_reset_one_instance_keeps_the_other(classroom: Classroom) -> None:
    """docs/classroom.md's one-instance reset (what to do instead of v1's all-volumes `down -v`)."""
    kept = httpx.get(f"{classroom.url2}/api/v1/runs", timeout=10).json()["total"]
    assert kept >= 1
    classroom.compose("rm", "-sf", "lab", what="docker-compose rm -sf lab (reset group 1 only)")
    classroom.run([DOCKER, "volume", "rm", "fastzero-lab-data"], "docker volume rm fastzero-lab-data")
    classroom.compose("up", "-d", what="docker-compose up -d (after the reset)")
    classroom.wait_healthy("lab", "group 1 reset -> healthy")
    assert httpx.get(f"{classroom.url}/api/v1/runs", timeout=10).json()["total"] == 0
    assert httpx.get(f"{classroom.url2}/api/v1/runs", timeout=10).json()["total"] == kept


def test_cluster_profile_two_workers_run_the_reference_scenario(classroom: Classroom) -> None:
    """More machines (docs/classroom.md#more-machines): the `cluster` profile's broker and two workers from
    the same image; the service sends the reference scenario's rows to them, the counts are the table's."""
    password = os.urandom(16).hex()
    classroom.write_env(COMPOSE_PROFILES="cluster", LAB_BROKER_URL=f"redis://:{password}@redis:6379/0",
                        LAB_AUTO_CALIBRATE="0")
    try:
        classroom.compose("up", "-d", "--scale", "worker=2", what="docker-compose up -d --scale worker=2 "
                          "(COMPOSE_PROFILES=cluster)", timeout=300)
        classroom.wait_healthy("redis", "cluster: broker healthy")
        classroom.wait_healthy("lab", "cluster: lab recreated with LAB_BROKER_URL -> healthy")
        t0 = time.monotonic()
        while True:
            got = httpx.get(f"{classroom.url}/api/v1/workers", timeout=10).json()
            ready = [w for w in got["workers"] if w["state"] == "ready"]
            if got["cluster"] and len(ready) == 2:
                break
            assert time.monotonic() - t0 < 120, got
            time.sleep(0.5)
        classroom.timings.append({"what": "cluster: two workers ready", "command": "GET /api/v1/workers",
                                  "seconds": round(time.monotonic() - t0, 1), "exit": 0})
        names = {w["name"] for w in ready}
        runs = _reference_scenario(classroom, "cluster: reference scenario, 7 rows on 2 workers")
        assert all(run["worker"] is not None and run["worker"]["name"] in names for run in runs), runs
        (ARTIFACTS / "cluster-runs.json").write_text(json.dumps(
            [{"key": row.key, "worker": run["worker"]["name"], "duration_s": run["duration_s"]}
             for row, run in zip(REFERENCE_ROWS, runs, strict=True)], indent=1))
        for cid in classroom.compose("ps", "-q", "worker", what="worker containers", record=False).stdout.split():
            # the worker and the shell the image starts it from (pid 1): each the image's user, no capability
            workers = [p for p in classroom.processes(cid) if "lab worker" in p["cmd"]]
            assert workers and all(set(p["uid"]) == {"10001"} and p["cap_eff"] == "0000000000000000"
                                   for p in workers), workers
    finally:  # what the broker, the workers and the service said, for the artifacts (commands.log)
        classroom.compose("logs", "--no-color", "--tail", "150", "redis", "worker", "lab",
                          what="docker-compose logs (cluster)", check=False)
        classroom.compose("rm", "-sf", "worker", "redis", what="docker-compose rm -sf worker redis", check=False)
        classroom.write_env(LAB_AUTO_CALIBRATE="0")
        classroom.compose("up", "-d", "lab", what="docker-compose up -d lab (no broker again)", check=False)
