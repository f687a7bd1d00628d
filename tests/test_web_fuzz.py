"""The API fuzzed from its own OpenAPI document (schemathesis): for every endpoint, requests
generated from its declaration and deliberately wrong ones, as an administrator, against a real
hakitd.  Whatever is sent, the answer is never a server error, an error is JSON saying what was
wrong, and the node goes on answering."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from hakit.testing.sim import Sim
from tests.sim_support import IS_ROOT, unique_sim_name
from tests.web_client import Client

pytestmark = pytest.mark.root
EXAMPLES = 10  # per endpoint and mode: enough to hit every field's wrong types and missing fields


@pytest.fixture(scope="module")
def node() -> Iterator[dict[str, Any]]:
    if not IS_ROOT:
        pytest.skip("needs root (namespaces, bridges, mounts)")
    sim = Sim(unique_sim_name())
    try:
        sim.up(1, daemon=True, owner_pid=os.getpid())
        sim.exec("node1", ["hakit", "web", "user", "add", "ada", "--role", "admin", "--password-stdin"],
                 input="pw-ada-long-enough\n")
        token = sim.exec("node1", ["hakit", "web", "token", "add", "ada", "fuzz"]).stdout.split()[-1]
        yield {"sim": sim, "base": f"https://{sim.addr('node1')}:9453", "token": token,
               "ca": sim.host_path("node1", "/etc/hakit/pki/ca.crt")}
    finally:
        sim.down()


@pytest.fixture(scope="module")
def api_schema(node: dict[str, Any]) -> Any:
    doc = Client(node["sim"].addr("node1"), node["ca"]).request("GET", "/api/v1/openapi.json").json()
    schema = schemathesis.openapi.from_dict(doc)
    # Streams never end, and logging out would end nothing a token holds.
    return schema.exclude(path_regex=r"(/events|/follow|/logout)$")


def operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", list(GenerationMode), ids=str)
def test_no_input_breaks_the_api(api_schema: Any, node: dict[str, Any], mode: GenerationMode) -> None:
    """Positive: requests the declarations allow; negative: requests they forbid."""
    failures: list[str] = []
    auth = {"Authorization": f"Bearer {node['token']}"}
    for op in operations(api_schema):
        @given(case=op.as_strategy(mode))
        # Derandomized: `make test` sends the same requests every run (a red run replays).
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def probe(case: Any) -> None:
            resp = case.call(base_url=node["base"], headers=auth, verify=str(node["ca"]), timeout=60)
            where = f"{case.method} {case.formatted_path} {case.query} {case.body!r:.200}"
            assert resp.status_code < 500, f"{where}: {resp.status_code} {resp.text}"
            if resp.status_code >= 400:
                kind = resp.headers.get("content-type", [""])[0]
                assert kind.startswith("application/json"), f"{where}: {resp.text}"
                assert resp.json()["error"], f"{where}: {resp.text}"

        try:
            probe()
        except Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE  # (nothing to get wrong: GET /metrics)
        except AssertionError as exc:
            failures.append(str(exc).splitlines()[0])
    assert not failures, "\n".join(failures)
    # Still answering, and still knowing its administrator.
    client = Client(node["sim"].addr("node1"), node["ca"], token=node["token"])
    assert client.request("GET", "/api/v1/session").json()["user"] == "ada"
