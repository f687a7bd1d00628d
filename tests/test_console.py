"""The web console in a browser, against hakitd in a simulated cluster: log in, the
cluster grid, a swap seen on both nodes, a full synchronisation's progress bar, a module
made with the wizard, what each role is offered, the commands log and the users page,
and a node that goes down.  Playwright for Python drives Debian's chromium (never a
downloaded browser) on the host, which reaches every node at its address in the sim.

Screenshots of the main pages go to build/screenshots/ (docs/web.md shows copies).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, Playwright, expect, sync_playwright

from hakit.testing.demo import with_macros
from hakit.testing.sim import Sim
from tests.cluster import hk, install, mirror_conf, state, wait_state
from tests.helpers import wait_for
from tests.sim_support import IS_ROOT, unique_sim_name
from tests.test_web_metrics import find, parse_exposition, scrape

pytestmark = pytest.mark.root

CHROMIUM = "/usr/bin/chromium"
# As root, in a test: no sandbox (it needs an unprivileged user), nothing fetched in the
# background, no GPU.  Playwright gives the browser a fresh profile directory of its own.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-proxy-server",
]
PORT = 9453
SCREENSHOTS = Path(__file__).resolve().parent.parent / "build" / "screenshots"

MODULE = "db"
DATA = "/var/lib/data"  # db's replicated directory
DATA2 = "/var/lib/data2"  # the wizard's module's
# db's synchronisations are capped (KiB/s), so that a full one of SYNC_MIB lasts long
# enough (about 10 s) for its progress bar to be watched moving.
SYNC_CAP_KIB = 16 * 1024
SYNC_MIB = 160
USERS = {"admin": ("admin", "admin-secret-1"), "control": ("ctl", "control-secret-1"),
         "monitor": ("mon", "monitor-secret-1")}
LONG_MS = 60_000  # a module action, seen on the page


@dataclass
class Console:
    sim: Sim
    browser: Browser

    def url(self, node: str = "node1") -> str:
        return f"https://{self.sim.addr(node)}:{PORT}/"

    @contextlib.contextmanager
    def page(self, role: str | None = "admin", node: str = "node1") -> Iterator[Page]:
        """A page of the console as served by `node`, logged in with `role` (None: not
        logged in), in a browser context of its own (its own cookies)."""
        context = self.browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        try:
            page = context.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(self.url(node))
            if role is not None:
                login(page, *USERS[role])
                expect(page.locator("#who-role")).to_have_text(role)
            yield page
        finally:
            context.close()
        assert errors == [], f"uncaught errors in the page: {errors}"


def login(page: Page, user: str, password: str) -> None:
    page.fill("#login-user", user)
    page.fill("#login-password", password)
    page.click("form.login button[type=submit]")


def go(page: Page, route: str) -> None:
    page.evaluate("r => { location.hash = r; }", route)


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def grid_chip(page: Page, module: str, node: str) -> Locator:
    return page.locator(f'#cluster-grid td[data-module="{module}"][data-node="{node}"] .chip')


def card_chip(page: Page, node: str) -> Locator:
    return page.locator(f'[data-node-card="{node}"] .chip')


def colour(chip: Locator) -> str:
    return str(chip.evaluate("e => getComputedStyle(e).backgroundColor"))


def roles(sim: Sim, module: str = MODULE) -> tuple[str, str]:
    """(primary, secondary) of a mirror on node1 and node2, as they are now."""
    first = state(sim, "node1", module)
    return ("node1", "node2") if first.startswith("PRIM") else ("node2", "node1")


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    """Three nodes running hakitd, the mirror db on node1 (primary) and node2, and one web
    user per role; shared by this file's tests, in order (the last one kills node3)."""
    if not IS_ROOT:
        pytest.skip("needs root (namespaces, bridges, mounts)")
    sim = Sim(unique_sim_name())
    try:
        sim.up(3, daemon=True, paths=(DATA, DATA2), owner_pid=os.getpid())
        rfs = f'<rfs reiallowedbw="{SYNC_CAP_KIB}"><replicated dir="{DATA}"/></rfs>'
        conf = mirror_conf(sim.spare_addr(0, 1), rfs)
        install(sim, tmp_path_factory.mktemp("db"), ["node1"], conf, module=MODULE, module_id=11)
        hk(sim, "node1", "-H", "node1,node2", "-E", MODULE)
        hk(sim, "node1", "prim", "-m", MODULE)
        hk(sim, "node2", "start", "-m", MODULE)
        wait_state(sim, "node2", "SECOND (Ready)", MODULE, timeout=60)
        # A farm on every node, as shipped (its scripts start no service): its shares.
        farm = with_macros("farm.safe", {"VIRTUAL_IP": sim.spare_addr(0, 3)},
                           tmp_path_factory.mktemp("farm") / "farm.safe")
        hk(sim, "node1", "module", "install", "-m", "farm", "-M", "12", str(farm))
        hk(sim, "node1", "-H", "node1,node2,node3", "-E", "farm")
        hk(sim, "node1", "-H", "node1,node2,node3", "start", "-m", "farm")
        for role, (user, password) in USERS.items():
            sim.exec("node1", ["hakit", "web", "user", "add", user, "--role", role, "--password-stdin"],
                     input=password + "\n")
        yield sim
    finally:
        sim.down()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    pw = sync_playwright().start()
    try:
        yield pw
    finally:
        pw.stop()


