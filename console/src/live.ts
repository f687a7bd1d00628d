// Live data: the cluster overview and a module log, pushed by hakitd as server-sent
// events.  When the stream cannot be had (a proxy that buffers, a refused request) the
// overview falls back to asking every 1.5 s, so the page keeps moving either way.

import { get, url } from "./api.js";
import type { LogLine, Overview } from "./types.js";

export type LinkState = "live" | "polling" | "reconnecting";

const POLL_MS = 1500;

export function watchOverview(onData: (o: Overview) => void, onLink: (s: LinkState) => void): () => void {
  let closed = false;
  let timer: number | undefined;
  let source: EventSource | null = new EventSource(url("cluster/events"));

  const poll = async (): Promise<void> => {
    if (closed) return;
    try {
      onData(await get<Overview>("cluster"));
      onLink("polling");
    } catch {
      // The node that served the page does not answer: say so and keep asking; a 401
      // has already sent the user to the login page.
      onLink("reconnecting");
    }
    if (!closed) timer = window.setTimeout(() => void poll(), POLL_MS);
  };

  source.addEventListener("overview", (ev) => {
    onLink("live");
    onData(JSON.parse((ev as MessageEvent<string>).data) as Overview);
  });
  source.addEventListener("error", () => {
    if (source === null) return;
    if (source.readyState === EventSource.CLOSED) {
      // The browser gave up on the stream (an answer that is not an event stream, such
      // as a 401 or 404): poll instead.
      source.close();
      source = null;
      void poll();
    } else {
      onLink("reconnecting");
    }
  });

  return () => {
    closed = true;
    source?.close();
    if (timer !== undefined) window.clearTimeout(timer);
  };
}

/** Follows a module log on one node; onLine gets every line the node adds. */
export function followLog(path: string, onLine: (line: LogLine) => void, onLink: (s: LinkState) => void): () => void {
  const source = new EventSource(url(path));
  source.addEventListener("open", () => onLink("live"));
  source.addEventListener("log", (ev) => {
    onLink("live");
    onLine(JSON.parse((ev as MessageEvent<string>).data) as LogLine);
  });
  // The node the console talks to is there, but the one whose log this is is not.
  source.addEventListener("unreachable", () => onLink("reconnecting"));
  source.addEventListener("error", () => onLink("reconnecting"));
  return () => source.close();
}

/**
 * Runs task now and then every `ms` after each run ends (never two at once, so a slow
 * node does not pile requests up), until the returned function is called.
 */
export function repeat(ms: number, task: () => Promise<void>): () => void {
  let stopped = false;
  let timer: number | undefined;
  const run = async (): Promise<void> => {
    try {
      await task();
    } catch {
      // Each task shows its own failure; the next run tries again.
    }
    if (!stopped) timer = window.setTimeout(() => void run(), ms);
  };
  void run();
  return () => {
    stopped = true;
    if (timer !== undefined) window.clearTimeout(timer);
  };
}
