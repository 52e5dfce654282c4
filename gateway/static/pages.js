// The console's pages: sign in, then the customer, notary or ops page for the
// token's role. Plain DOM; every control has an id (the browser test uses them).
"use strict";

const $ = (id) => document.getElementById(id);
const PH = { lat: 14.5995, lng: 120.9842, country: "PH" };
let enf = null;
let call = null;
let sid = null;

function log(text) {
  const li = document.createElement("li");
  li.textContent = `${new Date().toISOString().slice(11, 19)} ${text}`;
  $("log").prepend(li);
  $("log-box").hidden = false;
}

function show(html) { const p = $("page"); p.innerHTML = html; p.hidden = false; }
function setState(s) { const el = $("state"); if (el) { el.textContent = s; el.dataset.state = s; } }
function fail(e) { const el = $("error"); if (el) el.textContent = e.message || String(e); log("error: " + (e.message || e)); }
const guard = (fn) => async (...a) => { try { $("error").textContent = ""; await fn(...a); } catch (e) { fail(e); } };

async function sha256Hex(buf) {
  const d = await crypto.subtle.digest("SHA-256", buf);
  return Array.from(new Uint8Array(d)).map((b) => b.toString(16).padStart(2, "0")).join("");
}

function onEvent(ev) {
  if (ev.name === "session.state") { setState(ev.data.state); }
  if (ev.name === "signal" && call) { call.onSignal(ev).catch(fail); return; }
  if (ev.name === "notification") { const n = $("note"); if (n) n.textContent = ev.data.message; }
  if (ev.name === "recording.ready") { const r = $("recording"); if (r) r.textContent = `recording ready (${ev.data.bytes} bytes, sha256 ${ev.data.sha256.slice(0, 12)}…)`; }
  if (ev.name === "session.notarized") { const e = $("envelope"); if (e) e.textContent = ev.data.envelope_id; }
  log(`${ev.name}${ev.seq !== undefined ? " #" + ev.seq : ""} ${JSON.stringify(ev.data).slice(0, 140)}`);
  for (const h of pageHandlers) h(ev);
}
const pageHandlers = [];

// The session's course and the steps possible now (session.js, steps.js):
// paused, failed, cancelled, the join window, the Next line, the timeline; a
// party that left paused the act signs in again here.
function sessionStatus(role) {
  const status = new SessionStatus(enf, role);
  $("rejoin").onclick = guard(async () => {
    const token = $("fresh-token").value.trim();
    log("signing in again with a fresh token");
    sessionStorage.setItem("enf-token", token);
    await enf.reauth(token, status.sid);
  });
  status.render();
  return status;
}

// -- customer -------------------------------------------------------------------

function customerPage() {
  show(`
    <h2>Request a notarization</h2>
    <p id="next" class="next" role="status"></p>
    <label>Document title <input id="doc-title" value="Affidavit of loss"></label>
    <label>Type <select id="doc-type"><option>affidavit</option><option>deed</option><option>contract</option></select></label>
    <label>File (hashed here; it is not uploaded) <input id="doc-file" type="file"></label>
    <label>Your full name <input id="principal-name" value=""></label>
    <button id="request">Request</button>
    <p>State: <span id="state" class="state">—</span> <span id="note" class="muted"></span></p>
    <div id="session-controls" hidden>
      ${sessionStatusHtml()}
      <label><input type="checkbox" id="consent-recording"> I consent to the session being recorded</label>
      <label><input type="checkbox" id="consent-privacy"> I accept the privacy notice</label>
      <label>I am in <select id="country"><option>PH</option><option>SG</option><option>US</option></select></label>
      <button id="join">Join the session</button>
      <button id="sign">Sign the document</button>
      <p id="recording" class="muted"></p>
      <p>Envelope: <span id="envelope">—</span></p>
    </div>
    <p id="error" class="error"></p>`);
  const status = sessionStatus("customer");
  $("request").onclick = guard(async () => {
    const file = $("doc-file").files[0];
    const bytes = file ? await file.arrayBuffer() : new TextEncoder().encode($("doc-title").value);
    const principal = $("principal-name").value ? { name: $("principal-name").value } : undefined;
    const r = await enf.call("session.request", {
      idempotency_key: crypto.randomUUID(),
      document: { id: crypto.randomUUID(), sha256: await sha256Hex(bytes), type: $("doc-type").value, title: $("doc-title").value },
      principal,
    });
    sid = r.session_id;
    status.follow(sid); // the SDK follows it too, from the request on
    setState(r.state);
    $("session-controls").hidden = false;
    log("requested session " + sid);
  });
  $("join").onclick = guard(async () => {
    const country = $("country").value;
    await enf.joinSession(sid, {
      consent: { recording: $("consent-recording").checked, privacy: $("consent-privacy").checked },
      location: country === "PH" ? PH : { lat: 0, lng: 0, country },
    });
    log("you joined the session");
  });
  $("sign").onclick = guard(async () => {
    await enf.call("act.sign", { session_id: sid, signature: btoa("signed by " + enf.claims.sub) });
  });
  pageHandlers.push((ev) => {
    if (ev.name === "video.config") {
      call = new Call(enf, sid, ev.data.ice_servers);
      (ev.data.recorder ? call.offerTo("recorder") : call.camera()).catch(fail);
    }
    if (ev.name === "session.state" && ev.data.state !== "VIDEO_IN_PROGRESS" && call) { call.stop(); call = null; }
  });
}

