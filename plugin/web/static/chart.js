// The correction-rate chart (share of drafts edited or rejected): one line per adapter version over time, drawn as inline SVG (no chart library, no CDN).

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 640;
const HEIGHT = 240;
const PAD = { left: 44, right: 16, top: 12, bottom: 30 };
export const PALETTE = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7b83", "#57606a"];

function svg(tag, attributes = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

// series: [{version, points: [{start: Date, correction_rate, reviews}]}]; returns the <svg> element.
export function correctionRateChart(series, { bucketMs, label }) {
  const root = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": label, class: "chart-svg" });
  root.append(svg("title", {}, label));
  const times = series.flatMap((s) => s.points.map((p) => p.start.getTime()));
  // half a bucket of room either side, so a single bucket sits in the middle rather than on the axis
  const first = Math.min(...times) - bucketMs / 2;
  const last = Math.max(...times) + bucketMs / 2;
  const x = (t) => PAD.left + ((t - first) / (last - first)) * (WIDTH - PAD.left - PAD.right);
  const y = (rate) => HEIGHT - PAD.bottom - rate * (HEIGHT - PAD.top - PAD.bottom);

  for (const rate of [0, 0.25, 0.5, 0.75, 1]) {
    root.append(svg("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(rate), y2: y(rate), class: "grid" }));
    root.append(svg("text", { x: PAD.left - 6, y: y(rate) + 4, "text-anchor": "end", class: "tick" }, `${rate * 100}%`));
  }
  const format = (t) => new Date(t).toLocaleString(undefined, bucketMs < 86400000 ? { month: "short", day: "numeric", hour: "2-digit" } : { month: "short", day: "numeric" });
  const starts = [...new Set(times)].sort((a, b) => a - b);
  const labelled = starts.length <= 6 ? starts : [starts[0], starts[Math.floor(starts.length / 2)], starts[starts.length - 1]];
  for (const t of labelled) root.append(svg("text", { x: x(t), y: HEIGHT - 8, "text-anchor": "middle", class: "tick" }, format(t)));

  series.forEach((line, index) => {
    const color = PALETTE[index % PALETTE.length];
    const group = svg("g", { "data-version": line.version });
    const coordinates = line.points.map((p) => `${x(p.start.getTime()).toFixed(1)},${y(p.correction_rate).toFixed(1)}`);
    if (coordinates.length > 1) group.append(svg("polyline", { points: coordinates.join(" "), fill: "none", stroke: color, "stroke-width": 2 }));
    line.points.forEach((p) => {
      const dot = svg("circle", { cx: x(p.start.getTime()), cy: y(p.correction_rate), r: 4, fill: color });
      dot.append(svg("title", {}, `${line.version}: ${(p.correction_rate * 100).toFixed(0)}% corrected of ${p.reviews} reviews, ${format(p.start.getTime())}`));
      group.append(dot);
    });
    root.append(group);
  });
  return root;
}
