// The ops page (admins): the queue (requests waiting, offers open, notaries
// online, match latency), sessions by state and, in cluster mode, the shards
// and gateways of `run.py cluster status` (GET /v1/ops/summary); the live
// sessions, notaries online, recent failures, and a session's timeline (its
// journal). Refreshed every 5 s and by the Refresh button. Uses pages.js's
// helpers ($, show, guard, fail, enf, pageHandlers) when opsPage() runs.
"use strict";

const OPS_STATES = ["REQUESTED", "ENP_ASSIGNED", "VIDEO_IN_PROGRESS", "VIDEO_COMPLETED", "NOTARIZING",
  "NOTARIZED", "DISTRIBUTING", "COMPLETED", "CANCELLED", "FAILED"];

function opsSeconds(s) {
  if (s === null || s === undefined) return "—";
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

// Rows of a table (its header row kept): one per item, cells from `cells`.
function opsRows(table, items, cells, key) {
  table.querySelectorAll("tr.row").forEach((r) => r.remove());
  for (const item of items) {
    const tr = document.createElement("tr");
    tr.className = "row";
    if (key) tr.dataset.key = key(item);
    for (const v of cells(item)) {
      const td = document.createElement("td");
      td.textContent = v === null || v === undefined ? "—" : String(v);
      tr.append(td);
    }
    table.append(tr);
  }
}

function opsQueue(q) {
  $("q-waiting").textContent = String(q.requests_waiting);
  $("q-oldest").textContent = q.requests_waiting ? opsSeconds(q.oldest_request_s) : "—";
  $("q-offers").textContent = String(q.offers_open);
  const n = q.notaries_online;
  $("q-notaries").textContent = n === null ? "unknown (the Matchmaker did not answer)"
    : n.available + n.away + n.busy === 0 ? "none online"
      : `${n.available} available, ${n.busy} busy, ${n.away} away`;
  const m = q.match_latency;
  $("q-latency").textContent = m.count === 0 ? `no assignment in the last ${Math.round(m.window_s / 60)} min`
    : `median ${opsSeconds(m.median_s)}, p95 ${opsSeconds(m.p95_s)}, max ${opsSeconds(m.max_s)} (${m.count} assignment(s) in the last ${Math.round(m.window_s / 60)} min)`;
  const waiting = q.requests_waiting > 0 && n !== null && n.available === 0;
  $("queue").classList.toggle("alert", waiting);
  $("q-hint").textContent = waiting ? "Requests are waiting and no notary is available: they are cancelled (no_notary) when their time runs out." : "";
}

function opsCluster(c) {
  $("cluster-box").dataset.mode = c ? "cluster" : "single";
  if (!c) {
    $("cluster-mode").textContent = "Single node: no shards or gateways (ENF_CLUSTER=local).";
    opsRows($("shards"), [], () => []);
    opsRows($("gateways"), [], () => []);
    $("shards").hidden = $("gateways").hidden = true;
    return;
  }
  $("shards").hidden = $("gateways").hidden = false;
  const bad = c.shards.filter((s) => s.state !== "RUNNING").length;
  $("cluster-mode").textContent = `Cluster: ${c.shard_count} shards (map epoch ${c.map_epoch}), ${c.gateways.length} gateway(s)` +
    (bad ? `; ${bad} shard(s) not RUNNING` : "") + (c.errors.length ? `; ${c.errors.join("; ")}` : "");
  opsRows($("shards"), c.shards, (s) => [s.shard, s.state, s.node_id, s.placement, s.epoch, s.actors, s.mailbox_total], (s) => String(s.shard));
  opsRows($("gateways"), c.gateways, (g) => [g.gateway_id, g.url, g.host, g.connections, opsSeconds(g.seen_s_ago) + " ago"], (g) => g.gateway_id);
}

function opsSummary(s) {
  $("summary-at").textContent = `as of ${s.at.slice(11, 19)} UTC`;
  opsQueue(s.queue);
  opsRows($("by-state"), OPS_STATES, (st) => [st, s.sessions_by_state[st] || 0], (st) => st);
  opsCluster(s.cluster);
}

function opsPage() {
  show(`
    <h2>Operations</h2>
    <button id="refresh">Refresh</button> <span id="summary-at" class="muted"></span>
    <div class="ops-grid">
      <div><h3>Queue</h3>
        <table id="queue">
          <tr><th>requests waiting</th><td id="q-waiting">…</td></tr>
          <tr><th>oldest waiting</th><td id="q-oldest">…</td></tr>
          <tr><th>offers open</th><td id="q-offers">…</td></tr>
          <tr><th>notaries online</th><td id="q-notaries">…</td></tr>
          <tr><th>match latency</th><td id="q-latency">…</td></tr>
        </table></div>
      <div><h3>Sessions by state</h3><table id="by-state"><tr><th>state</th><th>sessions</th></tr></table></div>
    </div>
    <p id="q-hint" class="error"></p>
    <div id="cluster-box"><h3>Cluster</h3><p id="cluster-mode" class="muted"></p>
      <table id="shards" hidden><tr><th>shard</th><th>state</th><th>node</th><th>placement</th><th>epoch</th><th>actors</th><th>mailboxes</th></tr></table>
      <table id="gateways" hidden><tr><th>gateway</th><th>url</th><th>host</th><th>connections</th><th>seen</th></tr></table></div>
    <h3>Live sessions</h3><table id="sessions"><tr><th>session</th><th>state</th><th>customer</th><th>notary</th></tr></table>
    <h3>Notaries online</h3><ul id="notaries"></ul>
    <h3>Recent failures</h3><ul id="failures"></ul>
    <h3>Timeline of a session (its journal)</h3><label>Session <input id="journal-sid" size="40"></label> <button id="journal">Show</button>
    <ol id="journal-rows" class="timeline"></ol>
    <p id="error" class="error"></p>`);
  // Each part on its own: one that fails (and says so) leaves the others fresh.
  const refresh = async () => {
    $("error").textContent = "";
    const parts = [async () => opsSummary(await enf.http("/v1/ops/summary")), opsSessions];
    for (const part of parts) await part().catch(fail);
  };
  const opsSessions = async () => {
    const { sessions } = await enf.http("/v1/sessions?limit=100");
    opsRows($("sessions"), sessions, (s) => [s.session_id, s.state, s.customer_id, s.enp_id || ""], (s) => s.session_id);
    for (const tr of $("sessions").querySelectorAll("tr.row")) {
      tr.onclick = () => { $("journal-sid").value = tr.dataset.key; $("journal").click(); };
    }
    const dead = (await enf.http("/v1/deliveries?status=dead")).deliveries;
    const failed = sessions.filter((s) => s.state === "FAILED" || s.state === "CANCELLED");
    $("failures").innerHTML = "";
    for (const d of dead) { const li = document.createElement("li"); li.textContent = `dead letter ${d.type} ${d.session_id}: ${d.last_error}`; $("failures").append(li); }
    for (const s of failed) { const li = document.createElement("li"); li.textContent = `${s.state} ${s.session_id}: ${s.reason || "no reason given"}`; $("failures").append(li); }
  };
  $("refresh").onclick = refresh;
  $("journal").onclick = guard(async () => {
    const j = await enf.http(`/v1/sessions/${encodeURIComponent($("journal-sid").value.trim())}/journal`);
    fillTimeline($("journal-rows"), new Map(j.events.map((e) => [e.seq, e])), (u) => u || "a party");
  });
  const notaries = new Map();
  const onPresence = (ev) => {
    if (ev.name !== "notary.presence") return;
    notaries.set(ev.data.notary_id, ev.data.status);
    $("notaries").innerHTML = "";
    for (const [id, st] of notaries) { if (st === "offline") continue; const li = document.createElement("li"); li.textContent = `${id}: ${st}`; $("notaries").append(li); }
  };
  pageHandlers.push(onPresence);
  const fill = (list) => { notaries.clear(); for (const n of list || []) onPresence({ name: "notary.presence", data: n }); };
  // The SDK subscribes again after a reconnect; its fresh list replaces ours.
  enf.client.onResync((r) => { if (r.kind === "presence.subscribe") fill(r.data.notaries); });
  enf.call("presence.subscribe").then((r) => fill(r.notaries)).catch(fail);
  refresh();
  setInterval(refresh, 5000);
}

window.opsPage = opsPage;
