// Small inline SVG drawings: a latency sparkline, a line chart over the
// last minutes, and an up/down strip. Pure functions of their numbers;
// the caller puts the returned <svg> where it wants.
"use strict";

ward.charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const svg = (tag, attrs = {}) => {
    const node = document.createElementNS(NS, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
    return node;
  };

  // A polyline through `values` (null leaves a gap) scaled to w×h.
  function lines(values, w, h, max) {
    const top = Math.max(max || 0, ...values.filter((v) => v !== null), 1e-9);
    const step = values.length > 1 ? w / (values.length - 1) : 0;
    const out = [];
    let points = [];
    values.forEach((v, i) => {
      if (v === null) {
        if (points.length) out.push(points);
        points = [];
        return;
      }
      points.push(`${(i * step).toFixed(1)},${(h - (v / top) * (h - 2) - 1).toFixed(1)}`);
    });
    if (points.length) out.push(points);
    return out.map((p) => svg("polyline", {
      class: "line", points: p.length === 1 ? `${p[0]} ${p[0]}` : p.join(" "),
      "vector-effect": "non-scaling-stroke",
    }));
  }

  // Latencies in ms, oldest first.
  function spark(delays) {
    const node = svg("svg", { class: "spark", viewBox: "0 0 80 18", preserveAspectRatio: "none" });
    node.append(...lines(delays, 80, 18));
    const title = svg("title");
    title.textContent = delays.length ? delays.join(", ") + " ms" : "no probes yet";
    node.append(title);
    return node;
  }

  // A chart of `values` (one per sample); `max` fixes the scale's top.
  function line(values, max) {
    const node = svg("svg", { class: "chart", viewBox: "0 0 300 60", preserveAspectRatio: "none" });
    node.append(svg("line", { class: "axis", x1: 0, y1: 59.5, x2: 300, y2: 59.5 }));
    node.append(...lines(values, 300, 60, max));
    return node;
  }

  // One cell per sample: up (true), down (false), unknown (null).
  function strip(states) {
    const node = svg("svg", { class: "chart strip", viewBox: `0 0 ${Math.max(states.length, 1)} 1`,
      preserveAspectRatio: "none" });
    node.style.height = "10px";
    states.forEach((up, i) => {
      if (up === null) return;
      node.append(svg("rect", { class: up ? "ok" : "fail", x: i, y: 0, width: 1.02, height: 1 }));
    });
    return node;
  }

  return { spark, line, strip };
})();
