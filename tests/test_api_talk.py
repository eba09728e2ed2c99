"""PUT/GET /api/v1/talk: the act the presenter shows, for the audience to follow (a `talk` event)."""

from __future__ import annotations

from apiutil import client_for


def test_the_presenter_says_which_act_it_shows_and_followers_hear_it(tmp_path) -> None:
    with client_for(tmp_path / "data", token="s3cret-token") as api:
        assert api.get("/api/v1/talk").json() == {"act": None, "at": None}
        assert api.put("/api/v1/talk", json={"act": "pre-zero"}).status_code == 401  # a write: the token
        auth = {"Authorization": "Bearer s3cret-token"}
        r = api.put("/api/v1/talk", json={"act": "pre-zero"}, headers=auth)
        assert r.status_code == 200 and r.json()["act"] == "pre-zero" and r.json()["at"] > 0
        for bad in ({"act": "../etc"}, {"act": "pre-zero", "x": 1}, {}):
            assert api.put("/api/v1/talk", json=bad, headers=auth).status_code == 422, bad
        assert api.get("/api/v1/talk").json()["act"] == "pre-zero"
        events = [e for e in api.app.state.manager.store.events_after(0) if e.type == "talk"]
        assert [e.data["act"] for e in events] == ["pre-zero"]
