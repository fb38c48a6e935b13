// api.js - the page's only way to the server: the public HTTP API of API.md,
// on the page's own origin. With a read token set, every call carries it as
// "Authorization: Bearer"; it never goes into a URL.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status; // HTTP status, 0 when the server did not answer
    this.code = code;     // the API's error code ("unauthorized", ...)
  }
}

const path = (table, rest = '') => `/v1/tables/${encodeURIComponent(table)}${rest}`;

export class Api {
  constructor() {
    this.token = '';
  }

  // One request; resolves to the Response when it is 2xx, else throws an
  // ApiError carrying the server's {"error": {"code", "message"}}.
  async request(method, url, { body, accept = 'application/json', signal } = {}) {
    const headers = { Accept: accept };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    const init = { method, headers, signal, cache: 'no-store', credentials: 'omit' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(url, init);
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError(0, 'network', `the server did not answer (${e.message})`);
    }
    if (res.ok) return res;
    let code = `http_${res.status}`;
    let message = `${method} ${url.split('?')[0]}: HTTP ${res.status}`;
    try {
      const j = await res.json();
      if (j && j.error) ({ code, message } = j.error);
    } catch { /* not JSON: keep the status line */ }
    throw new ApiError(res.status, code, message);
  }

  async json(method, url, body, signal) {
    return (await this.request(method, url, { body, signal })).json();
  }

  tables() {
    return this.json('GET', '/v1/tables');
  }

  table(name) {
    return this.json('GET', path(name));
  }

  // Tokens of a table starting with prefix, in token order: [{id, token}].
  async tokens(name, prefix, limit, signal) {
    const q = `?prefix=${encodeURIComponent(prefix)}&limit=${limit}`;
    return (await this.json('GET', path(name, `/tokens${q}`), undefined, signal)).tokens;
  }

  // The k nearest rows of row id: [{id, token?, score}], best first.
  async neighbors(name, id, k, metric) {
    const r = await this.json('POST', path(name, '/neighbors'), { ids: [id], k, metric });
    return r.results[0];
  }

  async similarity(name, pairs, metric) {
    return (await this.json('POST', path(name, '/similarity'), { pairs, metric })).scores;
  }

  // Rows by id as raw little-endian float32 (the binary lookup answer):
  // {rows: Float32Array of n * d, n, d}.
  async rows(name, ids) {
    const res = await this.request('POST', path(name, '/lookup'), {
      body: { ids },
      accept: 'application/octet-stream',
    });
    const shape = (res.headers.get('X-Embedding-Shape') || '').split(',').map(Number);
    const bytes = new DataView(await res.arrayBuffer());
    const [n, d] = shape;
    if (shape.length !== 2 || n !== ids.length || bytes.byteLength !== n * d * 4)
      throw new ApiError(res.status, 'internal', `unexpected lookup answer of shape ${shape}`);
    const rows = new Float32Array(n * d);
    for (let i = 0; i < rows.length; i++) rows[i] = bytes.getFloat32(4 * i, true);
    return { rows, n, d };
  }
}
