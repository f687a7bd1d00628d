// One module: its state on each node with the actions the user's role allows, and for
// a chosen node its resources, their history, the live log; a mirror's synchronisation
// progress, a farm's shares.

import { type ActionDef, actionsFor, question } from "./actions.js";
import { ApiError, errorText, get, post, seg } from "./api.js";
import { allows, href, type Page } from "./app.js";
import { historyChart } from "./chart.js";
import { clear, h } from "./dom.js";
import { bytes, clock, duration, when } from "./format.js";
import { followLog, type LinkState, repeat, watchOverview } from "./live.js";
import { stateChip } from "./states.js";
import type {
  ActionResult,
  HistoryPoint,
  LogLine,
  ModuleInfo,
  NodeState,
  Overview,
  Resource,
  SyncProgress,
} from "./types.js";
import { confirmAction, notify, problem } from "./ui.js";
import { linkBadge } from "./page-overview.js";

const LOG_KEEP = 500;
const SHARE_PREFIX = "vip.share.";

function nodePath(module: string, node: string, rest: string): string {
  return `modules/${seg(module)}/nodes/${seg(node)}/${rest}`;
}

// ---- state per node, with the actions

interface Cards {
  el: HTMLElement;
  render: (m: ModuleInfo, o: Overview) => void;
}

function stateCards(
  module: string,
  canAct: boolean,
  selected: () => string,
  select: (node: string) => void,
): Cards {
  const el = h("div", { class: "cards", id: "node-cards" });
  const busy = new Set<string>();
  let last: { m: ModuleInfo; o: Overview } | null = null;

  const run = async (node: string, a: ActionDef): Promise<void> => {
    if (a.confirm !== undefined) {
      const yes = await confirmAction(`${a.label}: ${module} on ${node}`, question(a, module, node), a.label);
      if (!yes) return;
    }
    busy.add(node);
    redraw();
    try {
      const r = await post<ActionResult>(nodePath(module, node, "action"), a.body);
      notify(`${a.label}: ${module} on ${node} done`, "ok", r.output);
    } catch (err) {
      const refused = err instanceof ApiError && err.status === 409;
      notify(`${a.label}: ${module} on ${node} ${refused ? "refused" : "failed"}`, "error", errorText(err));
    } finally {
      busy.delete(node);
      redraw();
    }
  };

  const buttons = (mode: string, node: string, state: NodeState): HTMLElement | null => {
    if (!canAct) return null;
    const make = (a: ActionDef): HTMLButtonElement => {
      const b = h(
        "button",
        {
          type: "button",
          class: a.confirm !== undefined ? "action disruptive" : "action",
          "data-action": a.key,
          "data-node": node,
          disabled: busy.has(node),
        },
        a.label,
      );
      b.addEventListener("click", () => void run(node, a));
      return b;
    };
    const offered = actionsFor(mode, state);
    const main = offered.filter((a) => a.more !== true).map(make);
    const more = offered.filter((a) => a.more === true).map(make);
    return h(
      "div",
      { class: "actions" },
      ...main,
      more.length > 0 ? h("details", { class: "more" }, h("summary", {}, "More"), ...more) : null,
      busy.has(node) ? h("span", { class: "busy" }, "running…") : null,
    );
  };

  const redraw = (): void => {
    if (last === null) return;
    const { m, o } = last;
    clear(el);
    for (const node of m.nodes) {
      const info = o.nodes.find((n) => n.name === node);
      const up = info?.up ?? false;
      const state = up ? (m.states[node] ?? null) : null;
      const pick = h("button", { type: "button", class: "link-button" }, "details");
      pick.addEventListener("click", () => select(node));
      el.append(
        h(
          "section",
          {
            class: `card${node === selected() ? " selected" : ""}${up ? "" : " down"}`,
            "data-node-card": node,
          },
          h("header", {}, h("h3", {}, node), pick),
          stateChip(state, { since: true }),
          up ? null : h("p", { class: "muted" }, info?.error ?? "unreachable"),
          state !== null ? buttons(m.mode, node, state) : null,
        ),
      );
    }
  };

  return {
    el,
    render: (m, o) => {
      last = { m, o };
      redraw();
    },
  };
}

