// The console's link to the server: the TypeScript SDK's EnfClient
// (clients/js, built to /console/enf-sdk.js), which authenticates with
// `hello`, reconnects with backoff, re-joins every followed session and the
// notary's topic with since_seq, drops duplicate events and retries
// unanswered requests by id (PROTOCOL.md §3, §7, §8). This module adapts it to
// the pages: errors as "code: message", session snapshots and refused
// re-joins handed to whoever listens, HTTP with the same token.
import { EnfClient, EnfRequestError } from "/console/enf-sdk.js";

class Enf {
  constructor(token) {
    this.token = token;
    this.claims = Enf.claimsOf(token);
    this.snapshots = []; // fn(snapshot): each session.join reply's session (re-joins included)
    this.refusals = []; // fn(sid, error): a session.join refused (a re-join after a reconnect too)
    this.client = new EnfClient({ url: location.origin, token: () => this.token });
    this.client.onStatus(({ status, code }) => {
      const words = { connecting: "connecting", open: "online", reconnecting: `reconnecting (${code ?? ""})`, closed: "offline" };
      this.status(code === 4401 && status !== "open" ? "token refused" : words[status] || status);
    });
    this.client.onResync((r) => {
      if (r.kind === "session.join") for (const h of this.snapshots) h(r.data.session);
      if (r.kind === "failed" && r.session_id) for (const h of this.refusals) h(r.session_id, Enf.error(r.error));
    });
  }

  static claimsOf(token) {
    return JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
  }

  // The SDK's refusal as the pages show it: "conflict: the act is paused".
  static error(e) {
    if (e instanceof EnfRequestError) return new Error(`${e.code}: ${e.message.slice(e.type.length + e.code.length + 4)}`);
    return e instanceof Error ? e : new Error(String(e));
  }

  on(fn) { this.client.on("*", fn); }

  status(text) { const el = document.getElementById("link"); if (el) el.textContent = text; }

  connect() { return this.client.connect(); }

  // The last seq seen on a topic (0: none).
  lastSeq(topic) { return this.client.lastSeq(topic); }

  async call(type, data) {
    try {
      return await this.client.request(type, data || {});
    } catch (e) {
      throw Enf.error(e);
    }
  }

  // session.join, its snapshot handed to the page (or its refusal: a party
  // back after a pause needs a fresh token, PROTOCOL §5). The SDK follows
  // the session from then on, across reconnects.
  async joinWith(sid, data) {
    try {
      const r = await this.call("session.join", Object.assign({ session_id: sid }, data || {}));
      for (const h of this.snapshots) h(r.session);
      return r;
    } catch (e) {
      for (const h of this.refusals) h(sid, e);
      throw e;
    }
  }

  // Follow a session: join now (again with since_seq after each reconnect).
  joinSession(sid, extra) { return this.joinWith(sid, extra); }

  // Sign in again with a fresh token (identity verified again) on a new
  // socket, then re-join `sid` (a refused re-join is no longer followed).
  async reauth(token, sid) {
    const claims = Enf.claimsOf(token);
    if (claims.sub !== this.claims.sub) throw new Error(`that token is for ${claims.sub}, not ${this.claims.sub}`);
    this.token = token;
    this.claims = claims;
    await this.client.reconnect({ freshToken: true }); // then requests go on the new socket
    if (sid) return this.joinWith(sid, { since_seq: this.lastSeq("session:" + sid) });
  }

  close() { return this.client.close(); }

  async http(path, opts) {
    const r = await fetch(path, Object.assign({ headers: { Authorization: "Bearer " + this.token } }, opts || {}));
    const body = await r.json();
    if (!r.ok) throw new Error(body.error ? body.error.message : r.status);
    return body;
  }
}

// WebRTC with the other party (peer to peer) and with the server's recorder,
// both through `signal`. Candidates travel inside the SDP (gathering is
// awaited), so no trickle is needed on a LAN or with the configured ICE servers.
class Call {
  constructor(enf, sid, iceServers) {
    this.enf = enf; this.sid = sid; this.ice = iceServers || [];
    this.peer = null; this.recorder = null; this.stream = null; this.streamReady = null;
  }

  camera() {
    if (!this.streamReady) {
      this.streamReady = navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: true })
        .then((s) => {
          this.stream = s;
          document.getElementById("local").srcObject = s;
          document.getElementById("media").hidden = false;
          return s;
        });
    }
    return this.streamReady;
  }

  async pc() {
    const pc = new RTCPeerConnection({ iceServers: this.ice });
    const stream = await this.camera();
    for (const t of stream.getTracks()) pc.addTrack(t, stream);
    return pc;
  }

  static gathered(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((r) => pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && r()));
  }

  async offerTo(to) {
    const pc = await this.pc();
    if (to === "recorder") this.recorder = pc; else this.watch((this.peer = pc));
    await pc.setLocalDescription(await pc.createOffer());
    await Call.gathered(pc);
    await this.enf.call("signal", { session_id: this.sid, to, kind: "offer", sdp: pc.localDescription.sdp });
  }

  watch(pc) {
    pc.ontrack = (e) => { document.getElementById("remote").srcObject = e.streams[0]; };
  }

  // A `signal` event: an answer to one of our offers, or the other party's offer.
  async onSignal(ev) {
    const d = ev.data;
    if (d.kind === "answer") {
      const pc = d.from === "recorder" ? this.recorder : this.peer;
      if (pc) await pc.setRemoteDescription({ type: "answer", sdp: d.sdp });
    } else if (d.kind === "offer" && d.from !== "recorder") {
      const pc = (this.peer = await this.pc());
      this.watch(pc);
      await pc.setRemoteDescription({ type: "offer", sdp: d.sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      await Call.gathered(pc);
      await this.enf.call("signal", { session_id: this.sid, to: d.from, kind: "answer", sdp: pc.localDescription.sdp });
    }
  }

  stop() {
    for (const pc of [this.peer, this.recorder]) if (pc) pc.close();
    if (this.stream) for (const t of this.stream.getTracks()) t.stop();
    this.peer = this.recorder = this.stream = this.streamReady = null;
  }
}

window.Enf = Enf;
window.Call = Call;
