/**
 * Inline SVG charts for the HTML report, drawn here so the report needs nothing from the network: a line chart
 * (linear or log x) and a grouped bar chart. Strings only; every label is escaped.
 */

export const esc = (s: string): string =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');

export const PALETTE = [
  '#1f77b4',
  '#d62728',
  '#2ca02c',
  '#ff7f0e',
  '#9467bd',
  '#8c564b',
  '#e377c2',
  '#17becf',
  '#7f7f7f',
  '#bcbd22',
];

/** Tick values from 0 (or lo) to at least hi with a 1/2/5 step. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const start = Math.floor(lo / step) * step;
  const ticks: number[] = [];
  for (let v = start; v < hi + step * 0.999; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

export function fmtNum(v: number): string {
  const a = Math.abs(v);
  if (a === 0) return '0';
  if (a >= 10000) return `${(v / 1000).toFixed(a >= 100000 ? 0 : 1)}k`;
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1).replace(/\.0$/, '');
  if (a >= 1) return v.toFixed(2).replace(/\.?0+$/, '');
  return v.toPrecision(2);
}

export interface Series {
  name: string;
  points: { x: number; y: number | null }[];
  dashed?: boolean;
  color?: string;
}

const W = 400;
const H = 290;
const M = { l: 58, r: 14, t: 34, b: 44 };
const LEGEND_W = 150;

function frame(title: string, body: string, legend: string, w = W): string {
  return (
    `<svg class="chart" width="${w + LEGEND_W}" height="${H}" viewBox="0 0 ${w + LEGEND_W} ${H}" role="img" aria-label="${esc(title)}">` +
    `<rect x="0" y="0" width="${w + LEGEND_W}" height="${H}" fill="#fff"/>` +
    `<text x="${M.l}" y="20" class="title">${esc(title)}</text>${body}${legend}</svg>`
  );
}

function legendOf(items: { name: string; color: string; dashed?: boolean }[], kind: 'line' | 'box', w = W): string {
  const x0 = w + 4;
  return items
    .map((it, i) => {
      const y = M.t + 6 + i * 18;
      const mark =
        kind === 'line'
          ? `<line x1="${x0}" y1="${y}" x2="${x0 + 22}" y2="${y}" stroke="${it.color}" stroke-width="2.5"${it.dashed ? ' stroke-dasharray="5 3"' : ''}/>`
          : `<rect x="${x0 + 4}" y="${y - 6}" width="14" height="12" fill="${it.color}"/>`;
      return `${mark}<text x="${x0 + 28}" y="${y + 4}" class="legend">${esc(it.name)}</text>`;
    })
    .join('');
}

function axes(
  xLabel: string,
  yLabel: string,
  yTicks: number[],
  yPos: (v: number) => number,
  xTicks: string,
  w = W,
): string {
  const grid = yTicks
    .map((v) => {
      const y = yPos(v);
      return `<line x1="${M.l}" y1="${y}" x2="${w - M.r}" y2="${y}" class="grid"/><text x="${M.l - 6}" y="${y + 4}" class="tick" text-anchor="end">${fmtNum(v)}</text>`;
    })
    .join('');
  return (
    grid +
    `<line x1="${M.l}" y1="${H - M.b}" x2="${w - M.r}" y2="${H - M.b}" class="axis"/>` +
    `<line x1="${M.l}" y1="${M.t}" x2="${M.l}" y2="${H - M.b}" class="axis"/>` +
    xTicks +
    `<text x="${(M.l + w - M.r) / 2}" y="${H - 8}" class="label" text-anchor="middle">${esc(xLabel)}</text>` +
    `<text transform="translate(14 ${(M.t + H - M.b) / 2}) rotate(-90)" class="label" text-anchor="middle">${esc(yLabel)}</text>`
  );
}

/** A line chart; x on a log2 scale when `logX` (concurrency 1, 4, 16 evenly spaced). Null y values break no line: they are skipped. */
export function lineChart(o: {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  logX?: boolean;
}): string {
  const series = o.series.map((s, i) => ({
    ...s,
    color: s.color ?? PALETTE[i % PALETTE.length],
    pts: s.points.filter((p): p is { x: number; y: number } => p.y !== null && Number.isFinite(p.y)),
  }));
  const all = series.flatMap((s) => s.pts);
  if (all.length === 0)
    return frame(o.title, `<text x="${W / 2}" y="${H / 2}" class="label" text-anchor="middle">no data</text>`, '');
  const tx = (x: number) => (o.logX ? Math.log2(Math.max(x, 1e-9)) : x);
  const xs = [...new Set(all.map((p) => p.x))].sort((a, b) => a - b);
  let xlo = tx(xs[0]);
  let xhi = tx(xs[xs.length - 1]);
  if (xhi === xlo) {
    xlo -= 1;
    xhi += 1;
  }
  const yTicks = niceTicks(0, Math.max(...all.map((p) => p.y)));
  const yhi = yTicks[yTicks.length - 1];
  const pad = 18;
  const xPos = (x: number) => M.l + pad + ((tx(x) - xlo) / (xhi - xlo)) * (W - M.l - M.r - 2 * pad);
  const yPos = (y: number) => H - M.b - (y / yhi) * (H - M.t - M.b);
  const xTickVals =
    o.logX || xs.length <= 8
      ? xs
      : niceTicks(xs[0], xs[xs.length - 1]).filter((v) => v >= xs[0] && v <= xs[xs.length - 1]);
  const xTicks = xTickVals
    .map((v) => `<text x="${xPos(v)}" y="${H - M.b + 16}" class="tick" text-anchor="middle">${fmtNum(v)}</text>`)
    .join('');
  const lines = series
    .map((s) => {
      const pts = [...s.pts].sort((a, b) => a.x - b.x);
      const d = pts.map((p, i) => `${i ? 'L' : 'M'}${xPos(p.x).toFixed(1)} ${yPos(p.y).toFixed(1)}`).join(' ');
      const dots = pts
        .map(
          (p) =>
            `<circle cx="${xPos(p.x).toFixed(1)}" cy="${yPos(p.y).toFixed(1)}" r="3.5" fill="${s.color}"><title>${esc(`${s.name}: x=${fmtNum(p.x)} y=${fmtNum(p.y)}`)}</title></circle>`,
        )
        .join('');
      const path =
        pts.length > 1
          ? `<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 3"' : ''}/>`
          : '';
      return path + dots;
    })
    .join('');
  return frame(o.title, axes(o.xLabel, o.yLabel, yTicks, yPos, xTicks) + lines, legendOf(series, 'line'));
}

