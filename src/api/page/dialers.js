// Groups and dialers from GET /dialers (health per track) and GET
// /proxies (members, the current pick, latency history): a member picker
// per group (PUT /proxies/{group}) and a row per dialer.
"use strict";

ward.dialers = (() => {
  const pickers = new Map(); // group -> <select>
  let onPick = () => {};

  function track(health) {
    if (!health) return ward.el("td", { class: "muted" }, "–");
    const cell = ward.el("td", { class: health.up ? "up" : "down" }, health.up ? "up" : "down");
    const failure = health.last_failure;
    if (failure) {
      const when = new Date(failure.at_unix_ms).toLocaleTimeString();
      cell.title = `last failure ${when}: ${failure.reason} (${failure.class}, ${failure.stage}, ${failure.source})`;
      if (!health.up) cell.append(ward.el("div", { class: "muted" }, failure.reason));
    }
    return cell;
  }

  function picker(group, members) {
    let select = pickers.get(group);
    if (!select) {
      select = ward.el("select", { "data-group": group, "aria-label": `member of ${group}` });
      select.addEventListener("change", () => onPick(group, select.value));
      pickers.set(group, select);
    }
    const names = [...select.options].map((o) => o.value).join("\n");
    if (names !== members.join("\n")) {
      select.replaceChildren(...members.map((m) => ward.el("option", { value: m }, m)));
    }
    return select;
  }

  function renderGroups(groups, proxies) {
    const out = groups.map((g) => {
      const select = picker(g.name, g.dialers);
      const now = proxies[g.name] && proxies[g.name].now;
      // Leave the picker alone while the user holds it.
      if (now && document.activeElement !== select) select.value = now;
      return ward.el("div", { class: "group" },
        ward.el("span", { class: "name" }, g.name),
        ward.el("span", { class: "muted" }, g.policy), select,
        ward.el("span", { class: "muted" }, `tcp → ${g.tcp || "none"}, udp → ${g.udp || "none"}`));
    });
    const box = document.getElementById("groups");
    box.replaceChildren(...(out.length ? out : [ward.el("p", { class: "muted" }, "no groups")]));
  }

  function renderDialers(dialers, proxies) {
    ward.fillTable(document.getElementById("dialers"), dialers.map((d) => {
      const history = ((proxies[d.name] || {}).history || []).map((h) => h.delay);
      const last = history.length ? `${history[history.length - 1]} ms` : "";
      return ward.el("tr", { "data-dialer": d.name },
        ward.el("td", {}, d.name), ward.el("td", { class: "muted" }, d.kind),
        track(d.tcp), track(d.udp),
        ward.el("td", {}, ward.charts.spark(history), " ", last));
    }));
  }

  function render(reply, proxies) {
    renderGroups(reply.groups, proxies.proxies);
    renderDialers(reply.dialers, proxies.proxies);
  }

  return { render, set onPick(f) { onPick = f; } };
})();
