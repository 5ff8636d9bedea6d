// ward's API as the page sees it: the secret (kept in localStorage, sent
// as a bearer token on every call) and small DOM and number helpers the
// other files share. Loaded first; defines the one global, `ward`.
"use strict";

const ward = {};

ward.Unauthorized = class extends Error {};

ward.api = {
  key: "ward.secret",
  // null until the user has answered; "" for an API without a secret.
  secret() { return localStorage.getItem(this.key); },
  remember(secret) { localStorage.setItem(this.key, secret); },
  forget() { localStorage.removeItem(this.key); },

  // One call: the JSON reply, null for 204. 401 throws ward.Unauthorized,
  // any other failure an Error with the server's message.
  async call(method, path, body) {
    const headers = {};
    const secret = this.secret();
    if (secret) headers.Authorization = "Bearer " + secret;
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    if (response.status === 401) throw new ward.Unauthorized("the secret was refused");
    if (response.status === 204) return null;
    const reply = await response.json().catch(() => null);
    if (!response.ok) {
      const why = reply && (reply.message || reply.error);
      throw new Error(why || `${method} ${path}: ${response.status}`);
    }
    return reply;
  },
};

// An element with attributes and children (strings become text).
ward.el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  node.append(...children);
  return node;
};

ward.bytes = (n) => {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return (i === 0 ? String(n) : n.toFixed(1)) + " " + units[i];
};

// Replaces a table body's rows.
ward.fillTable = (table, rows) => {
  table.tBodies[0].replaceChildren(...rows);
};
