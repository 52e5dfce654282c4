/**
 * What a client follows, and where each topic stands: the sessions it
 * re-joins after a reconnect, the notary's presence, the last `seq`
 * delivered per topic (the resume cursor, and what makes a repeat a
 * duplicate). It learns from the replies to the client's own requests and
 * from the events delivered; the client asks it what to send again on a new
 * connection.
 */

import type { EventFrameOf } from "./protocol.js";
import { TERMINAL_STATES, isObject } from "./protocol.js";

/** One request that follows something again on a new connection. */
export interface ResyncStep {
  type: "session.join" | "presence.online" | "presence.subscribe";
  data: Record<string, unknown>;
  session_id?: string;
  /** Sent after this one succeeds. */
  then?: { type: string; data: Record<string, unknown> };
  /** The server refused it: stop following what it would have followed. */
  forget(): void;
}

export class Following {
  private readonly lastSeqs = new Map<string, number>();
  /** Followed sessions; terminal ones are not re-joined. */
  private readonly sessions = new Map<string, { terminal: boolean }>();
  private readonly presence = { online: false, away: false, subscribed: false };
  /** Events whose seq jumped past the next one expected (the contract says never). */
  gaps = 0;

  lastSeq(topic: string): number {
    return this.lastSeqs.get(topic) ?? 0;
  }

  followedSessions(): string[] {
    return [...this.sessions].filter(([, s]) => !s.terminal).map(([id]) => id);
  }

  unfollow(sessionId: string): void {
    this.sessions.delete(sessionId);
  }

  /** Note what a successful request made this client follow (or stop following). */
  observe(type: string, sent: unknown, reply: unknown, userId: string | undefined): void {
    const data = isObject(sent) ? sent : {};
    const got = isObject(reply) ? reply : {};
    switch (type) {
      case "session.request": // followed from its first event (PROTOCOL §8)
      case "offer.accept": // followed from ENP_ASSIGNED
        if (typeof got.session_id === "string") this.follow(got.session_id);
        break;
      case "session.join": {
        if (typeof data.session_id !== "string") break;
        const session = isObject(got.session) ? got.session : {};
        // With since_seq the events after it come next; without, those after the snapshot.
        const since = typeof data.since_seq === "number" ? data.since_seq : session.seq;
        this.follow(data.session_id, typeof since === "number" ? since : undefined);
        if (typeof session.state === "string" && TERMINAL_STATES.includes(session.state)) {
          this.sessions.get(data.session_id)!.terminal = true;
        }
        break;
      }
      case "session.leave":
        if (typeof data.session_id === "string") this.sessions.delete(data.session_id);
        break;
      case "presence.online":
        this.presence.online = true;
        // Not in the contract's reply: the topic's head, used if a server ever sends it.
        if (typeof got.seq === "number" && userId !== undefined)
          this.advance(`notary:${userId}`, got.seq);
        break;
      case "presence.offline":
        this.presence.online = this.presence.away = false;
        break;
      case "presence.set":
        this.presence.away = data.status === "away";
        break;
      case "presence.subscribe":
        this.presence.subscribed = true;
        break;
    }
  }

  /** Whether a durable event is new for the application (and note it), or a duplicate. */
  accept(event: EventFrameOf & { seq: number }): boolean {
    const last = this.lastSeqs.get(event.topic) ?? 0;
    if (event.seq <= last) return false;
    if (last > 0 && event.seq > last + 1) this.gaps += 1;
    this.lastSeqs.set(event.topic, event.seq);
    if (event.name === "session.state" && isObject(event.data)) {
      const session = this.sessions.get(event.topic.slice("session:".length));
      const state = event.data.state;
      if (session && typeof state === "string" && TERMINAL_STATES.includes(state)) {
        session.terminal = true; // nothing follows: not re-joined after a reconnect
      }
    }
    return true;
  }

  /** What to send on a new connection to follow again all that is followed, from where it stands. */
  resync(userId: string | undefined): ResyncStep[] {
    const steps: ResyncStep[] = this.followedSessions().map((sid) => ({
      type: "session.join",
      data: { session_id: sid, since_seq: this.lastSeq(`session:${sid}`) },
      session_id: sid,
      forget: () => this.sessions.delete(sid),
    }));
    if (this.presence.online && userId !== undefined) {
      const seq = this.lastSeqs.get(`notary:${userId}`);
      steps.push({
        type: "presence.online",
        data: seq === undefined ? {} : { since_seq: seq },
        ...(this.presence.away ? { then: { type: "presence.set", data: { status: "away" } } } : {}),
        forget: () => {
          this.presence.online = false;
        },
      });
    }
    if (this.presence.subscribed) {
      steps.push({
        type: "presence.subscribe",
        data: {},
        forget: () => {
          this.presence.subscribed = false;
        },
      });
    }
    return steps;
  }

  private follow(sessionId: string, since?: number): void {
    if (!this.sessions.has(sessionId)) this.sessions.set(sessionId, { terminal: false });
    if (since !== undefined) this.advance(`session:${sessionId}`, since);
  }

  private advance(topic: string, seq: number): void {
    if (seq > (this.lastSeqs.get(topic) ?? 0)) this.lastSeqs.set(topic, seq);
  }
}
