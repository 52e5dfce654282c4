// What the console shows of a session's course beyond its state (PROTOCOL §5):
// the act paused (who is missing and how to come back) with the act's
// buttons disabled, a FAILED or CANCELLED session's reason in words, and the
// join window running out while ENP_ASSIGNED. Fed by the session snapshot of
// each session.join reply and by the session's events.
"use strict";

const END_REASONS = {
  party_lost: "a party did not come back within the pause timeout",
  recording_failed: "no usable recording",
  join_window: "the call did not start within the join window",
  no_notary: "no notary accepted the request in time",
};
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

class SessionStatus {
  // buttons: [{id, done?: (status) => bool}], the act's steps on this page.
  constructor(enf, role, buttons) {
    this.enf = enf;
    this.role = role;
    this.buttons = buttons;
    this.sid = null;
    this.reset();
    enf.snapshots.push((snap) => this.snapshot(snap));
    enf.refusals.push((sid, e) => this.refused(sid, e));
    enf.on((ev) => this.event(ev));
    setInterval(() => this.renderJoinWindow(), 1000);
  }

  reset() {
    Object.assign(this, { state: null, paused: null, reason: null, joinEnds: null, signed: false, sealed: false, refusal: null });
    this.online = new Map(); // user_id -> connected and joined
  }

  follow(sid) { this.sid = sid; this.reset(); this.render(); }

  snapshot(s) {
    if (!s || s.session_id !== this.sid) return;
    this.state = s.state;
    this.paused = s.paused || null;
    this.reason = s.reason || null;
    this.joinEnds = s.join_window_ends_at || null;
    this.signed = !!s.signed;
    this.sealed = !!s.sealed;
    this.refusal = null;
    this.online = new Map((s.participants || []).map((p) => [p.user_id, !!p.online]));
    this.render();
  }

  event(ev) {
    if (ev.type !== "event" || ev.topic !== "session:" + this.sid) return;
    const d = ev.data || {};
    if (ev.name === "session.state") {
      this.state = d.state;
      this.reason = d.reason || null;
      if (d.state !== "VIDEO_IN_PROGRESS") this.paused = null;
      if (d.state !== "ENP_ASSIGNED") this.joinEnds = null;
    } else if (ev.name === "session.paused") {
      this.paused = { reason: d.reason, user_id: d.user_id || null, at: ev.at };
      if (d.reason === "party_left" && d.user_id) this.online.set(d.user_id, false);
    } else if (ev.name === "session.resumed") {
      this.paused = null;
    } else if (ev.name === "participant.joined" || ev.name === "participant.left") {
      this.online.set(d.user_id, ev.name === "participant.joined");
      if (d.user_id === this.enf.claims.sub && ev.name === "participant.joined") this.refusal = null;
    } else if (ev.name === "act.signed") {
      this.signed = true;
    } else if (ev.name === "act.sealed") {
      this.sealed = true;
    } else {
      return;
    }
    this.render();
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
    const name = ROLE_NAMES[OTHER_ROLE[this.role]] || "a party";
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

  render() {
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
      const words = this.reason ? END_REASONS[this.reason] || this.reason : "no reason given";
      ended.textContent = `${this.state}: ${words}.`;
    }
    this.renderButtons();
    this.renderJoinWindow();
  }

  // Why an act step cannot be taken now (null: it can).
  blocked(button) {
    if (this.state !== "VIDEO_IN_PROGRESS") return "only during the video call";
    if (this.paused || this.refusal) return `the act is paused (${this.cause()})`;
    if (button.done && button.done(this)) return "already done";
    return null;
  }

  renderButtons() {
    for (const b of this.buttons) {
      const el = byId(b.id);
      if (!el) continue;
      const why = this.blocked(b);
      el.disabled = why !== null;
      el.title = why ? "Not now: " + why : "";
    }
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

window.SessionStatus = SessionStatus;
window.sessionStatusHtml = sessionStatusHtml;
