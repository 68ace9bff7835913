// The browser headset client: OR monitor view and WebXR immersive-ar (Quest 3), one page.
// Protocol: docs/headset-protocol.md (version 3, world-locked). Served by the web bridge
// (render/web/bridge_node.py); the pairing token comes in the URL fragment (#token=...),
// which the browser never sends to a server.
//
// Scene graph (three.js, matrixAutoUpdate = false everywhere we set matrices):
//   scene
//     mmRoot          scale 1e-3: the wire is in mm, WebXR and three.js in metres
//       xrNode        T_xr_from_tracker (this session's registration): world-locked
//         <structure> T_tracker_from_structure of the newest update applied
//         ctNode      the structures' pose (they share the image frame): the case's CT
//           ct-volume   ray-marched box (render/web/volume/volume.js), when Welcome has one
//         tip         p_tip_tracker
//     camera
//       headLocked    status line and alerts in AR (head-locked content only)
//
// Every pose is applied in the render loop (setAnimationLoop) from a one-slot latest-wins
// box filled by the WebSocket; the STALE (> 100 ms, dimmed amber) / HIDDEN (> 300 ms or
// not OK: nothing drawn but a banner saying why) rule runs each frame on this client's
// clock with the offset from the clock worker, so a dead server never leaves a live-looking
// overlay. The CT volume is under the same root as the meshes, so HIDDEN hides it too, and
// STALE gives it the meshes' amber, dimmed look; its brick comes once per hash (/assets,
// SHA-256 checked here) and a small control in the panel picks its transfer function
// (off / soft tissue / vessels / bone; #ct=<preset> in the URL sets the first one).
import * as THREE from 'three';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';
import { wireArray, f64 } from './msgpack.js';
import { PROTOCOL, envelope, openEnvelope, clientNowMs, msToNs, nsToMs, clientOverlay } from './protocol.js';
import { VolumeBox, checkedBrick, PRESETS as CT_PRESETS } from '/volume/volume.js';

const fragment = new URLSearchParams(location.hash.slice(1));
const token = fragment.get('token') || '';
const clientName = fragment.get('client') || 'browser-' + Math.random().toString(16).slice(2, 10);
const wsUrl = `wss://${location.host}/ws?token=${encodeURIComponent(token)}`;
const AMBER = new THREE.Color(1.0, 0.69, 0.0);
const TELEMETRY_PERIOD_MS = 1000;

// --- state (window.ornav is what tests and the OR engineer's console read) -------------
const state = {
  connected: false,
  welcome: null,
  session: '',
  sceneVersion: -1,
  offsetMs: 0,
  offsetErrorMs: NaN,
  clockSamples: 0,
  latest: null,          // the newest update applied (decoded)
  latestPubNs: -1,
  overlay: { state: 'HIDDEN', reason: 'connecting', ageMs: NaN },
  overlaySampleNs: '',   // the sample the overlay was last judged on (a sample never improves)
  transitions: [],       // {state, reason, t_ms, age_ms, t_sensor_ns}
  alerts: new Map(),     // `${session}:${id}` -> alert body, while shown
  alertsShown: 0,
  received: 0,
  applied: 0,
  superseded: 0,
  dropped: 0,
  reconnects: 0,
  receiveLatencyMs: [],  // t_receive + offset - t_sensor, per update received
  appliedLatencyMs: [],  // t_display + offset - t_sensor, per update applied in a frame
  frameMs: [],
  mode: 'monitor',
  assetsLoaded: 0,
  nodes: {},             // node name -> its last heartbeat (state, uptime, publish rate)
  tools: null,           // the tracker's tools and their statuses
  volume: { sha: '', status: 'none', fetches: 0, verified: false, error: '', preset: '', looks: [], scale: 1 },
};
window.ornav = state;

// --- three.js scene ------------------------------------------------------------------------
const renderer = new THREE.WebGLRenderer({ antialias: true, alpha: true, preserveDrawingBuffer: true });
renderer.setPixelRatio(1);
renderer.setSize(innerWidth, innerHeight);
renderer.setClearColor(0x000000, 1);
renderer.xr.enabled = true;
document.getElementById('view').appendChild(renderer.domElement);
const scene = new THREE.Scene();
const camera = new THREE.PerspectiveCamera(50, innerWidth / innerHeight, 0.01, 20);
camera.position.set(0, 0, 1.5);
scene.add(camera);
scene.add(new THREE.HemisphereLight(0xffffff, 0x444444, 2.0));
// A head lamp: the light travels along the view direction, so what faces the viewer is lit
// wherever the head is (its target rides on the camera too).
const headLight = new THREE.DirectionalLight(0xffffff, 1.5);
const headLightTarget = new THREE.Object3D();
headLightTarget.position.set(0, 0, -1);
camera.add(headLight, headLightTarget);
headLight.target = headLightTarget;
const controls = new OrbitControls(camera, renderer.domElement);
const mmRoot = new THREE.Group();
mmRoot.matrixAutoUpdate = false;
mmRoot.matrix.makeScale(1e-3, 1e-3, 1e-3);
scene.add(mmRoot);
const xrNode = new THREE.Group();
xrNode.matrixAutoUpdate = false;
mmRoot.add(xrNode);
const structures = new Map();  // name -> {node, sha}
const tip = new THREE.Mesh(new THREE.SphereGeometry(2.5, 16, 12), new THREE.MeshBasicMaterial({ color: 0x33ffff }));
tip.matrixAutoUpdate = false;
tip.visible = false;
xrNode.add(tip);
const assetCache = new Map();  // sha256 -> Promise<THREE.Object3D>
// The CT: ctNode carries the structures' pose (T_tracker_from_image), its child the box.
const ctNode = new THREE.Group();
ctNode.matrixAutoUpdate = false;
ctNode.name = 'ct';
xrNode.add(ctNode);
const volumeCache = new Map();  // sha256 -> Promise<VolumeBox>
let volumeBox = null;
const CT_CHOICES = ['off', ...Object.keys(CT_PRESETS)];
let ctPreset = CT_CHOICES.includes(fragment.get('ct')) ? fragment.get('ct') : 'soft_tissue';
let depthTarget = null;  // the meshes' depth, where the CT's rays stop (monitor view)
// Every mesh writes depth in that pass, translucent ones too (glTF BLEND turns depthWrite
// off): a ray stops at the first surface it meets, as in the headset snapshot.
const depthOnly = new THREE.MeshBasicMaterial({ colorWrite: false, side: THREE.DoubleSide });
const loader = new GLTFLoader();
let fitted = false;

