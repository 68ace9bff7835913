// Clock sync in a Web Worker (docs/headset-protocol.md, "Clock sync"): its own WebSocket
// and session, so the page's rendering never delays a pong. Pings 4/s for the first
// 2 s, then 1/s; the offset (server minus client, ms) is the one of the ping with the
// smallest round trip among the last 16, and is posted to the page with its error bound.
import { envelope, openEnvelope, clientNowMs, msToNs, nsToMs, PROTOCOL } from './protocol.js';

let ws = null;
let window16 = [];
let timer = null;
let started = 0;

function connect(url) {
  ws = new WebSocket(url);
  ws.binaryType = 'arraybuffer';
  ws.onopen = () => {
    window16 = [];
    started = clientNowMs();
    ws.send(envelope('Hello', { protocol: PROTOCOL, client: 'clock-' + Math.random().toString(16).slice(2, 10) }));
    schedule();
  };
  ws.onmessage = (event) => {
    const tRecv = clientNowMs();
    let raw;
    try { raw = openEnvelope(event.data); } catch { return; }
    if (raw.type !== 'ClockPong') return;
    const tSend = nsToMs(raw.body.t_client_ns);
    const rtt = tRecv - tSend;
    if (!(rtt >= 0)) return;
    window16.push({ rtt, offset: nsToMs(raw.body.t_server_ns) - (tSend + tRecv) / 2 });
    if (window16.length > 16) window16.shift();
    const best = window16.reduce((a, b) => (b.rtt < a.rtt ? b : a));
    postMessage({ offsetMs: best.offset, errorMs: best.rtt / 2, samples: window16.length });
  };
  ws.onclose = () => { clearTimeout(timer); setTimeout(() => connect(url), 1000); };
}

function schedule() {
  const period = clientNowMs() - started < 2000 ? 250 : 1000;
  timer = setTimeout(() => {
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(envelope('ClockPing', { t_client_ns: msToNs(clientNowMs()) }));
      schedule();
    }
  }, period);
}

onmessage = (event) => { if (event.data && event.data.url) connect(event.data.url); };
