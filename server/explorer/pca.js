// pca.js - a 2-D projection of a few rows, computed in the page: principal
// component analysis through the n x n Gram matrix of the rows (n is the
// query and its k neighbours, usually far fewer than the dimension), so the
// same code serves rows fetched by a lookup and dot products from the
// similarity endpoint. Double-centring the Gram matrix and taking its two
// leading eigenvectors (power iteration with deflation) gives exactly the
// principal component scores of the centred rows.

// Gram matrix (row-major Float64Array n * n) of n rows of d floats.
export function gramOfRows(rows, n, d) {
  const g = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      let s = 0;
      for (let c = 0; c < d; c++) s += rows[i * d + c] * rows[j * d + c];
      g[i * n + j] = g[j * n + i] = s;
    }
  }
  return g;
}

// Gram matrix from dot products of the pairs (i, j), i <= j, in the order
// upperPairs gives them.
export function gramOfDots(dots, n) {
  const g = new Float64Array(n * n);
  let p = 0;
  for (let i = 0; i < n; i++)
    for (let j = i; j < n; j++) g[i * n + j] = g[j * n + i] = dots[p++];
  return g;
}

export function upperPairs(ids) {
  const pairs = [];
  for (let i = 0; i < ids.length; i++)
    for (let j = i; j < ids.length; j++) pairs.push([ids[i], ids[j]]);
  return pairs;
}

// The Gram matrix of the rows scaled to unit length, with the same floor on
// the norm as cosine_similarity (1e-8): the map of the cosine metric.
export function cosineGram(g, n) {
  const norm = new Float64Array(n);
  for (let i = 0; i < n; i++) norm[i] = Math.max(Math.sqrt(Math.max(g[i * n + i], 0)), 1e-8);
  const c = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) c[i * n + j] = g[i * n + j] / (norm[i] * norm[j]);
  return c;
}

// B = J G J with J = I - 11'/n: the Gram matrix of the centred rows.
function doubleCentre(g, n) {
  const rowMean = new Float64Array(n);
  let all = 0;
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = 0; j < n; j++) s += g[i * n + j];
    rowMean[i] = s / n;
    all += s;
  }
  all /= n * n;
  const b = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) b[i * n + j] = g[i * n + j] - rowMean[i] - rowMean[j] + all;
  return b;
}

// The leading eigenpair of the symmetric positive semi-definite b, from a
// fixed start so the same rows always give the same map.
function leadingEigen(b, n) {
  let v = new Float64Array(n);
  for (let i = 0; i < n; i++) v[i] = Math.sin(1.7 * i + 0.3) + 0.05 * i;
  let lambda = 0;
  for (let it = 0; it < 1000; it++) {
    const w = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let j = 0; j < n; j++) s += b[i * n + j] * v[j];
      w[i] = s;
    }
    const norm = Math.hypot(...w);
    if (!(norm > 1e-300)) return { value: 0, vector: new Float64Array(n) };
    let change = 0;
    for (let i = 0; i < n; i++) {
      w[i] /= norm;
      change = Math.max(change, Math.abs(w[i] - v[i]));
    }
    v = w;
    const done = Math.abs(norm - lambda) <= 1e-12 * norm && change < 1e-10;
    lambda = norm;
    if (done) break;
  }
  // one orientation per axis: its largest coordinate positive
  let big = 0;
  for (let i = 1; i < n; i++) if (Math.abs(v[i]) > Math.abs(v[big])) big = i;
  if (v[big] < 0) for (let i = 0; i < n; i++) v[i] = -v[i];
  return { value: lambda, vector: v };
}

// The first two principal component scores of the n rows whose Gram matrix
// is g: {xy: Float64Array of 2n (x0, y0, x1, ...), explained: [f1, f2]}, the
// fractions of the variance the two axes hold.
export function project2(g, n) {
  const b = doubleCentre(g, n);
  let trace = 0;
  for (let i = 0; i < n; i++) trace += b[i * n + i];
  const xy = new Float64Array(2 * n);
  const explained = [0, 0];
  for (let axis = 0; axis < 2 && n > 1; axis++) {
    const { value, vector } = leadingEigen(b, n);
    const scale = Math.sqrt(Math.max(value, 0));
    for (let i = 0; i < n; i++) xy[2 * i + axis] = vector[i] * scale;
    explained[axis] = trace > 0 ? value / trace : 0;
    for (let i = 0; i < n; i++) // deflate: what the next axis sees is orthogonal
      for (let j = 0; j < n; j++) b[i * n + j] -= value * vector[i] * vector[j];
  }
  return { xy, explained };
}