@pytest.fixture(scope="module")
def console(cluster: Sim, playwright: Playwright) -> Iterator[Console]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    try:
        yield Console(cluster, browser)
    finally:
        browser.close()


# ---------------------------------------------------------------- tests


def test_login_then_the_cluster_grid(console: Console) -> None:
    with console.page(role=None) as page:
        login(page, "admin", "not-the-password")
        expect(page.locator(".form-error")).to_have_text("Wrong user or password.")
        login(page, *USERS["admin"])
        expect(page.locator("#who-user")).to_have_text("admin")

        # db runs on node1 and node2 only; every node answers.
        expect(grid_chip(page, MODULE, "node1")).to_have_attribute("data-state", "PRIM")
        expect(grid_chip(page, MODULE, "node2")).to_have_attribute("data-state", "SECOND")
        expect(page.locator('[data-module-row="db"] td.cell-none')).to_have_count(1)
        for node in ("node1", "node2", "node3"):
            expect(page.locator(f'#cluster-grid th[data-node="{node}"]')).to_have_attribute("data-up", "true")
        expect(page.locator(".link")).to_have_attribute("data-link", "live")
        assert colour(grid_chip(page, MODULE, "node1")) != colour(grid_chip(page, MODULE, "node2"))

    # Any node serves the whole cluster, node3 too, where db does not run.
    with console.page(node="node3") as page:
        expect(grid_chip(page, MODULE, "node1")).to_have_attribute("data-state", "PRIM")
        expect(page.locator(".who")).to_contain_text("on node3")


def test_swap_turns_both_nodes(console: Console) -> None:
    prim, second = roles(console.sim)
    with console.page() as page:
        go(page, f"#/module/{MODULE}")
        expect(card_chip(page, prim)).to_have_attribute("data-state", "PRIM")
        expect(card_chip(page, second)).to_have_attribute("data-state", "SECOND")
        before = {prim: colour(card_chip(page, prim)), second: colour(card_chip(page, second))}

        # Disruptive: asked first, and Cancel does nothing.
        swap = page.locator(f'button[data-action="swap"][data-node="{prim}"]')
        swap.click()
        dialog = page.locator("dialog.confirm")
        expect(dialog).to_contain_text("Exchange the primary and secondary roles of db")
        dialog.locator('[data-confirm="no"]').click()
        expect(dialog).to_have_count(0)
        expect(card_chip(page, prim)).to_have_attribute("data-state", "PRIM")

        swap.click()
        page.locator('dialog.confirm [data-confirm="yes"]').click()
        expect(page.locator(".toast-ok")).to_contain_text(f"Swap: db on {prim} done", timeout=LONG_MS)
        expect(card_chip(page, prim)).to_have_attribute("data-state", "SECOND", timeout=LONG_MS)
        expect(card_chip(page, second)).to_have_attribute("data-state", "PRIM", timeout=LONG_MS)
        expect(card_chip(page, second)).to_have_attribute("data-status", "Ready", timeout=LONG_MS)
        expect(card_chip(page, prim)).to_have_attribute("data-status", "Ready", timeout=LONG_MS)
        # Each took the other's colour.
        assert colour(card_chip(page, prim)) == before[second]
        assert colour(card_chip(page, second)) == before[prim]

        go(page, "#/")
        expect(grid_chip(page, MODULE, second)).to_have_attribute("data-state", "PRIM")
        expect(grid_chip(page, MODULE, prim)).to_have_attribute("data-state", "SECOND")


