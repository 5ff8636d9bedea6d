// DNS over the last minutes, computed here from successive GET /stats
// samples (counters, so each point is a difference of two samples):
// queries answered per second, the cache hit rate, each upstream's state.
"use strict";

ward.dns = (() => {
  const KEEP = 300; // samples: five minutes at one a second
  const samples = [];

  // One value per pair of successive samples.
  function series(f) {
    const out = [];
    for (let i = 1; i < samples.length; i += 1) out.push(f(samples[i - 1], samples[i]));
    return out;
  }

  const perSecond = (a, b) => Math.max(0, b.dns.answered - a.dns.answered) / Math.max((b.t - a.t) / 1000, 0.001);
  function hitRate(a, b) {
    const hits = b.dns.cache_hits - a.dns.cache_hits;
    const lookups = hits + (b.dns.cache_misses - a.dns.cache_misses);
    return lookups > 0 ? (100 * hits) / lookups : null;
  }

  function chart(label, now, svg) {
    return ward.el("div", { class: "chart-box" },
      ward.el("div", { class: "label" }, ward.el("span", {}, label), ward.el("span", { class: "muted" }, now)), svg);
  }

  function render(stats) {
    const dns = stats.dns;
    const box = document.getElementById("dns");
    if (!dns) {
      samples.length = 0;
      box.replaceChildren(ward.el("p", { class: "muted" }, "DNS is not configured"));
      return;
    }
    samples.push({ t: Date.now(), dns });
    if (samples.length > KEEP) samples.shift();
    const qps = series(perSecond);
    const hits = series(hitRate);
    const lastQps = qps.length ? qps[qps.length - 1].toFixed(1) : "–";
    const lastHit = hits.filter((h) => h !== null).pop();
    const parts = [
      chart("queries per second", lastQps, ward.charts.line(qps)),
      chart("cache hit rate", lastHit === undefined ? "no lookups" : `${lastHit.toFixed(0)} %`, ward.charts.line(hits, 100)),
    ];
    for (const [name, now] of Object.entries(dns.upstreams)) {
      const states = samples.map((s) => (s.dns.upstreams[name] ? s.dns.upstreams[name].up : null));
      parts.push(chart(`upstream ${name}`, `${now.up ? "up" : "down"}, ${now.answers} answers, ${now.failures} failures`,
        ward.charts.strip(states)));
    }
    const minutes = samples.length > 1 ? ((samples[samples.length - 1].t - samples[0].t) / 60000).toFixed(1) : "0";
    parts.push(ward.el("p", { class: "muted" },
      `${dns.answered} answered, cache ${dns.cache_entries}/${dns.cache_capacity}, ${dns.in_flight} in flight; last ${minutes} min`));
    box.replaceChildren(...parts);
  }

  return { render };
})();
