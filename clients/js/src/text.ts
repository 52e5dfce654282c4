/**
 * UTF-8, base64 and random ids with whatever the platform has: browsers and
 * Node have TextEncoder, TextDecoder, atob and crypto; React Native's Hermes
 * may lack some (and `crypto.randomUUID` needs a secure context in browsers),
 * so each has a small fallback.
 */

const g = globalThis as {
  TextEncoder?: typeof TextEncoder;
  TextDecoder?: typeof TextDecoder;
  atob?: (data: string) => string;
  crypto?: { randomUUID?: () => string; getRandomValues?: <T extends Uint8Array>(array: T) => T };
};

const encoder = g.TextEncoder ? new g.TextEncoder() : undefined;
const decoder = g.TextDecoder ? new g.TextDecoder() : undefined;

/** Bytes `text` takes in UTF-8. */
export function utf8Length(text: string): number {
  return encoder ? encoder.encode(text).byteLength : utf8LengthSlow(text);
}

/** (Without TextEncoder.) */
export function utf8LengthSlow(text: string): number {
  let bytes = 0;
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    bytes += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
  }
  return bytes;
}

/** UTF-8 bytes to text. */
export function utf8Decode(bytes: Uint8Array): string {
  return decoder ? decoder.decode(bytes) : utf8DecodeSlow(bytes);
}

/** (Without TextDecoder.) */
export function utf8DecodeSlow(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length;) {
    const b = bytes[i]!;
    const n = b < 0x80 ? 1 : b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : 2;
    let cp = n === 1 ? b : b & (0xff >> (n + 1));
    for (let k = 1; k < n; k++) cp = (cp << 6) | ((bytes[i + k] ?? 0) & 0x3f);
    out += String.fromCodePoint(cp);
    i += n;
  }
  return out;
}

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/** Standard base64 (padding optional) to bytes. */
export function base64Decode(data: string): Uint8Array {
  const clean = data.replace(/=+$/, "");
  if (!g.atob) return base64DecodeSlow(clean);
  return Uint8Array.from(g.atob(clean + "=".repeat((4 - (clean.length % 4)) % 4)), (c) =>
    c.charCodeAt(0),
  );
}

/** (Without atob.) */
export function base64DecodeSlow(data: string): Uint8Array {
  const clean = data.replace(/=+$/, "");
  const out: number[] = [];
  let bits = 0;
  let value = 0;
  for (const ch of clean) {
    const v = B64.indexOf(ch);
    if (v < 0) throw new Error("not base64");
    value = (value << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push((value >> bits) & 0xff);
    }
  }
  return Uint8Array.from(out);
}

/** `n` random bytes: crypto's when there is one. */
export function randomBytes(n: number): Uint8Array {
  const bytes = new Uint8Array(n);
  if (g.crypto?.getRandomValues) return g.crypto.getRandomValues(bytes);
  for (let i = 0; i < n; i++) bytes[i] = Math.floor(Math.random() * 256);
  return bytes;
}

/** A random (version 4) UUID. */
export function randomUUID(): string {
  return g.crypto?.randomUUID ? g.crypto.randomUUID() : uuidOf(randomBytes(16));
}

/** A version 4 UUID made of 16 random bytes. */
export function uuidOf(random: Uint8Array): string {
  const b = Uint8Array.from(random);
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