def test_full_sync_progress_bar(console: Console) -> None:
    sim = console.sim
    prim, second = roles(sim)
    # What the secondary lacks: written while it is stopped, sent again by a full sync.
    hk(sim, second, "stop", "-m", MODULE)
    wait_state(sim, prim, "ALONE (Ready)", MODULE, timeout=30)
    wrote = sim.exec(prim, ["sh", "-c", f"head -c {SYNC_MIB}M /dev/urandom > {DATA}/big && sync"],
                     timeout=120, check=False)
    assert wrote.returncode == 0, f"writing on the primary {prim}: {wrote.stderr}\n" + hk(
        sim, prim, "logview", "-m", MODULE, "-A", check=False)[-3000:]
    with console.page() as page:
        go(page, f"#/module/{MODULE}")
        expect(card_chip(page, second)).to_have_attribute("data-state", "STOP")
        page.locator(f'button[data-action="second-fullsync"][data-node="{second}"]').click()
        page.locator('dialog.confirm [data-confirm="yes"]').click()

        active = page.locator('.sync[data-active="true"]')
        expect(active.first).to_be_visible(timeout=LONG_MS)
        seen: list[int] = []
        facts: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            values = [v for v in active.locator('[role="progressbar"]').evaluate_all(
                "bars => bars.map(b => b.getAttribute('aria-valuenow'))") if v is not None]
            if not values:
                if seen:
                    break
            else:
                seen.append(int(values[0]))
                facts.append(active.locator(".sync-facts").first.inner_text())
                if len(seen) == 4:
                    shot(page, "module")
            time.sleep(0.25)
        moving = sorted(set(seen))
        assert len(moving) >= 3 and any(0 < v < 100 for v in moving), f"progress seen: {seen}"
        assert seen == sorted(seen), f"the bar went back: {seen}"
        # Done and total in MiB, a rate and the time left.
        assert any(re.search(r"MiB / 160\.0 MiB · [\d.]+ [KM]iB/s · ETA \d", f) for f in facts), facts
        expect(card_chip(page, second)).to_have_attribute("data-state", "SECOND", timeout=LONG_MS)
        expect(card_chip(page, second)).to_have_attribute("data-status", "Ready", timeout=LONG_MS)
        expect(page.locator(".sync[data-active='true']")).to_have_count(0)


def test_wizard_makes_checks_installs_applies_and_starts_a_mirror(console: Console) -> None:
    sim = console.sim
    with console.page() as page:
        go(page, "#/wizard")
        page.locator("#wizard-template").select_option("mirror")
        page.fill("#macro-VIRTUAL_IP", sim.spare_addr(0, 2))
        page.fill("#macro-REPDIR", "/")
        page.fill("#wizard-name", "web")
        page.check('#wizard-nodes input[value="node2"]')
        page.check('#wizard-nodes input[value="node3"]')
        page.locator("#wizard-primary").select_option("node3")

        # A problem is shown at its line, under the generated XML's line that causes it.
        page.click("#wizard-check")
        expect(page.locator("#wizard-check-status")).to_have_text("1 problem: see the lines marked below.")
        bad = page.locator("#wizard-xml .xml-line.bad")
        expect(bad).to_have_count(1)
        expect(bad.locator("code")).to_have_text('      <replicated dir="%REPDIR%"/>')
        expect(bad.locator(".xml-problem")).to_contain_text("a file system root cannot be replicated")
        expect(page.locator('#wizard-xml code', has_text='<macro name="REPDIR"')).to_have_text(
            '  <macro name="REPDIR" value="/"/>')
        shot(page, "wizard")

        page.fill("#macro-REPDIR", DATA2)
        page.click("#wizard-check")
        expect(page.locator("#wizard-check-status")).to_have_text("No problem found.")
        expect(page.locator("#wizard-xml .xml-line.bad")).to_have_count(0)
        page.click("#wizard-install")
        expect(page.locator("#wizard-install-status")).to_contain_text("Installed web", timeout=LONG_MS)
        page.click("#wizard-apply")
        expect(page.locator("#wizard-apply-status")).to_contain_text(
            "Applied to node2, node3. Removed from node1, which only staged it.", timeout=LONG_MS)
        page.click("#wizard-start")
        expect(page.locator("#wizard-start-status")).to_contain_text("Started.", timeout=LONG_MS)
        expect(page.locator("#wizard-start-status pre")).to_contain_text("node3: prim")

        page.click("#wizard-open")
        expect(card_chip(page, "node3")).to_have_attribute("data-state", "PRIM", timeout=LONG_MS)
        expect(card_chip(page, "node2")).to_have_attribute("data-state", "SECOND", timeout=LONG_MS)
        go(page, "#/")
        expect(grid_chip(page, "web", "node3")).to_have_attribute("data-state", "PRIM")
        expect(page.locator('[data-module-row="web"] td.cell-none')).to_have_count(1)  # node1
    assert "web" not in hk(sim, "node1", "module", "list")
    assert "web\tmirror" in hk(sim, "node3", "module", "list").splitlines()


def test_each_role_is_offered_what_it_may_do(console: Console) -> None:
    with console.page("monitor") as page:
        go(page, f"#/module/{MODULE}")
        expect(card_chip(page, "node1")).to_be_visible()
        expect(page.locator("#details")).to_contain_text("module.state")
        expect(page.locator("[data-action]")).to_have_count(0)
        expect(page.get_by_text("Read only: your role is monitor.")).to_be_visible()
        expect(page.locator(".nav a")).to_have_text(["Cluster", "Commands log"])
        go(page, "#/users")
        expect(page.locator("main .problem")).to_have_text(
            "This page needs the admin role; yours is monitor.")
    with console.page("control") as page:
        go(page, f"#/module/{MODULE}")
        expect(page.locator('button[data-action="stop"]')).to_have_count(2)
        expect(page.locator(".nav a")).to_have_text(["Cluster", "Commands log"])