// ---- a mirror's synchronisation

function syncBox(sender: string, receiver: string | null, s: SyncProgress): HTMLElement {
  const total = s.total_bytes ?? 0;
  const done = s.done_bytes ?? 0;
  const pct = total > 0 ? Math.min(100, Math.floor((100 * done) / total)) : null;
  const fill = h("div", { class: "bar-fill" });
  fill.style.width = `${pct ?? 100}%`;
  const bar = h(
    "div",
    {
      class: pct === null ? "bar indeterminate" : "bar",
      role: "progressbar",
      "aria-valuemin": 0,
      "aria-valuemax": 100,
      "aria-valuenow": pct,
      "aria-label": `synchronisation from ${sender}`,
    },
    fill,
    h("span", { class: "bar-text" }, pct === null ? "starting…" : `${pct} %`),
  );
  const facts = [total > 0 ? `${bytes(done)} / ${bytes(total)}` : bytes(done)];
  if (s.rate_bps !== null && s.rate_bps > 0) facts.push(`${bytes(s.rate_bps)}/s`);
  if (s.eta_s !== null) facts.push(`ETA ${duration(s.eta_s)}`);
  const route = receiver !== null ? `${sender} → ${receiver}` : sender;
  return h(
    "div",
    { class: "sync", "data-sync-node": sender, "data-active": "true" },
    h("div", { class: "sync-title" }, h("strong", {}, `${s.kind ?? "full"} synchronisation`), ` ${route}`),
    bar,
    h("div", { class: "sync-facts" }, facts.join(" · ")),
  );
}

/** What the last synchronisation did, while none runs. */
function syncIdle(s: SyncProgress | null): HTMLElement {
  const text = ["No synchronisation running."];
  if (s?.state === "done" && (s.total_bytes ?? 0) > 0) {
    text.push(`The last one (${s.kind ?? "full"}) went over ${bytes(s.total_bytes ?? 0)}.`);
  } else if (s?.state === "failed") {
    text.push("The last one failed: see the log.");
  }
  return h("p", { class: "sync muted", "data-active": "false" }, text.join(" "));
}

/**
 * A mirror's synchronisation, as its primary (which sends it) reports it; the secondary
 * shows the same figures, heard from the primary, which count when the primary's node
 * does not answer.
 */
function syncSection(
  module: string,
  reachable: () => string[],
  mirror: () => { primary: string | null; nodes: string[] },
): { el: HTMLElement; stop: () => void } {
  const list = h("div", { class: "sync-list" });
  const el = h("section", { class: "panel", id: "sync" }, h("h3", {}, "Synchronisation"), list);
  const stop = repeat(1000, async () => {
    const answers = await Promise.all(
      reachable().map(async (n) => {
        try {
          return { n, s: await get<SyncProgress>(nodePath(module, n, "sync")), e: null };
        } catch (err) {
          return { n, s: null, e: errorText(err) };
        }
      }),
    );
    const { primary, nodes } = mirror();
    const running = answers.filter((a) => a.s?.active === true);
    const shown = running.find((a) => a.n === primary) ?? running[0];
    const errors = answers.filter((a) => a.e !== null).map((a) => h("p", { class: "muted" }, `${a.n}: ${a.e}`));
    if (shown?.s) {
      const sender = primary ?? shown.n;
      const receiver = nodes.find((n) => n !== sender) ?? null;
      list.replaceChildren(syncBox(sender, receiver, shown.s), ...errors);
    } else {
      const last = answers.find((a) => a.n === primary)?.s ?? answers.find((a) => a.s !== null)?.s ?? null;
      list.replaceChildren(syncIdle(last), ...errors);
    }
  });
  return { el, stop };
}

// ---- a farm's shares

