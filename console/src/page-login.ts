// The login page: the only page shown without a session.

import { ApiError, errorText, get, post, setCsrf } from "./api.js";
import { h } from "./dom.js";
import type { Session } from "./types.js";

export function loginPage(root: HTMLElement, onLogin: (s: Session) => void): void {
  const user = h("input", { name: "user", id: "login-user", autocomplete: "username", required: true });
  const password = h("input", {
    name: "password",
    id: "login-password",
    type: "password",
    autocomplete: "current-password",
    required: true,
  });
  const message = h("p", { class: "form-error", role: "alert" });
  const submit = h("button", { type: "submit", class: "primary" }, "Log in");
  const form = h(
    "form",
    { class: "login", autocomplete: "on" },
    h("h1", {}, "hakit"),
    h("p", { class: "muted" }, `Cluster console on ${location.host}`),
    h("label", { for: "login-user" }, "User"),
    user,
    h("label", { for: "login-password" }, "Password"),
    password,
    submit,
    message,
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    message.textContent = "";
    post<Session>("login", { user: user.value, password: password.value })
      .then(async (s) => {
        setCsrf(s.csrf);
        // The session says which node answers, which the login does not.
        onLogin(await get<Session>("session").catch(() => s));
      })
      .catch((err: unknown) => {
        password.value = "";
        message.textContent =
          err instanceof ApiError && err.status === 401
            ? "Wrong user or password."
            : err instanceof ApiError && err.status === 429
              ? `Too many failed logins: ${err.message}`
              : errorText(err);
        password.focus();
      })
      .finally(() => {
        submit.disabled = false;
      });
  });
  root.replaceChildren(h("div", { class: "login-wrap" }, form));
  user.focus();
}
