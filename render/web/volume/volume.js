// WebGL2 volume rendering of a case bundle's CT with its meshes, for three.js.
//
// The CT brick (nav/imaging/brick.py: 16-bit, HU = value + hu_offset, i fastest, gzip,
// named by sha256) becomes a Data3DTexture (half float, linear filtering, core in WebGL2)
// on a unit box placed by T_image_from_ijk, so three's world space is the case's image
// frame: LPS, mm. A ShaderMaterial ray-marches the box front to back; colour and opacity
// come from a transfer function (a 256-texel ramp over the window) and opacity is given
// per mm of ray, so it does not depend on the step. Meshes (and the tool tip) are drawn
// first, into the screen and into a depth texture; each ray stops at the nearest mesh, so
// a vessel inside the liver is hidden by the parenchyma in front of it and the volume in
// front of a mesh is composited over it (premultiplied alpha), as the eye would see it.
//
// One ray-marcher for both pages: VolumeBox (the box, its shader and its controls) is what
// this case page (VolumeView) and the headset/monitor page (render/web/static/app.js, which
// gets the brick from the render node by hash) both draw with; checkedBrick turns a brick's
// bytes into voxels after checking its SHA-256. The box may sit anywhere in a scene graph
// (under the page's mm root, the session's xr node and the structures' pose): its per-camera
// uniforms are set in onBeforeRender from its world matrix and the camera drawing it (each
// eye in WebXR).

import * as THREE from 'three';
import { PLYLoader } from 'three/addons/loaders/PLYLoader.js';
import { parseCaseToml } from './case_toml.js';

// Control points over the window (t = 0 at level - width/2, 1 at level + width/2):
// [t, r, g, b, opacity per mm].
export const PRESETS = {
  soft_tissue: {
    level: 40, width: 500,
    points: [[0.0, 0, 0, 0, 0], [0.25, 0.55, 0.35, 0.25, 0.0], [0.45, 0.75, 0.45, 0.35, 0.004],
             [0.6, 0.9, 0.6, 0.5, 0.015], [0.8, 1.0, 0.9, 0.8, 0.05], [1.0, 1, 1, 1, 0.2]],
  },
  vessels: {
    level: 250, width: 300,
    points: [[0.0, 0, 0, 0, 0], [0.3, 0.6, 0.1, 0.1, 0.0], [0.5, 0.85, 0.15, 0.12, 0.06],
             [0.8, 1.0, 0.5, 0.4, 0.2], [1.0, 1, 0.95, 0.9, 0.5]],
  },
  bone: {
    level: 700, width: 1400,
    points: [[0.0, 0, 0, 0, 0], [0.15, 0.7, 0.6, 0.5, 0.0], [0.3, 0.9, 0.85, 0.75, 0.1],
             [1.0, 1, 1, 1, 0.6]],
  },
};

const VERTEX = /* glsl */ `
out vec3 vLocal;
void main() {
  vLocal = position;
  gl_Position = projectionMatrix * modelViewMatrix * vec4(position, 1.0);
}`;

