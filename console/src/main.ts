// The console's entry: finds out whether a session exists, draws the frame (navigation,
// who is logged in and on which node), and routes the address's #/path to a page.

import { ApiError, errorText, get, onUnauthenticated, post, setCsrf } from "./api.js";
import { allows, type Ctx, href, type Page, parseRoute } from "./app.js";
import { h } from "./dom.js";
import { commandsPage } from "./page-commands.js";
import { loginPage } from "./page-login.js";
import { modulePage } from "./page-module.js";
import { overviewPage } from "./page-overview.js";
import { usersPage } from "./page-users.js";
import { wizardPage } from "./page-wizard.js";
import type { Role, Session } from "./types.js";
import { problem } from "./ui.js";

interface RouteDef {
  page: Page;
  needs: Role;
  nav?: string; // its label in the navigation, when it has one
}

const ROUTES: Record<string, RouteDef> = {
  "": { page: overviewPage, needs: "monitor", nav: "Cluster" },
  module: { page: modulePage, needs: "monitor" },
  commands: { page: commandsPage, needs: "monitor", nav: "Commands log" },
  wizard: { page: wizardPage, needs: "admin", nav: "New module" },
  users: { page: usersPage, needs: "admin", nav: "Users" },
};

const app = document.getElementById("app") ?? document.body;
let session: Session | null = null;
let cleanup: () => void = () => undefined;

function frame(s: Session): { main: HTMLElement; nav: HTMLElement } {
  const nav = h("nav", { class: "nav" });
  for (const [key, def] of Object.entries(ROUTES)) {
    if (def.nav === undefined || !allows(s.role, def.needs)) continue;
    nav.append(h("a", { href: key === "" ? href() : href(key), "data-route": key }, def.nav));
  }
  const logout = h("button", { type: "button", class: "link-button", id: "logout" }, "Log out");
  logout.addEventListener("click", () => {
    post("logout").finally(() => {
      session = null;
      setCsrf(null);
      location.hash = "";
      render();
    });
  });
  const main = h("main", { id: "page" });
  app.replaceChildren(
    h(
      "header",
      { class: "top" },
      h("a", { class: "brand", href: href() }, "hakit"),
      nav,
      h(
        "div",
        { class: "who" },
        h("span", { id: "who-user" }, s.user),
        " ",
        h("span", { class: `role role-${s.role}`, id: "who-role" }, s.role),
        s.node !== undefined ? h("span", { class: "muted" }, ` on ${s.node}`) : null,
        " ",
        logout,
      ),
    ),
    main,
  );
  return { main, nav };
}

let shell: { main: HTMLElement; nav: HTMLElement } | null = null;

function render(): void {
  cleanup();
  cleanup = () => undefined;
  if (session === null) {
    shell = null;
    loginPage(app, (s) => {
      session = s;
      render();
    });
    return;
  }
  shell ??= frame(session);
  const route = parseRoute(location.hash);
  const key = route.path[0] ?? "";
  for (const a of shell.nav.querySelectorAll("a")) {
    a.classList.toggle("current", a.dataset["route"] === key);
  }
  const def = ROUTES[key];
  if (def === undefined) {
    shell.main.replaceChildren(problem(`There is no page ${location.hash}.`));
    return;
  }
  if (!allows(session.role, def.needs)) {
    shell.main.replaceChildren(problem(`This page needs the ${def.needs} role; yours is ${session.role}.`));
    return;
  }
  const ctx: Ctx = { session, route };
  try {
    cleanup = def.page(ctx, shell.main);
  } catch (err) {
    shell.main.replaceChildren(problem(errorText(err)));
  }
}

onUnauthenticated(() => {
  if (session === null) return;
  session = null;
  setCsrf(null);
  render();
});

window.addEventListener("hashchange", render);

get<Session>("session")
  .then((s) => {
    session = s;
    setCsrf(s.csrf);
  })
  .catch((err: unknown) => {
    if (!(err instanceof ApiError && err.status === 401)) console.warn("session:", errorText(err));
  })
  .finally(render);