function sharesSection(module: string, nodes: () => string[]): { el: HTMLElement; stop: () => void } {
  const table = h("div", { class: "shares" });
  const el = h(
    "section",
    { class: "panel", id: "shares" },
    h("h3", {}, "Farm shares"),
    h("p", { class: "muted" }, "The part of the virtual IP's clients each node takes, per load-balancing group."),
    table,
  );
  const stop = repeat(2000, async () => {
    const names = nodes();
    const per = await Promise.all(
      names.map(async (n) => {
        try {
          return { n, r: await get<Resource[]>(nodePath(module, n, "resources")) };
        } catch {
          return { n, r: null };
        }
      }),
    );
    const groups = [
      ...new Set(
        per.flatMap((p) => (p.r ?? []).filter((r) => r.name.startsWith(SHARE_PREFIX)).map((r) => r.name)),
      ),
    ].sort();
    if (groups.length === 0) {
      table.replaceChildren(h("p", { class: "muted" }, "No share reported yet (the module is not UP anywhere)."));
      return;
    }
    const head = h(
      "tr",
      {},
      h("th", {}, "Node"),
      ...groups.map((g) => h("th", {}, g.slice(SHARE_PREFIX.length))),
      h("th", {}, "Packets accepted"),
    );
    const rows = per.map((p) => {
      const value = (name: string): string | undefined => p.r?.find((r) => r.name === name)?.value;
      const cells = groups.map((g) => {
        if (p.r === null) return h("td", { class: "muted" }, "unreachable");
        const share = Number(value(g) ?? "0");
        const fill = h("div", { class: "bar-fill" });
        fill.style.width = `${Math.max(0, Math.min(100, share))}%`;
        return h(
          "td",
          { "data-share-node": p.n, "data-share-group": g.slice(SHARE_PREFIX.length), "data-share": share },
          h("div", { class: "bar small" }, fill, h("span", { class: "bar-text" }, `${share.toFixed(1)} %`)),
        );
      });
      return h("tr", {}, h("th", {}, p.n), ...cells, h("td", {}, value("vip.packets.accepted") ?? ""));
    });
    table.replaceChildren(h("table", { class: "table" }, h("thead", {}, head), h("tbody", {}, ...rows)));
  });
  return { el, stop };
}

// ---- one node's details: resources, history, log

interface Details {
  el: HTMLElement;
  show: (node: string) => void;
  stop: () => void;
}