// Head-locked status line for AR: a canvas texture 0.6 m ahead, slightly below the gaze.
const statusCanvas = document.createElement('canvas');
statusCanvas.width = 1024; statusCanvas.height = 192;  // status line; the oldest alert
const statusTexture = new THREE.CanvasTexture(statusCanvas);
const headLocked = new THREE.Mesh(
  new THREE.PlaneGeometry(0.5, 0.094),
  new THREE.MeshBasicMaterial({ map: statusTexture, transparent: true, depthTest: false }),
);
headLocked.position.set(0, -0.12, -0.6);
headLocked.renderOrder = 10;
headLocked.visible = false;
camera.add(headLocked);

function setMatrixFromWire(object, data, offset) {
  // Wire matrices are row-major 4x4; Matrix4.set takes row-major arguments.
  const m = data;
  object.matrix.set(
    m[offset], m[offset + 1], m[offset + 2], m[offset + 3],
    m[offset + 4], m[offset + 5], m[offset + 6], m[offset + 7],
    m[offset + 8], m[offset + 9], m[offset + 10], m[offset + 11],
    m[offset + 12], m[offset + 13], m[offset + 14], m[offset + 15],
  );
  object.matrixWorldNeedsUpdate = true;
}

// --- the connection ------------------------------------------------------------------------
let ws = null;
let slot = null;          // latest-wins: {update, pubNs, tRecvMs}
let backoffMs = 250;
let telemetry = [];
let lastTelemetryMs = clientNowMs();
let xrRegistration = null;  // {matrix: Float64Array(16) row-major, rmsMm} made on this device
// The registration is kept with an XRAnchor where the runtime offers one: the anchor
// follows the headset's own map corrections, and the tracker stays where it was found
// relative to it (xrNode = anchor pose @ T_anchor_from_tracker, every frame).
let anchor = null;
let anchorWanted = false;
let T_anchor_from_tracker = null;  // THREE.Matrix4, mm

function send(type, body) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(envelope(type, body));
}

function connect() {
  ws = new WebSocket(wsUrl);
  ws.binaryType = 'arraybuffer';
  ws.onopen = () => {
    state.connected = true;
    backoffMs = 250;
    send('Hello', { protocol: PROTOCOL, client: clientName });
  };
  ws.onmessage = (event) => onMessage(event.data, clientNowMs());
  ws.onclose = (event) => {
    state.connected = false;
    state.closeReason = `${event.code} ${event.reason}`;
    state.reconnects += 1;
    setTimeout(connect, backoffMs);
    backoffMs = Math.min(backoffMs * 2, 5000);
  };
}

function onMessage(data, tRecvMs) {
  let raw;
  try { raw = openEnvelope(data); } catch (error) { state.dropped += 1; return; }
  const body = raw.body;
  switch (raw.type) {
    case 'SceneUpdate': {
      state.received += 1;
      if (!state.welcome || body.session !== state.session) return;  // an old run's stream
      if (raw.t_pub_ns <= state.latestPubNs && state.latest && state.latest.session === body.session) return;
      if (body.scene_version !== state.sceneVersion) {  // new assets: Hello again
        state.sceneVersion = body.scene_version;
        send('Hello', { protocol: PROTOCOL, client: clientName });
      }
      if (slot) state.superseded += 1;
      slot = { update: body, pubNs: raw.t_pub_ns, tRecvMs };
      state.receiveLatencyMs.push(tRecvMs + state.offsetMs - nsToMs(body.t_sensor_ns));
      if (state.receiveLatencyMs.length > 20000) state.receiveLatencyMs.splice(0, 10000);
      break;
    }
    case 'Welcome': onWelcome(body); break;
    case 'Heartbeat':  // each node's, twice a second at most (the bridge thins them)
      state.nodes[body.node] = { state: body.state, uptime: body.uptime_s, rate: body.rates_hz.published, seenMs: tRecvMs };
      break;
    case 'TrackerFrame':  // the tracker's tools, twice a second at most
      state.tools = { tracker: body.tracker, names: body.tools, statuses: body.statuses, seenMs: tRecvMs };
      break;
    case 'Alert': onAlert(body); break;
    case 'XrRegistration': {  // the registration the render node now holds for us
      const matrix = Float64Array.from(wireArray(body.T_xr_from_tracker).data);
      setMatrixFromWire(xrNode, matrix, 0);
      state.xrHeld = body.rms_mm;
      anchorWanted = true;
      // Kept on this device: a reconnect (a new session) sends it again after Welcome.
      xrRegistration = { matrix, wire: body.T_xr_from_tracker, rmsMm: body.rms_mm };
      state.xrRegistrationError = '';
      break;
    }
    case 'Reply':
      if (!body.ok) {
        state.lastError = body.error;
        const code = body.result && body.result.code;
        if (code === 'xr_registration') state.xrRegistrationError = body.error;
        if (code === 'evicted' || code === 'no_session') send('Hello', { protocol: PROTOCOL, client: clientName });
        else if (code === 'no_scene') setTimeout(() => send('SnapshotRequest', {}), 200);
      }
      break;
    default: break;
  }
}

