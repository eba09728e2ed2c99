"""Restarts: what was running comes back `interrupted`, what was queued is queued again and runs,
finished results intact, event ids continue, and a watcher resumes across the restart with Last-Event-ID."""

from __future__ import annotations

import signal
import threading

from apiutil import FAST, SLOW, client_for, sse_events, start_run, wait_final, wait_for

from testkit import Proc, descendants, mentioning


def test_graceful_stop_then_restart(tmp_path):
    data = tmp_path / "data"
    with client_for(data, workers=1) as api:
        done = wait_final(api, start_run(api)["id"])
        running = start_run(api, **SLOW)
        queued = start_run(api)
        wait_for(lambda: api.get(f"/api/runs/{running['id']}").json()["status"] == "running")
    with client_for(data, workers=1) as api:
        assert api.get(f"/api/runs/{done['id']}").json() == done
        row = api.get(f"/api/runs/{running['id']}").json()
        assert row["status"] == "interrupted" and "shut down" in row["error"]
        assert wait_final(api, queued["id"])["status"] == "succeeded", "a queued run is queued again and runs"


# Slow enough that all four are still copying when the service dies (16 s serial; nbdcopy's
# parallel requests each wait 5 s). The service is started with a matching LAB_MAX_DELAY_MS.
CRAWL = {"size": "8M", "delay_write": "500ms", "delay_zero": "500ms"}


def test_kill_9_during_runs_then_restart(tmp_path, monkeypatch, live_service):
    """kill -9 during four concurrent runs (qemu-img and three era clients; the pool runs a CPU-bound
    nbdcopy alone, never among others): every process of ours dies with the service; the next
    start sweeps its dirs, marks the running runs interrupted, keeps what had finished and queues
    again what was queued."""
    data, runtime = tmp_path / "data", tmp_path / "run"
    svc = live_service(LAB_WORKERS="4", LAB_MAX_DELAY_MS="5000")
    with svc.http() as http:
        done = wait_final(http, start_run(http)["id"])
        running = [start_run(http, "qemu-img", **CRAWL), start_run(http, "qemu-2.8", **CRAWL),
                   start_run(http, "qemu-4.2", **CRAWL), start_run(http, "qemu-2.7", **CRAWL)]
        queued = start_run(http)

        def all_copying() -> list[Proc] | None:
            tree = descendants(svc.proc.pid)
            names = [p.name for p in tree]
            era_children = [p for p in tree if p.name.startswith("python")]
            ok = names.count("nbdkit") == 4 and "qemu-img" in names and len(era_children) >= 3
            return tree if ok else None

        tree = wait_for(all_copying, 60)
        assert http.get(f"/api/runs/{queued['id']}").json()["status"] == "queued"
        last_seen = http.get("/api/runs").json()["last_event_id"]
        svc.proc.send_signal(signal.SIGKILL)
        svc.proc.wait(10)
        # the kernel takes every helper down with the service (PR_SET_PDEATHSIG), within 5 s
        wait_for(lambda: not any(p.alive() for p in tree) and not mentioning(runtime), 5)
    stale = [d for d in runtime.iterdir() if (d / "owner.pid").exists()
             and (d / "owner.pid").read_text().strip() == str(svc.proc.pid)]
    assert len(stale) == 4, "a SIGKILLed service leaves its private dirs for the next start to sweep"

    monkeypatch.setenv("LAB_RUNTIME_DIR", str(runtime))
    with client_for(data) as api:
        assert not any(d.exists() for d in stale), "the next start swept them"
        assert api.get(f"/api/runs/{done['id']}").json() == done, "a finished result is intact"
        for rid in [r["id"] for r in running]:
            row = api.get(f"/api/runs/{rid}").json()
            assert row["status"] == "interrupted", row
            assert row["error"] == "the service stopped before this run finished"
            assert row["verified"] is not True
        # a watcher that saw everything up to the kill resumes with nothing missed or repeated
        events = []
        with api.stream("GET", "/api/events", headers={"Last-Event-ID": str(last_seen)}) as resp:
            for ev in sse_events(resp.iter_lines()):
                if "id" in ev:
                    events.append(ev)
                    if ev["event"] == "done" and ev["data"]["run_id"] == queued["id"]:
                        break
        ids = [int(e["id"]) for e in events]
        assert ids[0] > last_seen and ids == sorted(set(ids))
        ended = {e["data"]["run_id"]: e["data"]["status"] for e in events if e["event"] == "done"}
        assert ended == {**{r["id"]: "interrupted" for r in running}, queued["id"]: "succeeded"}, \
            "the running ones interrupted, the queued one queued again and run"
        # a run stream resumed from before the kill ends with the run's done event
        with api.stream("GET", f"/api/runs/{running[0]['id']}/events",
                        headers={"Last-Event-ID": str(last_seen)}) as resp:
            tail = [e for e in sse_events(resp.iter_lines()) if "id" in e]
        assert [e["event"] for e in tail][-2:] == ["state", "done"]
        assert tail[-1]["data"]["status"] == "interrupted"
        # new work gets new, higher ids
        fresh = start_run(api, **FAST)
        wait_final(api, fresh["id"])
        assert api.get("/api/runs").json()["last_event_id"] > max(ids)


def test_sigterm_ends_open_streams_at_once(live_service):
    """`lab serve` stopping with watchers connected: their streams end cleanly, no forced cancel."""
    svc = live_service()
    with svc.http() as http:
        ended = []

        def watch() -> None:
            with http.stream("GET", "/api/events") as resp:
                for _ in resp.iter_lines():
                    pass
            ended.append(True)

        watchers = [threading.Thread(target=watch) for _ in range(3)]
        for t in watchers:
            t.start()
        wait_for(lambda: http.get("/api/health").json()["manager"]["subscribers"] == 3, 10)
        svc.proc.send_signal(signal.SIGTERM)
        assert svc.proc.wait(20) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
        for t in watchers:
            t.join(10)
        assert ended == [True, True, True]
    text = svc.log_text()
    assert "timeout graceful shutdown exceeded" not in text and "Traceback" not in text, text