function nodeDetails(module: string, mode: string): Details {
  const title = h("h3", {});
  const resources = h("div", { class: "resources" });
  const chartTitle = h("h4", {}, "History");
  const chart = h("div", { class: "chart-wrap", id: "history" });
  const levelSelect = h(
    "select",
    { id: "log-level", "aria-label": "log level" },
    h("option", { value: "main" }, "main (U E C S)"),
    h("option", { value: "info" }, "with information (I)"),
    h("option", { value: "all" }, "all (D)"),
  );
  const logLink = linkBadge();
  const log = h("div", { class: "log", id: "log", tabindex: 0 });
  const rfsdiff = h("div", { class: "rfsdiff" });
  const el = h(
    "section",
    { class: "panel details", id: "details" },
    title,
    h(
      "div",
      { class: "columns" },
      h("div", {}, h("h4", {}, "Resources"), resources),
      h("div", {}, chartTitle, chart, mode === "mirror" ? rfsdiff : null),
    ),
    h("div", { class: "log-head" }, h("h4", {}, "Log"), levelSelect, logLink.el),
    log,
  );

  let node = "";
  let resource: string | null = null;
  let stopResources: () => void = () => undefined;
  let stopLog: () => void = () => undefined;

  const drawHistory = async (): Promise<void> => {
    if (resource === null) return;
    const name = resource;
    const points = await get<HistoryPoint[]>(nodePath(module, node, `history?resource=${encodeURIComponent(name)}`));
    if (name !== resource) return;
    chartTitle.textContent = `History of ${name}`;
    chart.replaceChildren(historyChart(name, points));
  };

  const drawResources = (list: Resource[]): void => {
    const rows = [...list]
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((r) => {
        const row = h(
          "tr",
          { "data-resource": r.name, class: r.name === resource ? "picked" : "", title: "show its history" },
          h("td", {}, r.name),
          h("td", { class: "value" }, r.value),
          h("td", { class: "muted" }, when(r.since)),
        );
        row.addEventListener("click", () => {
          resource = r.name;
          for (const other of resources.querySelectorAll("tr.picked")) other.classList.remove("picked");
          row.classList.add("picked");
          void drawHistory().catch((err: unknown) => chart.replaceChildren(problem(errorText(err))));
        });
        return row;
      });
    resources.replaceChildren(
      rows.length === 0
        ? h("p", { class: "muted" }, "No resource recorded on this node.")
        : h(
            "table",
            { class: "table clickable" },
            h("thead", {}, h("tr", {}, h("th", {}, "Resource"), h("th", {}, "Value"), h("th", {}, "Since"))),
            h("tbody", {}, ...rows),
          ),
    );
  };

  const logLine = (l: LogLine): HTMLElement =>
    h(
      "div",
      { class: `line lvl-${l.level}`, "data-id": l.id },
      h("span", { class: "at" }, clock(l.at)),
      h("span", { class: "lvl" }, l.level),
      h("span", { class: "src" }, l.source),
      h("span", { class: "msg" }, l.message),
    );

  const startLog = (): void => {
    stopLog();
    log.replaceChildren();
    const level = levelSelect.value;
    const seen = new Map<number, LogLine>();
    let lastShown = -Infinity;
    const add = (lines: LogLine[]): void => {
      const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 30;
      let reorder = false;
      for (const l of lines) {
        if (seen.has(l.id)) continue;
        seen.set(l.id, l);
        if (l.id > lastShown) {
          log.append(logLine(l));
          lastShown = l.id;
        } else {
          reorder = true;
        }
      }
      if (reorder) {
        log.replaceChildren(...[...seen.values()].sort((a, b) => a.id - b.id).map(logLine));
      }
      while (log.childElementCount > LOG_KEEP) log.firstElementChild?.remove();
      if (atBottom) log.scrollTop = log.scrollHeight;
    };
    // The stream first, then the lines before it: a line written in between is in one
    // or both, and the ids put them in order.
    const stopFollow = followLog(
      nodePath(module, node, `log/follow?level=${level}`),
      (l) => add([l]),
      (s: LinkState) => logLink.set(s),
    );
    let cancelled = false;
    get<LogLine[]>(nodePath(module, node, `log?level=${level}&limit=200`))
      .then((lines) => {
        if (!cancelled) add(lines);
      })
      .catch((err: unknown) => {
        if (!cancelled) log.prepend(problem(errorText(err)));
      });
    stopLog = () => {
      cancelled = true;
      stopFollow();
    };
  };
  levelSelect.addEventListener("change", startLog);

  const rfsdiffButton = h("button", { type: "button" }, "Estimate what differs (rfsdiff)");
  const rfsdiffOut = h("pre", { class: "output", hidden: true });
  rfsdiff.append(rfsdiffButton, rfsdiffOut);
  rfsdiffButton.addEventListener("click", () => {
    rfsdiffButton.disabled = true;
    rfsdiffOut.hidden = false;
    rfsdiffOut.textContent = "comparing…";
    get<{ output: string }>(nodePath(module, node, "rfsdiff"))
      .then((r) => {
        rfsdiffOut.textContent = r.output;
      })
      .catch((err: unknown) => {
        rfsdiffOut.textContent = errorText(err);
      })
      .finally(() => {
        rfsdiffButton.disabled = false;
      });
  });

  return {
    el,
    show: (n) => {
      if (n === node) return;
      node = n;
      // The state's history first: what an operator looking at a node wants to see.
      resource = "module.state";
      title.textContent = `${module} on ${n}`;
      chartTitle.textContent = "History";
      chart.replaceChildren(h("p", { class: "muted" }, "Asking…"));
      rfsdiffOut.hidden = true;
      stopResources();
      resources.replaceChildren(h("p", { class: "muted" }, "Asking…"));
      stopResources = repeat(2000, async () => {
        try {
          drawResources(await get<Resource[]>(nodePath(module, n, "resources")));
          await drawHistory();
        } catch (err) {
          resources.replaceChildren(problem(`${n}: ${errorText(err)}`));
        }
      });
      startLog();
    },
    stop: () => {
      stopResources();
      stopLog();
    },
  };
}