function onWelcome(body) {
  const restarted = state.session && state.session !== body.session;
  state.welcome = body;
  state.session = body.session;
  state.sceneVersion = body.scene_version;
  if (restarted) { state.latestPubNs = -1; state.latest = null; }
  const T = xrRegistration ? xrRegistration.matrix : wireArray(body.T_xr_from_tracker).data;
  setMatrixFromWire(xrNode, T, 0);
  if (xrRegistration) send('XrRegistration', { T_xr_from_tracker: xrRegistration.wire, rms_mm: f64(xrRegistration.rmsMm) });
  for (const info of body.assets) loadAsset(info);
  loadVolume(body.volume || null);
  send('SnapshotRequest', {});
}

// The case's CT brick, once per hash: fetched from the bridge, its SHA-256 checked, then
// drawn under ctNode. A Welcome without one (or a newer one) removes the old box.
function loadVolume(info) {
  const sha = info ? info.sha256 : '';
  if (sha === state.volume.sha) return;
  state.volume.sha = sha;
  if (volumeBox) { ctNode.remove(volumeBox.mesh); volumeBox = null; }
  document.getElementById('ct-control').hidden = !info;
  if (!info) { state.volume.status = 'none'; return; }
  state.volume.status = 'loading';
  if (!volumeCache.has(sha)) {
    state.volume.fetches += 1;
    volumeCache.set(sha, fetch(`/assets/${sha}`, { headers: { Authorization: `Bearer ${token}` } })
      .then((r) => { if (!r.ok) throw new Error(`CT volume: HTTP ${r.status}`); return r.arrayBuffer(); })
      .then((buffer) => checkedBrick(buffer, info))
      .then((brick) => {
        state.volume.verified = brick.verified;
        if (!brick.verified) throw new Error('CT volume: no crypto.subtle here, its hash cannot be checked');
        return new VolumeBox(brick, wireArray(info.T_image_from_ijk).data);
      }));
  }
  volumeCache.get(sha).then((box) => {
    if (state.volume.sha !== sha) return;  // replaced meanwhile
    volumeBox = box;
    ctNode.add(box.mesh);
    state.volume.status = 'ready';
    state.volume.shape = box.shape;
    box.setStale(state.lookState === 'STALE');
    setCtPreset(ctPreset);
  }).catch((error) => {
    state.volume.status = 'error';
    state.volume.error = String(error.message || error);
    console.warn(state.volume.error);
    volumeCache.delete(sha);
  });
}

function setCtPreset(name) {
  if (!CT_CHOICES.includes(name)) throw new Error(`CT preset ${name}: one of ${CT_CHOICES.join(', ')}`);
  ctPreset = name;
  state.volume.preset = name;
  document.getElementById('ct-preset').value = name;
  if (!volumeBox) return;
  volumeBox.mesh.visible = name !== 'off';
  if (name !== 'off') volumeBox.setPreset(name);
}
state.setCtPreset = setCtPreset;

function loadAsset(info) {
  let entry = structures.get(info.name);
  if (!entry) {
    const node = new THREE.Group();
    node.matrixAutoUpdate = false;
    node.name = info.name;
    xrNode.add(node);
    entry = { node, sha: '' };
    structures.set(info.name, entry);
  }
  if (entry.sha === info.sha256) return;
  entry.sha = info.sha256;
  if (!assetCache.has(info.sha256)) {
    // By hash, once: the bridge serves them immutable, so the browser cache keeps them too.
    assetCache.set(info.sha256, fetch(`/assets/${info.sha256}`, { headers: { Authorization: `Bearer ${token}` } })
      .then((r) => { if (!r.ok) throw new Error(`asset ${info.name}: HTTP ${r.status}`); return r.arrayBuffer(); })
      .then((buffer) => new Promise((resolve, reject) => loader.parse(buffer, '', (gltf) => resolve(gltf.scene), reject))));
  }
  assetCache.get(info.sha256).then((object) => {
    if (entry.sha !== info.sha256) return;  // replaced meanwhile
    entry.node.clear();
    const copy = object.clone(true);
    copy.traverse((o) => {
      o.matrixAutoUpdate = true;  // static within the asset
      if (o.isMesh) {
        o.material = o.material.clone();
        o.userData.color = o.material.color.clone();
        o.userData.opacity = o.material.opacity;
        o.userData.transparent = o.material.transparent;
      }
    });
    entry.node.add(copy);
    state.assetsLoaded += 1;
  }).catch((error) => { console.warn(String(error)); assetCache.delete(info.sha256); entry.sha = ''; });
}

// --- alerts: shown until the user acknowledges (then AlertAck) -----------------------------
function onAlert(body) {
  const key = `${body.session}:${body.alert_id}`;
  if (state.alerts.has(key) || (state.acked && state.acked.has(key))) return;  // a resend
  state.alerts.set(key, body);
  redrawHeadLocked();
  state.alertsShown += 1;
  const div = document.createElement('div');
  div.className = `alert ${body.severity}`;
  div.dataset.key = key;
  div.dataset.code = body.code;
  const text = document.createElement('span');
  text.textContent = `${body.severity}: ${body.text}`;
  const button = document.createElement('button');
  button.textContent = 'Acknowledge';
  button.onclick = () => acknowledge(key);
  div.append(text, button);
  document.getElementById('alerts').appendChild(div);
  // INFO (recovered, registration accepted) goes by itself after 5 s; warnings and
  // critical alerts stay until someone acknowledges them.
  if (body.severity === 'INFO') setTimeout(() => acknowledge(key), 5000);
}

