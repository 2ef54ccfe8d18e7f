// The 2-D map: every document as a dot on a canvas, coloured by genre.
//
// Dots are written straight into an ImageData buffer (one Uint32 per pixel), which draws
// 37,000 points in a few milliseconds and a million in tens, with no WebGL needed. Level of
// detail: the points are drawn in a fixed random order, so while the view moves a prefix of
// that order is an even sample of the whole; when it stops, every point is drawn. Hover
// and click find the nearest point through a uniform grid over the data.

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf", "#393b79", "#e7ba52", "#637939", "#ad494a", "#7b4173", "#3182bd", "#e6550d",
  "#31a354", "#756bb1", "#636363"];
const BACKGROUND = [246, 247, 249];
/** Points drawn per frame while panning or zooming (all of them once the view rests). */
const MOVING_BUDGET = 150_000;
const HOVER_RADIUS = 8; // CSS pixels

export function genreColour(i) {
  if (i < PALETTE.length) return PALETTE[i];
  return `hsl(${(i * 137.508) % 360}, 55%, 45%)`;
}

function rgb(colour) {
  const probe = document.createElement("canvas").getContext("2d");
  probe.fillStyle = colour;
  probe.fillRect(0, 0, 1, 1);
  const [r, g, b] = probe.getImageData(0, 0, 1, 1).data;
  return [r, g, b];
}

export class MapView {
  constructor(canvas, { onHover, onClick }) {
    this.canvas = canvas;
    this.context = canvas.getContext("2d");
    this.onHover = onHover;
    this.onClick = onClick;
    this.hidden = new Set();
    this.highlighted = [];  // rows of the current query's hits
    this.related = [];      // rows of the selected point's neighbours
    this.selected = -1;
    this.hovered = -1;
    this.stats = { points: 0, drawn: 0, visible: 0, frameMs: 0, full: false };
    this.settleTimer = 0;
    this.listen();
    new ResizeObserver(() => this.resize()).observe(canvas);
  }

