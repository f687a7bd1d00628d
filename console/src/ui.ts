// Notices and the confirmation dialog shared by the pages.

import { h } from "./dom.js";

let toasts: HTMLElement | null = null;

/** A notice in the corner: what an action did, or why it was refused. */
export function notify(text: string, kind: "ok" | "error" | "info" = "info", detail?: string): void {
  if (toasts === null || !document.body.contains(toasts)) {
    toasts = h("div", { class: "toasts", role: "status", "aria-live": "polite" });
    document.body.append(toasts);
  }
  const box = h(
    "div",
    { class: `toast toast-${kind}` },
    h("div", { class: "toast-text" }, text),
    detail !== undefined && detail.trim() !== "" ? h("pre", { class: "toast-detail" }, detail.trim()) : null,
  );
  const close = h("button", { class: "toast-close", type: "button", title: "dismiss", "aria-label": "dismiss" }, "×");
  close.addEventListener("click", () => box.remove());
  box.prepend(close);
  toasts.append(box);
  // Errors stay until dismissed: a refused action's reason must not vanish unread.
  if (kind !== "error") setTimeout(() => box.remove(), 8000);
}

/**
 * Asks before something disruptive (stop, swap, a full synchronisation...).  Resolves
 * true only on the confirm button; Escape or Cancel resolve false.
 */
export function confirmAction(title: string, text: string, confirmLabel: string): Promise<boolean> {
  return new Promise((resolve) => {
    const ok = h("button", { type: "button", class: "danger", "data-confirm": "yes" }, confirmLabel);
    const cancel = h("button", { type: "button", "data-confirm": "no" }, "Cancel");
    const dialog = h(
      "dialog",
      { class: "confirm", "aria-label": title },
      h("h3", {}, title),
      h("p", {}, text),
      h("div", { class: "buttons" }, cancel, ok),
    );
    let answered = false;
    const done = (value: boolean): void => {
      if (answered) return;
      answered = true;
      dialog.close();
      dialog.remove();
      resolve(value);
    };
    ok.addEventListener("click", () => done(true));
    cancel.addEventListener("click", () => done(false));
    dialog.addEventListener("close", () => done(false));
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

/** A box saying why a part of a page is empty, in place of that part. */
export function problem(text: string): HTMLElement {
  return h("div", { class: "problem" }, text);
}