function acknowledge(key) {
  const body = state.alerts.get(key);
  if (!body) return;
  send('AlertAck', { session: body.session, alert_id: body.alert_id });
  state.alerts.delete(key);
  state.acked = state.acked || new Set();
  state.acked.add(key);
  const div = document.querySelector(`#alerts [data-key="${key}"]`);
  if (div) div.remove();
  redrawHeadLocked();
}
state.acknowledgeAll = () => [...state.alerts.keys()].forEach(acknowledge);

// --- per frame -----------------------------------------------------------------------------
function applyUpdate(update) {
  // A HIDDEN update carries identity poses: keep the last drawn ones (nothing is drawn
  // while HIDDEN anyway, and the place is right again with the next pose).
  if (update.overlay === 'HIDDEN') return;
  const Ts = wireArray(update.T_tracker_from_structures).data;
  update.structure_names.forEach((name, i) => {
    const entry = structures.get(name);
    if (entry) setMatrixFromWire(entry.node, Ts, 16 * i);
  });
  // The CT lies in the image frame the structures share: placed by their pose.
  if (update.structure_names.length) setMatrixFromWire(ctNode, Ts, 0);
  const p = wireArray(update.p_tip_tracker).data;
  tip.visible = Number.isFinite(p[0]) && Number.isFinite(p[1]) && Number.isFinite(p[2]);
  if (tip.visible) { tip.matrix.makeTranslation(p[0], p[1], p[2]); tip.matrixWorldNeedsUpdate = true; }
}

function setLook(overlayState) {
  if (overlayState === state.lookState) return;
  state.lookState = overlayState;
  const stale = overlayState === 'STALE';
  xrNode.traverse((o) => {
    if (!o.isMesh || !o.userData.color) return;
    o.material.color.copy(o.userData.color);
    if (stale) o.material.color.lerp(AMBER, 0.6).multiplyScalar(0.6);
    o.material.opacity = stale ? o.userData.opacity * 0.5 : o.userData.opacity;
    o.material.transparent = stale || o.userData.transparent;
  });
  if (volumeBox) volumeBox.setStale(stale);  // the CT looks as stale as the meshes
  state.volume.looks.push(overlayState);
  if (state.volume.looks.length > 100) state.volume.looks.shift();
}

function fitCamera() {
  const box = new THREE.Box3();
  for (const { node } of structures.values()) box.expandByObject(node);
  if (box.isEmpty()) return;
  const centre = box.getCenter(new THREE.Vector3());
  const size = box.getSize(new THREE.Vector3()).length();
  controls.target.copy(centre);
  camera.position.copy(centre).add(new THREE.Vector3(0, 0, Math.max(size * 1.6, 0.2)));
  camera.near = size / 50; camera.far = size * 50;
  camera.updateProjectionMatrix();
  controls.update();
  fitted = true;
}

// Test and diagnostics hook: the colour of canvas pixels (u right, v down) as drawn in a
// frame whose overlay is CURRENT (read right after that frame's render).
const pixelRequests = [];
state.readPixelsWhenCurrent = (points) => new Promise((resolve) => pixelRequests.push({ points, resolve }));
function readPixels(overlayState) {
  if (overlayState !== 'CURRENT') return;
  const gl = renderer.getContext();
  const height = gl.drawingBufferHeight;
  for (const { points, resolve } of pixelRequests.splice(0)) {
    resolve(points.map(([u, v]) => {
      const px = new Uint8Array(4);
      gl.readPixels(Math.round(u), height - 1 - Math.round(v), 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, px);
      return Array.from(px);
    }));
  }
}

const OVERLAY_RANK = { CURRENT: 0, STALE: 1, HIDDEN: 2 };

// The overlay rule on this client's clock. Run every frame and, so that a slow or stalled
// render loop cannot delay the decision (and the DOM banner), every 10 ms by a timer.
function evaluateOverlay(now) {
  let overlay = clientOverlay(state.latest, now, state.offsetMs);
  // One sample never gets better with time: once the overlay of a sample is STALE or
  // HIDDEN it stays so until a newer sample arrives. (A clock-offset estimate that moves
  // by a few ms, or a server verdict racing the page's own, must not bring an old pose
  // back into view.)
  const sampleNs = state.latest ? String(state.latest.t_sensor_ns) : '';
  if (sampleNs && sampleNs === state.overlaySampleNs && OVERLAY_RANK[overlay.state] < OVERLAY_RANK[state.overlay.state]) {
    overlay = { ...state.overlay, ageMs: overlay.ageMs };
  }
  state.overlaySampleNs = sampleNs;
  if (!state.latest && !state.connected) {
    overlay.reason = token ? 'not connected to the bridge' : 'no pairing token in the URL (scan the QR code the bridge printed)';
  }
  if (overlay.state !== state.overlay.state) {
    state.transitions.push({
      state: overlay.state, reason: overlay.reason, t_ms: now, age_ms: overlay.ageMs,
      t_sensor_ns: state.latest ? Number(state.latest.t_sensor_ns) : 0,
    });
    if (state.transitions.length > 1000) state.transitions.shift();
  }
  state.overlay = overlay;
  mmRoot.visible = overlay.state !== 'HIDDEN';  // HIDDEN: nothing drawn from the next frame
  return overlay;
}
setInterval(() => showStatus(evaluateOverlay(clientNowMs()), clientNowMs()), 10);