def test_commands_log_and_users(console: Console) -> None:
    with console.page() as page:
        # The swap asked of node1 through node1's console: recorded there with the web user.
        go(page, "#/commands?node=node1")
        swap = page.locator("#commands-table tr", has_text="hakit swap -m db")
        expect(swap).to_have_count(1)
        expect(swap.locator("td")).to_have_text([re.compile(r"\d{4}-\d\d-\d\d"), "admin", "api",
                                                 "hakit swap -m db", "0", re.compile(r"\d+\.\d\d s")])
        shot(page, "commands")

        go(page, "#/users")
        expect(page.locator("#users-table tbody tr")).to_have_count(3)
        page.fill("#new-user", "ops")
        page.locator("#new-role").select_option("control")
        page.fill("#new-password", "ops-secret-1")
        page.click("#add-user button[type=submit]")
        row = page.locator('#users-table tr[data-user="ops"]')
        expect(row.locator("select")).to_have_value("control")
        row.locator("select").select_option("monitor")
        expect(page.locator(".toast-ok", has_text="ops: role changed")).to_be_visible()
        expect(page.locator('#users-table tr[data-user="ops"] select')).to_have_value("monitor")
        shot(page, "users")
    with console.page(role=None, node="node2") as page:  # shipped to the other nodes
        login(page, "ops", "ops-secret-1")
        expect(page.locator("#who-role")).to_have_text("monitor")
    with console.page() as page:
        go(page, "#/users")
        page.locator('[data-delete="ops"]').click()
        page.locator('dialog.confirm [data-confirm="yes"]').click()
        expect(page.locator('#users-table tr[data-user="ops"]')).to_have_count(0)


def test_farm_shares_per_node(console: Console) -> None:
    with console.page() as page:
        go(page, "#/module/farm")
        for node in ("node1", "node2", "node3"):
            expect(card_chip(page, node)).to_have_attribute("data-state", "UP", timeout=LONG_MS)
        cells = page.locator('#shares td[data-share-group="FarmProto"]')
        expect(cells).to_have_count(3)

        def shared_out() -> bool:
            shares = [float(v) for v in cells.evaluate_all("cs => cs.map(c => c.dataset.share)")]
            return all(v > 0 for v in shares) and abs(sum(shares) - 100) < 0.5
        wait_for("the farm's clients shared by the three nodes", shared_out, timeout=60)
        shot(page, "farm")
    # What Prometheus reads of the same farm: each node's share and its filter in the kernel.
    user = USERS["monitor"][0]
    made = console.sim.exec("node1", ["hakit", "web", "token", "add", user, "farm-scrape"])
    token = made.stdout.split()[-1]
    shares = []
    for node in ("node1", "node2", "node3"):
        status, _kind, body = scrape(console.sim, node, token)
        assert status == 200
        series = parse_exposition(body)[1]
        (attached,) = find(series, "hakit_farm_filter_attached", module="farm").values()
        assert attached == 1
        shares += find(series, "hakit_farm_share_ratio", module="farm", group="FarmProto").values()
    assert len(shares) == 3 and all(v > 0 for v in shares) and abs(sum(shares) - 1) < 0.01


def test_a_node_down_is_shown_down(console: Console) -> None:
    with console.page() as page:
        expect(grid_chip(page, "web", "node3")).to_have_attribute("data-state", "PRIM")
        shot(page, "overview")
        console.sim.kill("node3")
        header = page.locator('#cluster-grid th[data-node="node3"]')
        expect(header).to_have_attribute("data-up", "false", timeout=LONG_MS)
        expect(header).to_contain_text("unreachable")
        expect(grid_chip(page, "web", "node3")).to_have_attribute("data-state", "unreachable")
        # The survivor takes over; the page goes on updating.
        expect(grid_chip(page, "web", "node2")).to_have_attribute("data-state", "ALONE", timeout=LONG_MS)
        expect(grid_chip(page, MODULE, "node1")).to_have_attribute("data-state", re.compile("PRIM|SECOND"))
        expect(page.locator(".link")).to_have_attribute("data-link", "live")
        shot(page, "overview-node-down")
        go(page, "#/module/web")
        # (Each overview now waits for node3's read to time out: the first one takes a moment.)
        down = page.locator('[data-node-card="node3"]')
        expect(down).to_have_class(re.compile(r"\bdown\b"), timeout=LONG_MS)
        expect(card_chip(page, "node3")).to_have_attribute("data-state", "unreachable")
