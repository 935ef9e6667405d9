from tests.api.conftest import assert_error


def test_take_lookup_release_cycle(api, make_agent, make_profile):
    agent, token = make_agent("a1")
    make_profile("p1")
    r = api.post("/api/assignments", {"profile_id": "p1", "agent_id": "a1"}, token=token)
    assert r.status_code == 201, r.content
    a = r.json()
    r = api.get("/api/profiles/p1/assignment", token=token)
    assert r.json()["available"] is False
    r = api.delete(f"/api/assignments/{a['assignment_id']}", token=token)
    assert r.status_code == 200, r.content
    assert r.json()["status"] == "released"
    r = api.get("/api/profiles/p1/assignment/", token=token)
    assert r.json() == {"profile_id": "p1", "available": True, "assignment": None}


def test_anonymous_gets_401(api, db):
    assert_error(api.get("/api/pools"), 401, "not_authenticated")