/**
 * Grouped bars: one group per label, one bar per series name. The chart widens with the number of groups; a label
 * "a b" is written on two lines at its last space; value labels only where a bar is wide enough to hold one.
 */
export function barChart(o: {
  title: string;
  yLabel: string;
  seriesNames: string[];
  groups: { label: string; values: (number | null)[] }[];
}): string {
  const groups = o.groups.filter((g) => g.values.some((v) => v !== null && Number.isFinite(v)));
  if (groups.length === 0)
    return frame(o.title, `<text x="${W / 2}" y="${H / 2}" class="label" text-anchor="middle">no data</text>`, '');
  const vals = groups.flatMap((g) => g.values).filter((v): v is number => v !== null && Number.isFinite(v));
  const w = Math.max(W, M.l + M.r + groups.length * (o.seriesNames.length * 26 + 22));
  const yTicks = niceTicks(0, Math.max(...vals));
  const yhi = yTicks[yTicks.length - 1];
  const yPos = (y: number) => H - M.b - (y / yhi) * (H - M.t - M.b);
  const gw = (w - M.l - M.r) / groups.length;
  const bw = Math.min(40, (gw * 0.8) / o.seriesNames.length);
  const colors = o.seriesNames.map((_, i) => PALETTE[i % PALETTE.length]);
  const bars = groups
    .map((g, gi) => {
      const x0 = M.l + gi * gw + (gw - bw * o.seriesNames.length) / 2;
      const rects = g.values
        .map((v, si) => {
          if (v === null || !Number.isFinite(v)) return '';
          const x = x0 + si * bw;
          const y = yPos(v);
          const label =
            bw >= 24
              ? `<text x="${(x + bw / 2 - 1).toFixed(1)}" y="${(y - 3).toFixed(1)}" class="val" text-anchor="middle">${fmtNum(v)}</text>`
              : '';
          return `<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${(bw - 2).toFixed(1)}" height="${(H - M.b - y).toFixed(1)}" fill="${colors[si]}"><title>${esc(`${g.label} ${o.seriesNames[si]}: ${fmtNum(v)}`)}</title></rect>${label}`;
        })
        .join('');
      const cut = g.label.lastIndexOf(' ');
      const lines = cut > 0 ? [g.label.slice(0, cut), g.label.slice(cut + 1)] : [g.label];
      const cx = (M.l + gi * gw + gw / 2).toFixed(1);
      const text = lines
        .map(
          (t, li) => `<text x="${cx}" y="${H - M.b + 14 + li * 13}" class="tick" text-anchor="middle">${esc(t)}</text>`,
        )
        .join('');
      return rects + text;
    })
    .join('');
  return frame(
    o.title,
    axes('', o.yLabel, yTicks, yPos, '', w) + bars,
    legendOf(
      o.seriesNames.map((name, i) => ({ name, color: colors[i] })),
      'box',
      w,
    ),
    w,
  );
}
