"""/talk as the container's users see it: `lab serve` as nobody (no mount rights, no loop devices), its data
dir on a tmpfs so act 2b's server B (a disk filesystem) has nothing to stand on: every act still renders,
2b runs server A's lanes and names what is missing and why; the page's own requests all answer."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from pathlib import Path

import pytest

from testkit import LiveService

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def test_the_talk_renders_every_act_and_says_what_this_machine_lacks(new_page) -> None:
    if os.geteuid() != 0 or not Path("/dev/shm").is_dir():
        pytest.skip("needs root (to run the service as nobody) and /dev/shm")
    pw = pwd.getpwnam("nobody")
    root = Path(tempfile.mkdtemp(prefix="fz-unpriv-", dir="/dev/shm"))  # the data dir on a tmpfs
    os.chmod(root, 0o755)
    for d in ("data", "run"):
        (root / d).mkdir()
        os.chown(root / d, pw.pw_uid, pw.pw_gid)
    svc = LiveService(root, env={"LAB_IMAGE_DIR": str(root / "data/images")}, data_dir=root / "data",
                      runtime_dir=root / "run", log_level="warning", user="nobody")
    try:
        svc.start()
        page = new_page(1024, 576)
        failed: list[str] = []
        page.on("response", lambda r: failed.append(f"{r.url} {r.status}") if r.status >= 500 else None)
        page.goto(svc.url + "/talk#block-status")
        page.wait_for_selector('#conn[data-state="live"]', state="attached")
        page.wait_for_selector("#lanes-unavailable:not([hidden])")
        note = page.inner_text("#lanes-unavailable")
        assert "not available here" in note and "tmpfs" in note, note
        assert page.locator("#lanes .lane").count() == 3  # server A's three sizes, on the tmpfs already mounted
        assert page.locator("#act-dots button").count() >= 7  # every act, 2b included, and the summary
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "talk-2b-unprivileged-1024x576.png"))
        for key in ("baseline", "fast-zero"):
            page.goto(f"{svc.url}/talk#{key}")
            page.wait_for_selector("#lanes .lane")
            assert page.locator("#lanes-unavailable").is_hidden()
        assert page.console.errors == [] and not failed, (page.console.errors, failed)
    finally:
        svc.stop()
        shutil.rmtree(root, ignore_errors=True)
