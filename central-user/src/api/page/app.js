// Sluice Central status page. Everything is drawn with textContent and createElement, never
// HTML parsing of data: names that contain markup show as text.
"use strict";

const REFRESH_MS = 1500;
const SPARK_POINTS = 80;
const history = new Map(); // peer name -> recent input rates

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function si(v) {
  if (v >= 1e9) return (v / 1e9).toFixed(1) + "G";
  if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (v >= 1e3) return (v / 1e3).toFixed(1) + "k";
  if (v >= 100) return v.toFixed(0);
  if (v >= 10) return v.toFixed(1);
  if (v > 0) return v.toFixed(2);
  return "0";
}

function bytes(b) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
  return b.toFixed(1) + " " + units[i];
}

function ago(ms, now) {
  if (ms === null || ms === undefined) return "-";
  return ((now - ms) / 1000).toFixed(1) + "s ago";
}

function utc(s) {
  return s ? new Date(s * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "-";
}

function fill(id, rows) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren(...rows);
}

function row(cells) {
  const tr = el("tr");
  for (const c of cells) {
    if (c instanceof Node) { const td = el("td"); td.appendChild(c); tr.appendChild(td); }
    else if (typeof c === "object" && c !== null) tr.appendChild(el("td", c.text, c.cls));
    else tr.appendChild(el("td", c));
  }
  return tr;
}

function spark(values) {
  const ns = "http://www.w3.org/2000/svg";
  const w = 160, h = 24;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  const max = Math.max(1, ...values);
  const pts = values.map((v, i) =>
    (i * (w - 2) / Math.max(1, SPARK_POINTS - 1) + 1).toFixed(1) + "," +
    (h - 2 - v / max * (h - 4)).toFixed(1));
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", pts.join(" "));
  svg.appendChild(line);
  return svg;
}

function num(v) { return { text: v, cls: "num" }; }

function render(s) {
  const now = Date.now();
  const st = s.status;
  document.getElementById("summary").textContent =
    `${st.peers_online}/${st.peers} peers online · ${st.exporters} exporters · ${st.pools.length} pools` +
    (st.ha_role ? ` · HA ${st.ha_role}` : "");
  document.getElementById("updated").textContent = "updated " + new Date(now).toLocaleTimeString();

  fill("peers", s.peers.map((p) => {
    const m = p.metrics || {};
    const h = history.get(p.name) || [];
    h.push(m.input_pps || 0);
    while (h.length > SPARK_POINTS) h.shift();
    history.set(p.name, h);
    return row([
      p.name, p.data_addr, p.version, ago(p.last_seen_unix_ms, now), p.pool || "-",
      { text: p.status, cls: p.status },
      utc(m.start_time_unix_s), num(m.cpu_load_pct !== undefined ? m.cpu_load_pct.toFixed(1) : "-"),
      num(m.mem_used_pct !== undefined ? m.mem_used_pct.toFixed(1) : "-"),
      num(m.process_cpu_pct !== undefined ? m.process_cpu_pct.toFixed(1) : "-"),
      num(m.process_mem_bytes !== undefined ? bytes(m.process_mem_bytes) : "-"),
      num(si(m.input_pps || 0) + " pps"), num(si(m.flows_per_s || 0) + " flows/s"),
      num(m.total_drops !== undefined ? m.total_drops : "-"), spark(h),
    ]);
  }));

  const poolRows = [];
  for (const pool of s.pools) {
    const healthy = pool.peers.filter((m) => m.status === "ONLINE");
    const total = healthy.reduce((a, m) => a + m.weight, 0);
    if (pool.peers.length === 0) poolRows.push(row([pool.name, num(pool.exporters), "-", "", "", ""]));
    pool.peers.forEach((m, i) => {
      const share = m.status === "ONLINE" && total > 0 ? (100 * m.weight / total).toFixed(1) + " %" : "-";
      poolRows.push(row([i === 0 ? pool.name : "", i === 0 ? num(pool.exporters) : "", m.peer,
        num(m.weight), num(share), { text: m.status, cls: m.status }]));
    });
  }
  fill("pools", poolRows);

  fill("exporters", s.exporters.map((x) => row([
    x.address, x.pool || "-", x.peer || "-", num(si(x.pps)), num(si(x.bps)),
    x.pinned ? "yes" : "", ago(x.last_seen_unix_ms, now),
  ])));

  const b = st.balancer;
  fill("balancer", [
    row(["rebalance interval", b.rebalance_interval_s + " s"]),
    row(["distribution margin", b.distribution_margin_pct + " pp"]),
    row(["peer timeout", b.peer_timeout_ms + " ms"]),
    row(["rebalances", num(st.rebalances)]),
    row(["failovers", num(st.failovers)]),
    row(["auth failures", num(st.auth_failures)]),
  ]);
  fill("xdp", s.xdp.map(([reason, n]) => row([reason, num(n)])));
  const ha = s.ha;
  fill("ha", ha ? [
    row(["role", { text: ha.role, cls: ha.role }]),
    row(["node", ha.node + " (priority " + ha.priority + ")"]),
    row(["epoch", num(ha.epoch)]),
    row(["partner", ha.partner + " at " + ha.partner_address + " (" + (ha.partner_role || "not heard") + ")"]),
    row(["link", ha.link_up ? "up" : "DOWN"]),
    row(["mirror lag", ha.mirror_lag_ms === null ? "-" : ha.mirror_lag_ms + " ms"]),
    row(["last change", (ha.last_change_reason || "-")]),
  ] : [row(["no hot standby configured"])]);
}

async function refresh() {
  try {
    const r = await fetch("/status.json", { credentials: "same-origin", cache: "no-store" });
    if (r.status === 401) { window.location.reload(); return; }
    if (r.ok) render(await r.json());
  } catch (e) {
    document.getElementById("updated").textContent = "Central unreachable: " + e;
  }
  setTimeout(refresh, REFRESH_MS);
}

refresh();
