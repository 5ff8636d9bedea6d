// Live UDP flows from GET /connections: the path through groups to the
// dialer, the client and destination, bytes each way.
"use strict";

ward.flows = (() => {
  function render(reply) {
    const rows = reply.connections.map((c) => {
      const m = c.metadata;
      // chains is leaf first (dialer, then group): show it as traffic goes.
      const path = [...c.chains].reverse().join(" → ");
      return ward.el("tr", { "data-flow": c.id },
        ward.el("td", { title: `${c.rule} ${c.rulePayload}`.trim() }, path),
        ward.el("td", {}, `${m.sourceIP}:${m.sourcePort}`),
        ward.el("td", {}, `${m.destinationIP}:${m.destinationPort}`),
        ward.el("td", { class: "num" }, ward.bytes(c.upload)),
        ward.el("td", { class: "num" }, ward.bytes(c.download)));
    });
    if (!rows.length) {
      rows.push(ward.el("tr", {}, ward.el("td", { class: "muted", colspan: "5" }, "no live flows")));
    }
    ward.fillTable(document.getElementById("flows"), rows);
    document.getElementById("flow-totals").textContent =
      `${reply.connections.length} live, ↑ ${ward.bytes(reply.uploadTotal)} ↓ ${ward.bytes(reply.downloadTotal)} in all`;
  }

  return { render };
})();
