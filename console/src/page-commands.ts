// The commands log of a node: what was run there, by whom (a web user's name, or
// root@node for the CLI), from where, and how it ended.

import { errorText, get } from "./api.js";
import type { Page } from "./app.js";
import { h } from "./dom.js";
import { when } from "./format.js";
import { repeat } from "./live.js";
import type { CommandEntry, Overview } from "./types.js";
import { problem } from "./ui.js";

function row(c: CommandEntry): HTMLElement {
  const failed = c.result !== null && c.result !== 0;
  return h(
    "tr",
    { class: failed ? "failed" : "", "data-command-id": c.id },
    h("td", { class: "nowrap" }, when(c.at)),
    h("td", {}, c.user),
    h("td", {}, c.origin),
    h("td", { class: "command" }, c.command),
    h("td", { class: failed ? "result bad" : "result" }, c.result === null ? "running" : String(c.result)),
    h("td", { class: "nowrap" }, c.duration === null ? "" : `${c.duration.toFixed(2)} s`),
  );
}

export const commandsPage: Page = (ctx, root) => {
  const select = h("select", { id: "commands-node", "aria-label": "node" });
  const filter = h("input", { type: "search", placeholder: "filter", id: "commands-filter", "aria-label": "filter" });
  const table = h("div", { class: "commands" }, h("p", { class: "muted" }, "Asking…"));
  root.replaceChildren(
    h("div", { class: "page-head" }, h("h2", {}, "Commands log"), h("label", {}, "node ", select), filter),
    table,
  );

  let entries: CommandEntry[] = [];
  const draw = (): void => {
    const needle = filter.value.trim().toLowerCase();
    const shown = entries.filter(
      (c) => needle === "" || `${c.user} ${c.origin} ${c.command}`.toLowerCase().includes(needle),
    );
    table.replaceChildren(
      shown.length === 0
        ? h("p", { class: "muted" }, entries.length === 0 ? "No command recorded on this node." : "Nothing matches.")
        : h(
            "table",
            { class: "table", id: "commands-table" },
            h(
              "thead",
              {},
              h(
                "tr",
                {},
                ...["When", "User", "Origin", "Command", "Exit", "Duration"].map((t) => h("th", {}, t)),
              ),
            ),
            h("tbody", {}, ...shown.map(row)),
          ),
    );
  };
  filter.addEventListener("input", draw);

  let stopRefresh: () => void = () => undefined;
  const show = (node: string): void => {
    stopRefresh();
    history.replaceState(null, "", `#/commands?node=${encodeURIComponent(node)}`);
    stopRefresh = repeat(5000, async () => {
      try {
        entries = await get<CommandEntry[]>(`commands?node=${encodeURIComponent(node)}&limit=200`);
        entries.sort((a, b) => b.at - a.at);
        draw();
      } catch (err) {
        table.replaceChildren(problem(`${node}: ${errorText(err)}`));
      }
    });
  };
  select.addEventListener("change", () => show(select.value));

  let closed = false;
  get<Overview>("cluster")
    .then((o) => {
      if (closed) return;
      const wanted = ctx.route.query.get("node") ?? ctx.session.node ?? o.node;
      for (const n of o.nodes) {
        select.append(h("option", { value: n.name, selected: n.name === wanted }, n.up ? n.name : `${n.name} (down)`));
      }
      show(select.value);
    })
    .catch((err: unknown) => table.replaceChildren(problem(errorText(err))));

  return () => {
    closed = true;
    stopRefresh();
  };
};