// The meshes' depth first (monitor view, with the CT drawn), so the CT's rays stop at the
// nearest mesh; then the CT alone into a target of reduced resolution (ctScale of the
// canvas), composited over the frame. ctScale adapts to the frame time, so a slow GPU draws
// a coarser CT rather than late poses: the overlay's freshness never waits on the CT. In
// WebXR the box is drawn in the main pass, without the depth pass (rays cross it whole).
const CT_LAYER = 5;  // three's WebXR uses layers 1 and 2 for the eyes
const ctQuad = new THREE.Mesh(new THREE.PlaneGeometry(2, 2), new THREE.ShaderMaterial({
  uniforms: { uImage: { value: null } },
  vertexShader: 'varying vec2 vUv; void main() { vUv = uv; gl_Position = vec4(position.xy, 0.0, 1.0); }',
  fragmentShader: 'uniform sampler2D uImage; varying vec2 vUv; void main() { gl_FragColor = texture2D(uImage, vUv); }',
  transparent: true, depthTest: false, depthWrite: false,
  blending: THREE.CustomBlending, blendSrc: THREE.OneFactor, blendDst: THREE.OneMinusSrcAlphaFactor,
}));
ctQuad.frustumCulled = false;
const ctQuadScene = new THREE.Scene();
ctQuadScene.add(ctQuad);
const ctQuadCamera = new THREE.OrthographicCamera(-1, 1, 1, -1, 0, 1);
let ctTarget = null;
let ctScale = Number(fragment.get('ctscale')) > 0 ? Math.min(1, Number(fragment.get('ctscale'))) : 1;
const ctScaleFixed = Number(fragment.get('ctscale')) > 0;
const CT_SCALES = [1, 0.5, 0.25, 0.125];
function adaptCtScale() {
  // Down at once, by the pixel count the frame time asks for (~25 ms a frame); up one
  // step at a time, and only after 10 fast frames.
  if (ctScaleFixed || state.frameMs.length < 5) return;
  const median = (n) => state.frameMs.slice(-n).sort((a, b) => a - b)[Math.floor(n / 2)];
  const i = CT_SCALES.indexOf(ctScale);
  const slow = median(5);
  if (slow > 33 && i < CT_SCALES.length - 1) {
    const want = ctScale * Math.sqrt(25 / slow);
    ctScale = CT_SCALES.find((s) => s <= want) || CT_SCALES[CT_SCALES.length - 1];
    state.frameMs.length = 0;
  } else if (state.frameMs.length >= 10 && median(10) < 12 && i > 0) {
    ctScale = CT_SCALES[i - 1];
    state.frameMs.length = 0;
  }
  state.volume.scale = ctScale;
}

function draw() {
  const ctDrawn = volumeBox && volumeBox.mesh.visible && mmRoot.visible;
  if (volumeBox) volumeBox.mesh.layers.set(renderer.xr.isPresenting ? 0 : CT_LAYER);
  if (!ctDrawn || renderer.xr.isPresenting) {
    if (volumeBox) volumeBox.setDepth(null);
    renderer.render(scene, camera);
    return;
  }
  const size = renderer.getDrawingBufferSize(new THREE.Vector2());
  if (!depthTarget || depthTarget.width !== size.x || depthTarget.height !== size.y) {
    if (depthTarget) depthTarget.dispose();
    const depthTexture = new THREE.DepthTexture(size.x, size.y);
    depthTexture.type = THREE.FloatType;
    depthTarget = new THREE.WebGLRenderTarget(size.x, size.y, { depthTexture, depthBuffer: true });
  }
  const w = Math.max(1, Math.round(size.x * ctScale)), h = Math.max(1, Math.round(size.y * ctScale));
  if (!ctTarget || ctTarget.width !== w || ctTarget.height !== h) {
    if (ctTarget) ctTarget.dispose();
    ctTarget = new THREE.WebGLRenderTarget(w, h, { depthBuffer: false });
    ctTarget.texture.minFilter = ctTarget.texture.magFilter = THREE.LinearFilter;
    ctQuad.material.uniforms.uImage.value = ctTarget.texture;
  }
  const clear = renderer.getClearColor(new THREE.Color());
  const clearAlpha = renderer.getClearAlpha();
  scene.overrideMaterial = depthOnly;  // the meshes' depth (the box is on CT_LAYER: not here)
  renderer.setRenderTarget(depthTarget);
  renderer.clear();
  renderer.render(scene, camera);
  scene.overrideMaterial = null;
  volumeBox.setDepth(depthTarget.depthTexture, w, h);
  camera.layers.set(CT_LAYER);  // the CT alone, premultiplied over transparent black
  renderer.setRenderTarget(ctTarget);
  renderer.setClearColor(0x000000, 0);
  renderer.clear();
  renderer.render(scene, camera);
  camera.layers.set(0);
  renderer.setClearColor(clear, clearAlpha);
  renderer.setRenderTarget(null);
  renderer.render(scene, camera);
  renderer.autoClear = false;
  renderer.render(ctQuadScene, ctQuadCamera);
  renderer.autoClear = true;
}

// The page's frame time with the CT drawn and with it off, in the same run (each frame
// waited for with a 1-pixel read back): a benchmark figure, never a test's pass/fail.
state.measureFrameMs = (n = 20) => {
  const gl = renderer.getContext();
  const pixel = new Uint8Array(4);
  const time = () => {
    draw();
    gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, pixel);
    const start = performance.now();
    for (let i = 0; i < n; i++) { draw(); gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, pixel); }
    return (performance.now() - start) / n;
  };
  const wasVisible = volumeBox ? volumeBox.mesh.visible : false;
  const out = { width: renderer.domElement.width, height: renderer.domElement.height, ctScale };
  if (volumeBox) { volumeBox.mesh.visible = true; out.volumeMs = time(); }
  if (volumeBox) volumeBox.mesh.visible = false;
  out.meshesMs = time();
  if (volumeBox) volumeBox.mesh.visible = wasVisible;
  return out;
};
// Where the CT's box lies on the canvas (CSS pixels, u right, v down): its 8 corners
// projected with the monitor camera, as a rectangle; null without a volume.
state.volumeScreenRect = () => {
  if (!volumeBox) return null;
  scene.updateMatrixWorld(true);
  const us = [], vs = [];
  for (const x of [-0.5, 0.5]) for (const y of [-0.5, 0.5]) for (const z of [-0.5, 0.5]) {
    const p = new THREE.Vector3(x, y, z).applyMatrix4(volumeBox.mesh.matrixWorld).project(camera);
    us.push((p.x + 1) / 2 * renderer.domElement.clientWidth);
    vs.push((1 - p.y) / 2 * renderer.domElement.clientHeight);
  }
  return { u0: Math.min(...us), u1: Math.max(...us), v0: Math.min(...vs), v1: Math.max(...vs) };
};

