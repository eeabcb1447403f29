"""The review app's routes without a browser: where a label leads, what it refuses, the headers it sends."""

from __future__ import annotations

from pathlib import Path

import pytest
from sample_runs import make_review_run, review_pair
from starlette.testclient import TestClient

from labeler.review.app import COOKIE, build_app
from labeler.store.human import read_human_labels

TOKEN = "k" * 30


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    app = build_app(make_review_run(tmp_path, 12), annotator="ana", token=TOKEN, page_size=50,
                    allowed_hosts={"testserver"})  # fmt: skip
    return TestClient(app, cookies={COOKIE: TOKEN}, follow_redirects=False)


def _csrf(client: TestClient, pair_id: str) -> str:
    page = client.get(f"/pair/{pair_id}").text
    return page.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def test_a_label_leads_to_the_next_pair_of_the_list_it_came_from(client: TestClient, tmp_path: Path) -> None:
    ids = [review_pair(i).id for i in range(12)]
    csrf = _csrf(client, ids[0])
    answer = client.post(f"/pair/{ids[0]}/label", data={"csrf": csrf, "choice": "A", "kept": ""})
    assert answer.status_code == 303 and answer.headers["location"] == f"/pair/{ids[1]}"
    # In "not labelled by me", the pair just labelled leaves the list: the next one is still the next.
    answer = client.post(f"/pair/{ids[1]}/label", data={"csrf": csrf, "choice": "B", "kept": "human=todo"})
    assert answer.headers["location"] == f"/pair/{ids[2]}?human=todo"
    listed = client.get("/?human=todo").text
    assert ids[0] not in listed and ids[1] not in listed and ids[2] in listed
    labels = read_human_labels(tmp_path / "run")
    assert {pair: label.choice for (_, pair), label in labels.items()} == {ids[0]: "A", ids[1]: "B"}


def test_bad_labels_and_requests_are_refused(client: TestClient, tmp_path: Path) -> None:
    pair_id = review_pair(3).id
    csrf = _csrf(client, pair_id)
    assert client.post(f"/pair/{pair_id}/label", data={"csrf": csrf, "choice": "maybe"}).status_code == 400
    assert (
        client.post(f"/pair/{pair_id}/label", data={"csrf": csrf, "choice": "A", "note": "x" * 3000}).status_code == 400
    )
    assert client.post("/pair/nope/label", data={"csrf": csrf, "choice": "A"}).status_code == 404
    assert client.post(f"/pair/{pair_id}/label", data={"csrf": "wrong", "choice": "A"}).status_code == 403
    same_site = {"Origin": "http://testserver", "Sec-Fetch-Site": "cross-site"}
    assert (
        client.post(f"/pair/{pair_id}/label", data={"csrf": csrf, "choice": "A"}, headers=same_site).status_code == 403
    )
    assert client.get("/", headers={"Host": "attacker.example"}).status_code == 403  # DNS rebinding
    assert not (tmp_path / "run" / "human").exists()
    assert client.get("/pair/nope").status_code == 404


def test_pages_carry_a_strict_content_security_policy(client: TestClient) -> None:
    page = client.get("/")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
    entry = client.get(f"/?token={TOKEN}&flag=tie")
    assert entry.status_code == 303 and entry.headers["location"] == "/?flag=tie"  # the token leaves the address
    assert (
        "httponly" in entry.headers["set-cookie"].lower() and "samesite=strict" in entry.headers["set-cookie"].lower()
    )
