// The configuration wizard (Admin): a shipped template, its macros filled in a form,
// the userconfig.xml they make checked with every problem shown at its line, then
// installed, applied to the chosen nodes and started, each step on a button so the
// operator sees what each did.

import { ApiError, del, errorText, get, post, seg } from "./api.js";
import { href, type Page } from "./app.js";
import { h } from "./dom.js";
import type { ActionResult, CheckResult, ModuleInfo, Overview, Problem, Template } from "./types.js";
import { notify, problem } from "./ui.js";

function escapeAttr(value: string, quote: string): string {
  const s = value.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
  return quote === '"' ? s.replaceAll('"', "&quot;") : s.replaceAll("'", "&apos;");
}

/**
 * The template's text with each <macro>'s value replaced, everything else kept as it
 * is, so that the line numbers of the check's problems are those of the template.
 */
export function withMacros(xml: string, values: Record<string, string>): string {
  return xml.replace(/<macro\b[^>]*>/g, (tag) => {
    const name = /\bname\s*=\s*(["'])(.*?)\1/.exec(tag)?.[2];
    const value = name === undefined ? undefined : values[name];
    if (value === undefined) return tag;
    return tag.replace(/\bvalue\s*=\s*(["'])(.*?)\1/, (_m, q: string) => `value=${q}${escapeAttr(value, q)}${q}`);
  });
}

/** The XML with line numbers, each problem under its line. */
function annotated(xml: string, problems: Problem[]): HTMLElement {
  const byLine = new Map<number, string[]>();
  const loose: string[] = [];
  for (const p of problems) {
    const text = p.warning === true ? `warning: ${p.message}` : p.message;
    if (p.line === null || p.line === undefined) {
      loose.push(text);
    } else {
      byLine.set(p.line, [...(byLine.get(p.line) ?? []), text]);
    }
  }
  const lines = xml.split("\n");
  if (lines.at(-1) === "") lines.pop();
  const rows = lines.map((text, i) => {
    const n = i + 1;
    const msgs = byLine.get(n) ?? [];
    return h(
      "div",
      { class: msgs.length > 0 ? "xml-line bad" : "xml-line", "data-line": n },
      h("span", { class: "ln" }, String(n)),
      h("code", {}, text),
      ...msgs.map((m) => h("div", { class: "xml-problem", "data-problem-line": n }, m)),
    );
  });
  // A problem past the end (an unclosed element) still shows, after the last line.
  for (const [n, msgs] of byLine) {
    if (n > lines.length) loose.push(...msgs.map((m) => `line ${n}: ${m}`));
  }
  return h(
    "div",
    { class: "xml-view", id: "wizard-xml" },
    ...loose.map((m) => h("div", { class: "xml-problem" }, m)),
    ...rows,
  );
}

function problemsOf(err: unknown): Problem[] | null {
  if (!(err instanceof ApiError) || err.body === null || typeof err.body !== "object") return null;
  const p = (err.body as { problems?: unknown }).problems;
  return Array.isArray(p) ? (p as Problem[]) : null;
}

export const wizardPage: Page = (ctx, root) => {
  const templateSelect = h("select", { id: "wizard-template", "aria-label": "template" });
  const macros = h("div", { class: "macros", id: "wizard-macros" });
  const moduleName = h("input", { id: "wizard-name", required: true, autocomplete: "off", placeholder: "e.g. mirror1" });
  const moduleId = h("input", { id: "wizard-id", class: "short", type: "number", min: 1, placeholder: "auto" });
  const nodeBoxes = h("div", { class: "node-boxes", id: "wizard-nodes" });
  const primary = h("select", { id: "wizard-primary", "aria-label": "primary node" });
  const primaryRow = h("label", { class: "primary-row" }, "Node whose data is the reference (started as primary) ", primary);
  const xmlBox = h("div", { class: "xml-box" });
  const checkStatus = h("p", { class: "step-status", id: "wizard-check-status" });
  const installStatus = h("p", { class: "step-status", id: "wizard-install-status" });
  const applyStatus = h("p", { class: "step-status", id: "wizard-apply-status" });
  const startStatus = h("p", { class: "step-status", id: "wizard-start-status" });
  const checkButton = h("button", { type: "button", id: "wizard-check" }, "Check");
  const installButton = h("button", { type: "button", id: "wizard-install", class: "primary" }, "Install");
  const applyButton = h("button", { type: "button", id: "wizard-apply", class: "primary", disabled: true }, "Apply to nodes");
  const startButton = h("button", { type: "button", id: "wizard-start", class: "primary", disabled: true }, "Start");

  let templates: Template[] = [];
  let installed: string | null = null;

  const template = (): Template | undefined => templates.find((t) => t.name === templateSelect.value);
  const values = (): Record<string, string> => {
    const out: Record<string, string> = {};
    for (const input of macros.querySelectorAll<HTMLInputElement>("input[data-macro]")) {
      out[input.dataset["macro"] ?? ""] = input.value;
    }
    return out;
  };
  const chosenNodes = (): string[] =>
    [...nodeBoxes.querySelectorAll<HTMLInputElement>("input[type=checkbox]:checked")].map((c) => c.value);
  const xml = (): string | null => {
    const t = template();
    return t?.userconfig !== undefined ? withMacros(t.userconfig, values()) : null;
  };

  const templateMode = (): string | null => {
    const text = template()?.userconfig;
    return text === undefined ? null : (/<service\b[^>]*\bmode\s*=\s*["'](\w+)["']/.exec(text)?.[1] ?? null);
  };

  const showXml = (problems: Problem[] = []): void => {
    const text = xml();
    xmlBox.replaceChildren(
      text === null
        ? h("p", { class: "muted" }, "The node did not give this template's userconfig.xml: it is checked when installed.")
        : annotated(text, problems),
    );
  };

  const drawMacros = (): void => {
    const t = template();
    macros.replaceChildren(
      ...(t?.macros ?? []).map((m) =>
        h(
          "div",
          { class: "macro" },
          h("label", { for: `macro-${m.name}` }, m.name),
          h("input", { id: `macro-${m.name}`, "data-macro": m.name, value: m.value, autocomplete: "off" }),
          m.comment !== null && m.comment !== "" ? h("div", { class: "help" }, m.comment) : null,
        ),
      ),
    );
    if ((t?.macros ?? []).length === 0) macros.append(h("p", { class: "muted" }, "This template has no macro."));
    // Known from the template's text when the node gives it; otherwise asked anyway and
    // used only if the installed module turns out to be a mirror.
    primaryRow.hidden = templateMode() !== null && templateMode() !== "mirror";
    checkStatus.textContent = "";
    showXml();
  };

  const drawPrimary = (): void => {
    const nodes = chosenNodes();
    const was = primary.value;
    primary.replaceChildren(...nodes.map((n) => h("option", { value: n, selected: n === was }, n)));
  };

  templateSelect.addEventListener("change", drawMacros);
  macros.addEventListener("input", () => {
    checkStatus.textContent = "";
    showXml();
  });
  nodeBoxes.addEventListener("change", drawPrimary);

  checkButton.addEventListener("click", () => {
    const text = xml();
    if (text === null) {
      checkStatus.textContent = "Nothing to check here: the node checks the module when it installs it.";
      return;
    }
    checkButton.disabled = true;
    post<CheckResult>("config/check", { userconfig: text })
      .then((r) => {
        showXml(r.problems);
        const errors = r.problems.filter((p) => p.warning !== true).length;
        const warnings = r.problems.length - errors;
        checkStatus.className = r.ok ? "step-status ok" : "step-status bad";
        checkStatus.textContent = r.ok
          ? warnings === 0
            ? "No problem found."
            : `No error; ${warnings} warning${warnings === 1 ? "" : "s"} at the lines marked below.`
          : `${errors} problem${errors === 1 ? "" : "s"}: see the lines marked below.`;
      })
      .catch((err: unknown) => {
        checkStatus.className = "step-status bad";
        checkStatus.textContent = errorText(err);
      })
      .finally(() => {
        checkButton.disabled = false;
      });
  });

  installButton.addEventListener("click", () => {
    const t = template();
    const name = moduleName.value.trim();
    if (t === undefined || name === "") {
      installStatus.className = "step-status bad";
      installStatus.textContent = "Pick a template and name the module first.";
      return;
    }
    const body: Record<string, unknown> = { name, template: t.name, macros: values() };
    if (moduleId.value !== "") body["id"] = Number(moduleId.value);
    installButton.disabled = true;
    installStatus.className = "step-status";
    installStatus.textContent = "Installing…";
    post<{ name: string; id?: number }>("modules", body)
      .then((r) => {
        installed = r.name;
        installStatus.className = "step-status ok";
        const id = r.id !== undefined ? ` (id ${r.id})` : "";
        installStatus.textContent = `Installed ${r.name}${id} on the node serving this console.`;
        applyButton.disabled = false;
      })
      .catch((err: unknown) => {
        const problems = problemsOf(err);
        if (problems !== null) showXml(problems);
        installStatus.className = "step-status bad";
        installStatus.textContent = errorText(err);
        installButton.disabled = false;
      });
  });

  applyButton.addEventListener("click", () => {
    const nodes = chosenNodes();
    if (installed === null) return;
    if (nodes.length === 0) {
      applyStatus.className = "step-status bad";
      applyStatus.textContent = "Choose the nodes first.";
      return;
    }
    applyButton.disabled = true;
    applyStatus.className = "step-status";
    applyStatus.textContent = `Applying to ${nodes.join(", ")}…`;
    const name = installed;
    post<{ output: string }>(`modules/${seg(name)}/apply`, { nodes })
      .then(async (r) => {
        let note = "";
        // The node serving the console holds the module only to ship it: left there, it
        // would count as one of the module's nodes (every node of the cluster, for a
        // module -E never configured on it).
        const here = ctx.session.node;
        if (here !== undefined && !nodes.includes(here)) {
          try {
            await del(`modules/${seg(name)}`);
            note = ` Removed from ${here}, which only staged it.`;
          } catch (err) {
            note = ` Could not remove it from ${here}, which only staged it: ${errorText(err)}`;
          }
        }
        applyStatus.className = "step-status ok";
        applyStatus.replaceChildren(
          `Applied to ${nodes.join(", ")}.${note}`,
          h("pre", { class: "output" }, r.output),
        );
        startButton.disabled = false;
      })
      .catch((err: unknown) => {
        applyStatus.className = "step-status bad";
        applyStatus.textContent = errorText(err);
        applyButton.disabled = false;
      });
  });

  startButton.addEventListener("click", () => {
    const name = installed;
    const nodes = chosenNodes();
    if (name === null) return;
    startButton.disabled = true;
    startStatus.className = "step-status";
    startStatus.textContent = "Starting…";
    void (async () => {
      const lines: string[] = [];
      let failed = false;
      // A mirror starts on its reference node first, as prim: the other then starts as
      // its secondary and is synchronised from it.
      let mode = templateMode();
      try {
        mode = (await get<ModuleInfo>(`modules/${seg(name)}`)).mode;
      } catch {
        // The template's mode, if known, will do.
      }
      const first = mode === "mirror" && primary.value !== "" ? primary.value : null;
      const order = first !== null ? [first, ...nodes.filter((n) => n !== first)] : nodes;
      for (const node of order) {
        const action = node === first ? "prim" : "start";
        try {
          const r = await post<ActionResult>(`modules/${seg(name)}/nodes/${seg(node)}/action`, { action });
          lines.push(`${node}: ${action}: ${r.output.trim() || "done"}`);
        } catch (err) {
          failed = true;
          lines.push(`${node}: ${action}: ${errorText(err)}`);
          if (node === first) break;
        }
      }
      startStatus.className = failed ? "step-status bad" : "step-status ok";
      startStatus.replaceChildren(
        failed ? "Not every node started:" : "Started. ",
        failed ? "" : h("a", { href: href("module", name), id: "wizard-open" }, `Open ${name}`),
        h("pre", { class: "output" }, lines.join("\n")),
      );
      if (failed) startButton.disabled = false;
      else notify(`${name} started`, "ok");
    })();
  });

  const step = (n: number, title: string, ...content: (HTMLElement | null)[]): HTMLElement =>
    h("section", { class: "panel step" }, h("h3", {}, h("span", { class: "step-n" }, String(n)), title), ...content);

  root.replaceChildren(
    h("div", { class: "page-head" }, h("h2", {}, "New module")),
    step(1, "Template", h("label", {}, "Template ", templateSelect), macros),
    step(
      2,
      "Module and nodes",
      h("div", { class: "fields" }, h("label", {}, "Name ", moduleName), h("label", {}, "Id ", moduleId)),
      h("div", {}, h("span", { class: "label" }, "Nodes "), nodeBoxes),
      primaryRow,
    ),
    step(3, "Check", h("div", { class: "buttons" }, checkButton), checkStatus, xmlBox),
    step(4, "Install", h("div", { class: "buttons" }, installButton), installStatus),
    step(5, "Apply to the nodes", h("div", { class: "buttons" }, applyButton), applyStatus),
    step(6, "Start", h("div", { class: "buttons" }, startButton), startStatus),
  );

  Promise.all([get<Template[]>("templates"), get<Overview>("cluster")])
    .then(([ts, o]) => {
      templates = ts;
      templateSelect.replaceChildren(...ts.map((t) => h("option", { value: t.name }, t.name)));
      nodeBoxes.replaceChildren(
        ...o.nodes.map((n) =>
          h(
            "label",
            { class: n.up ? "node-box" : "node-box down" },
            h("input", { type: "checkbox", value: n.name, name: "node" }),
            ` ${n.name}`,
            n.up ? null : h("span", { class: "muted" }, " (down)"),
          ),
        ),
      );
      drawMacros();
      drawPrimary();
    })
    .catch((err: unknown) => root.prepend(problem(errorText(err))));
  return () => undefined;
};
