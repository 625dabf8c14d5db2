/**
 * The semantic tier's index arithmetic: random-hyperplane locality-sensitive hashing. A vector's
 * bucket is the signs of its dot products with BITS hyperplanes drawn from a fixed seed (every replica
 * draws the same ones); a lookup reads its own bucket and the BITS buckets one sign away (multi-probe),
 * then re-scores the candidates by exact cosine similarity. Vectors are unit-length float32, stored as
 * bytes.
 */

export const BITS = 8;

/** mulberry32: a small deterministic PRNG (the planes must be equal on every replica). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const planesByDim = new Map<number, Float32Array[]>();

function planes(dim: number): Float32Array[] {
  let p = planesByDim.get(dim);
  if (!p) {
    const rnd = prng(0x7011 + dim);
    p = [];
    for (let b = 0; b < BITS; b++) {
      const v = new Float32Array(dim);
      // Gaussian-ish (sum of uniforms): enough for sign hashing
      for (let i = 0; i < dim; i++) v[i] = rnd() + rnd() + rnd() - 1.5;
      p.push(v);
    }
    planesByDim.set(dim, p);
  }
  return p;
}

export function dot(a: Float32Array, b: Float32Array): number {
  let s = 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

/** Unit length (a zero vector stays zero). */
export function normalize(v: ArrayLike<number>): Float32Array {
  const out = Float32Array.from(v);
  let n = 0;
  for (let i = 0; i < out.length; i++) n += out[i] * out[i];
  n = Math.sqrt(n);
  if (n > 0) for (let i = 0; i < out.length; i++) out[i] /= n;
  return out;
}

export function bucketOf(v: Float32Array): number {
  let sig = 0;
  planes(v.length).forEach((p, b) => {
    if (dot(p, v) >= 0) sig |= 1 << b;
  });
  return sig;
}

/** The bucket and its neighbours one sign away. */
export function probes(bucket: number): number[] {
  const out = [bucket];
  for (let b = 0; b < BITS; b++) out.push(bucket ^ (1 << b));
  return out;
}

export function toBytes(v: Float32Array): Buffer {
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
}

/** A float32 view of the bytes (no copy when they are 4-byte aligned, as the memory store keeps them). */
export function fromBytes(b: Buffer): Float32Array {
  const n = Math.floor(b.byteLength / 4);
  if (b.byteOffset % 4 === 0) return new Float32Array(b.buffer, b.byteOffset, n);
  const copy = new Uint8Array(n * 4);
  copy.set(b.subarray(0, n * 4));
  return new Float32Array(copy.buffer, 0, n);
}
