// The supervision tree from /tree (pushed over a WebSocket when it
// changes, or polled): one row per actor, kept across updates (keyed by
// path) so open/closed state, hover and clicks survive them. A row whose
// restart count went up flashes.
"use strict";

ward.tree = (() => {
  const entries = new Map(); // path -> { box, row, status, restarts, children, seen }
  let onKill = () => {};

  function tooltip(node) {
    // A start time stays true between pushes (uptimes alone push nothing).
    const since = new Date(Date.now() - node.uptime_ms).toLocaleTimeString();
    const lines = [`${node.path || "(root)"} — ${node.kind}`, `running since ${since}`];
    if (node.detail) lines.push(node.detail);
    lines.push(node.last_exit ? `last exit: ${node.last_exit}` : "no exit yet");
    return lines.join("\n");
  }

  function create(node, parent) {
    const name = node.path === "" ? "ward" : node.path.split("/").pop();
    const status = ward.el("span", { class: "status" });
    const restarts = ward.el("span", { class: "restarts" });
    const row = ward.el("div", { class: "row", "data-path": node.path },
      ward.el("span", { class: "name" }, name),
      ward.el("span", { class: "kind" }, node.kind), status, restarts);
    if (node.path !== "") {
      const kill = ward.el("button", { class: "kill", type: "button", title: `kill ${node.path}` }, "kill");
      kill.addEventListener("click", (event) => {
        // Inside a <summary>: do not fold the node too.
        event.preventDefault();
        event.stopPropagation();
        onKill(node.path);
      });
      row.append(kill);
    }
    if (!parent) {
      return { box: ward.el("div", { class: "leaf" }, row), row, status, restarts, children: null, seen: node.restarts };
    }
    const children = ward.el("div", { class: "children" });
    const box = ward.el("details", { open: "" }, ward.el("summary", {}, row), children);
    return { box, row, status, restarts, children, seen: node.restarts };
  }

  function entry(node) {
    const parent = node.children.length > 0;
    let e = entries.get(node.path);
    if (e && (e.children !== null) !== parent) {
      e.box.remove();
      e = undefined;
    }
    if (!e) {
      e = create(node, parent);
      entries.set(node.path, e);
    }
    e.status.textContent = node.status;
    e.status.className = `status ${node.status}`;
    e.restarts.textContent = `↻ ${node.restarts}`;
    e.row.dataset.restarts = node.restarts;
    e.row.dataset.status = node.status;
    e.row.title = tooltip(node);
    if (node.restarts > e.seen) {
      e.row.classList.remove("flash");
      void e.row.offsetWidth; // restart the animation
      e.row.classList.add("flash");
    }
    e.seen = node.restarts;
    return e;
  }

  // Puts `nodes` into `container` in order, moving only what is out of place.
  function place(container, nodes, live) {
    nodes.forEach((node, i) => {
      const e = entry(node);
      live.add(node.path);
      if (container.children[i] !== e.box) container.insertBefore(e.box, container.children[i] || null);
      if (e.children) place(e.children, node.children, live);
    });
    while (container.children.length > nodes.length) container.lastElementChild.remove();
  }

  function render(root) {
    const live = new Set();
    place(document.getElementById("tree"), [root], live);
    for (const [path, e] of entries) {
      if (!live.has(path)) {
        e.box.remove();
        entries.delete(path);
      }
    }
  }

  return { render, set onKill(f) { onKill = f; } };
})();
