// What every page is given: who is logged in (and so what the page may offer), and
// the route it was opened with.

import type { Role, Session } from "./types.js";

export interface Route {
  // "#/module/mirror?node=node2" -> ["module", "mirror"], node=node2
  path: string[];
  query: URLSearchParams;
}

export interface Ctx {
  session: Session;
  route: Route;
}

/** A page draws itself into root and returns what stops its timers and streams. */
export type Page = (ctx: Ctx, root: HTMLElement) => () => void;

const RANK: Record<Role, number> = { monitor: 0, control: 1, admin: 2 };

/** Whether the role reaches `needed`: admin > control > monitor. */
export function allows(role: Role, needed: Role): boolean {
  return RANK[role] >= RANK[needed];
}

export function parseRoute(hash: string): Route {
  const raw = hash.replace(/^#\/?/, "");
  const [pathPart = "", queryPart = ""] = raw.split("?", 2);
  const path = pathPart.split("/").filter((p) => p !== "").map(decodeURIComponent);
  return { path, query: new URLSearchParams(queryPart) };
}

export function href(...parts: string[]): string {
  return "#/" + parts.map(encodeURIComponent).join("/");
}
