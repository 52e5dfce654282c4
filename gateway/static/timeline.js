// The followed session's timeline: its journal (GET /v1/sessions/{id}/journal)
// and then its durable events as they come, one row per event in seq order:
// the time (UTC), the event's name and what it means in words. Pauses,
// resumptions, failures and cancellations are marked (a class and words:
// the reason). SessionStatus (session.js) keeps the events and calls
// renderTimeline() when they change.
"use strict";

(() => {

const TL_STATES = {
  REQUESTED: () => "Requested: the document waits for a notary",
  ENP_ASSIGNED: (d, who) => `Assigned to ${who(d.enp_id)}${d.amount != null ? `, ${d.amount} PHP` : ""}`,
  VIDEO_IN_PROGRESS: (d) => `The video call started${d.recorder ? " (recorded by the server)" : ""}`,
  VIDEO_COMPLETED: () => "The video call ended",
  NOTARIZING: () => "Notarization asked: the notarial record is being issued",
  NOTARIZED: () => "Notarized",
  DISTRIBUTING: (d) => `Distribution started (${(d.recipients || []).length} recipient(s))`,
  COMPLETED: () => "Completed: every recipient is served",
};

function tlReason(r) { return r ? (window.STEP_REASONS || {})[r] || r : "no reason given"; }

function tlState(d, who) {
  if (d.state === "FAILED") return ["tl-failed", `FAILED: ${tlReason(d.reason)}`];
  if (d.state === "CANCELLED") {
    const by = d.by && d.by !== "system" ? ` by ${who(d.by)}` : "";
    return ["tl-cancelled", `CANCELLED${by}: ${tlReason(d.reason)}`];
  }
  const words = TL_STATES[d.state];
  return ["tl-state", words ? words(d, who) : `State ${d.state}`];
}

function tlJoined(d, who) {
  const extra = [];
  if (d.consent) {
    const given = ["recording", "privacy"].filter((k) => d.consent[k]);
    extra.push(given.length ? `consented to ${given.join(" and ")}` : "no consent given");
  }
  if (d.location && d.location.country) extra.push(`in ${d.location.country}`);
  return ["tl-joined", `${who(d.user_id)} joined${extra.length ? ": " + extra.join(", ") : ""}`];
}

const TL_EVENTS = {
  "session.state": tlState,
  "participant.joined": tlJoined,
  "participant.left": (d, who) => ["tl-left", `${who(d.user_id)} left`],
  "session.paused": (d, who) => ["tl-pause", d.reason === "recording"
    ? `Paused: the recording stopped${d.user_id ? " for " + who(d.user_id) : ""}`
    : `Paused: ${d.user_id ? who(d.user_id) : "a party"} left the call`],
  "session.resumed": () => ["tl-resume", "Resumed: every party is back in the call and recorded"],
  "checks.recorded": (d) => ["tl-act", `Checks recorded: understands the document ${d.comprehension_confirmed ? "yes" : "NO"}, no duress ${d.duress_check_passed ? "yes" : "NO"}`],
  "act.signed": (d, who) => ["tl-act", `Signed by ${who(d.user_id)}, the principal`],
  "act.sealed": (d, who) => ["tl-act", `Sealed by ${who(d.user_id)}`],
  "recording.started": (d, who) => ["tl-recording", `Recording started${d.user_id ? " for " + who(d.user_id) : ""}`],
  "recording.ready": (d) => ["tl-recording", `Recording ready: ${d.bytes} bytes${d.duration_s != null ? `, ${Math.round(d.duration_s)} s` : ""}, sha256 ${String(d.sha256).slice(0, 12)}…`],
  "recording.failed": (d, who) => ["tl-failed", `Recording failed${d.user_id ? " for " + who(d.user_id) : ""}: ${d.reason || "unknown"}`],
  "session.notarized": (d) => ["tl-act", `Envelope ${d.envelope_id} issued`],
  "delivery.status": (d) => ["tl-delivery", `Delivery to recipient ${d.recipient}: ${d.status}`],
};

// [class, words] of one event.
function timelineWords(e, who) {
  const fn = TL_EVENTS[e.name];
  return fn ? fn(e.data || {}, who) : ["tl-other", JSON.stringify(e.data || {}).slice(0, 120)];
}

// Fill the list `ol` with one row per event (events: Map seq -> {seq, name,
// data, at, hash?}; who(user_id) -> words).
function fillTimeline(ol, events, who) {
  ol.innerHTML = "";
  for (const e of [...events.values()].sort((a, b) => a.seq - b.seq)) {
    const [cls, words] = timelineWords(e, who);
    const li = document.createElement("li");
    li.className = "tl " + cls;
    li.dataset.seq = e.seq;
    li.dataset.name = e.name;
    const time = document.createElement("time");
    time.dateTime = e.at || "";
    time.textContent = e.at ? e.at.slice(11, 19) : "";
    const name = document.createElement("code");
    name.textContent = e.name;
    const what = document.createElement("span");
    what.className = "tl-words";
    what.textContent = words;
    li.append(time, " ", name, " ", what);
    if (e.hash) {
      const hash = document.createElement("small");
      hash.className = "muted";
      hash.textContent = ` #${e.seq} ${e.hash.slice(0, 12)}…`;
      li.append(hash);
    }
    ol.append(li);
  }
}

// The followed session's timeline on the customer and notary pages.
function renderTimeline(events, who, error) {
  const box = document.getElementById("timeline-box");
  const ol = document.getElementById("timeline");
  if (!box || !ol) return;
  document.getElementById("timeline-error").textContent = error || "";
  fillTimeline(ol, events, who);
  box.hidden = events.size === 0 && !error;
}

window.renderTimeline = renderTimeline;
window.fillTimeline = fillTimeline;
})();
