// The shapes of hakitd's HTTP API (docs/web.md; the server's own description is at
// /api/v1/openapi.json).  Only what the console reads is declared.

export type Role = "admin" | "control" | "monitor";

export interface Session {
  user: string;
  role: Role;
  csrf: string;
  node?: string;
}

export interface NodeInfo {
  name: string;
  up: boolean;
  version: string | null;
  error: string | null;
}

export interface NodeState {
  state: string | null; // null: the node answered, but the module is not installed there
  status: string | null;
  since: number | null;
  error?: string | null;
}

export interface ModuleInfo {
  name: string;
  mode: string;
  id?: number | string | null;
  nodes: string[];
  // null: the node is down or did not answer (the overview's nodes[] says why).
  states: Record<string, NodeState | null>;
}

export interface Overview {
  node: string;
  nodes: NodeInfo[];
  modules: ModuleInfo[];
}

export interface Resource {
  name: string;
  value: string;
  since: number | null;
  updated: number | null;
}

export interface HistoryPoint {
  at: number;
  value: string;
}

export interface LogLine {
  id: number;
  at: number;
  source: string;
  level: string;
  message: string;
}

export interface SyncProgress {
  active: boolean;
  kind: string | null;
  state?: string | null; // rfs.sync_state: running, done, failed...
  files?: number;
  done_bytes: number | null;
  total_bytes: number | null;
  rate_bps: number | null;
  eta_s: number | null;
  line: string | null;
}

export interface CommandEntry {
  id: number;
  at: number;
  user: string;
  origin: string;
  command: string;
  result: number | null;
  duration: number | null;
}

export interface Macro {
  name: string;
  value: string;
  comment: string | null;
}

export interface Template {
  name: string;
  macros: Macro[];
  // The template's userconfig.xml, when the server gives it: the wizard shows and
  // checks the file its macros make.
  userconfig?: string;
}

export interface Problem {
  line: number | null;
  message: string;
  warning?: boolean;
}

export interface CheckResult {
  ok: boolean;
  problems: Problem[];
}

export interface ActionResult {
  node: string;
  code: number;
  output: string;
}

export interface User {
  name: string;
  role: Role;
  password: boolean; // whether a local password is set
  tokens: { name: string; created: number; expires: number | null }[];
}