function configSection(module: string): HTMLElement {
  const pre = h("pre", { class: "xml" }, "…");
  const box = h("details", { class: "panel", id: "config" }, h("summary", {}, "Configuration (userconfig.xml)"), pre);
  box.addEventListener("toggle", () => {
    if (!box.open) return;
    get<{ userconfig: string; nodes: string[] }>(`modules/${seg(module)}/config`)
      .then((c) => {
        pre.textContent = c.userconfig;
      })
      .catch((err: unknown) => {
        pre.textContent = errorText(err);
      });
  });
  return box;
}

export const modulePage: Page = (ctx, root) => {
  const name = ctx.route.path[1] ?? "";
  const canAct = allows(ctx.session.role, "control");
  const link = linkBadge();
  const mode = h("span", { class: "mode" });
  const head = h("div", { class: "page-head" }, h("h2", {}, name), mode, link.el);
  const body = h("div", {}, h("p", { class: "muted" }, "Asking the cluster…"));
  root.replaceChildren(h("p", { class: "crumbs" }, h("a", { href: href() }, "Cluster"), " › ", name), head, body);

  let module: ModuleInfo | null = null;
  let selected = ctx.route.query.get("node") ?? "";
  let built: { cards: Cards; details: Details; stops: (() => void)[] } | null = null;
  const up = new Set<string>();

  const select = (node: string): void => {
    selected = node;
    // The address shows the node, for a bookmark or a colleague, without reloading the page.
    history.replaceState(null, "", `${href("module", name)}?node=${encodeURIComponent(node)}`);
    built?.details.show(node);
    if (module !== null && last !== null) built?.cards.render(module, last);
  };

  let last: Overview | null = null;
  const build = (m: ModuleInfo): void => {
    const cards = stateCards(name, canAct, () => selected, select);
    const details = nodeDetails(name, m.mode);
    const stops: (() => void)[] = [details.stop];
    const reachable = (): string[] => (module?.nodes ?? []).filter((n) => up.has(n));
    const parts: HTMLElement[] = [cards.el];
    if (!canAct) parts.push(h("p", { class: "muted" }, `Read only: your role is ${ctx.session.role}.`));
    if (m.mode === "mirror") {
      const sync = syncSection(name, reachable, () => ({
        primary: module?.nodes.find((n) => ["PRIM", "ALONE"].includes(module?.states[n]?.state ?? "")) ?? null,
        nodes: module?.nodes ?? [],
      }));
      stops.push(sync.stop);
      parts.push(sync.el);
    }
    if (m.mode === "farm") {
      const shares = sharesSection(name, reachable);
      stops.push(shares.stop);
      parts.push(shares.el);
    }
    parts.push(details.el, configSection(name));
    body.replaceChildren(...parts);
    built = { cards, details, stops };
    if (!m.nodes.includes(selected)) {
      selected = m.nodes.find((n) => m.states[n]?.state === "PRIM") ?? m.nodes[0] ?? "";
    }
    if (selected !== "") details.show(selected);
  };

  const stopWatch = watchOverview((o) => {
    last = o;
    up.clear();
    for (const n of o.nodes) if (n.up) up.add(n.name);
    const m = o.modules.find((x) => x.name === name) ?? null;
    if (m === null) {
      built?.stops.forEach((s) => s());
      built = null;
      module = null;
      body.replaceChildren(problem(`No module ${name} is configured in this cluster.`));
      return;
    }
    module = m;
    mode.textContent = m.id !== undefined && m.id !== null ? `${m.mode} · id ${m.id}` : m.mode;
    if (built === null) build(m);
    built?.cards.render(m, o);
  }, link.set);

  return () => {
    stopWatch();
    built?.stops.forEach((s) => s());
  };
};
