// Every call to hakitd: relative URLs (the console works from whichever node served
// it), JSON both ways, the CSRF token on every request that changes something, and
// the API's {"error": "..."} turned into an ApiError carrying the message.

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly body: unknown,
  ) {
    super(message);
  }
}

const BASE = "api/v1/";

// Kept in memory only: a token in storage would outlive the session and be readable by
// anything else running on the page's origin.
let csrf: string | null = null;
let unauthenticated: () => void = () => undefined;

export function setCsrf(token: string | null): void {
  csrf = token;
}

/** What to do when the session is gone (expired, node restarted): back to the login page. */
export function onUnauthenticated(handler: () => void): void {
  unauthenticated = handler;
}

export function url(path: string): string {
  return BASE + path;
}

/** A path segment (module, node or user name) as the URL must carry it. */
export function seg(name: string): string {
  return encodeURIComponent(name);
}

function messageOf(status: number, statusText: string, body: unknown): string {
  if (body !== null && typeof body === "object" && "error" in body) {
    const error = (body as { error: unknown }).error;
    if (typeof error === "string") return error;
  }
  if (typeof body === "string" && body.trim() !== "") return body.trim();
  return `${status} ${statusText}`.trim();
}

export async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  const init: RequestInit = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (method !== "GET" && csrf !== null) headers["X-CSRF-Token"] = csrf;
  let resp: Response;
  try {
    resp = await fetch(url(path), init);
  } catch {
    throw new ApiError(0, "the node did not answer (network error)", null);
  }
  const text = await resp.text();
  let data: unknown = null;
  if (text !== "") {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!resp.ok) {
    // A 401 on login is a wrong password, not a lost session.
    if (resp.status === 401 && path !== "login" && path !== "session") unauthenticated();
    throw new ApiError(resp.status, messageOf(resp.status, resp.statusText, data), data);
  }
  return data as T;
}

export const get = <T>(path: string): Promise<T> => call<T>("GET", path);
export const post = <T>(path: string, body: unknown = {}): Promise<T> => call<T>("POST", path, body);
export const put = <T>(path: string, body: unknown): Promise<T> => call<T>("PUT", path, body);
export const del = <T>(path: string): Promise<T> => call<T>("DELETE", path);

export function errorText(err: unknown): string {
  if (err instanceof ApiError) return err.message;
  if (err instanceof Error) return err.message;
  return String(err);
}
