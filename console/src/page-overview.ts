// The cluster overview: every module on every node, SafeKit's modules x nodes grid,
// kept up to date by the overview stream.

import { allows, href, type Page } from "./app.js";
import { h } from "./dom.js";
import { type LinkState, watchOverview } from "./live.js";
import { legend, stateChip } from "./states.js";
import type { ModuleInfo, NodeInfo, Overview } from "./types.js";

export function linkBadge(): { el: HTMLElement; set: (s: LinkState) => void } {
  const el = h("span", { class: "link link-reconnecting", "data-link": "connecting" }, "connecting…");
  const text: Record<LinkState, string> = {
    live: "live",
    polling: "live (polling)",
    reconnecting: "no answer from this node, retrying…",
  };
  return {
    el,
    set: (s) => {
      el.className = `link link-${s}`;
      el.dataset["link"] = s;
      el.textContent = text[s];
    },
  };
}

function nodeHeader(node: NodeInfo): HTMLElement {
  return h(
    "th",
    {
      class: node.up ? "node node-up" : "node node-down",
      scope: "col",
      "data-node": node.name,
      "data-up": node.up ? "true" : "false",
      title: node.up ? `hakit ${node.version ?? "?"}` : (node.error ?? "unreachable"),
    },
    h("div", { class: "node-name" }, node.name),
    h("div", { class: "node-note" }, node.up ? (node.version ?? "") : "unreachable"),
  );
}

function cell(module: ModuleInfo, node: NodeInfo): HTMLElement {
  if (!module.nodes.includes(node.name)) {
    return h("td", { class: "cell cell-none", title: `${module.name} is not configured on ${node.name}` }, "·");
  }
  const state = node.up ? (module.states[node.name] ?? null) : null;
  return h(
    "td",
    { class: "cell", "data-module": module.name, "data-node": node.name },
    h("a", { href: href("module", module.name) + `?node=${encodeURIComponent(node.name)}` }, stateChip(state)),
  );
}

export function clusterGrid(o: Overview, canConfigure: boolean): HTMLElement {
  if (o.modules.length === 0) {
    return h(
      "div",
      { class: "empty" },
      h("p", {}, "No module is configured in this cluster yet."),
      canConfigure ? h("a", { href: href("wizard"), class: "button primary" }, "Create a module") : null,
    );
  }
  const head = h(
    "tr",
    {},
    h("th", { scope: "col", class: "module-col" }, "Module"),
    ...o.nodes.map(nodeHeader),
  );
  const rows = [...o.modules]
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((m) =>
      h(
        "tr",
        { "data-module-row": m.name },
        h(
          "th",
          { scope: "row", class: "module-col" },
          h("a", { href: href("module", m.name) }, m.name),
          h("span", { class: `mode mode-${m.mode}` }, m.mode),
        ),
        ...o.nodes.map((n) => cell(m, n)),
      ),
    );
  return h("table", { class: "grid", id: "cluster-grid" }, h("thead", {}, head), h("tbody", {}, ...rows));
}

export const overviewPage: Page = (ctx, root) => {
  const link = linkBadge();
  const answered = h("span", { class: "muted" });
  const body = h("div", { class: "grid-wrap" }, h("p", { class: "muted" }, "Asking the cluster…"));
  root.replaceChildren(
    h("div", { class: "page-head" }, h("h2", {}, "Cluster"), answered, link.el),
    body,
    h("h3", { class: "legend-title" }, "Colours"),
    legend(),
  );
  return watchOverview((o) => {
    answered.textContent = `as seen by ${o.node}`;
    body.replaceChildren(clusterGrid(o, allows(ctx.session.role, "admin")));
  }, link.set);
};