const FRAGMENT = /* glsl */ `
precision highp float;
precision highp sampler3D;
uniform sampler3D uVolume;
uniform sampler2D uTransfer;
uniform sampler2D uDepth;
uniform vec2 uResolution;
uniform vec3 uCameraLocal;
uniform mat4 uModel;
uniform mat4 uInverseModel;
uniform mat4 uInverseViewProjection;
uniform float uLow;
uniform float uWidth;
uniform vec3 uClipMin;
uniform vec3 uClipMax;
uniform float uStep;
uniform float uOpacity;
uniform float uTintMix;
uniform vec3 uTint;
in vec3 vLocal;
out vec4 outColor;

vec2 hitBox(vec3 o, vec3 d, vec3 lo, vec3 hi) {
  vec3 inv = 1.0 / d;
  vec3 a = (lo - o) * inv, b = (hi - o) * inv;
  vec3 tmin = min(a, b), tmax = max(a, b);
  return vec2(max(max(tmin.x, tmin.y), tmin.z), min(min(tmax.x, tmax.y), tmax.z));
}

void main() {
  vec3 o = uCameraLocal;
  vec3 d = normalize(vLocal - uCameraLocal);
  vec2 t = hitBox(o, d, max(vec3(-0.5), uClipMin), min(vec3(0.5), uClipMax));
  t.x = max(t.x, 0.0);
  // the nearest mesh along this ray (depth 1: none)
  float depth = texture(uDepth, gl_FragCoord.xy / uResolution).r;
  if (depth < 1.0) {
    vec4 p = uInverseViewProjection * vec4(vec2(gl_FragCoord.xy / uResolution) * 2.0 - 1.0, depth * 2.0 - 1.0, 1.0);
    vec3 local = (uInverseModel * vec4(p.xyz / p.w, 1.0)).xyz;
    t.y = min(t.y, dot(local - o, d));
  }
  if (t.y <= t.x) discard;
  float mmPerUnit = length((uModel * vec4(d, 0.0)).xyz);
  float stepMm = uStep * mmPerUnit;
  vec4 sum = vec4(0.0);
  // jitter the first sample by the pixel so the step pattern does not show as rings
  float jitter = fract(sin(dot(gl_FragCoord.xy, vec2(12.9898, 78.233))) * 43758.5453);
  for (int i = 0; i < 2048; i++) {
    float s = t.x + (float(i) + jitter) * uStep;
    if (s > t.y || sum.a > 0.98) break;
    float hu = texture(uVolume, o + s * d + 0.5).r;
    vec4 tf = texture(uTransfer, vec2(clamp((hu - uLow) / uWidth, 0.0, 1.0), 0.5));
    float alpha = 1.0 - pow(1.0 - min(tf.a, 0.999), stepMm);
    sum.rgb += (1.0 - sum.a) * alpha * tf.rgb;
    sum.a += (1.0 - sum.a) * alpha;
  }
  // STALE: as the meshes, towards amber, dimmer and fainter (premultiplied: scale all)
  sum.rgb = mix(sum.rgb, uTint * dot(sum.rgb, vec3(0.3333)), uTintMix);
  outColor = sum * uOpacity;  // premultiplied, blended over the meshes drawn before
}`;

function transferTexture(points) {
  const data = new Float32Array(256 * 4);
  for (let i = 0; i < 256; i++) {
    const t = i / 255;
    let k = 0;
    while (k < points.length - 2 && points[k + 1][0] < t) k++;
    const [t0, ...a] = points[k], [t1, ...b] = points[k + 1];
    const f = Math.min(1, Math.max(0, (t - t0) / Math.max(1e-6, t1 - t0)));
    for (let c = 0; c < 4; c++) data[i * 4 + c] = a[c] + f * (b[c] - a[c]);
  }
  const texture = new THREE.DataTexture(data, 256, 1, THREE.RGBAFormat, THREE.FloatType);
  texture.minFilter = texture.magFilter = THREE.NearestFilter;
  texture.needsUpdate = true;
  return texture;
}

function colourOf(value) {
  if (typeof value === 'string') return new THREE.Color(value);
  if (Array.isArray(value)) return new THREE.Color(value[0], value[1], value[2]);
  return new THREE.Color(0.7, 0.7, 0.7);
}

