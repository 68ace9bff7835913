// The headset protocol's envelope and the client's own overlay rule
// (docs/headset-protocol.md). Times on this page are epoch milliseconds of the client
// clock (performance.timeOrigin + performance.now(), shared by the page and its worker);
// server times are nanoseconds of the server's monotonic clock.
import { encode, decode } from './msgpack.js';

export const PROTOCOL = 3;
export const SCHEMA_VERSION = 1;
export const STALE_AFTER_MS = 100;
export const HIDE_AFTER_MS = 300;

export const clientNowMs = () => performance.timeOrigin + performance.now();
export const msToNs = (ms) => BigInt(Math.round(ms * 1000)) * 1000n;
export const nsToMs = (ns) => Number(ns) / 1e6;

let seq = 0;
export function envelope(type, body) {
  return encode({ v: SCHEMA_VERSION, type, seq: seq++, epoch: 0, t_pub_ns: msToNs(clientNowMs()), body });
}

export function openEnvelope(data) {
  const raw = decode(data);
  if (!raw || raw.v !== SCHEMA_VERSION || typeof raw.type !== 'string' || typeof raw.body !== 'object') {
    throw new Error('not a protocol envelope');
  }
  return raw;
}

// The worse of the server's verdict and the pose's age on this client's clock.
const RANK = { CURRENT: 0, STALE: 1, HIDDEN: 2 };
export function clientOverlay(update, nowMs, offsetMs) {
  if (!update) return { state: 'HIDDEN', reason: 'no scene yet', ageMs: NaN };
  const ageMs = nowMs + offsetMs - nsToMs(update.t_sensor_ns);
  let state = 'CURRENT';
  let reason = '';
  if (ageMs > HIDE_AFTER_MS) { state = 'HIDDEN'; reason = `no tracking data for ${ageMs.toFixed(0)} ms`; }
  else if (ageMs > STALE_AFTER_MS) { state = 'STALE'; reason = `pose ${ageMs.toFixed(0)} ms old`; }
  if (RANK[update.overlay] > RANK[state]) {
    state = update.overlay;
    reason = update.status !== 'OK' ? update.status : (!update.headset_ok ? 'headset not tracked' : `server: ${update.overlay}`);
  }
  return { state, reason, ageMs };
}