let lastFrameMs = 0;
function frame() {
  const now = clientNowMs();
  if (lastFrameMs) { state.frameMs.push(now - lastFrameMs); if (state.frameMs.length > 2000) state.frameMs.shift(); }
  lastFrameMs = now;
  if (slot) {  // the newest update only: older ones were replaced in the slot
    const { update, pubNs, tRecvMs } = slot;
    slot = null;
    applyUpdate(update);
    state.latest = update;
    state.latestPubNs = pubNs;
    state.applied += 1;
    state.appliedLatencyMs.push(now + state.offsetMs - nsToMs(update.t_sensor_ns));
    if (state.appliedLatencyMs.length > 20000) state.appliedLatencyMs.splice(0, 10000);
    telemetry.push([update.frame_number, update.t_sensor_ns, msToNs(tRecvMs), msToNs(now)]);
  }
  const overlay = evaluateOverlay(now);
  mmRoot.visible = overlay.state !== 'HIDDEN';  // HIDDEN: nothing drawn
  setLook(overlay.state);
  if (!fitted && state.mode === 'monitor' && state.latest && overlay.state !== 'HIDDEN' && state.assetsLoaded) fitCamera();
  showStatus(overlay, now);
  if (now - lastTelemetryMs >= TELEMETRY_PERIOD_MS) flushTelemetry(now);
  if (state.mode === 'monitor') controls.update();
  if (volumeBox && volumeBox.mesh.visible) adaptCtScale();
  draw();
  state.frames = (state.frames || 0) + 1;
  if (pixelRequests.length) readPixels(overlay.state);
  if (collecting) collectGrip(now);
  if (renderer.xr.isPresenting) followAnchor();
}

function flushTelemetry(now) {
  lastTelemetryMs = now;
  if (!telemetry.length || !state.welcome) return;
  const n = telemetry.length;
  const column = (k) => ({ dtype: '<i8', shape: [n], data: new Uint8Array(BigInt64Array.from(telemetry, (row) => BigInt(row[k])).buffer) });
  send('HeadsetTelemetry', {
    client: clientName,
    clock_offset_ns: msToNs(state.offsetMs),
    frame_numbers: column(0), t_sensor_ns: column(1), t_receive_ns: column(2), t_display_ns: column(3),
  });
  telemetry = [];
}

// --- status: banner, table, distances, head-locked line --------------------------------
const banner = document.getElementById('banner');
function bannerText(overlay) {
  const u = state.latest;
  if (collecting) return `REGISTERING HEADSET: wave the controller (${((collecting.until - clientNowMs()) / 1000).toFixed(0)} s)`;
  if (overlay.state === 'HIDDEN') return `HIDDEN: ${overlay.reason || 'no overlay'} - model not shown`;
  const parts = [overlay.state === 'STALE' ? 'STALE' : 'LIVE', u.status];
  // The models are those of a deformable registration: say so (Welcome.deformed_for).
  const deformedFor = state.welcome && state.welcome.deformed_for;
  if (deformedFor && BigInt(deformedFor) === BigInt(u.registration_id)) parts.push('DEFORMABLE');
  if (u.needs_verification) parts.push('VERIFY REGISTRATION');
  const d = wireArray(u.target_distances_mm).data;
  if (d.length) {
    let best = -1;
    d.forEach((v, i) => { if (Number.isFinite(v) && (best < 0 || v < d[best])) best = i; });
    if (best >= 0) parts.push(`${u.target_names[best]} ${d[best].toFixed(1)} mm`);
  }
  if (Number.isFinite(u.predicted_tre_mm)) parts.push(`TRE ${u.predicted_tre_mm.toFixed(1)} mm`);
  if (overlay.state === 'STALE') parts.push(overlay.reason);
  return parts.join(' | ');
}

let lastTableMs = 0;
function showStatus(overlay, now) {
  const text = bannerText(overlay);
  if (text !== state.banner) {
    state.banner = text;
    banner.textContent = text;
    banner.className = `banner ${overlay.state.toLowerCase()}-state`;
    drawHeadLocked(text, overlay.state);
  }
  if (now - lastTableMs < 200) return;  // the DOM table at 5 Hz is plenty
  lastTableMs = now;
  const u = state.latest;
  const age = Number.isFinite(overlay.ageMs) ? `${overlay.ageMs.toFixed(0)} ms` : '-';
  const rows = [
    ['bridge', state.connected ? 'connected' : 'disconnected'],
    ['render session', state.session ? state.session.slice(0, 8) : '-'],
    ['overlay', overlay.state],
    ['navigation', u ? u.status : '-'],
    ['headset marker', u ? (u.headset_ok ? 'tracked' : 'not tracked') : '-'],
    ['pointer tip', tip.visible ? 'tracked' : 'unknown'],
    ['registration', u ? String(u.registration_id) : '-'],
    ['predicted TRE', u && Number.isFinite(u.predicted_tre_mm) ? `${u.predicted_tre_mm.toFixed(2)} mm` : '-'],
    ['pose age', age],
    ['clock sync', Number.isFinite(state.offsetErrorMs) ? `± ${state.offsetErrorMs.toFixed(2)} ms (${state.clockSamples} pings)` : '-'],
    ['updates', `${state.applied} applied, ${state.superseded} superseded`],
    ['headset registration', state.xrRegistrationError ? `refused: ${state.xrRegistrationError}`
      : Number.isFinite(state.xrHeld) ? `residual ${state.xrHeld.toFixed(2)} mm` : 'default'],
  ];
  for (const [name, node] of Object.entries(state.nodes).sort()) {
    const silent = now - node.seenMs > 2000;  // the supervisor's heartbeat limit
    rows.push([`node ${name}`, silent ? 'SILENT' : `${node.state}, ${Number.isFinite(node.rate) ? node.rate.toFixed(0) : '-'} Hz`]);
  }
  if (state.tools) {
    const old = now - state.tools.seenMs > 2000;
    state.tools.names.forEach((name, i) => rows.push([`tool ${name}`, old ? 'no data' : state.tools.statuses[i]]));
  }
  fillTable('status', rows);
  if (u) {
    const t = wireArray(u.target_distances_mm).data;
    const c = wireArray(u.critical_distances_mm).data;
    const mm = (v) => (Number.isFinite(v) ? `${v.toFixed(1)} mm` : '-');
    fillTable('distances', [
      ...u.target_names.map((n, i) => [`target ${n}`, mm(t[i])]),
      ...u.critical_names.map((n, i) => [`critical ${n}`, mm(c[i])]),
    ]);
  }
}