  /** Takes the map's arrays (see api.js) and fits the view to every point. */
  setData(data) {
    this.data = data;
    const n = data.count;
    this.stats.points = n;
    this.colours = Array.from({ length: data.genres.length }, (_, i) => rgb(genreColour(i)));
    // A fixed shuffle: any prefix of it is an even sample (level of detail).
    this.order = new Uint32Array(n);
    for (let i = 0; i < n; i++) this.order[i] = i;
    let seed = 12345;
    for (let i = n - 1; i > 0; i--) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      const j = seed % (i + 1);
      const t = this.order[i]; this.order[i] = this.order[j]; this.order[j] = t;
    }
    this.buildGrid();
    this.resize();
    this.fit();
  }

  buildGrid() {
    const { x, y, count: n } = this.data;
    let minX = Infinity, maxX = -Infinity, minY = Infinity, maxY = -Infinity;
    for (let i = 0; i < n; i++) {
      if (x[i] < minX) minX = x[i]; if (x[i] > maxX) maxX = x[i];
      if (y[i] < minY) minY = y[i]; if (y[i] > maxY) maxY = y[i];
    }
    if (n === 0) { minX = minY = 0; maxX = maxY = 1; }
    const side = Math.max(1, Math.ceil(Math.sqrt(n / 4)));
    const w = (maxX - minX) || 1, h = (maxY - minY) || 1;
    const cellOf = (i) => Math.min(side - 1, Math.floor((x[i] - minX) / w * side)) * side
      + Math.min(side - 1, Math.floor((y[i] - minY) / h * side));
    const start = new Uint32Array(side * side + 1);
    for (let i = 0; i < n; i++) start[cellOf(i) + 1]++;
    for (let c = 0; c < side * side; c++) start[c + 1] += start[c];
    const fill = start.slice(0, side * side), items = new Uint32Array(n);
    for (let i = 0; i < n; i++) items[fill[cellOf(i)]++] = i;
    this.grid = { minX, minY, w, h, side, start, items };
    this.bounds = { minX, maxX, minY, maxY };
  }

  resize() {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(this.canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(this.canvas.clientHeight * ratio));
    if (width === this.canvas.width && height === this.canvas.height) return;
    const first = !this.view;
    this.canvas.width = width;
    this.canvas.height = height;
    this.ratio = ratio;
    if (first && this.data) this.fit(); else this.draw(true);
  }

  /** The whole map in view, with a margin. */
  fit() {
    if (!this.bounds) return;
    const { minX, maxX, minY, maxY } = this.bounds;
    const margin = 24 * (this.ratio || 1);
    const scale = Math.min((this.canvas.width - 2 * margin) / ((maxX - minX) || 1),
                           (this.canvas.height - 2 * margin) / ((maxY - minY) || 1));
    this.view = { cx: (minX + maxX) / 2, cy: (minY + maxY) / 2, scale: Math.max(scale, 1e-9) };
    this.draw(true);
  }

  toScreen(i) {
    const { cx, cy, scale } = this.view;
    return [(this.data.x[i] - cx) * scale + this.canvas.width / 2, (cy - this.data.y[i]) * scale + this.canvas.height / 2];
  }

  toData(px, py) {
    const { cx, cy, scale } = this.view;
    return [(px - this.canvas.width / 2) / scale + cx, cy - (py - this.canvas.height / 2) / scale];
  }

  /** Draws the map: every visible point when `full`, an even sample otherwise. */
  draw(full) {
    if (!this.data || !this.view) return;
    const t0 = performance.now();
    const { width, height } = this.canvas;
    const { x, y, genre, count: n } = this.data;
    // One frame buffer, reused while the canvas keeps its size (no allocation per frame).
    if (!this.image || this.image.width !== width || this.image.height !== height) {
      this.image = this.context.createImageData(width, height);
      this.pixels = new Uint32Array(this.image.data.buffer);
    }
    const image = this.image, pixels = this.pixels;
    const pack = ([r, g, b]) => (255 << 24) | (b << 16) | (g << 8) | r; // little-endian RGBA
    pixels.fill(pack(BACKGROUND));
    const packed = this.colours.map(pack);
    const hidden = this.hidden.size ? new Uint8Array(this.colours.length).map((_, g) => this.hidden.has(g) ? 1 : 0) : null;
    // Dots shrink as the map gets denser, and grow back when zoomed in.
    const density = n / (width * height);
    const base = density > 0.2 ? 1 : density > 0.03 ? 2 : density > 0.01 ? 3 : density > 0.002 ? 4 : 6;
    const size = Math.max(1, Math.min(8, Math.round(base * (this.ratio || 1))));
    const half = size >> 1;
    const { cx, cy, scale } = this.view;
    const ox = width / 2 - cx * scale, oy = height / 2 + cy * scale;
    const limit = full ? n : Math.min(n, MOVING_BUDGET);
    let drawn = 0, visible = 0;
    for (let k = 0; k < limit; k++) {
      const i = this.order[k];
      if (hidden && hidden[genre[i]]) continue;
      const px = Math.floor(x[i] * scale + ox + 0.5) - half, py = Math.floor(oy - y[i] * scale + 0.5) - half;
      if (px + size <= 0 || py + size <= 0 || px >= width || py >= height) continue;
      visible++;
      const colour = packed[genre[i]];
      if (px >= 0 && py >= 0 && px + size <= width && py + size <= height) {
        // The common case, wholly inside: no bounds test per pixel.
        for (let dy = 0, at = py * width + px; dy < size; dy++, at += width) {
          for (let dx = 0; dx < size; dx++) pixels[at + dx] = colour;
        }
      } else {
        for (let dy = 0; dy < size; dy++) {
          const row = py + dy;
          if (row < 0 || row >= height) continue;
          for (let dx = 0; dx < size; dx++) {
            const col = px + dx;
            if (col >= 0 && col < width) pixels[row * width + col] = colour;
          }
        }
      }
      drawn++;
    }
    this.redrawMarks();
    this.stats = { points: n, drawn, visible, frameMs: performance.now() - t0, full: limit === n };
    this.canvas.dataset.points = String(n);
    this.canvas.dataset.drawn = String(drawn);
    if (!full) {
      clearTimeout(this.settleTimer);
      this.settleTimer = setTimeout(() => this.draw(true), 150);
    }
  }

  /** Puts back the last dots frame and draws the marks over it (no dot is redrawn). */
  redrawMarks() {
    if (!this.image) return;
    this.context.putImageData(this.image, 0, 0);
    this.drawMarks();
  }

  /** Query hits, neighbours, the selected and the hovered point, over the dots. */
  drawMarks() {
    const c = this.context, r = this.ratio || 1;
    const ring = (i, radius, stroke, fill, width = 2) => {
      if (i < 0) return;
      const [sx, sy] = this.toScreen(i);
      c.beginPath();
      c.arc(sx, sy, radius * r, 0, 2 * Math.PI);
      if (fill) { c.fillStyle = fill; c.fill(); }
      c.lineWidth = width * r;
      c.strokeStyle = stroke;
      c.stroke();
    };
    for (const i of this.related) ring(i, 5, "#0f766e", "rgba(20, 184, 166, 0.35)");
    for (const i of this.highlighted) ring(i, 6, "#111827", "rgba(250, 204, 21, 0.85)");
    ring(this.selected, 9, "#b42318", null, 3);
    ring(this.hovered, 7, "#111827", null, 2);
  }

  /** The visible point nearest to the canvas pixel (px, py), within the hover radius; -1 if none. */
  pick(px, py) {
    if (!this.data) return -1;
    const [dx, dy] = this.toData(px, py);
    const radius = HOVER_RADIUS * (this.ratio || 1) / this.view.scale;
    const { minX, minY, w, h, side, start, items } = this.grid;
    const cell = (v, lo, span) => Math.max(0, Math.min(side - 1, Math.floor((v - lo) / span * side)));
    const x0 = cell(dx - radius, minX, w), x1 = cell(dx + radius, minX, w);
    const y0 = cell(dy - radius, minY, h), y1 = cell(dy + radius, minY, h);
    if ((x1 - x0 + 1) * (y1 - y0 + 1) > 40_000) return -1; // zoomed far out: too many cells to scan per mouse move
    let best = -1, bestDistance = radius * radius;
    const { x, y, genre } = this.data;
    for (let cx = x0; cx <= x1; cx++) {
      for (let cy = y0; cy <= y1; cy++) {
        const c = cx * side + cy;
        for (let k = start[c]; k < start[c + 1]; k++) {
          const i = items[k];
          if (this.hidden.has(genre[i])) continue;
          const d = (x[i] - dx) ** 2 + (y[i] - dy) ** 2;
          if (d <= bestDistance) { bestDistance = d; best = i; }
        }
      }
    }
    return best;
  }

  /** Centres the view on point i (zooming in if the map is fully zoomed out). */
  centreOn(i) {
    this.view.cx = this.data.x[i];
    this.view.cy = this.data.y[i];
    this.draw(false);
  }

  listen() {
    const canvas = this.canvas;
    let drag = null;
    const position = (event) => {
      const rect = canvas.getBoundingClientRect();
      return [(event.clientX - rect.left) * (this.ratio || 1), (event.clientY - rect.top) * (this.ratio || 1)];
    };
    canvas.addEventListener("pointerdown", (event) => {
      drag = { start: position(event), last: position(event), moved: false };
      canvas.setPointerCapture(event.pointerId);
    });
    canvas.addEventListener("pointermove", (event) => {
      const [px, py] = position(event);
      if (drag) {
        const ddx = px - drag.last[0], ddy = py - drag.last[1];
        if (Math.abs(px - drag.start[0]) + Math.abs(py - drag.start[1]) > 4) drag.moved = true;
        drag.last = [px, py];
        if (drag.moved) {
          this.view.cx -= ddx / this.view.scale;
          this.view.cy += ddy / this.view.scale;
          this.draw(false);
          return;
        }
      }
      const hit = this.pick(px, py);
      if (hit !== this.hovered) {
        this.hovered = hit;
        this.redrawMarks();
      }
      this.onHover(hit, event.clientX - canvas.getBoundingClientRect().left, event.clientY - canvas.getBoundingClientRect().top);
    });
    canvas.addEventListener("pointerup", (event) => {
      const wasClick = drag && !drag.moved;
      drag = null;
      if (wasClick) {
        const [px, py] = position(event);
        const hit = this.pick(px, py);
        if (hit >= 0) this.onClick(hit);
      }
    });
    canvas.addEventListener("pointerleave", () => {
      if (this.hovered !== -1) { this.hovered = -1; this.redrawMarks(); }
      this.onHover(-1, 0, 0);
    });
    canvas.addEventListener("wheel", (event) => {
      event.preventDefault();
      const [px, py] = position(event);
      const [bx, by] = this.toData(px, py);
      this.view.scale *= Math.exp(-event.deltaY * 0.0015);
      // Keep the data point under the cursor where it is.
      const [ax, ay] = this.toData(px, py);
      this.view.cx += bx - ax;
      this.view.cy += by - ay;
      this.draw(false);
    }, { passive: false });
    canvas.addEventListener("dblclick", () => this.fit());
  }
}