// -- notary ---------------------------------------------------------------------

function notaryPage() {
  show(`
    <h2>Notary</h2>
    <p id="next" class="next" role="status"></p>
    <button id="online">Go online</button> <button id="offline">Go offline</button>
    <span id="presence" class="muted"></span>
    <h3>Offers</h3><ul id="offers"></ul>
    <div id="session-controls" hidden>
      <h3>Session <span id="session-id"></span></h3>
      <p>State: <span id="state" class="state">—</span> <span id="note" class="muted"></span></p>
      ${sessionStatusHtml()}
      <button id="start-video">Start video</button>
      <label><input type="checkbox" id="comprehension"> The principal understands the document</label>
      <label><input type="checkbox" id="duress"> No sign of duress</label>
      <button id="record-checks">Record checks</button>
      <button id="seal">Seal</button>
      <button id="end-video">End video</button>
      <button id="notarize">Notarize</button>
      <p id="recording" class="muted"></p>
      <p>Envelope: <span id="envelope">—</span></p>
    </div>
    <p id="error" class="error"></p>`);
  const status = sessionStatus("enp");
  const me = "notary:" + enf.claims.sub;
  const presence = (st) => { $("presence").textContent = st; status.setPresence(st); };
  const goOnline = (since) => enf.call("presence.online", { since_seq: since }).then((r) => { presence(r.status); return r; });
  // The SDK goes online again (with since_seq) after a reconnect, until presence.offline.
  $("online").onclick = guard(async () => { await goOnline(enf.lastSeq(me)); });
  $("offline").onclick = guard(async () => { const r = await enf.call("presence.offline"); presence(r.status || "offline"); });
  $("start-video").onclick = guard(async () => {
    const r = await enf.call("video.start", { session_id: sid });
    call = new Call(enf, sid, r.ice_servers);
    const snap = await enf.joinWith(sid, { since_seq: enf.lastSeq("session:" + sid) });
    const customer = snap.session.participants.find((p) => p.role === "customer");
    await call.offerTo(customer.user_id);
    if (r.recorder) await call.offerTo("recorder");
  });
  $("record-checks").onclick = guard(() => enf.call("checks.record", {
    session_id: sid, comprehension_confirmed: $("comprehension").checked, duress_check_passed: $("duress").checked }));
  $("seal").onclick = guard(() => enf.call("act.seal", { session_id: sid, signature: btoa("enp " + enf.claims.sub), seal: btoa("seal " + (enf.claims.license_number || enf.claims.sub)) }));
  $("end-video").onclick = guard(async () => { await enf.call("video.end", { session_id: sid }); if (call) call.stop(); });
  $("notarize").onclick = guard(() => enf.call("session.notarize", { session_id: sid }));
  pageHandlers.push((ev) => {
    if (ev.name === "session.state" && ev.data.state !== "VIDEO_IN_PROGRESS" && call) { call.stop(); call = null; }
    if (ev.name === "offer") {
      const li = document.createElement("li");
      li.id = "offer-" + ev.data.offer_id;
      li.dataset.offerId = ev.data.offer_id;
      li.textContent = `${ev.data.document_type || "document"}, ${ev.data.amount ?? ""} PHP, until ${ev.data.expires_at.slice(11, 19)} `;
      const accept = document.createElement("button");
      accept.textContent = "Accept"; accept.className = "accept";
      accept.onclick = guard(async () => {
        const r = await enf.call("offer.accept", { offer_id: ev.data.offer_id });
        sid = r.session_id;
        status.follow(sid);
        $("session-id").textContent = sid;
        $("session-controls").hidden = false;
        status.dropOffer(ev.data.offer_id);
        li.remove();
        await enf.joinSession(sid, { location: PH });
      });
      const decline = document.createElement("button");
      decline.textContent = "Decline"; decline.className = "decline";
      decline.onclick = guard(async () => { await enf.call("offer.decline", { offer_id: ev.data.offer_id }); status.dropOffer(ev.data.offer_id); li.remove(); });
      li.append(accept, decline);
      $("offers").append(li);
      status.render();
    }
    if (ev.name === "offer.expired" || ev.name === "offer.withdrawn") {
      const li = $("offer-" + ev.data.offer_id); if (li) li.remove();
    }
  });
}

// -- sign in ----------------------------------------------------------------------

async function signIn(token) {
  enf = new Enf(token);
  enf.on(onEvent);
  const welcome = await enf.connect();
  sessionStorage.setItem("enf-token", token);
  $("signin").hidden = true;
  $("signout").hidden = false;
  $("who").textContent = `${welcome.user_id} (${welcome.role})`;
  ({ customer: customerPage, enp: notaryPage, admin: opsPage })[welcome.role]();
}

$("go").onclick = () => signIn($("token").value.trim()).catch((e) => { $("signin-error").textContent = e.message; });
$("signout").onclick = () => { sessionStorage.removeItem("enf-token"); if (enf) enf.close(); location.reload(); };
const saved = sessionStorage.getItem("enf-token");
if (saved) signIn(saved).catch(() => sessionStorage.removeItem("enf-token"));
