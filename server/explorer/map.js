// map.js - draws the 2-D map of a neighbourhood into an SVG: one point per
// row with its label, the query in its own colour, equal scales on both
// axes so distances on screen are distances in the projection. The drawing
// is sized to the SVG's width on screen (text stays readable on a phone);
// draw again when that changes. A click (or Enter on a focused point) calls
// onPick with the point.

const NS = 'http://www.w3.org/2000/svg';
const PAD = 36;

function el(name, attrs, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// Where a label goes: the first of right, left, above, below its point that
// overlaps no label placed so far and stays inside the map (else the one
// that overlaps least). Widths are estimated from the text's length.
const SPOTS = [
  [9, 4, 'start'], [-9, 4, 'end'], [0, -10, 'middle'], [0, 17, 'middle'],
  [7, -8, 'start'], [-7, -8, 'end'], [7, 15, 'start'], [-7, 15, 'end'],
];

function placeLabel(placed, x, y, text, W, H) {
  const w = Math.min(7.2 * [...text].length, 220) + 2, h = 14;
  let best = null;
  for (const [dx, dy, anchor] of SPOTS) {
    const left = anchor === 'start' ? x + dx : anchor === 'end' ? x + dx - w : x + dx - w / 2;
    const box = { x0: left, y0: y + dy - h + 3, x1: left + w, y1: y + dy + 3 };
    let cost = box.x0 < 0 || box.x1 > W || box.y0 < 0 || box.y1 > H ? 1e6 : 0;
    for (const b of placed)
      cost += Math.max(0, Math.min(b.x1, box.x1) - Math.max(b.x0, box.x0)) *
        Math.max(0, Math.min(b.y1, box.y1) - Math.max(b.y0, box.y0));
    if (!best || cost < best.cost) best = { cost, box, attrs: { x: x + dx, y: y + dy, 'text-anchor': anchor } };
    if (cost === 0) break;
  }
  placed.push(best.box);
  return best.attrs;
}

// points: [{x, y, label, title, center: bool, id}]; axes: two strings.
export function drawMap(svg, points, axes, onPick) {
  const W = Math.round(Math.max(280, Math.min(760, svg.getBoundingClientRect().width || 640)));
  const H = Math.round(W < 520 ? W * 0.95 : W * 0.66);
  svg.replaceChildren();
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  if (points.length === 0) return;
  let minX = Infinity, maxX = -Infinity, minY = Infinity, maxY = -Infinity;
  for (const p of points) {
    minX = Math.min(minX, p.x); maxX = Math.max(maxX, p.x);
    minY = Math.min(minY, p.y); maxY = Math.max(maxY, p.y);
  }
  const span = Math.max((maxX - minX) / (W - 2 * PAD), (maxY - minY) / (H - 2 * PAD), 1e-12);
  const cx = (minX + maxX) / 2, cy = (minY + maxY) / 2;
  const sx = (x) => W / 2 + (x - cx) / span;
  const sy = (y) => H / 2 - (y - cy) / span; // up is positive

  svg.append(el('line', { class: 'axis', x1: PAD / 2, y1: H / 2, x2: W - PAD / 2, y2: H / 2 }));
  svg.append(el('line', { class: 'axis', x1: W / 2, y1: PAD / 2, x2: W / 2, y2: H - PAD / 2 }));
  svg.append(el('text', { class: 'axis-label', x: W - PAD / 2, y: H / 2 - 6, 'text-anchor': 'end' }, axes[0]));
  svg.append(el('text', { class: 'axis-label', x: W / 2 + 6, y: PAD / 2 + 10 }, axes[1]));

  const center = points.find((p) => p.center);
  const at = new Map(points.map((p) => [p, [sx(p.x), sy(p.y)]]));
  // labels avoid the points, then each other: the query's first, then the
  // neighbours best first
  const placed = points.map((p) => {
    const [x, y] = at.get(p);
    return { x0: x - 6, y0: y - 6, x1: x + 6, y1: y + 6 };
  });
  const labels = new Map();
  for (const p of [...(center ? [center] : []), ...points.filter((q) => !q.center)])
    labels.set(p, placeLabel(placed, ...at.get(p), p.label, W, H));

  const spokes = el('g', { class: 'spokes' });
  const layer = el('g', { class: 'points' });
  // the query last, so it is drawn on top
  for (const p of [...points.filter((q) => !q.center), ...(center ? [center] : [])]) {
    const [x, y] = at.get(p);
    const g = el('g', {
      class: p.center ? 'point center' : 'point',
      tabindex: p.center ? '-1' : '0',
      role: p.center ? 'img' : 'button',
      'aria-label': p.title,
      'data-id': String(p.id),
    });
    g.append(el('title', {}, p.title));
    if (center && !p.center)
      spokes.append(el('line', { x1: at.get(center)[0], y1: at.get(center)[1], x2: x, y2: y }));
    g.append(el('circle', { cx: x, cy: y, r: p.center ? 7 : 5 }));
    g.append(el('text', labels.get(p), p.label));
    if (!p.center) {
      g.addEventListener('click', () => onPick(p));
      g.addEventListener('keydown', (e) => {
        if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); onPick(p); }
      });
    }
    layer.append(g);
  }
  svg.append(spokes, layer);
}