function fillTable(id, rows) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren(...rows.map(([k, v]) => {
    const tr = document.createElement('tr');
    tr.dataset.key = k;
    const a = document.createElement('td'); a.textContent = k;
    const b = document.createElement('td'); b.textContent = v;
    tr.append(a, b);
    return tr;
  }));
}

// Head-locked in AR: the status line, and below it the oldest alert not yet acknowledged
// (the trigger acknowledges it); the DOM alerts are not seen inside an immersive session.
function drawHeadLocked(text, overlayState) {
  state.headLockedText = text;
  const g = statusCanvas.getContext('2d');
  g.clearRect(0, 0, statusCanvas.width, statusCanvas.height);
  g.fillStyle = { CURRENT: '#0a3d1ccc', STALE: '#5a3c00cc', HIDDEN: '#5a0f0fcc' }[overlayState];
  g.fillRect(0, 0, statusCanvas.width, 96);
  g.fillStyle = { CURRENT: '#5fe08a', STALE: '#ffb000', HIDDEN: '#ff6a6a' }[overlayState];
  g.font = 'bold 40px system-ui, sans-serif';
  g.fillText(text.slice(0, 60), 16, 62);
  const alert = state.alerts.values().next().value;
  state.headLockedAlert = alert ? alert.code : '';
  if (alert) {
    g.fillStyle = { CRITICAL: '#5a0f0fee', WARNING: '#5a3c00ee', INFO: '#0a3d1cee' }[alert.severity];
    g.fillRect(0, 96, statusCanvas.width, 96);
    g.fillStyle = '#ffffff';
    g.font = 'bold 34px system-ui, sans-serif';
    g.fillText(`${alert.severity}: ${alert.text}`.slice(0, 62), 16, 140);
    g.font = '26px system-ui, sans-serif';
    g.fillText('trigger: acknowledge', 16, 178);
  }
  statusTexture.needsUpdate = true;
}
function redrawHeadLocked() { drawHeadLocked(state.banner || '', state.overlay.state); }

