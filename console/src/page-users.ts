// The web users (each node keeps a users file; a change made here is copied to the
// others): list, add, change role or password, delete.  Admin only.

import { del, errorText, get, post, put, seg } from "./api.js";
import type { Page } from "./app.js";
import { h } from "./dom.js";
import type { Role, User } from "./types.js";
import { confirmAction, notify, problem } from "./ui.js";

const ROLES: Role[] = ["admin", "control", "monitor"];



function roleSelect(current: Role, id?: string): HTMLSelectElement {
  return h(
    "select",
    { id, "aria-label": "role" },
    ...ROLES.map((r) => h("option", { value: r, selected: r === current }, r)),
  );
}

export const usersPage: Page = (ctx, root) => {
  const list = h("div", { class: "users" }, h("p", { class: "muted" }, "Asking…"));
  const where = h("span", { class: "muted" }, ctx.session.node !== undefined ? `as ${ctx.session.node} has them` : "");

  const name = h("input", { id: "new-user", name: "user", required: true, autocomplete: "off", pattern: "[A-Za-z0-9_.@-]+" });
  const password = h("input", { id: "new-password", type: "password", required: true, autocomplete: "new-password" });
  const role = roleSelect("monitor", "new-role");
  const add = h(
    "form",
    { class: "inline-form", id: "add-user" },
    h("label", {}, "User ", name),
    h("label", {}, "Role ", role),
    h("label", {}, "Password ", password),
    h("button", { type: "submit", class: "primary" }, "Add user"),
  );

  const load = async (): Promise<void> => {
    try {
      draw(await get<User[]>("users"));
    } catch (err) {
      list.replaceChildren(problem(errorText(err)));
    }
  };

  const change = async (what: string, user: string, body: Record<string, string>): Promise<void> => {
    try {
      await put(`users/${seg(user)}`, body);
      notify(`${user}: ${what} changed`, "ok");
    } catch (err) {
      notify(`${user}: ${what} not changed`, "error", errorText(err));
    }
    await load();
  };

  const draw = (users: User[]): void => {
    const rows = users
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((u) => {
        const sel = roleSelect(u.role);
        sel.addEventListener("change", () => void change("role", u.name, { role: sel.value }));
        const pw = h("input", { type: "password", placeholder: "new password", autocomplete: "new-password" });
        const setPw = h("button", { type: "button" }, "Set password");
        setPw.addEventListener("click", () => {
          if (pw.value === "") return;
          void change("password", u.name, { password: pw.value });
        });
        // The node refuses to delete the user asking: no button for it.
        const self = u.name === ctx.session.user;
        const remove = h("button", { type: "button", class: "danger", "data-delete": u.name, hidden: self }, "Delete");
        remove.addEventListener("click", () => {
          void (async () => {
            if (!(await confirmAction(`Delete ${u.name}`, `Delete the user ${u.name}?`, "Delete"))) return;
            try {
              await del(`users/${seg(u.name)}`);
              notify(`${u.name} deleted`, "ok");
            } catch (err) {
              notify(`${u.name} not deleted`, "error", errorText(err));
            }
            await load();
          })();
        });
        return h(
          "tr",
          { "data-user": u.name },
          h("td", {}, u.name, u.name === ctx.session.user ? h("span", { class: "muted" }, " (you)") : null),
          h("td", {}, sel),
          h("td", {}, pw, " ", setPw),
          h("td", { class: "muted" }, u.tokens.map((t) => t.name).join(", ")),
          h("td", {}, remove),
        );
      });
    list.replaceChildren(
      h(
        "table",
        { class: "table", id: "users-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "User"), h("th", {}, "Role"), h("th", {}, "Password"), h("th", {}, "Tokens"), h("th", {}))),
        h("tbody", {}, ...rows),
      ),
    );
  };

  add.addEventListener("submit", (ev) => {
    ev.preventDefault();
    void (async () => {
      try {
        await post("users", { name: name.value, role: role.value, password: password.value });
        notify(`${name.value} added as ${role.value}`, "ok");
        name.value = "";
        password.value = "";
      } catch (err) {
        notify(`${name.value} not added`, "error", errorText(err));
      }
      await load();
    })();
  });

  root.replaceChildren(
    h("div", { class: "page-head" }, h("h2", {}, "Users"), where),
    h(
      "p",
      { class: "muted" },
      "Admin: everything. Control: module actions, no configuration. Monitor: read only. " +
        "A change is made on this node and copied to every node that answers (a node down gets the users " +
        "at the next change).",
    ),
    list,
    h("h3", {}, "Add a user"),
    add,
  );
  void load();
  return () => undefined;
};
