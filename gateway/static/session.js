// What the console knows of the followed session and shows of it
// (PROTOCOL §5): its events (the journal, fetched when the session is
// followed or a gap shows, then its durable events as they come), folded
// into the facts the steps need (steps.js: which are possible now, the
// "Next:" line); the timeline (timeline.js); the act paused (who is missing
// and how to come back); a FAILED or CANCELLED session's reason in words;
// the join window running out while ENP_ASSIGNED.
"use strict";

(() => {

const ROLE_NAMES = { customer: "the customer", enp: "the notary" };
const OTHER_ROLE = { customer: "enp", enp: "customer" };

// The markup the customer and notary pages place above their controls.
function sessionStatusHtml() {
  return `
    <div id="paused-banner" class="banner paused" role="alert" hidden>
      <strong>The act is paused:</strong> <span id="paused-why"></span>
      <p id="paused-hint"></p>
      <div id="rejoin-box" hidden>
        <textarea id="fresh-token" rows="2" cols="70" placeholder="a fresh token (eyJ...)"></textarea>
        <button id="rejoin">Re-join with this token</button>
      </div>
    </div>
    <div id="ended-banner" class="banner ended" role="status" hidden></div>
    <p id="join-window" class="join-window" hidden></p>`;
}

const byId = (id) => document.getElementById(id);

function mmss(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

// The session's facts from its events in seq order (actors/session/fold.py's
// view of it), on top of the latest snapshot when events are missing.
function foldSession(events, snap) {
  const f = {
    state: null, reason: null, paused: null, customer: null, notary: null, checks: null,
    signed: false, sealed: false, recorder: false, recordingUsers: new Set(),
    recordingReady: false, recordingLost: false, recordingOptional: false, envelopeId: null,
  };
  let known = 0;
  while (events.has(known + 1)) known++;
  let after = 0;
  if (snap && snap.seq > known) {
    Object.assign(f, {
      state: snap.state, reason: snap.reason || null, paused: snap.paused || null, checks: snap.checks || null,
      signed: !!snap.signed, sealed: !!snap.sealed, recordingReady: !!snap.recording, envelopeId: snap.envelope_id,
    });
    for (const p of snap.participants || []) {
      f[p.role === "customer" ? "customer" : "notary"] = { user_id: p.user_id, role: p.role, present: !!p.online };
    }
    after = snap.seq;
  }
  let failedAt = null; // a party's recording failed in the call: a pause follows if it is required
  for (const e of [...events.values()].filter((x) => x.seq > after).sort((a, b) => a.seq - b.seq)) {
    if (failedAt !== null) {
      if (!(e.name === "session.paused" && e.seq === failedAt + 1)) f.recordingOptional = true;
      failedAt = null;
    }
    if (e.name === "recording.failed" && e.data.user_id && f.state === "VIDEO_IN_PROGRESS" && !f.paused) failedAt = e.seq;
    applyEvent(f, e);
  }
  return f;
}

function party(f, userId) {
  return [f.customer, f.notary].find((p) => p && p.user_id === userId);
}

function applyEvent(f, e) {
  const d = e.data || {};
  switch (e.name) {
    case "session.state":
      f.state = d.state;
      if (d.state === "REQUESTED") f.customer = { user_id: d.request.customer_id, role: "customer", present: false };
      if (d.state === "ENP_ASSIGNED") f.notary = { user_id: d.enp_id, role: "enp", present: false };
      if (d.state === "VIDEO_IN_PROGRESS") f.recorder = !!d.recorder;
      if (d.state !== "VIDEO_IN_PROGRESS") f.paused = null;
      if (d.state === "CANCELLED" || d.state === "FAILED") f.reason = d.reason || null;
      break;
    case "participant.joined": case "participant.left": {
      const p = party(f, d.user_id);
      if (!p) break;
      p.present = e.name === "participant.joined";
      if (d.consent) p.consent = d.consent;
      if (d.location) p.location = d.location;
      break;
    }
    case "session.paused": f.paused = { reason: d.reason, user_id: d.user_id || null, at: e.at }; break;
    case "session.resumed": f.paused = null; break;
    case "checks.recorded": f.checks = d; break;
    case "act.signed": f.signed = true; break;
    case "act.sealed": f.sealed = true; break;
    case "recording.started": if (d.user_id) f.recordingUsers.add(d.user_id); break;
    case "recording.ready": f.recordingReady = true; break;
    case "recording.failed":
      if (d.user_id) { f.recordingUsers.delete(d.user_id); break; }
      f.recordingUsers.clear();
      if (f.state === "VIDEO_COMPLETED") f.recordingLost = true;
      break;
    case "session.notarized": f.envelopeId = d.envelope_id; break;
    default: break;
  }
}

class SessionStatus {
  constructor(enf, role) {
    this.enf = enf;
    this.role = role;
    this.sid = null;
    this.presence = "offline"; // the notary's, as its last presence reply said
    this.offers = new Map(); // offer_id -> the offer event's data (notary)
    this.reset();
    enf.snapshots.push((snap) => this.snapshot(snap));
    enf.refusals.push((sid, e) => this.refused(sid, e));
    enf.on((ev) => this.event(ev));
    setInterval(() => { this.renderJoinWindow(); this.renderSteps(); }, 1000);
  }

  reset() {
    Object.assign(this, { snap: null, joinEnds: null, refusal: null, journalError: null, loading: false, fetchedFor: 0 });
    this.events = new Map(); // seq -> {seq, name, data, at}
    this.online = new Map(); // user_id -> connected and joined, as last heard live
    this.f = foldSession(this.events, null);
  }

  get state() { return this.f.state; }
  get paused() { return this.f.paused; }

  follow(sid) { this.sid = sid; this.reset(); this.render(); this.fetchJournal(); }

  setPresence(status) { this.presence = status || "offline"; this.render(); }
  dropOffer(offerId) { this.offers.delete(offerId); this.render(); }

  snapshot(s) {
    if (!s || s.session_id !== this.sid) return;
    this.snap = s;
    this.joinEnds = s.join_window_ends_at || null;
    this.refusal = null;
    this.online = new Map((s.participants || []).map((p) => [p.user_id, !!p.online]));
    this.render();
  }

  event(ev) {
    if (ev.type !== "event") return;
    const d = ev.data || {};
    if (ev.topic === "notary:" + this.enf.claims.sub) {
      if (ev.name === "offer") this.offers.set(d.offer_id, d);
      else if (ev.name === "offer.expired" || ev.name === "offer.withdrawn") this.offers.delete(d.offer_id);
      this.render();
      return;
    }
    if (ev.topic !== "session:" + this.sid || ev.seq === undefined) return;
    this.events.set(ev.seq, { seq: ev.seq, name: ev.name, data: d, at: ev.at });
    if (ev.name === "session.state" && d.state !== "ENP_ASSIGNED") this.joinEnds = null;
    if (ev.name === "session.paused" && d.reason === "party_left" && d.user_id) this.online.set(d.user_id, false);
    if (ev.name === "participant.joined" || ev.name === "participant.left") {
      this.online.set(d.user_id, ev.name === "participant.joined");
      if (d.user_id === this.enf.claims.sub && ev.name === "participant.joined") this.refusal = null;
    }
    this.render();
  }

  // The events before those this page heard live: the journal (participants
  // may read it), once per gap.
  async fetchJournal() {
    const sid = this.sid;
    const last = Math.max(this.snap ? this.snap.seq : 0, ...this.events.keys(), 1);
    if (!sid || this.loading || this.fetchedFor >= last) return;
    this.loading = true;
    this.fetchedFor = last;
    try {
      const j = await this.enf.http(`/v1/sessions/${encodeURIComponent(sid)}/journal`);
      if (sid !== this.sid) return;
      for (const e of j.events) this.events.set(e.seq, { seq: e.seq, name: e.name, data: e.data, at: e.at });
      this.journalError = null;
    } catch (e) {
      if (sid === this.sid) this.journalError = "the journal could not be read: " + (e.message || e);
    } finally {
      if (sid === this.sid) { this.loading = false; this.render(); }
    }
  }

  gap() {
    let known = 0;
    while (this.events.has(known + 1)) known++;
    return known < Math.max(this.snap ? this.snap.seq : 0, ...this.events.keys(), 0);
  }

  // A re-join refused: after a pause, the party who left needs a fresh token.
  refused(sid, e) {
    const message = e.message || String(e);
    if (sid !== this.sid || !message.startsWith("forbidden")) return;
    if (this.state !== "VIDEO_IN_PROGRESS" && !/left the call/.test(message)) return;
    this.refusal = message;
    this.render();
  }

  // "the customer (c1)", or "you".
  who(userId) {
    if (userId === this.enf.claims.sub) return "you";
    const p = party(this.f, userId);
    const name = ROLE_NAMES[p ? p.role : OTHER_ROLE[this.role]] || "a party";
    return userId ? `${name} (${userId})` : name;
  }

  // Who is away while paused: the parties not back (the one who left first).
  away() {
    if (!this.paused || this.paused.reason !== "party_left") return [];
    const gone = [...this.online].filter(([, on]) => !on).map(([uid]) => uid);
    return gone.length ? gone : [this.paused.user_id];
  }

  cause() {
    const p = this.paused;
    if (!p) return this.refusal ? "you left the call" : "";
    if (p.reason === "recording") return p.user_id ? `the recording stopped for ${this.who(p.user_id)}` : "the recording stopped";
    return `${this.away().map((u) => this.who(u)).join(" and ")} left the call`;
  }

  // Whether this page's own party is one of those missing.
  missingIsMe() {
    return this.refusal !== null || this.away().includes(this.enf.claims.sub);
  }

  hint() {
    if (this.missingIsMe()) {
      return "Sign in again to verify your identity: paste a fresh token below and re-join; the act resumes once every party is back.";
    }
    if (this.paused.reason === "recording") {
      return "The recording must run for both parties: reconnect the call. The act resumes by itself once it runs again.";
    }
    return `Wait for ${this.away().map((u) => this.who(u)).join(" and ")} to reconnect: they sign in again with a fresh token and re-join. ` +
      "The act resumes by itself; if they do not come back within the pause timeout, the session fails.";
  }

  // The facts steps.js plans from: the fold, who is connected, the pause in words.
  facts() {
    const f = Object.assign({}, this.f, { role: this.role, me: this.enf.claims.sub, presence: this.presence, offers: this.offers });
    for (const k of ["customer", "notary"]) {
      const p = f[k];
      if (p) f[k] = Object.assign({}, p, { online: this.online.has(p.user_id) ? this.online.get(p.user_id) : p.present });
    }
    if (!f.paused && this.refusal) f.paused = { reason: "party_left", user_id: f.me };
    f.pauseCause = this.cause();
    f.pauseMine = f.paused ? this.missingIsMe() : false;
    f.pauseWho = this.away().map((u) => this.who(u)).join(" and ");
    return f;
  }

  render() {
    this.f = foldSession(this.events, this.snap);
    if (this.sid && this.gap()) this.fetchJournal();
    this.renderBanners();
    this.renderSteps();
    this.renderJoinWindow();
    if (this.sid) renderTimeline(this.events, (u) => this.who(u), this.journalError);
  }

  renderBanners() {
    const banner = byId("paused-banner");
    if (!banner) return;
    const paused = this.paused !== null || this.refusal !== null;
    banner.hidden = !paused;
    banner.dataset.missing = paused ? (this.missingIsMe() ? "me" : "other") : "";
    if (paused) {
      byId("paused-why").textContent = this.cause() + ".";
      byId("paused-hint").textContent = this.hint();
      byId("paused-hint").title = this.refusal || "";
    }
    byId("rejoin-box").hidden = !(paused && this.missingIsMe());
    const ended = byId("ended-banner");
    const over = this.state === "FAILED" || this.state === "CANCELLED";
    ended.hidden = !over;
    ended.dataset.state = over ? this.state : "";
    if (over) {
      const reason = this.f.reason;
      ended.textContent = `${this.state}: ${reason ? STEP_REASONS[reason] || reason : "no reason given"}.`;
    }
  }

  // Each step's button enabled only when possible now; else disabled, its
  // title saying why. The Next line says what comes next for this person.
  renderSteps() {
    const plan = planSteps(this.facts());
    for (const [id, why] of Object.entries(plan.steps)) stepButton(byId(id), why);
    for (const li of document.querySelectorAll("#offers li[data-offer-id]")) {
      const offer = this.offers.get(li.dataset.offerId);
      if (!offer || !plan.offer) continue;
      const o = plan.offer(offer);
      stepButton(li.querySelector(".accept"), o.accept);
      stepButton(li.querySelector(".decline"), o.decline);
    }
    const next = byId("next");
    if (next && next.textContent !== plan.next) next.textContent = plan.next;
  }

  renderJoinWindow() {
    const el = byId("join-window");
    if (!el) return;
    const on = this.state === "ENP_ASSIGNED" && this.joinEnds !== null;
    el.hidden = !on;
    if (!on) return;
    const left = new Date(this.joinEnds).getTime() - Date.now();
    el.dataset.ends = this.joinEnds;
    el.classList.toggle("urgent", left < 60000);
    el.textContent = left > 0
      ? `Join window: the call must start within ${mmss(left)} (by ${this.joinEnds.slice(11, 19)} UTC), else the session is cancelled.`
      : "Join window: the time to start the call has run out; the session is being cancelled.";
  }
}

// A step's button: enabled, or disabled with why in its title ("Done: …"
// for a step already taken, "Not now: …" for one that waits).
function stepButton(el, why) {
  if (!el) return;
  el.disabled = why !== null;
  const title = why === null ? "" : why.startsWith("done: ") ? "Done: " + why.slice(6) : "Not now: " + why;
  if (el.getAttribute("title") !== title) el.setAttribute("title", title);
  el.dataset.why = why || "";
}

window.SessionStatus = SessionStatus;
window.sessionStatusHtml = sessionStatusHtml;
})();
