// The JSON API of idx serve, as the page uses it. A token given as /#token=... is kept for
// the session and sent as a bearer token (the page itself needs none).

const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromHash) {
  sessionStorage.setItem("idx-token", fromHash);
  history.replaceState(null, "", location.pathname);
}

function headers() {
  const token = sessionStorage.getItem("idx-token");
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** An API error, with the server's message (and the field it names). */
export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message ?? `HTTP ${status}`);
    this.status = status;
    this.field = body?.error?.field;
  }
}

async function get(path, { signal, binary = false } = {}) {
  const response = await fetch(path, { headers: headers(), signal });
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch { /* not JSON */ }
    throw new ApiError(response.status, body);
  }
  return binary ? response.arrayBuffer() : response.json();
}

export const health = () => get("/healthz");
export const documentById = (id) => get(`/documents/${encodeURIComponent(id)}`);
export const neighbours = (id, k = 10) => get(`/neighbours/${encodeURIComponent(id)}?k=${k}`);
export const search = (q, k, signal) => get(`/search?q=${encodeURIComponent(q)}&k=${k}`, { signal });

/**
 * The map (/map.bin): a JSON header, then typed arrays read in place:
 * x and y (float32), ids (float64), genre index (uint16), one entry per document.
 */
export async function map() {
  const buffer = await get("/map.bin", { binary: true });
  const headerLength = new DataView(buffer).getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, headerLength)));
  const n = header.count;
  let offset = Math.ceil((4 + headerLength) / 8) * 8;
  const take = (Type) => { const a = new Type(buffer, offset, n); offset += n * Type.BYTES_PER_ELEMENT; return a; };
  const x = take(Float32Array), y = take(Float32Array), ids = take(Float64Array), genre = take(Uint16Array);
  return { ...header, x, y, ids, genre };
}