async function sha256Hex(buffer) {
  if (!crypto.subtle) return null; // not a secure context: the hash cannot be checked here
  const digest = await crypto.subtle.digest('SHA-256', buffer);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

// A brick's bytes as stored (gzip, nav/imaging/brick.py) -> its voxels, after checking
// them against `info.sha256` (a mismatch, a short or long brick: an Error, one line).
// `info`: {sha256, shape: [ni, nj, nk], hu_offset}. Without crypto.subtle (not a secure
// context) the hash cannot be checked: `verified` says so.
export async function checkedBrick(compressed, info) {
  const digest = await sha256Hex(compressed);
  if (digest !== null && digest !== info.sha256) {
    throw new Error(`volume brick: sha256 ${digest.slice(0, 12)}... is not ${info.sha256.slice(0, 12)}...`);
  }
  const stream = new Blob([compressed]).stream().pipeThrough(new DecompressionStream('gzip'));
  const bytes = await new Response(stream).arrayBuffer();
  const [ni, nj, nk] = info.shape;
  if (bytes.byteLength !== ni * nj * nk * 2) {
    throw new Error(`volume brick: ${bytes.byteLength} bytes, shape ${ni}x${nj}x${nk} needs ${ni * nj * nk * 2}`);
  }
  return { raw: new Uint16Array(bytes), shape: [ni, nj, nk], huOffset: info.hu_offset, verified: digest !== null };
}

const FAR_DEPTH = (() => {  // "no mesh along this ray": where no depth pass is drawn (WebXR)
  const texture = new THREE.DataTexture(new Float32Array([1, 1, 1, 1]), 1, 1, THREE.RGBAFormat, THREE.FloatType);
  texture.needsUpdate = true;
  return texture;
})();

// The CT as a ray-marched box: `brick` from checkedBrick, `T_image_from_ijk` 16 numbers,
// row-major (voxel centre -> image LPS mm). `mesh` is the box to add to a scene (its local
// frame is the image frame's unit box; parent it under whatever places the image frame).
export class VolumeBox {
  constructor(brick, T_image_from_ijk) {
    const [ni, nj, nk] = brick.shape;
    const half = new Uint16Array(brick.raw.length);
    for (let i = 0; i < brick.raw.length; i++) half[i] = THREE.DataUtils.toHalfFloat(brick.raw[i] + brick.huOffset);
    const texture = new THREE.Data3DTexture(half, ni, nj, nk);
    texture.format = THREE.RedFormat;
    texture.type = THREE.HalfFloatType;
    texture.minFilter = texture.magFilter = THREE.LinearFilter;
    texture.unpackAlignment = 1;
    texture.needsUpdate = true;
    // unit box [-0.5, 0.5]^3 -> voxel indices [-0.5, n - 0.5] -> LPS by T_image_from_ijk
    const T = new THREE.Matrix4().fromArray(Array.from(T_image_from_ijk)).transpose();
    const toIjk = new THREE.Matrix4().makeTranslation((ni - 1) / 2, (nj - 1) / 2, (nk - 1) / 2)
      .multiply(new THREE.Matrix4().makeScale(ni, nj, nk));
    const model = T.clone().multiply(toIjk);
    this.shape = [ni, nj, nk];
    this.model = model;  // box -> image (mm)
    this.material = new THREE.ShaderMaterial({
      glslVersion: THREE.GLSL3,
      vertexShader: VERTEX,
      fragmentShader: FRAGMENT,
      side: THREE.BackSide,
      transparent: true,
      depthTest: false,
      depthWrite: false,
      blending: THREE.CustomBlending,
      blendSrc: THREE.OneFactor,
      blendDst: THREE.OneMinusSrcAlphaFactor,
      uniforms: {
        uVolume: { value: texture },
        uTransfer: { value: null },
        uDepth: { value: FAR_DEPTH },
        uResolution: { value: new THREE.Vector2(1, 1) },
        uCameraLocal: { value: new THREE.Vector3() },
        uModel: { value: model },
        uInverseModel: { value: model.clone().invert() },
        uInverseViewProjection: { value: new THREE.Matrix4() },
        uLow: { value: 0 },
        uWidth: { value: 1 },
        uClipMin: { value: new THREE.Vector3(-0.5, -0.5, -0.5) },
        uClipMax: { value: new THREE.Vector3(0.5, 0.5, 0.5) },
        uStep: { value: 0.5 / Math.max(ni, nj, nk) },
        uOpacity: { value: 1 },
        uTintMix: { value: 0 },
        uTint: { value: new THREE.Color(1.0, 0.69, 0.0) },
      },
    });
    this.mesh = new THREE.Mesh(new THREE.BoxGeometry(1, 1, 1), this.material);
    this.mesh.name = 'ct-volume';
    this.mesh.matrixAutoUpdate = false;
    this.mesh.matrix.copy(model);
    this.mesh.frustumCulled = false;
    this.mesh.renderOrder = 100;  // after the meshes, translucent ones included
    const u = this.material.uniforms;
    this.mesh.onBeforeRender = (renderer, scene, camera) => {
      // world -> box, and the drawing camera (one eye in WebXR) in the box's frame
      u.uInverseModel.value.copy(this.mesh.matrixWorld).invert();
      u.uCameraLocal.value.setFromMatrixPosition(camera.matrixWorld).applyMatrix4(u.uInverseModel.value);
      u.uInverseViewProjection.value.multiplyMatrices(camera.projectionMatrix, camera.matrixWorldInverse).invert();
    };
    this.stale = false;
    this.setPreset('soft_tissue');
  }

  setPreset(name) {
    const preset = PRESETS[name];
    if (!preset) throw new Error(`unknown preset ${name}: ${Object.keys(PRESETS).join(', ')}`);
    this.preset = name;
    const old = this.material.uniforms.uTransfer.value;
    this.material.uniforms.uTransfer.value = transferTexture(preset.points);
    if (old) old.dispose();
    this.setWindow(preset.level, preset.width);
  }

  setWindow(level, width) {
    this.level = level;
    this.width = Math.max(1, width);
    this.material.uniforms.uLow.value = level - this.width / 2;
    this.material.uniforms.uWidth.value = this.width;
  }

  // Clipping box as fractions 0..1 of the volume along i, j, k.
  setClip(lo, hi) {
    this.material.uniforms.uClipMin.value.set(lo[0] - 0.5, lo[1] - 0.5, lo[2] - 0.5);
    this.material.uniforms.uClipMax.value.set(hi[0] - 0.5, hi[1] - 0.5, hi[2] - 0.5);
  }

  // The meshes' depth (a DepthTexture of a pass drawn with this camera, width x height),
  // where rays stop; null: no depth pass (rays cross the whole box).
  setDepth(depthTexture, width, height) {
    this.material.uniforms.uDepth.value = depthTexture || FAR_DEPTH;
    this.material.uniforms.uResolution.value.set(width || 1, height || 1);
  }

  // STALE look, as the page draws stale meshes: towards amber, dimmer, half as opaque.
  setStale(stale) {
    this.stale = stale;
    this.material.uniforms.uTintMix.value = stale ? 0.6 : 0;
    this.material.uniforms.uOpacity.value = stale ? 0.5 : 1;
  }

  dispose() {
    this.mesh.geometry.dispose();
    this.material.uniforms.uVolume.value.dispose();
    if (this.material.uniforms.uTransfer.value) this.material.uniforms.uTransfer.value.dispose();
    this.material.dispose();
  }
}

async function fetchOk(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response;
}

export class VolumeView {
  constructor(canvas) {
    this.canvas = canvas;
    this.renderer = new THREE.WebGLRenderer({ canvas, antialias: false, preserveDrawingBuffer: true });
    this.renderer.setPixelRatio(1);
    this.renderer.setClearColor(0x000000, 1);
    this.scene = new THREE.Scene();        // meshes, tool tip, lights
    this.volumeScene = new THREE.Scene();  // the ray-marched box
    this.camera = new THREE.PerspectiveCamera(35, 1, 1, 5000);
    this.camera.add(new THREE.DirectionalLight(0xffffff, 1.6));
    this.scene.add(this.camera);
    this.scene.add(new THREE.AmbientLight(0xffffff, 1.2));
    this.structures = new Map();
    this.toolTip = new THREE.Mesh(
      new THREE.SphereGeometry(2.5, 24, 16), new THREE.MeshLambertMaterial({ color: 0x00e5ff }));
    this.toolTip.visible = false;
    this.scene.add(this.toolTip);
    this.depthTarget = null;
    this.box = null;
    this.caseInfo = null;
    this.resize();
  }

  resize() {
    const width = this.canvas.clientWidth || this.canvas.width;
    const height = this.canvas.clientHeight || this.canvas.height;
    this.renderer.setSize(width, height, false);
    this.camera.aspect = width / height;
    this.camera.updateProjectionMatrix();
    const depthTexture = new THREE.DepthTexture(width, height);
    depthTexture.type = THREE.FloatType;
    if (this.depthTarget) this.depthTarget.dispose();
    this.depthTarget = new THREE.WebGLRenderTarget(width, height, { depthTexture, depthBuffer: true });
    if (this.volume) this.volume.setDepth(depthTexture, width, height);
  }

  async loadCase(baseUrl) {
    const base = baseUrl.endsWith('/') ? baseUrl : baseUrl + '/';
    const info = parseCaseToml(await (await fetchOk(base + 'case.toml')).text());
    if (info.units !== 'mm') throw new Error(`case.toml: units ${info.units}, expected mm`);
    const ras = info.coordinate_system === 'RAS';
    const loader = new PLYLoader();
    for (const s of info.structures || []) {
      const geometry = loader.parse(await (await fetchOk(base + 'models/' + s.mesh)).arrayBuffer());
      // WebGL has no 64-bit floats: a PLY of doubles (the phantom's) comes as Float64Array
      for (const [name, attribute] of Object.entries(geometry.attributes)) {
        if (attribute.array instanceof Float64Array) {
          geometry.setAttribute(name, new THREE.BufferAttribute(new Float32Array(attribute.array), attribute.itemSize));
        }
      }
      if (ras) geometry.scale(-1, -1, 1);
      geometry.computeVertexNormals();
      const colour = colourOf(s.colour);
      const mesh = new THREE.Mesh(geometry, new THREE.MeshLambertMaterial({ color: colour }));
      mesh.name = s.name;
      this.structures.set(s.name, { mesh, colour, role: s.role });
      this.scene.add(mesh);
    }
    if (info.volume) await this.loadVolume(base, info.volume);
    this.caseInfo = info;
    this.lookFrom('anterior');
    return info;
  }

  async loadVolume(base, table) {
    const compressed = await (await fetchOk(base + table.file)).arrayBuffer();
    let brick;
    try {
      brick = await checkedBrick(compressed, table);
    } catch (error) {
      throw new Error(`${table.file}: ${error.message}`);
    }
    this.volume = new VolumeBox(brick, table.T_image_from_ijk);
    this.box = this.volume.mesh;
    this.box.updateMatrixWorld(true);
    this.volume.setDepth(this.depthTarget.depthTexture, this.depthTarget.width, this.depthTarget.height);
    this.volumeScene.add(this.box);
    this.volumeShape = this.volume.shape;
    this.setPreset('soft_tissue');
  }

  setPreset(name) {
    if (!PRESETS[name]) throw new Error(`unknown preset ${name}: ${Object.keys(PRESETS).join(', ')}`);
    this.preset = name;
    if (this.volume) {
      this.volume.setPreset(name);
      this.level = this.volume.level;
      this.width = this.volume.width;
    }
  }

  setWindow(level, width) {
    this.level = level;
    this.width = Math.max(1, width);
    if (this.volume) this.volume.setWindow(level, width);
  }

  // Clipping box as fractions 0..1 of the volume along i, j, k.
  setClip(lo, hi) { if (this.volume) this.volume.setClip(lo, hi); }

  setVolumeVisible(visible) { if (this.box) this.box.visible = visible; }

  // The tool tip at p (LPS mm), or hidden for null.
  setToolTip(p) {
    this.toolTip.visible = p !== null;
    if (p) this.toolTip.position.set(p[0], p[1], p[2]);
  }

  // The structures' bounds (LPS mm): what the views frame; the CT fills the background.
  bounds() {
    const box = new THREE.Box3();
    for (const { mesh } of this.structures.values()) box.expandByObject(mesh);
    if (box.isEmpty() && this.box) box.expandByObject(this.box);
    return box;
  }

  lookFrom(view) {
    const box = this.bounds();
    const centre = box.getCenter(new THREE.Vector3());
    const size = box.getSize(new THREE.Vector3()).length();
    const distance = size / 2 / Math.tan(THREE.MathUtils.degToRad(this.camera.fov / 2)) * 1.05;
    // LPS: anterior is -P; the patient's left appears on the right (radiological habit)
    const directions = { anterior: [0, -1, 0], posterior: [0, 1, 0], left: [1, 0, 0], right: [-1, 0, 0], superior: [0, 0, 1] };
    const d = new THREE.Vector3(...(directions[view] || directions.anterior));
    this.camera.position.copy(centre).addScaledVector(d, distance);
    if (view === 'superior') this.camera.up.set(0, -1, 0);  // anterior up, seen from the head
    else this.camera.up.set(0, 0, 1);
    this.camera.lookAt(centre);
    this.camera.near = Math.max(1, distance - 2 * size);
    this.camera.far = distance + 4 * size;
    this.camera.updateProjectionMatrix();
    this.camera.updateMatrixWorld();
  }

  render() {
    this.camera.updateMatrixWorld();
    this.renderer.setRenderTarget(this.depthTarget);
    this.renderer.clear();
    this.renderer.render(this.scene, this.camera);
    this.renderer.setRenderTarget(null);
    this.renderer.autoClear = true;
    this.renderer.render(this.scene, this.camera);
    if (this.box && this.box.visible) {  // per-camera uniforms: VolumeBox's onBeforeRender
      this.renderer.autoClear = false;
      this.renderer.render(this.volumeScene, this.camera);
      this.renderer.autoClear = true;
    }
  }

  // Pixel (x right, y down, CSS pixels) where p (LPS mm) is drawn.
  project(p) {
    const v = new THREE.Vector3(p[0], p[1], p[2]).project(this.camera);
    return { x: (v.x + 1) / 2 * this.canvas.clientWidth, y: (1 - v.y) / 2 * this.canvas.clientHeight };
  }

  // Mean milliseconds per frame over n frames, each waited for (a 1-pixel read back).
  measureFrameMs(n) {
    const gl = this.renderer.getContext();
    const pixel = new Uint8Array(4);
    this.render();
    gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, pixel);
    const start = performance.now();
    for (let i = 0; i < n; i++) {
      this.render();
      gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, pixel);
    }
    return (performance.now() - start) / n;
  }
}
