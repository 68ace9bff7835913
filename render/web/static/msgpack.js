// A small MessagePack codec for the headset protocol's payloads (nil, bool, int up to
// 64 bits, float, str, bin, array, map): what nav/messages/codec.py writes with msgpack's
// use_bin_type. Integers beyond 2^53 decode as BigInt; a BigInt encodes as int64/uint64.
// Arrays travel as {dtype, shape, data}: see wireArray / toWireArray.

const utf8Decoder = new TextDecoder();
const utf8Encoder = new TextEncoder();

export class MsgpackError extends Error {}

export function decode(buffer) {
  const bytes = buffer instanceof Uint8Array ? buffer : new Uint8Array(buffer);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  const need = (n) => {
    if (at + n > bytes.length) throw new MsgpackError('truncated msgpack');
  };
  const u8 = () => { need(1); return bytes[at++]; };
  const u16 = () => { need(2); const v = view.getUint16(at); at += 2; return v; };
  const u32 = () => { need(4); const v = view.getUint32(at); at += 4; return v; };
  const big = (signed) => {
    need(8);
    const v = signed ? view.getBigInt64(at) : view.getBigUint64(at);
    at += 8;
    return v >= -9007199254740991n && v <= 9007199254740991n ? Number(v) : v;
  };
  const str = (n) => { need(n); const s = utf8Decoder.decode(bytes.subarray(at, at + n)); at += n; return s; };
  const bin = (n) => { need(n); const b = bytes.slice(at, at + n); at += n; return b; };
  const array = (n) => { const out = new Array(n); for (let i = 0; i < n; i++) out[i] = value(); return out; };
  const map = (n) => {
    const out = {};
    for (let i = 0; i < n; i++) {
      const key = value();
      if (typeof key !== 'string') throw new MsgpackError('map key is not a string');
      out[key] = value();
    }
    return out;
  };
  function value() {
    const b = u8();
    if (b <= 0x7f) return b;
    if (b >= 0xe0) return b - 0x100;
    if ((b & 0xe0) === 0xa0) return str(b & 0x1f);
    if ((b & 0xf0) === 0x90) return array(b & 0x0f);
    if ((b & 0xf0) === 0x80) return map(b & 0x0f);
    switch (b) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return bin(u8());
      case 0xc5: return bin(u16());
      case 0xc6: return bin(u32());
      case 0xca: { need(4); const v = view.getFloat32(at); at += 4; return v; }
      case 0xcb: { need(8); const v = view.getFloat64(at); at += 8; return v; }
      case 0xcc: return u8();
      case 0xcd: return u16();
      case 0xce: return u32();
      case 0xcf: return big(false);
      case 0xd0: { need(1); const v = view.getInt8(at); at += 1; return v; }
      case 0xd1: { need(2); const v = view.getInt16(at); at += 2; return v; }
      case 0xd2: { need(4); const v = view.getInt32(at); at += 4; return v; }
      case 0xd3: return big(true);
      case 0xd9: return str(u8());
      case 0xda: return str(u16());
      case 0xdb: return str(u32());
      case 0xdc: return array(u16());
      case 0xdd: return array(u32());
      case 0xde: return map(u16());
      case 0xdf: return map(u32());
      default: throw new MsgpackError(`unsupported msgpack byte 0x${b.toString(16)}`);
    }
  }
  const out = value();
  if (at !== bytes.length) throw new MsgpackError('trailing bytes after msgpack');
  return out;
}

export function encode(value) {
  const chunks = [];
  let size = 0;
  const push = (arr) => { chunks.push(arr); size += arr.length; };
  const fixed = (n, write) => {
    const buf = new Uint8Array(n);
    write(new DataView(buf.buffer));
    push(buf);
  };
  function int(v) {
    if (typeof v === 'bigint') {
      fixed(9, (d) => {
        if (v < 0n) { d.setUint8(0, 0xd3); d.setBigInt64(1, v); } else { d.setUint8(0, 0xcf); d.setBigUint64(1, v); }
      });
    } else if (v >= 0 && v <= 0x7f) push(Uint8Array.of(v));
    else if (v < 0 && v >= -32) push(Uint8Array.of(v + 0x100));
    else if (v >= 0 && v <= 0xffffffff) fixed(5, (d) => { d.setUint8(0, 0xce); d.setUint32(1, v); });
    else if (v < 0 && v >= -0x80000000) fixed(5, (d) => { d.setUint8(0, 0xd2); d.setInt32(1, v); });
    else int(BigInt(v));
  }
  function write(v) {
    if (v === null || v === undefined) push(Uint8Array.of(0xc0));
    else if (v === true) push(Uint8Array.of(0xc3));
    else if (v === false) push(Uint8Array.of(0xc2));
    else if (typeof v === 'bigint') int(v);
    else if (typeof v === 'number') {
      if (Number.isSafeInteger(v)) int(v);
      else fixed(9, (d) => { d.setUint8(0, 0xcb); d.setFloat64(1, v); });
    } else if (v instanceof Float64Wrapper) {
      fixed(9, (d) => { d.setUint8(0, 0xcb); d.setFloat64(1, v.value); });
    } else if (typeof v === 'string') {
      const b = utf8Encoder.encode(v);
      if (b.length < 32) push(Uint8Array.of(0xa0 | b.length));
      else if (b.length < 256) push(Uint8Array.of(0xd9, b.length));
      else fixed(5, (d) => { d.setUint8(0, 0xdb); d.setUint32(1, b.length); });
      push(b);
    } else if (v instanceof Uint8Array) {
      fixed(5, (d) => { d.setUint8(0, 0xc6); d.setUint32(1, v.length); });
      push(v);
    } else if (Array.isArray(v)) {
      fixed(5, (d) => { d.setUint8(0, 0xdd); d.setUint32(1, v.length); });
      v.forEach(write);
    } else if (typeof v === 'object') {
      const keys = Object.keys(v);
      fixed(5, (d) => { d.setUint8(0, 0xdf); d.setUint32(1, keys.length); });
      for (const k of keys) { write(k); write(v[k]); }
    } else throw new MsgpackError(`cannot encode ${typeof v}`);
  }
  write(value);
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return out;
}

// A number that must travel as a float even when it is whole (e.g. rms_mm = 1.0).
export class Float64Wrapper { constructor(value) { this.value = value; } }
export const f64 = (value) => new Float64Wrapper(value);

// Wire array {dtype, shape, data} -> {shape, data: Float64Array | BigInt64Array}.
export function wireArray(wire) {
  if (!wire || typeof wire !== 'object' || !(wire.data instanceof Uint8Array)) {
    throw new MsgpackError('not a wire array');
  }
  const bytes = wire.data.slice();  // aligned copy
  let data;
  if (wire.dtype === '<f8') data = new Float64Array(bytes.buffer);
  else if (wire.dtype === '<i8') data = new BigInt64Array(bytes.buffer);
  else throw new MsgpackError(`dtype ${wire.dtype} not handled`);
  const n = wire.shape.reduce((a, b) => a * b, 1);
  if (data.length !== n) throw new MsgpackError('array size does not match its shape');
  return { shape: wire.shape, data };
}

export function toWireArray(typed, shape) {
  const dtype = typed instanceof Float64Array ? '<f8' : '<i8';
  return { dtype, shape, data: new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength) };
}