// --- immersive-ar (Quest 3 passthrough; iwer in tests) ---------------------------------
async function enterAR() {
  const session = await navigator.xr.requestSession('immersive-ar', {
    requiredFeatures: ['local-floor'], optionalFeatures: ['anchors', 'hit-test'],
  });
  renderer.xr.setReferenceSpaceType('local-floor');
  renderer.setClearColor(0x000000, 0);  // passthrough shows through
  await renderer.xr.setSession(session);
  state.mode = 'ar';
  headLocked.visible = true;
  controls.enabled = false;
  // The XR space reset (e.g. the user re-centred): T_xr_from_tracker no longer holds.
  renderer.xr.getReferenceSpace().addEventListener('reset', () => {
    state.xrReset = (state.xrReset || 0) + 1;
    xrRegistration = null;
    anchor = null;
    T_anchor_from_tracker = null;
    state.anchored = false;
  });
  // The headset registration from inside AR: squeeze the right controller's grip (the
  // controller with the tracked marker), then wave it through wide turns for 10 s.
  session.addEventListener('select', () => {
    const oldest = state.alerts.keys().next().value;
    if (oldest) acknowledge(oldest);
  });
  session.addEventListener('squeezestart', (event) => {
    if (event.inputSource.handedness === 'right' && !collecting) state.registerHeadset(10, 'right');
  });
  session.addEventListener('end', () => {
    state.mode = 'monitor';
    headLocked.visible = false;
    controls.enabled = true;
    renderer.setClearColor(0x000000, 1);
  });
  return true;
}
state.enterAR = enterAR;
// The session's registration made on this device (the headset registration procedure):
// row-major 16 numbers in mm. Kept for reconnects, sent after every Welcome.
state.setXrRegistration = (rowMajor, rmsMm) => {
  const matrix = Float64Array.from(rowMajor);
  xrRegistration = { matrix, wire: { dtype: '<f8', shape: [4, 4], data: new Uint8Array(matrix.buffer) }, rmsMm };
  setMatrixFromWire(xrNode, matrix, 0);
  anchorWanted = true;
  send('XrRegistration', { T_xr_from_tracker: xrRegistration.wire, rms_mm: f64(rmsMm) });
};
// A structure's bounding-box centre in the world (xr frame, mm).
state.structureCentreMm = (name) => {
  scene.updateMatrixWorld(true);
  const box = new THREE.Box3().setFromObject(structures.get(name).node);
  return box.getCenter(new THREE.Vector3()).multiplyScalar(1e3).toArray();
};
// The headset registration (docs/headset-protocol.md, XrPairedPoses): while the user waves
// the controller that carries the tracked marker, its grip pose in this device's world is
// collected each frame with the instant on the server clock; the render node pairs them
// with the tracker's marker poses, solves T_xr_from_tracker, and answers XrRegistration
// (kept for this session and re-sent after a reconnect) or a one-line reason.
let collecting = null;  // {until, handedness, times: [], poses: []}
function collectGrip(now) {
  const frame = renderer.xr.getFrame();
  const session = renderer.xr.getSession();
  if (!frame || !session) return;
  for (const source of session.inputSources) {
    if (source.handedness !== collecting.handedness || !source.gripSpace) continue;
    const pose = frame.getPose(source.gripSpace, renderer.xr.getReferenceSpace());
    if (!pose) continue;
    const m = pose.transform.matrix;  // column-major, metres
    collecting.times.push(msToNs(now + state.offsetMs));
    collecting.poses.push([
      m[0], m[4], m[8], m[12] * 1e3, m[1], m[5], m[9], m[13] * 1e3,
      m[2], m[6], m[10], m[14] * 1e3, 0, 0, 0, 1]);
  }
  if (now >= collecting.until) {
    const { times, poses } = collecting;
    collecting = null;
    state.xrCollected = poses.length;
    send('XrPairedPoses', {
      t_sensor_ns: { dtype: '<i8', shape: [times.length], data: new Uint8Array(BigInt64Array.from(times).buffer) },
      T_xr_from_grip: { dtype: '<f8', shape: [poses.length, 4, 4], data: new Uint8Array(Float64Array.from(poses.flat()).buffer) },
    });
  }
}
const mmFromXrPose = (m) => new THREE.Matrix4().fromArray(m).premultiply(new THREE.Matrix4().makeScale(1e3, 1e3, 1e3)).multiply(new THREE.Matrix4().makeScale(1e-3, 1e-3, 1e-3));
function followAnchor() {
  const frame = renderer.xr.getFrame();
  const space = renderer.xr.getReferenceSpace();
  if (!frame || !space) return;
  if (anchorWanted && frame.createAnchor) {
    anchorWanted = false;
    if (anchor && anchor.delete) anchor.delete();
    anchor = null;
    T_anchor_from_tracker = null;
    frame.createAnchor(new XRRigidTransform(), space)
      .then((created) => { anchor = created; })
      .catch((error) => { state.anchorError = String(error); });
  }
  if (!anchor) return;
  const pose = frame.getPose(anchor.anchorSpace, space);
  if (!pose) return;
  const A = mmFromXrPose(pose.transform.matrix);  // T_xr_from_anchor, mm
  if (!T_anchor_from_tracker) {  // first sight: where the registration sits on the anchor
    T_anchor_from_tracker = A.clone().invert().multiply(xrNode.matrix);
    state.anchored = true;
  }
  xrNode.matrix.multiplyMatrices(A, T_anchor_from_tracker);
  xrNode.matrixWorldNeedsUpdate = true;
}
state.registerHeadset = (seconds = 10, handedness = 'right') => {
  state.xrRegistrationError = '';
  collecting = { until: clientNowMs() + seconds * 1000, handedness, times: [], poses: [] };
};
// World matrices in mm (column-major, as three.js keeps them): T_xr_from_structure.
state.structureWorldMm = () => {
  scene.updateMatrixWorld(true);
  const toMm = new THREE.Matrix4().makeScale(1e3, 1e3, 1e3);
  const out = {};
  for (const [name, entry] of structures) out[name] = toMm.clone().multiply(entry.node.matrixWorld).elements;
  return out;
};
// The newest update applied: its sample time, frame and structure poses (row-major, mm).
state.latestPoses = () => {
  const u = state.latest;
  if (!u) return null;
  return {
    t_sensor_ns: String(u.t_sensor_ns), frame_number: u.frame_number, names: u.structure_names,
    T: Array.from(wireArray(u.T_tracker_from_structures).data),
  };
};
state.xrCameraMatrices = () => {
  const cam = renderer.xr.getCamera();
  const views = cam.cameras.length ? cam.cameras : [cam];
  return views.map((c) => ({ world: c.matrixWorld.elements, projection: c.projectionMatrix.elements, viewport: c.viewport ? [c.viewport.x, c.viewport.y, c.viewport.z, c.viewport.w] : null }));
};

if (navigator.xr) {
  navigator.xr.isSessionSupported('immersive-ar').then((ok) => {
    const button = document.getElementById('enter-ar');
    button.hidden = !ok;
    button.onclick = () => enterAR().catch((e) => console.warn(String(e)));
  }).catch(() => {});
}

document.getElementById('ct-preset').onchange = (event) => setCtPreset(event.target.value);
state.volume.preset = ctPreset;

// --- start ---------------------------------------------------------------------------------
addEventListener('resize', () => {
  camera.aspect = innerWidth / innerHeight;
  camera.updateProjectionMatrix();
  renderer.setSize(innerWidth, innerHeight);
});
const worker = new Worker('/static/clock_worker.js', { type: 'module' });
worker.onmessage = (event) => {
  state.offsetMs = event.data.offsetMs;
  state.offsetErrorMs = event.data.errorMs;
  state.clockSamples = event.data.samples;
};
if (token) {
  worker.postMessage({ url: wsUrl });
  connect();
  fetch('/pair.svg', { headers: { Authorization: `Bearer ${token}` } })
    .then((r) => (r.ok ? r.blob() : null))
    .then((blob) => { if (blob) document.getElementById('pair-qr').src = URL.createObjectURL(blob); })
    .catch(() => {});
}
renderer.setAnimationLoop(frame);
