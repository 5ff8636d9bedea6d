// Starts the page: asks for the secret when none is kept, then polls the
// JSON routes once a second and hands each reply to its panel. A refused
// secret stops polling and asks again.
"use strict";

(() => {
  const PERIOD_MS = 1000;
  const $ = (id) => document.getElementById(id);
  let timer = null;

  function show(connected, message) {
    $("login").hidden = connected;
    $("panels").hidden = !connected;
    $("forget").hidden = !connected;
    $("state").textContent = message;
    $("state").className = connected ? "muted" : "error";
  }

  async function tick() {
    timer = null;
    try {
      const [tree, proxies, dialers, flows, stats] = await Promise.all(
        ["/tree", "/proxies", "/dialers", "/connections", "/stats"].map((p) => ward.api.call("GET", p)));
      ward.tree.render(tree.tree);
      ward.dialers.render(dialers, proxies);
      ward.flows.render(flows);
      ward.dns.render(stats.stats);
      show(true, `ward ${stats.stats.version}, up ${Math.round(stats.stats.uptime_ms / 1000)} s`);
    } catch (error) {
      if (error instanceof ward.Unauthorized) {
        show(false, "the secret was refused: enter it again");
        return;
      }
      $("state").textContent = `cannot reach ward: ${error.message}`;
      $("state").className = "error";
    }
    schedule(PERIOD_MS);
  }

  function schedule(ms) {
    if (timer !== null) clearTimeout(timer);
    timer = setTimeout(tick, ms);
  }

  // An action, then a poll at once so its effect shows.
  async function act(method, path, body) {
    try {
      await ward.api.call(method, path, body);
    } catch (error) {
      $("state").textContent = error.message;
      $("state").className = "error";
    }
    schedule(0);
  }

  ward.tree.onKill = (path) => act("POST", `/tree/kill?path=${encodeURIComponent(path)}`);
  ward.dialers.onPick = (group, name) => act("PUT", `/proxies/${encodeURIComponent(group)}`, { name });

  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    ward.api.remember($("secret").value);
    $("secret").value = "";
    show(true, "connecting…");
    schedule(0);
  });
  $("forget").addEventListener("click", () => {
    ward.api.forget();
    if (timer !== null) clearTimeout(timer);
    timer = null;
    show(false, "not connected");
  });

  if (ward.api.secret() === null) show(false, "enter the API secret");
  else { show(true, "connecting…"); schedule(0); }
})();
