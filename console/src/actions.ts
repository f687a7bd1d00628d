// The module actions the console offers, per node, as data: which the mode and the
// current state make sensible, and the question asked first for the disruptive ones.
// The node stays the judge: an action it refuses comes back as a 409 with the CLI's
// message, which the page shows.

import type { NodeState } from "./types.js";

export interface ActionBody {
  action: string;
  fullsync?: boolean;
  value?: string;
}

export interface ActionDef {
  key: string; // data-action, unique per node
  label: string;
  body: ActionBody;
  // Set for the disruptive ones: asked in a confirmation dialog ({m}, {n} replaced).
  confirm?: string;
  when: (mode: string, s: NodeState) => boolean;
  more?: boolean; // shown under "More" (maintenance rather than everyday)
}

const RUNNING = ["ALONE", "PRIM", "SECOND", "UP"];
const stopped = (_m: string, s: NodeState): boolean => s.state === "STOP";
const started = (_m: string, s: NodeState): boolean => s.state !== "STOP";
const mirror = (m: string): boolean => m === "mirror";

export const ACTIONS: ActionDef[] = [
  { key: "start", label: "Start", body: { action: "start" }, when: stopped },
  {
    key: "prim",
    label: "Start as primary",
    body: { action: "prim" },
    when: (m, s) => mirror(m) && stopped(m, s),
  },
  {
    key: "second",
    label: "Start as secondary",
    body: { action: "second" },
    when: (m, s) => mirror(m) && stopped(m, s),
  },
  {
    key: "primforce",
    label: "Force primary",
    body: { action: "primforce" },
    confirm:
      "Make {n} the primary of {m} even though its data may not be the newest? " +
      "What was written on the other node since they last synchronised would be lost.",
    when: (m, s) => mirror(m) && stopped(m, s),
  },
  {
    key: "second-fullsync",
    label: "Secondary, full sync",
    body: { action: "second", fullsync: true },
    confirm:
      "Make {n} the secondary of {m} and compare every block of the replicated data with the primary? " +
      "Until the full synchronisation ends, {n} cannot take over.",
    when: (m, s) => mirror(m) && (s.state === "STOP" || s.state === "SECOND"),
  },
  {
    key: "swap",
    label: "Swap",
    body: { action: "swap" },
    confirm:
      "Exchange the primary and secondary roles of {m}? The application stops on the primary " +
      "and starts on the other node: it is unavailable meanwhile.",
    when: (m, s) => mirror(m) && (s.state === "PRIM" || s.state === "SECOND"),
  },
  {
    key: "restart",
    label: "Restart",
    body: { action: "restart" },
    confirm: "Restart the application of {m} on {n} (its stop then start scripts)? It is unavailable meanwhile.",
    when: (_m, s) => s.state !== null && RUNNING.includes(s.state),
  },
  {
    key: "stopstart",
    label: "Stop-start",
    body: { action: "stopstart" },
    confirm: "Stop {m} on {n}, then start it again? A primary hands the application over to its secondary.",
    when: started,
  },
  {
    key: "stop",
    label: "Stop",
    body: { action: "stop" },
    confirm:
      "Stop {m} on {n}? Its application stops there; if {n} is the primary, the secondary takes over " +
      "when it is up to date.",
    when: started,
  },
  {
    key: "vip-open",
    label: "Open VIP share",
    body: { action: "vip", value: "open" },
    when: (m, s) => m === "farm" && s.state === "UP",
    more: true,
  },
  {
    key: "vip-close",
    label: "Close VIP share",
    body: { action: "vip", value: "close" },
    confirm: "Close {n}'s share of {m}'s virtual IP? Its clients go to the other nodes.",
    when: (m, s) => m === "farm" && s.state === "UP",
    more: true,
  },
  { key: "checker-on", label: "Checkers on", body: { action: "checker", value: "on" }, when: started, more: true },
  {
    key: "checker-off",
    label: "Checkers off",
    body: { action: "checker", value: "off" },
    confirm: "Turn {m}'s checkers off on {n}? A failure they would see no longer makes the module react.",
    when: started,
    more: true,
  },
  { key: "errd-on", label: "Process monitoring on", body: { action: "errd", value: "on" }, when: started, more: true },
  {
    key: "errd-off",
    label: "Process monitoring off",
    body: { action: "errd", value: "off" },
    confirm: "Turn {m}'s process monitoring (errd) off on {n}? A process that dies is no longer acted on.",
    when: started,
    more: true,
  },
];

export function actionsFor(mode: string, state: NodeState): ActionDef[] {
  return ACTIONS.filter((a) => a.when(mode, state));
}

export function question(a: ActionDef, module: string, node: string): string {
  return (a.confirm ?? "").replaceAll("{m}", module).replaceAll("{n}", node);
}
