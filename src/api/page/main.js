// Starts the page: asks for the secret when none is kept, then polls the
// JSON routes once a second and hands each reply to its panel. The tree
// comes over a WebSocket that pushes it when it changes; while that is
// not open (and right after an action) the poll brings it. A refused
// secret stops polling and asks again.
"use strict";

(() => {
  const PERIOD_MS = 1000;
  const $ = (id) => document.getElementById(id);
  let timer = null;
  let treeSocket = null;
  let treeNext = false;

  // Opens the tree's WebSocket unless one is open or opening; the next
  // tick opens it again once it closed (ward restarting its API, say).
  function openTree() {
    if (treeSocket !== null) return;
    const url = new URL("/tree", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    const secret = ward.api.secret();
    if (secret) url.searchParams.set("token", secret);
    const socket = new WebSocket(url);
    treeSocket = socket;
    socket.onmessage = (event) => {
      const reply = JSON.parse(event.data);
      if (!reply.ok) return;
      ward.tree.render(reply.tree);
      // How many trees came pushed (the browser test reads it).
      const box = $("tree");
      box.dataset.pushes = String(Number(box.dataset.pushes || 0) + 1);
    };
    socket.onclose = () => {
      if (treeSocket === socket) treeSocket = null;
    };
  }

  function closeTree() {
    if (treeSocket !== null) treeSocket.close();
    treeSocket = null;
  }

  const treePushed = () => treeSocket !== null && treeSocket.readyState === WebSocket.OPEN;

  function show(connected, message) {
    $("login").hidden = connected;
    $("panels").hidden = !connected;
    $("forget").hidden = !connected;
    $("state").textContent = message;
    $("state").className = connected ? "muted" : "error";
  }

  async function tick() {
    timer = null;
    const pollTree = treeNext || !treePushed();
    treeNext = false;
    try {
      const paths = ["/proxies", "/dialers", "/connections", "/stats"];
      if (pollTree) paths.push("/tree");
      const [proxies, dialers, flows, stats, tree] = await Promise.all(
        paths.map((p) => ward.api.call("GET", p)));
      if (tree) ward.tree.render(tree.tree);
      openTree();
      ward.dialers.render(dialers, proxies);
      ward.flows.render(flows);
      ward.dns.render(stats.stats);
      show(true, `ward ${stats.stats.version}, up ${Math.round(stats.stats.uptime_ms / 1000)} s`);
    } catch (error) {
      if (error instanceof ward.Unauthorized) {
        closeTree();
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

  // An action, then a poll at once (the tree included) so its effect shows.
  async function act(method, path, body) {
    treeNext = true;
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
    closeTree();
    if (timer !== null) clearTimeout(timer);
    timer = null;
    show(false, "not connected");
  });

  if (ward.api.secret() === null) show(false, "enter the API secret");
  else { show(true, "connecting…"); schedule(0); }
})();
