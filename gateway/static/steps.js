// What each person can do now, and what comes next (PROTOCOL §4, §5). From
// the facts SessionStatus (session.js) keeps of the followed session, plan()
// gives every step of the page its reason to wait (null: possible now) and
// the page's "Next:" line. The rules mirror the session actor's checks
// (actors/session/call.py, ending.py, interruptions.py, membership.py), in
// the same order, with the same words where the server has them; the server
// remains the judge: a refusal's message is still shown.
"use strict";

(() => {

const STEP_REASONS = {
  party_lost: "a party did not come back within the pause timeout",
  recording_failed: "no usable recording",
  join_window: "the call did not start within the join window",
  no_notary: "no notary accepted the request in time",
};
const ENDED = new Set(["CANCELLED", "FAILED"]);
const NOTARIZED_ON = new Set(["NOTARIZED", "DISTRIBUTING", "COMPLETED"]);
const PARTY_NAMES = { customer: "the customer", enp: "the notary" };

const reasonWords = (r) => (r ? STEP_REASONS[r] || r : "no reason given");
const hhmmss = (iso) => (iso ? iso.slice(11, 19) : "");

// "the customer", "the notary", or "you" (the page's own party).
function named(f, p) { return p.user_id === f.me ? "you" : PARTY_NAMES[p.role]; }
function list(names) { return names.join(" and "); }
// Whether the parties named take a plural verb ("you" does).
function plural(f, ps) { return ps.length > 1 || ps[0].user_id === f.me; }
function parties(f) { return [f.customer, f.notary].filter(Boolean); }
function consented(p) { return !!(p && p.consent && p.consent.recording && p.consent.privacy); }
function checksPassed(f) { return !!(f.checks && f.checks.comprehension_confirmed && f.checks.duress_check_passed); }

// Why a session that has moved on (or not yet started) allows no step of the call.
function over(f) {
  if (ENDED.has(f.state)) return `the session is ${f.state.toLowerCase()} (${reasonWords(f.reason)})`;
  if (f.state === "NOTARIZING") return "the session is being notarized";
  if (NOTARIZED_ON.has(f.state)) return "the session is notarized";
  return null;
}

// Why a step of the act (during the call) waits, by the state alone.
function callState(f) {
  if (!f.state) return "there is no session yet";
  if (f.state === "REQUESTED") return "only during the video call: no notary has accepted yet";
  if (f.state === "ENP_ASSIGNED") {
    return f.role === "enp" ? "only during the video call: start the video first" : "only during the video call: the notary has not started it yet";
  }
  if (f.state === "VIDEO_COMPLETED") return "the video call has ended";
  return over(f);
}

// The parties whose media the recorder does not receive, when the act needs it.
function unrecorded(f) {
  if (!f.recorder || f.recordingOptional) return [];
  return parties(f).filter((p) => !f.recordingUsers.has(p.user_id));
}

// "In full view" (interruptions.py _full_view): not paused, every party
// joined and connected, the recording running for each.
function fullView(f) {
  if (f.paused) return `the act is paused (${f.pauseCause})`;
  const away = parties(f).filter((p) => !p.present || (!p.online && p.user_id !== f.me));
  if (away.length) return `not in full view: ${list(away.map((p) => named(f, p)))} ${plural(f, away) ? "are" : "is"} not in the call`;
  const off = unrecorded(f);
  if (off.length) return `not in full view: the recording is not running for ${list(off.map((p) => named(f, p)))}`;
  return null;
}

// Every party says where it is before the act (call.py _check_all_locations).
function locations(f) {
  const missing = parties(f).filter((p) => !p.location);
  if (!missing.length) return null;
  return `not declared where they are: ${list(missing.map((p) => named(f, p)))} (session.join location)`;
}

const first = (...checks) => { for (const c of checks) { const why = c(); if (why) return why; } return null; };

// The pause, for the Next line: who is to do what.
function pauseNext(f) {
  if (f.pauseMine) return "Next: sign in again with a fresh token (below) and re-join; the act resumes once every party is back.";
  if (f.paused && f.paused.reason === "recording") return `Next: wait for the recording to run again (${f.pauseCause}); the act resumes by itself.`;
  return `Next: wait for ${f.pauseWho || "the other party"} to come back into the call; the act resumes by itself.`;
}

// -- the customer ---------------------------------------------------------------

function customerSteps(f) {
  const me = f.customer;
  return {
    request: !f.state || ENDED.has(f.state) || NOTARIZED_ON.has(f.state) ? null
      : `you have a session under way (${f.state}): request again once it is over`,
    join: first(
      () => (!f.state ? "request a notarization first" : null),
      () => over(f) || (f.state === "VIDEO_COMPLETED" ? "the video call has ended" : null),
      () => (f.pauseMine ? "you left the call: sign in again with a fresh token (below) to re-join" : null),
      () => (me && me.present && me.online && consented(me) ? "done: you have joined and consented" : null),
    ),
    sign: first(
      () => callState(f),
      () => (f.signed ? "done: you have signed" : null),
      () => locations(f),
      () => fullView(f),
    ),
  };
}

function customerNext(f, steps) {
  const me = f.customer || {};
  const joined = me.present && consented(me);
  const notary = f.notary || {};
  switch (f.state) {
    case null: case undefined:
      return "Next: request a notarization: choose the document, then press Request.";
    case "REQUESTED":
      return joined ? "Next: wait for a notary to accept your request."
        : "Next: wait for a notary to accept your request; meanwhile tick both consents and join the session.";
    case "ENP_ASSIGNED":
      if (!joined) return "Next: tick both consents (recording and privacy) and join the session.";
      return notary.present ? "Next: wait for the notary to start the video." : "Next: wait for the notary to join.";
    case "VIDEO_IN_PROGRESS":
      if (f.paused) return pauseNext(f);
      if (f.sealed) return "Next: wait for the notary to end the video and notarize.";
      if (f.signed) return "Next: wait for the notary to seal the act.";
      return steps.sign ? `Next: sign the document once possible (now: ${steps.sign}).` : "Next: sign the document.";
    case "VIDEO_COMPLETED":
      return f.sealed ? "Next: wait for the notary to notarize (once the recording is ready)."
        : "Next: nothing more here: the act was not sealed, so it cannot be notarized.";
    case "NOTARIZING":
      return "Next: wait for the envelope: the notarization is being finalised.";
    default:
      if (NOTARIZED_ON.has(f.state)) return `Done: the document is notarized (envelope ${f.envelopeId || "…"}).`;
      return `Over: the session is ${f.state.toLowerCase()}: ${reasonWords(f.reason)}. You may request again.`;
  }
}

// -- the notary -------------------------------------------------------------------

const isOnline = (f) => !!f.presence && f.presence !== "offline";
const underWay = (f) => !!f.state && !ENDED.has(f.state) && !NOTARIZED_ON.has(f.state);

function awaitsRecording(f) {
  return !!f.recorder && !f.recordingOptional && !f.recordingReady && !f.recordingLost;
}

function notarySteps(f) {
  const customer = f.customer;
  return {
    online: isOnline(f) ? `you are online (${f.presence})` : null,
    offline: isOnline(f) ? null : "you are offline",
    "start-video": first(
      () => (!f.state ? "accept an offer first" : null),
      () => (f.state === "VIDEO_IN_PROGRESS" ? "done: the video is running" : null),
      () => (f.state !== "ENP_ASSIGNED" ? callState(f) : null),
      () => {
        const missing = parties(f).filter((p) => !p.present);
        return missing.length ? `waiting for ${list(missing.map((p) => named(f, p)))} to join` : null;
      },
      () => {
        const c = (customer && customer.consent) || {};
        const lacking = ["recording", "privacy"].filter((k) => !c[k]);
        return lacking.length ? `the customer has not consented to ${list(lacking)} (session.join consent)` : null;
      },
    ),
    "record-checks": first(
      () => callState(f),
      () => (f.sealed ? "the act is sealed" : null),
      () => (checksPassed(f) ? "done: both checks are recorded" : null),
      () => fullView(f),
    ),
    seal: first(
      () => callState(f),
      () => (f.sealed ? "done: the act is sealed" : null),
      () => (!checksPassed(f) ? "record the comprehension and duress checks (both true) before sealing" : null),
      () => (!f.signed ? "the principal has not signed yet" : null),
      () => locations(f),
      () => fullView(f),
    ),
    "end-video": first(
      () => (f.state === "VIDEO_COMPLETED" ? "done: the video has ended" : null),
      () => (f.state !== "VIDEO_IN_PROGRESS" ? callState(f) : null),
      () => (f.paused && !f.sealed ? `the act is paused (${f.pauseCause}) and not sealed: wait for the parties` : null),
    ),
    notarize: first(
      () => (f.state === "VIDEO_IN_PROGRESS" ? "end the video first" : null),
      () => (f.state !== "VIDEO_COMPLETED" ? over(f) || "only after the video call" : null),
      () => (!f.signed || !f.sealed ? "the act must be signed and sealed first" : null),
      () => (awaitsRecording(f) ? "no finished recording yet: wait for it to be ready" : null),
    ),
  };
}

// Accept and decline, for one offer.
function offerSteps(f, offer) {
  const expired = Date.parse(offer.expires_at) <= Date.now();
  return {
    accept: expired ? "the offer has expired" : underWay(f) ? `you have a session under way (${f.state}): finish it first` : null,
    decline: expired ? "the offer has expired" : null,
  };
}

function idleNext(f) {
  if (!isOnline(f)) return "Next: go online to receive offers.";
  const offers = [...f.offers.values()].filter((o) => Date.parse(o.expires_at) > Date.now());
  if (offers.length) return `Next: accept or decline the offer (it expires at ${hhmmss(offers[0].expires_at)} UTC).`;
  return `Next: wait for an offer (you are ${f.presence}).`;
}

function notaryNext(f, steps) {
  const customer = f.customer || {};
  switch (f.state) {
    case null: case undefined:
      return idleNext(f);
    case "ENP_ASSIGNED":
      if (!customer.present) return "Next: wait for the customer to join.";
      if (!consented(customer)) return "Next: wait for the customer's consent to the recording and the privacy notice.";
      return steps["start-video"] ? `Next: start the video once possible (now: ${steps["start-video"]}).` : "Next: start the video.";
    case "VIDEO_IN_PROGRESS": {
      if (f.paused) return pauseNext(f);
      if (f.sealed) return "Next: end the video.";
      const wait = fullView(f);
      const then = !checksPassed(f)
        ? (f.signed ? "record the checks, then seal" : "record the checks, then wait for the customer's signature, then seal")
        : (f.signed ? "seal the act" : "wait for the customer's signature, then seal");
      return wait ? `Next: wait until the call is whole (${wait}); then ${then}.` : `Next: ${then}.`;
    }
    case "VIDEO_COMPLETED":
      if (!f.sealed) return "Next: nothing to notarize: the act was not sealed (the session can only be cancelled).";
      return awaitsRecording(f) ? "Next: wait for the recording to be ready, then notarize." : "Next: notarize.";
    case "NOTARIZING":
      return "Next: wait for the envelope: the notarization is being finalised.";
    default: {
      const done = NOTARIZED_ON.has(f.state) ? `Done: the act is notarized (envelope ${f.envelopeId || "…"}).`
        : `Over: the session is ${f.state.toLowerCase()}: ${reasonWords(f.reason)}.`;
      return `${done} ${idleNext(f)}`;
    }
  }
}

// {steps: {id: reason | null}, next: "Next: …", offer(offer) -> {accept, decline}}
function planSteps(f) {
  if (f.role === "customer") {
    const steps = customerSteps(f);
    return { steps, next: customerNext(f, steps) };
  }
  const steps = notarySteps(f);
  return { steps, next: notaryNext(f, steps), offer: (o) => offerSteps(f, o) };
}

window.planSteps = planSteps;
window.STEP_REASONS = STEP_REASONS;
})();
