// SafeKit's colour language for a module's state on a node, which operators of the
// product hakit replaces read at a glance: green where the application runs with its
// redundancy (PRIM, UP), a paler green where it runs alone (ALONE), blue-green for the
// standby (SECOND), orange while waiting for a condition (WAIT), red when stopped
// (STOP), grey when the node did not answer.  The status is drawn over the colour:
// Transient (scripts running) striped and moving, NotReady dashed; the state and
// status are always written too, so nothing depends on telling colours apart.

import { h } from "./dom.js";
import { clock, when } from "./format.js";
import type { NodeState } from "./types.js";

export const STATES = ["PRIM", "UP", "ALONE", "SECOND", "WAIT", "STOP"] as const;
export const STATUSES = ["Ready", "Transient", "NotReady"] as const;

const MEANING: Record<string, string> = {
  PRIM: "primary, the secondary is up to date",
  UP: "farm member, taking its share",
  ALONE: "primary without a secondary",
  SECOND: "secondary, receiving the replication",
  WAIT: "waiting for a condition (a checker, the peer)",
  STOP: "stopped",
  unreachable: "the node did not answer",
};

export function meaning(state: string): string {
  return MEANING[state] ?? state;
}

function known(value: string, among: readonly string[]): string {
  return among.includes(value) ? value : "other";
}

/**
 * The chip showing one module's state on one node.  data-state / data-status carry the
 * values as the API gave them ("unreachable" when the node did not answer), for the
 * tests and for anyone scripting the page.
 */
export function stateChip(state: NodeState | null, opts: { since?: boolean } = {}): HTMLElement {
  if (state === null) {
    return h(
      "span",
      {
        class: "chip st-unreachable",
        "data-state": "unreachable",
        "data-status": "",
        title: meaning("unreachable"),
      },
      h("span", { class: "chip-state" }, "unreachable"),
    );
  }
  if (state.state === null || state.status === null) {
    return h(
      "span",
      { class: "chip st-none", "data-state": "none", "data-status": "", title: state.error ?? "not installed" },
      h("span", { class: "chip-state" }, "not installed"),
    );
  }
  const chip = h(
    "span",
    {
      class: `chip st-${known(state.state, STATES)} ss-${known(state.status, STATUSES)}`,
      "data-state": state.state,
      "data-status": state.status,
      title: `${state.state} (${state.status}): ${meaning(state.state)}`,
    },
    h("span", { class: "chip-state" }, state.state),
    h("span", { class: "chip-status" }, state.status),
  );
  // A time, not "n s ago": the page redraws on changes only, and an age would go stale.
  if (opts.since === true && state.since !== null) {
    chip.append(h("span", { class: "chip-since", title: when(state.since) }, `since ${clock(state.since)}`));
  }
  return chip;
}

export function legend(): HTMLElement {
  // Each state with the status it usually shows; then what the status adds.
  const usual: Record<string, string> = { WAIT: "NotReady", STOP: "NotReady" };
  const item = (chip: HTMLElement, text: string): HTMLElement => h("li", {}, chip, " ", text);
  return h(
    "ul",
    { class: "legend" },
    ...STATES.map((s) => item(stateChip({ state: s, status: usual[s] ?? "Ready", since: null }), meaning(s))),
    item(stateChip({ state: "PRIM", status: "Transient", since: null }), "striped, moving: scripts running"),
    item(stateChip({ state: "ALONE", status: "NotReady", since: null }), "dashed: not ready"),
    item(stateChip(null), meaning("unreachable")),
  );
}
