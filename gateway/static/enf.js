// The ENF WebSocket client of the console: hello authentication, requests with
// replies, events, and reconnection that resumes every followed topic with
// since_seq (PROTOCOL.md §3, §8).
"use strict";

class Enf {
  constructor(token) {
    this.token = token;
    this.claims = Enf.claimsOf(token);
    this.n = 0;
    this.pending = new Map();
    this.handlers = [];
    this.lastSeq = new Map(); // topic -> last seq seen
    this.resume = new Map(); // topic -> async (sinceSeq) => request that follows it again
    this.closed = false;
    this.retry = 500;
    this.welcomed = false;
    this.waiting = [];
    this.snapshots = []; // fn(snapshot): each session.join reply's session
    this.refusals = []; // fn(sid, error): a session.join refused
  }

  on(fn) { this.handlers.push(fn); }

  static claimsOf(token) {
    return JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
  }

  status(text) { const el = document.getElementById("link"); if (el) el.textContent = text; }

  connect() {
    return new Promise((resolve, reject) => {
      const url = location.origin.replace(/^http/, "ws") + "/v1/ws";
      const ws = (this.ws = new WebSocket(url, ["enf.v1.json"]));
      ws.onopen = () => ws.send(JSON.stringify({ type: "hello", data: { token: this.token } }));
      ws.onmessage = (m) => {
        const f = JSON.parse(m.data);
        if (f.type === "welcome") {
          this.retry = 500;
          this.welcomed = true;
          this.status("online");
          resolve(f.data);
          for (const w of this.waiting.splice(0)) w();
          this.resumeAll();
          return;
        }
        if ("re" in f) {
          const p = this.pending.get(f.re);
          if (p) { this.pending.delete(f.re); p(f); }
          return;
        }
        if (f.type === "event") {
          if (f.seq !== undefined) {
            const last = this.lastSeq.get(f.topic) || 0;
            if (f.seq <= last) return; // already seen (a replay)
            this.lastSeq.set(f.topic, f.seq);
          }
          for (const h of this.handlers) h(f);
        }
      };
      ws.onclose = (e) => {
        this.welcomed = false;
        for (const p of this.pending.values()) p({ ok: false, error: { code: "unavailable", message: "disconnected" } });
        this.pending.clear();
        if (e.code === 4401) { reject(new Error("token refused")); this.status("token refused"); return; }
        if (this.closed) return;
        this.status(`reconnecting (${e.code})`);
        this.timer = setTimeout(() => this.connect().catch(() => {}), this.retry);
        this.retry = Math.min(this.retry * 2, 10000);
      };
    });
  }

  async resumeAll() {
    for (const [topic, fn] of this.resume) {
      try { await fn(this.lastSeq.get(topic) || 0); } catch (e) { console.warn("resume", topic, e); }
    }
  }

  // Resolves once signed in on the current socket (at once if already).
  ready(timeoutMs) {
    if (this.ws && this.ws.readyState === 1 && this.welcomed) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error("unavailable: not connected")), timeoutMs);
      this.waiting.push(() => { clearTimeout(t); resolve(); });
    });
  }

  async call(type, data) {
    await this.ready(10000); // a request made while reconnecting waits for it
    const id = "r" + ++this.n;
    return new Promise((resolve, reject) => {
      this.pending.set(id, (f) => (f.ok ? resolve(f.data) : reject(new Error(`${f.error.code}: ${f.error.message}`))));
      this.ws.send(JSON.stringify({ id, type, data: data || {} }));
    });
  }

  // session.join, its snapshot handed to the page (or its refusal: a party
  // back after a pause needs a fresh token, PROTOCOL §5).
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

  // Follow a session again with since_seq after each reconnect.
  follow(sid) {
    this.resume.set("session:" + sid, (since) => this.joinWith(sid, { since_seq: since }));
  }

  // Follow a session: join now, and again with since_seq after a reconnect.
  async joinSession(sid, extra) {
    const topic = "session:" + sid;
    this.follow(sid);
    const r = await this.joinWith(sid, extra);
    if (!this.lastSeq.has(topic)) this.lastSeq.set(topic, r.session.seq);
    return r;
  }

  // Sign in again on a new socket with a fresh token (identity verified
  // again); every followed topic resumes on the new socket.
  reauth(token) {
    const claims = Enf.claimsOf(token);
    if (claims.sub !== this.claims.sub) throw new Error(`that token is for ${claims.sub}, not ${this.claims.sub}`);
    this.token = token;
    this.claims = claims;
    this.retry = 100;
    if (this.ws && this.ws.readyState <= 1) this.ws.close(4000, "signing in again");
    else { clearTimeout(this.timer); this.connect().catch(() => {}); }
  }

  close() { this.closed = true; if (this.ws) this.ws.close(1000); }

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
